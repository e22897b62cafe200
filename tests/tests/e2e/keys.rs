//! Unsealing, key files, the key ring: rotation, rewrap, retirement.

use super::*;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use vault_store::MetaStore;

fn blob_digests(s: &Server) -> Vec<(String, String)> {
    blob_files(&s.data_dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                sha256_file(&p),
            )
        })
        .collect()
}

#[test]
fn rotate_rewrap_retire_keep_every_version_pullable_without_rewriting_blobs() {
    let mut s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("a.dat"), 2 * MIB + 3, 21);
    random_file(&src.join("b/c.dat"), 1000, 22);
    ok(s.cli().args(["push", "k/m"]).arg(&src));
    let st = json(&ok(s.admin().args(["--json", "key", "rotate"])));
    assert_eq!(st["current_version"], 2);
    assert_eq!(st["versions"], serde_json::json!([1, 2]));
    let src2 = s.tmp.path().join("src2");
    random_file(&src2.join("a.dat"), 2 * MIB + 3, 23);
    random_file(&src2.join("b/c.dat"), 1000, 24);
    ok(s.cli().args(["push", "k/m"]).arg(&src2));
    let st = json(&ok(s.admin().args(["--json", "key", "status"])));
    assert_eq!(st["blobs_by_version"], serde_json::json!([[1, 2], [2, 2]]));

    // Retiring v1 while blobs still use it is refused, and changes nothing.
    let err = fails_with(s.admin().args(["key", "retire", "2"]), 1);
    assert!(err.contains("rewrap"), "{err}");

    let before = blob_digests(&s);
    let r = json(&ok(s.admin().args(["--json", "key", "rewrap"])));
    assert_eq!(r["rewrapped"], 2);
    assert_eq!(r["already_current"], 2);
    assert_eq!(blob_digests(&s), before, "rewrap must not touch blob bytes");
    // A second run (as after an interruption) finds nothing left to do.
    let r = json(&ok(s.admin().args(["--json", "key", "rewrap"])));
    assert_eq!(r["rewrapped"], 0);

    let st = json(&ok(s.admin().args(["--json", "key", "retire", "2"])));
    assert_eq!(st["min_decryption_version"], 2);
    s.restart();
    for (v, want) in [("k/m:1", &src), ("k/m:2", &src2)] {
        let dest = s.tmp.path().join(v.replace(':', "-"));
        ok(s.cli().args(["pull", v, "--to"]).arg(&dest));
        assert_same_tree(want, &dest);
    }
    let st = json(&ok(s.admin().args(["--json", "key", "status"])));
    assert_eq!(st["blobs_by_version"], serde_json::json!([[2, 4]]));
    assert_eq!(st["min_decryption_version"], 2);
}

#[test]
fn delete_destroys_the_keys_so_a_copy_of_the_blob_store_is_unreadable() {
    let mut s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), MIB + 1, 31);
    ok(s.cli().args(["push", "d/m"]).arg(&src));
    let v1_blobs: Vec<_> = blob_files(&s.data_dir);
    assert_eq!(v1_blobs.len(), 1);
    let v1_id = v1_blobs[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    // Version 2 has other content (same content would share v1's blob).
    let src2 = s.tmp.path().join("src2");
    random_file(&src2.join("w.dat"), MIB + 1, 32);
    ok(s.cli().args(["push", "d/m"]).arg(&src2));
    // A backup of the blob store taken before the delete.
    let backup = s.tmp.path().join("backup");
    copy_tree(&s.data_dir.join("blobs"), &backup);

    s.terminate();
    let wrapped_hex = {
        let meta = vault_store::RedbMeta::open(&s.data_dir.join("meta.redb")).unwrap();
        let rec = meta.blob(&v1_id).unwrap().expect("v1 blob record");
        hex::encode(&rec.wrapped_dek.ciphertext)
    };
    s.restart();
    let del = json(&ok(s.admin().args(["--json", "delete", "d/m:1"])));
    assert_eq!(del["shredded_blobs"], 1);
    fails_with(
        s.cli()
            .args(["pull", "d/m:1", "--to"])
            .arg(s.tmp.path().join("x")),
        4,
    );
    assert!(
        !v1_blobs[0].exists(),
        "ciphertext object of a deleted version remains"
    );
    // Put the old ciphertext back: still nothing can read it.
    copy_tree(&backup, &s.data_dir.join("blobs"));
    fails_with(
        s.cli()
            .args(["pull", "d/m:1", "--to"])
            .arg(s.tmp.path().join("y")),
        4,
    );
    // Version 2 is untouched.
    let dest = s.tmp.path().join("v2");
    ok(s.cli().args(["pull", "d/m:2", "--to"]).arg(&dest));
    assert_same_tree(&src2, &dest);

    s.terminate();
    // The wrapped DEK is gone from the metadata, and no key left in the
    // vault opens the restored blob.
    let meta = vault_store::RedbMeta::open(&s.data_dir.join("meta.redb")).unwrap();
    assert!(meta.blob(&v1_id).unwrap().is_none());
    let ident = fs::read_to_string(&s.identity).unwrap();
    let unsealer = vault_crypto::Unsealer::from_identity_file(&ident).unwrap();
    let master = unsealer
        .unseal(&fs::read(s.data_dir.join("master.key.age")).unwrap())
        .unwrap();
    let krec = meta.keyring().unwrap().unwrap();
    let ring =
        vault_crypto::Keyring::open(&master, krec.id, &krec.keks, krec.min_decryption_version)
            .unwrap();
    let copy = fs::read(&v1_blobs[0]).unwrap();
    let (header, _) = vault_crypto::Header::parse(&copy).unwrap();
    for b in meta.list_blobs().unwrap() {
        let ctx = b.context().unwrap();
        let dek = ring.unwrap_dek(&b.wrapped_dek, &ctx).unwrap();
        assert!(vault_crypto::BlobDecryptor::new(&header, &dek).is_err());
    }
    drop(meta);
    let raw = fs::read(s.data_dir.join("meta.redb")).unwrap();
    let needle = wrapped_hex.as_bytes();
    let lingering = raw.windows(needle.len()).any(|w| w == needle);
    assert!(
        !lingering,
        "the destroyed wrapped DEK is still in meta.redb"
    );
}

