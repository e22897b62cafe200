//! The JSON Lines anonymizer (nested dotted paths) over arbitrary input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_anonymize::{Job, Spec};

const SPEC: &str = r#"
format = "jsonl"
on_error = "skip"
unlisted = "drop"
max_record_bytes = 4096
[[columns]]
name = "user.email"
transform = "pseudonymize"
[[columns]]
name = "user.name"
transform = "redact"
[[columns]]
name = "user.phone"
transform = "mask"
keep_last = 2
[[columns]]
name = "age"
transform = "generalize"
kind = "bucket"
width = 10
[[columns]]
name = "ts"
transform = "date_shift"
subject = "user.email"
[[columns]]
name = "text"
transform = "scrub"
[[columns]]
name = "ssn"
transform = "drop"
[kanon]
quasi_identifiers = ["age", "zip"]
k_min = 2
action = "suppress"
max_suppression = 1.0
"#;

fuzz_target!(|data: &[u8]| {
    // Built once: compiling the detectors per input would be most of the time.
    static JOB: std::sync::OnceLock<Job> = std::sync::OnceLock::new();
    let job = JOB
        .get_or_init(|| Job::new(Spec::parse(SPEC).expect("spec parses"), [7u8; 32]).expect("job"));
    let Ok(prepared) = job.prepare_one(data) else {
        return;
    };
    let mut out = Vec::new();
    if let Ok(report) = job.run(data, &mut out, &prepared) {
        assert_eq!(report.bytes_written, out.len() as u64);
        let _ = job.finish(&prepared, vec![report]);
    }
});
