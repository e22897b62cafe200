//! The admission scan's the NumPy header parser over arbitrary bytes: never a panic, never
//! unbounded work, and a verdict is always the worst of its findings.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_scan::{scan_bytes, Verdict};

fuzz_target!(|data: &[u8]| {
    for name in ["m.npy"] {
        let r = scan_bytes(name, data);
        let worst = r.findings.iter().map(|f| f.severity).max();
        assert_eq!(r.verdict, worst.unwrap_or(Verdict::Pass));
    }
});
