//! GGUF files written by llama.cpp's own Python writer (gguf-py, installed
//! by `scripts/test.sh` into the virtual environment `MLVAULT_TEST_PYTHON`
//! names): the scanner reads them as the reference writes them. Without
//! `MLVAULT_TEST_PYTHON` this fails, unless `MLVAULT_SKIP_INTEROP=1` says
//! to skip it.

use std::path::{Path, PathBuf};
use std::process::Command;

use vault_scan::{scan_bytes, Format, Verdict};

fn python() -> Option<PathBuf> {
    match std::env::var_os("MLVAULT_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("MLVAULT_SKIP_INTEROP").is_some() => None,
        None => panic!(
            "MLVAULT_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs gguf-py, or set MLVAULT_SKIP_INTEROP=1 to skip this test"
        ),
    }
}

fn make(py: &Path, out: &Path, template: Option<&str>) -> Vec<u8> {
    // Where cargo runs the test from (a cached build may have been compiled
    // in another checkout).
    let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let mut c = Command::new(py);
    c.arg(Path::new(&here).join("../../scripts/interop/make_gguf.py"))
        .arg(out);
    if let Some(t) = template {
        c.arg(t);
    }
    let o = c.output().expect("run python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).expect("the written GGUF")
}

#[test]
fn gguf_written_by_llama_cpp_passes_and_a_changed_one_does_not() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: GGUF interop (MLVAULT_SKIP_INTEROP is set)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = make(&py, &dir.path().join("tiny.gguf"), None);
    let r = scan_bytes("tiny.gguf", &file);
    assert_eq!(
        (r.format, r.verdict),
        (Format::Gguf, Verdict::Pass),
        "{r:?}"
    );
    assert!(r.details.contains_key("tokenizer.chat_template.sha256"));

    // Cut short: the last tensor's data is missing.
    let r = scan_bytes("tiny.gguf", &file[..file.len() - 100]);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");

    // A template-injection chat template, written by the same writer.
    let evil = make(
        &py,
        &dir.path().join("evil.gguf"),
        Some("{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
    );
    let r = scan_bytes("evil.gguf", &evil);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(
        r.findings.iter().any(|f| f.code == "gguf.chat_template"),
        "{r:?}"
    );
}

/// Archives and arrays as Python's own zipfile, pickle and NumPy write
/// them (scripts/interop/make_archives.py): a PyTorch-layout state dict
/// and plain arrays pass; a pickled payload in the checkpoint and object
/// arrays, alone or in an `.npz`, fail.
#[test]
fn archives_and_arrays_written_by_python_are_judged_as_their_loaders_read_them() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: archive interop (MLVAULT_SKIP_INTEROP is set)");
        return;
    };
    let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(&py)
        .arg(Path::new(&here).join("../../scripts/interop/make_archives.py"))
        .arg(dir.path())
        .output()
        .expect("run python");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scan = |name: &str| {
        let bytes = std::fs::read(dir.path().join(name)).expect("a written file");
        scan_bytes(name, &bytes)
    };
    for name in ["model.pt", "floats.npy", "arrays.npz", "packed.npz"] {
        let r = scan(name);
        assert_eq!(r.verdict, Verdict::Pass, "{name}: {r:?}");
    }
    let r = scan("model.pt");
    assert_eq!(r.details["archive"], "pytorch");
    assert!(
        r.details["archive/data.pkl: pickle.imports"].contains("torch._utils _rebuild_tensor_v2"),
        "{r:?}"
    );
    for (name, code) in [
        ("evil.pt", "pickle.import"),
        ("objects.npy", "npy.object"),
        ("objects.npz", "npy.object"),
    ] {
        let r = scan(name);
        assert_eq!(r.verdict, Verdict::Fail, "{name}: {r:?}");
        assert!(r.findings.iter().any(|f| f.code == code), "{name}: {r:?}");
    }
}
