//! The anonymization job spec parser (TOML from users): arbitrary text must
//! give a spec or a clear error, and a spec that parses must make a job that
//! runs on a small CSV.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_anonymize::{Job, Spec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = Spec::parse(text) else {
        return;
    };
    let Ok(job) = Job::new(spec, [1u8; 32]) else {
        return;
    };
    let input = b"name,email,age,notes\nann,ann@example.com,34,call 555-0100\n";
    if let Ok(prepared) = job.prepare_one(&input[..]) {
        let _ = job.run(&input[..], Vec::new(), &prepared);
    }
});
