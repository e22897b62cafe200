//! The pickle judge against streams built here, one per way scanners have
//! been bypassed: imports by every opcode that makes one (also through the
//! memo), names the scan cannot determine, dotted names against exact
//! matching, the extension registry, payloads after STOP, unknown opcodes,
//! out-of-band buffers, broken streams. With `MLVAULT_TEST_PYTHON`, pickles
//! written by Python itself in every protocol.

use vault_scan::{judge_pickle, scan_bytes, Verdict, DEFAULT_ALLOWLIST};

fn judge(data: &[u8]) -> vault_scan::FileReport {
    judge_pickle("x.pkl", data, DEFAULT_ALLOWLIST)
}

/// SHORT_BINUNICODE `s`.
fn text(s: &str) -> Vec<u8> {
    [&[0x8c, s.len() as u8][..], s.as_bytes()].concat()
}

#[test]
fn an_allowlisted_state_dict_passes() {
    // PROTO 2, GLOBAL collections OrderedDict, EMPTY_TUPLE, REDUCE,
    // 'w' -> [1], SETITEM, STOP.
    let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)R".to_vec();
    p.extend_from_slice(b"X\x01\x00\x00\x00w]K\x01as.");
    let r = judge(&p);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.details["pickle.imports"], "collections OrderedDict");
}

#[test]
fn every_bypass_class_is_refused() {
    let stack_global = |m: &str, n: &str| -> Vec<u8> {
        [&b"\x80\x04"[..], &text(m), &text(n), b"\x93)R."].concat()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "GLOBAL os.system",
            b"cos\nsystem\n(S'id'\ntR.".to_vec(),
            "os.system",
        ),
        ("INST", b"(S'id'\nios\nsystem\n.".to_vec(), "os.system"),
        ("STACK_GLOBAL", stack_global("os", "system"), "os.system"),
        (
            "a name resolver",
            stack_global("builtins", "getattr"),
            "builtins.getattr",
        ),
        (
            "importlib",
            stack_global("importlib", "import_module"),
            "importlib.import_module",
        ),
        (
            "pkgutil.resolve_name",
            stack_global("pkgutil", "resolve_name"),
            "pkgutil.resolve_name",
        ),
        (
            "a dotted name that exact matching of the module would miss",
            stack_global("collections", "OrderedDict.__init__"),
            "collections.OrderedDict.__init__",
        ),
        (
            "a submodule of an allowed module",
            stack_global("torch._utils.evil", "_rebuild_tensor_v2"),
            "torch._utils.evil._rebuild_tensor_v2",
        ),
        (
            "strings brought back from the memo",
            [
                &b"\x80\x04"[..],
                &text("os"),
                b"q\x07",
                &text("system"),
                b"q\x08",
                b"0", // POP the name: the stack holds only "os"
                b"h\x08",
                b"\x93)R.",
            ]
            .concat(),
            "os.system",
        ),
        (
            "STACK_GLOBAL of a computed name",
            [&b"\x80\x04"[..], &text("os"), b"K\x01\x93."].concat(),
            "cannot determine",
        ),
        (
            "the extension registry",
            b"\x80\x02\x82\x01)R.".to_vec(),
            "extension registry",
        ),
        (
            "a payload after STOP",
            b"\x80\x02N.cos\nsystem\n(S'id'\ntR.".to_vec(),
            "after STOP",
        ),
        (
            "an unknown opcode",
            b"\x80\x02\xff.".to_vec(),
            "unknown opcode",
        ),
        (
            "a stream with no STOP",
            b"\x80\x02N".to_vec(),
            "past the end",
        ),
        (
            "an out-of-band buffer",
            b"\x80\x05\x97.".to_vec(),
            "out-of-band",
        ),
        ("a future protocol", b"\x80\x06N.".to_vec(), "protocol 6"),
        ("a stack underflow", b"\x80\x02R.".to_vec(), "empty stack"),
        ("a GET never put", b"\x80\x02h\x05.".to_vec(), "never put"),
    ];
    for (what, bytes, says) in cases {
        let r = judge(&bytes);
        assert_eq!(r.verdict, Verdict::Fail, "{what}: {r:?}");
        assert!(
            r.findings.iter().any(|f| f.message.contains(says)),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn a_protocol_0_pickle_named_as_one_is_judged_as_one() {
    let r = scan_bytes("model.pkl", b"(lp0\nI1\naI2\na.");
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    let r = scan_bytes("model.pkl", b"cos\nsystem\n(S'id'\ntR.");
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    // Not a pickle at all: the judge refuses it.
    let r = scan_bytes("model.pkl", b"hello world");
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
}

#[test]
fn a_raw_pickle_file_is_judged_by_the_scan() {
    let evil = b"\x80\x02cos\nsystem\n(S'id'\ntR.";
    let r = scan_bytes("model.pkl", evil);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert_eq!(r.details["pickle.imports"], "os system");
}

#[test]
fn pickles_written_by_python_in_every_protocol() {
    let Some(py) = std::env::var_os("MLVAULT_TEST_PYTHON") else {
        assert!(
            std::env::var_os("MLVAULT_SKIP_INTEROP").is_some(),
            "MLVAULT_TEST_PYTHON is not set: run the suite with scripts/test.sh, or set MLVAULT_SKIP_INTEROP=1 to skip this test"
        );
        eprintln!("SKIPPED: pickles written by Python (MLVAULT_SKIP_INTEROP is set)");
        return;
    };
    let script = r#"
import collections, os, pickle, sys
class Evil:
    def __reduce__(self):
        return (os.system, ("id",))
good = collections.OrderedDict([("w", [1.5, 2, "x", b"b", None, True, (1, 2)]), ("n", {"k": [10**30, -1]})])
out = sys.argv[1]
for p in range(6):
    open(f"{out}/good{p}.pkl", "wb").write(pickle.dumps(good, protocol=p))
    open(f"{out}/evil{p}.pkl", "wb").write(pickle.dumps(Evil(), protocol=p))
"#;
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(py)
        .args(["-c", script])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in 0..6 {
        let good = std::fs::read(dir.path().join(format!("good{p}.pkl"))).unwrap();
        let r = judge(&good);
        assert_eq!(r.verdict, Verdict::Pass, "protocol {p}: {r:?}");
        let evil = std::fs::read(dir.path().join(format!("evil{p}.pkl"))).unwrap();
        let r = judge(&evil);
        assert_eq!(r.verdict, Verdict::Fail, "protocol {p}: {r:?}");
        assert!(
            r.findings.iter().any(|f| f.message.contains("system")),
            "protocol {p}: {r:?}"
        );
    }
}
