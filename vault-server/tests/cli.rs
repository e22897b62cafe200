//! The `vault-server` binary's argument contract (the end-to-end suite is in
//! the `vault-tests` crate; having this file also makes `cargo test` build
//! the binary that suite drives).

use std::process::Command;

fn server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vault-server"))
}

#[test]
fn help_names_every_command() {
    let out = server().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["init", "run", "dev"] {
        assert!(text.contains(cmd), "--help lacks `{cmd}`:\n{text}");
    }
}

#[test]
fn bad_flag_is_a_usage_error() {
    let out = server().args(["run", "--no-such-flag"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), b"keep me").unwrap();
    let out = server()
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        std::fs::read(dir.path().join("precious")).unwrap(),
        b"keep me"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn run_refuses_plain_http_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = server()
        .args(["run", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-http"));
}
