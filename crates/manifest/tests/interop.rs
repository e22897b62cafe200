//! Envelopes and keys made by other tools: securesystemslib's DSSE (a
//! Python implementation of the specification, installed by
//! `scripts/test.sh` into a virtual environment named by
//! `MLVAULT_TEST_PYTHON`), `openssl` and `ssh-keygen`. Without
//! `MLVAULT_TEST_PYTHON` the securesystemslib test fails, unless
//! `MLVAULT_SKIP_INTEROP=1` says to skip it.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use vault_manifest::{Envelope, PublicKey, SecretKey};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn python() -> Option<PathBuf> {
    match std::env::var_os("MLVAULT_TEST_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("MLVAULT_SKIP_INTEROP").is_some() => None,
        None => panic!(
            "MLVAULT_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs securesystemslib, or set MLVAULT_SKIP_INTEROP=1 to skip this test"
        ),
    }
}

fn tool() -> PathBuf {
    // Where cargo runs the test from (a cached build may have been compiled
    // in another checkout).
    let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    Path::new(&here).join("../../scripts/interop/dsse_tool.py")
}

/// An in-toto statement with fields mlvault does not write (a subject's
/// `annotations`, a `uri`).
const STATEMENT: &str = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"model.safetensors","digest":{"sha256":"0000000000000000000000000000000000000000000000000000000000000000"},"annotations":{"stage":"eval"},"uri":"https://example.com/m"}],"predicateType":"https://example.com/eval/v1","predicate":{"accuracy":0.93}}"#;

#[test]
fn securesystemslib_envelopes_verify_here_and_ours_verify_there() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("statement.json"), STATEMENT).unwrap();

    // Theirs: their key id scheme, their field set; our verifier takes it.
    let env_text = sh(Command::new(&py)
        .arg(tool())
        .args(["sign"])
        .arg(d)
        .arg(d.join("statement.json")));
    let env = Envelope::from_json(env_text.trim()).unwrap();
    let theirs =
        PublicKey::from_file_text(&std::fs::read_to_string(d.join("key.pub.pem")).unwrap())
            .unwrap();
    assert_eq!(
        env.verify_any(std::slice::from_ref(&theirs)).unwrap(),
        theirs.keyid()
    );
    assert_eq!(env.payload_bytes().unwrap(), STATEMENT.as_bytes());
    // Another key is still refused, and so is a changed payload.
    let other = SecretKey::generate().unwrap();
    assert!(env.verify_any(&[other.public()]).is_err());
    let mut changed = env.clone();
    changed.payload = base64::engine::general_purpose::STANDARD.encode(b"{}");
    assert!(changed.verify_any(&[theirs]).is_err());

    // Ours, checked by securesystemslib with our key as PEM.
    let key = SecretKey::generate().unwrap();
    let mut ours = Envelope::wrap(STATEMENT.as_bytes());
    ours.sign(&key).unwrap();
    std::fs::write(d.join("ours.json"), ours.to_json()).unwrap();
    std::fs::write(d.join("ours.pub.pem"), key.public().to_pem().unwrap()).unwrap();
    let said = sh(Command::new(&py)
        .arg(tool())
        .arg("verify")
        .arg(d.join("ours.pub.pem"))
        .arg(d.join("ours.json")));
    assert_eq!(said.trim(), "verified");
    // And it refuses ours tampered, so the check above can fail.
    let mut tampered = ours.clone();
    tampered.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"x\":1}");
    std::fs::write(d.join("tampered.json"), tampered.to_json()).unwrap();
    let out = Command::new(&py)
        .arg(tool())
        .arg("verify")
        .arg(d.join("ours.pub.pem"))
        .arg(d.join("tampered.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn keys_from_openssl_and_ssh_keygen_are_read_and_ours_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(d.join("k.pem")));
    sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(d.join("k.pem"))
        .arg("-out")
        .arg(d.join("k.pub.pem")));
    let read = |p: &str| std::fs::read_to_string(d.join(p)).unwrap();
    let sk = SecretKey::from_file_text(&read("k.pem")).unwrap();
    let pk = PublicKey::from_file_text(&read("k.pub.pem")).unwrap();
    assert_eq!(sk.public(), pk);

    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f"])
        .arg(d.join("id")));
    let sk = SecretKey::from_file_text(&read("id")).unwrap();
    let pk = PublicKey::from_file_text(&read("id.pub")).unwrap();
    assert_eq!(sk.public(), pk);
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(d.join("enc")));
    let err = SecretKey::from_file_text(&read("enc")).err().unwrap();
    assert!(err.to_string().contains("encrypted"), "{err}");

    // What we write, the tools read: openssl derives the same public key,
    // ssh-keygen prints the same public line.
    let ours = SecretKey::generate().unwrap();
    std::fs::write(d.join("ours.pem"), ours.to_pem().unwrap().as_bytes()).unwrap();
    let derived = sh(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(d.join("ours.pem")));
    assert_eq!(derived, ours.public().to_pem().unwrap());
    let ssh = d.join("ours_ssh");
    std::fs::write(&ssh, ours.to_openssh().unwrap().as_bytes()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let line = sh(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&ssh));
    assert_eq!(
        PublicKey::from_file_text(&line).unwrap(),
        ours.public(),
        "{line}"
    );
    // All three forms of one key have one key id.
    for text in [
        ours.public().to_file_text(),
        ours.public().to_pem().unwrap(),
        ours.public().to_openssh().unwrap(),
    ] {
        assert_eq!(
            PublicKey::from_file_text(&text).unwrap().keyid(),
            ours.public().keyid()
        );
    }
}
