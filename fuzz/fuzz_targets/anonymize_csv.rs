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
            Spec::parse(mlvault_fuzz::CSV_SPEC).expect("spec parses"),
            [7u8; 32],
        )
        .expect("job")
    });
    let Ok(classes) = job.classes(data) else {
        return;
    };
    let mut out = Vec::new();
    if let Ok(report) = job.run(data, &mut out, Some(&classes)) {
        assert_eq!(report.bytes_written, out.len() as u64);
    }
});
