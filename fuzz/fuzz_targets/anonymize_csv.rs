//! The CSV anonymizer with every transform, the PII scrubber and
//! k-anonymity, over arbitrary input: both passes, malformed rows skipped.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_anonymize::{Job, Spec};

fuzz_target!(|data: &[u8]| {
    // Built once: compiling the detectors per input would be most of the time.
    static JOB: std::sync::OnceLock<Job> = std::sync::OnceLock::new();
    let job = JOB.get_or_init(|| {
        Job::new(
            // The shipped spec, permissive where it would stop most inputs
            // before the transforms run.
            Spec::parse(
                &mlvault_fuzz::CSV_SPEC
                    .replace("unlisted = \"refuse\"", "unlisted = \"drop\"")
                    .replace("max_suppression = 0.1", "max_suppression = 1.0"),
            )
            .expect("spec parses"),
            [7u8; 32],
        )
        .expect("job")
    });
    let Ok(prepared) = job.prepare_one(data) else {
        return;
    };
    let mut out = Vec::new();
    if let Ok(report) = job.run(data, &mut out, &prepared) {
        assert_eq!(report.bytes_written, out.len() as u64);
        let _ = job.finish(&prepared, vec![report]);
    }
});