#[test]
fn start_is_refused_for_key_files_readable_by_others_and_for_a_wrong_identity() {
    let mut s = Server::start();
    s.terminate();
    let data = s.data_dir.clone();
    let id = s.identity.clone();
    let args = |ident: &Path| -> Vec<std::ffi::OsString> {
        vec![
            "--data-dir".into(),
            data.clone().into(),
            "--unseal-identity".into(),
            ident.into(),
        ]
    };
    let run = |ident: &Path| {
        let a = args(ident);
        let refs: Vec<&OsStr> = a.iter().map(|x| x.as_os_str()).collect();
        failed_start(&refs)
    };
    fs::set_permissions(&id, fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run(&id);
    assert_eq!(code, Some(1));
    assert!(err.contains("chmod 600"), "{err}");
    fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();

    let sealed = data.join("master.key.age");
    fs::set_permissions(&sealed, fs::Permissions::from_mode(0o640)).unwrap();
    let (code, err) = run(&id);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("sealed master key") && err.contains("chmod 600"),
        "{err}"
    );
    fs::set_permissions(&sealed, fs::Permissions::from_mode(0o600)).unwrap();

    // Another identity cannot unseal the vault.
    let other = s.tmp.path().join("other.identity");
    let (secret, _) = vault_crypto::generate_identity();
    use vault_crypto::SecretExpose;
    fs::write(&other, secret.expose_secret()).unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let (code, err) = run(&other);
    assert_eq!(code, Some(1));
    assert!(err.contains("wrong identity or passphrase"), "{err}");
    // The right one still works.
    s.restart();
    ok(s.cli().arg("ls"));
}

#[test]
fn a_passphrase_sealed_vault_opens_only_with_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = std::process::Command::new(bin("vault-server"))
        .args(["init", "--passphrase-env", "MLV_TEST_PASS", "--data-dir"])
        .arg(&data)
        .env("MLV_TEST_PASS", "correct horse battery")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("admin token (shown once"), "{stdout}");
    let mut c = std::process::Command::new(bin("vault-server"));
    c.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--passphrase-env",
        "MLV_TEST_PASS",
        "--data-dir",
    ])
    .arg(&data)
    .env("MLV_TEST_PASS", "wrong horse")
    .stderr(std::process::Stdio::piped());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong identity or passphrase"));
    let out = std::process::Command::new(bin("vault-server"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--passphrase-env",
            "MLV_UNSET_VAR",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_server_log_never_shows_the_token() {
    let s = Server::start_with(&[]);
    let f = s.tmp.path().join("f.dat");
    random_file(&f, 1000, 1);
    ok(s.cli().args(["push", "l/m"]).arg(&f));
    ok(s.cli()
        .args(["pull", "l/m", "--to"])
        .arg(s.tmp.path().join("o")));
    fails_with(
        s.cli_with_token("mlv_not_a_real_token_but_secret")
            .arg("ls"),
        3,
    );
    let log = s.log_text();
    assert!(log.contains("version committed"), "{log}");
    assert!(!log.contains(&s.token));
    assert!(!log.contains(&s.token[4..]));
    assert!(!log.contains("mlv_not_a_real_token_but_secret"));
}
