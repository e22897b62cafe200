//! Signed manifests, publisher keys, signed alias records, rollback and downgrade.

use super::*;
use vault_manifest::{Envelope, SecretKey};

fn keygen(s: &Server, name: &str) -> std::path::PathBuf {
    let p = s.tmp.path().join(name);
    ok(s.cli().args(["keygen", "--out"]).arg(&p));
    p
}

fn pubf(p: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}.pub", p.display()))
}

#[test]
fn keygen_writes_a_private_secret_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start();
    let k = keygen(&s, "ci.key");
    assert_eq!(
        fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(fs::read_to_string(pubf(&k))
        .unwrap()
        .starts_with("mlvault-ed25519 "));
    fails_with(s.cli().args(["keygen", "--out"]).arg(&k), 2);
}

#[test]
fn a_namespace_with_publishers_accepts_only_their_signatures() {
    let s = Server::start();
    let good = keygen(&s, "good.key");
    let other = keygen(&s, "other.key");
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), 100_000, 1);
    // Before any publisher is registered, unsigned pushes are accepted.
    ok(s.cli().args(["push", "open/m"]).arg(&src));
    ok(s.admin()
        .args(["publisher", "add", "fraud"])
        .arg(pubf(&good)));
    let list = json(&ok(s.admin().args([
        "--json",
        "publisher",
        "list",
        "fraud",
    ])));
    assert_eq!(list.as_array().unwrap().len(), 1);

    let err = fails_with(s.cli().args(["push", "fraud/m"]).arg(&src), 5);
    assert!(err.contains("not signed"), "{err}");
    let err = fails_with(
        s.cli()
            .args(["push", "fraud/m", "--sign-key"])
            .arg(&other)
            .arg(&src),
        5,
    );
    assert!(err.contains("untrusted"), "{err}");
    // Nothing was stored by the refused pushes.
    fails_with(s.cli().args(["show", "fraud/m"]), 4);
    let out = json(&ok(s
        .cli()
        .args(["--json", "push", "fraud/m", "--sign-key"])
        .arg(&good)
        .arg(&src)));
    // Refused pushes burned version numbers 1 and 2; numbers are never reused.
    assert_eq!(out["version"], 3);

    let dest = s.tmp.path().join("dest");
    let pulled = json(&ok(s
        .cli()
        .args(["--json", "pull", "fraud/m", "--trust"])
        .arg(pubf(&good))
        .arg("--to")
        .arg(&dest)));
    assert!(pulled["signer"].as_str().unwrap().starts_with("ed25519:"));
    assert_same_tree(&src, &dest);
    ok(s.cli()
        .arg("verify")
        .arg(&dest)
        .arg("--trust")
        .arg(pubf(&good)));
    fails_with(
        s.cli()
            .arg("verify")
            .arg(&dest)
            .arg("--trust")
            .arg(pubf(&other)),
        5,
    );

    // A pull that trusts only another key writes nothing.
    let dest2 = s.tmp.path().join("dest2");
    let err = fails_with(
        s.cli()
            .args(["pull", "fraud/m", "--trust"])
            .arg(pubf(&other))
            .arg("--to")
            .arg(&dest2),
        5,
    );
    assert!(err.contains("untrusted"), "{err}");
    assert!(!dest2.join("w.dat").exists());
    // An unsigned version pulled with --trust is refused too.
    fails_with(
        s.cli()
            .args(["pull", "open/m", "--trust"])
            .arg(pubf(&good))
            .arg("--to")
            .arg(s.tmp.path().join("d3")),
        5,
    );
    // Removing the publisher reopens the namespace to unsigned pushes.
    ok(s.admin()
        .args(["publisher", "remove", "fraud"])
        .arg(pubf(&good)));
    ok(s.cli().args(["push", "fraud/m"]).arg(&src));
}

/// Whether the client declared the digest at open or left it for the
/// server to find while the bytes arrived (a file hashed as it
/// uploads), the manifest must match what the server received.
#[test]
fn a_manifest_that_disagrees_with_the_uploaded_bytes_is_refused() {
    let s = Server::start();
    for (art, declared) in [("t/m", true), ("t/streamed", false)] {
        disagreeing_manifests_are_refused(&s, art, declared);
    }
}

fn disagreeing_manifests_are_refused(s: &Server, art: &str, declared: bool) {
    let body = vec![7u8; 5000];
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &body));
    let open = serde_json::json!({"name": art, "kind": "model",
        "files": [{"path": "w.dat", "size": 5000,
                   "sha256": if declared { sha.as_str() } else { "" }}]});
    let (_, text) = skeleton::curl(s, "POST", "/v1/uploads", Some(open.to_string().as_bytes()));
    let sess: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = sess["session_id"].as_str().unwrap().to_owned();
    let version = sess["version"].as_u64().unwrap();
    let (code, text) = skeleton::curl(s, "PUT", &format!("/v1/uploads/{id}/files/0"), Some(&body));
    assert_eq!(code, 200, "{text}");
    let up: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(up["sha256"], sha.as_str(), "the digest the server found");
    let name: vault_api::ArtifactName = art.parse().unwrap();
    let entry = |size: u64, sha: &str, path: &str| vault_api::FileEntry {
        path: path.into(),
        size,
        sha256: sha.into(),
    };
    let bad = [
        vec![entry(5001, &sha, "w.dat")],
        vec![entry(5000, &"ab".repeat(32), "w.dat")],
        vec![entry(5000, &sha, "w.dat"), entry(1, &sha, "extra.dat")],
        vec![entry(5000, &sha, "other.dat")],
    ];
    // Commit an unsigned manifest of `files` as `version`: the status and body.
    let commit = |version: u64, files: Vec<vault_api::FileEntry>| {
        let m = vault_manifest::Manifest::new(
            name.clone(),
            vault_api::Kind::Model,
            version,
            0,
            files,
            vec![],
        )
        .unwrap();
        let body = serde_json::json!({"envelope": m.to_envelope().to_json()}).to_string();
        skeleton::curl(
            s,
            "POST",
            &format!("/v1/uploads/{id}/commit"),
            Some(body.as_bytes()),
        )
    };
    for files in bad {
        let (code, text) = commit(version, files);
        assert_eq!(code, 422, "{text}");
    }
    // Wrong version number in the manifest.
    let (code, _) = commit(version + 1, vec![entry(5000, &sha, "w.dat")]);
    assert_eq!(code, 422);
    fails_with(s.cli().args(["show", art]), 4);
    // The honest manifest commits.
    let (code, text) = commit(version, vec![entry(5000, &sha, "w.dat")]);
    assert_eq!(code, 200, "{text}");
}

#[test]
fn alias_rollback_and_downgrade_are_refused() {
    let mut s = Server::start();
    let state = s.tmp.path().join("client-state");
    let src = s.tmp.path().join("src");
    for i in 1..=3u64 {
        random_file(&src.join("w.dat"), 1000 + i, i);
        ok(s.cli().args(["push", "t/m"]).arg(&src));
    }
    let pull = |s: &Server, extra: &[&str], to: &str| {
        let mut c = s.cli();
        c.arg("--state-dir")
            .arg(&state)
            .args(["--json", "pull", "t/m:stable"])
            .args(extra)
            .arg("--to")
            .arg(s.tmp.path().join(to));
        c
    };
    let a = json(&ok(s.cli().args(["--json", "alias", "t/m:2", "stable"])));
    assert_eq!(a["sequence"], 1);
    // `show` describes the record in words, not as signed JSON.
    let human = ok(s.cli().args(["show", "t/m:stable"]));
    assert!(
        human.contains("alias    stable → version 2, record sequence 1, expires 20")
            && (human.contains("(in 1d), signed by ed25519:")
                || human.contains("(in 23h 59m), signed by ed25519:")),
        "{human}"
    );
    let p = json(&ok(&mut pull(&s, &[], "p1")));
    assert_eq!(p["version"], 2);

    // An attacker's snapshot of the server state with the old record.
    s.terminate();
    let snapshot = s.tmp.path().join("meta-snapshot.redb");
    fs::copy(s.data_dir.join("meta.redb"), &snapshot).unwrap();
    s.restart();

    ok(s.cli().args(["alias", "t/m:3", "stable"]));
    assert_eq!(json(&ok(&mut pull(&s, &[], "p2")))["version"], 3);
    // Moved back to an older version: refused unless asked for.
    ok(s.cli().args(["alias", "t/m:2", "stable"]));
    let err = fails_with(&mut pull(&s, &[], "p3"), 5);
    assert!(err.contains("downgrade"), "{err}");
    assert!(!s.tmp.path().join("p3/w.dat").exists());
    assert_eq!(
        json(&ok(&mut pull(&s, &["--allow-downgrade"], "p4")))["version"],
        2
    );

    // Replay of the old signed record (rolled-back server state).
    s.terminate();
    fs::copy(&snapshot, s.data_dir.join("meta.redb")).unwrap();
    s.restart();
    let err = fails_with(&mut pull(&s, &[], "p5"), 5);
    assert!(err.contains("rollback"), "{err}");
    // Deleting the version an alias points at is refused.
    let err = fails_with(s.admin().args(["delete", "t/m:2"]), 1);
    assert!(err.contains("alias"), "{err}");
}

#[test]
fn an_expired_alias_record_is_refused_and_a_live_one_is_renewed() {
    // A frozen server: records are never renewed.
    let s = Server::start_with(&["--alias-ttl", "2s", "--no-alias-renewal"]);
    let state = s.tmp.path().join("state");
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 1000, 1);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&f));
    let pull = |extra: &[&str], to: &str| {
        let mut c = s.cli();
        c.arg("--state-dir")
            .arg(&state)
            .args(["pull", "t/m:stable"])
            .args(extra)
            .arg("--to")
            .arg(s.tmp.path().join(to));
        c
    };
    ok(&mut pull(&[], "a"));
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let err = fails_with(&mut pull(&[], "b"), 5);
    assert!(err.contains("expired"), "{err}");
    ok(&mut pull(&["--allow-expired"], "c"));

    // A normal server renews the record as it is read.
    let s2 = Server::start_with(&["--alias-ttl", "2s"]);
    ok(s2.cli().args(["push", "t/m", "--alias", "stable"]).arg(&f));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    ok(s2
        .cli()
        .arg("--state-dir")
        .arg(&state)
        .args(["pull", "t/m:stable", "--to"])
        .arg(s2.tmp.path().join("d")));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    ok(s2
        .cli()
        .arg("--state-dir")
        .arg(&state)
        .args(["pull", "t/m:stable", "--to"])
        .arg(s2.tmp.path().join("e")));
}

#[test]
fn an_alias_signed_by_another_key_is_refused() {
    let s = Server::start();
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 1000, 1);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&f));
    let wrong = keygen(&s, "not-the-server.key");
    let err = fails_with(
        s.cli()
            .args(["pull", "t/m:stable", "--server-key"])
            .arg(pubf(&wrong))
            .arg("--to")
            .arg(s.tmp.path().join("d")),
        5,
    );
    assert!(err.contains("untrusted"), "{err}");
    // The real server key (written by init) works.
    ok(s.cli()
        .args(["pull", "t/m:stable", "--server-key"])
        .arg(s.data_dir.join("server-signing.pub"))
        .arg("--to")
        .arg(s.tmp.path().join("d")));
}

/// A hostile server sends a manifest, signed by a key the client trusts,
/// whose paths try to escape the destination. Nothing is written.
#[test]
fn unsafe_manifest_paths_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::generate().unwrap();
    let pubfile = tmp.path().join("trusted.pub");
    fs::write(&pubfile, key.public().to_file_text()).unwrap();
    let sha = "00".repeat(32);
    let dest = tmp.path().join("dest");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&dest).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
    for bad in [
        "../escape.dat",
        "/etc/evil",
        "a/../../b",
        "a\\..\\..\\b",
        "nul\u{0}byte",
        "link/through-symlink.dat",
        ".mlvault/manifest.json",
    ] {
        let files = [
            serde_json::json!({"path": "fine.dat", "size": 1, "sha256": sha}),
            serde_json::json!({"path": bad, "size": 1, "sha256": sha}),
        ];
        let mut entries: Vec<vault_api::FileEntry> = files
            .iter()
            .map(|f| serde_json::from_value(f.clone()).unwrap())
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": entries.iter().map(|f| serde_json::json!({"name": f.path, "digest": {"sha256": f.sha256}})).collect::<Vec<_>>(),
            "predicateType": "https://mlvault.dev/manifest/v1",
            "predicate": {"name": "t/m", "kind": "model", "version": 1, "created": 0,
                "files": entries, "root_digest": vault_manifest::root_digest(&entries),
                "lineage": {"parents": []}},
        });
        let mut env = Envelope::wrap(statement.to_string().as_bytes());
        env.sign(&key).unwrap();
        let text = env.to_json();
        let resolved = serde_json::json!({"name": "t/m", "version": 1, "kind": "model",
            "digest": vault_manifest::digest_of(text.as_bytes()), "envelope": text, "created": 0});
        let addr = fake_server(resolved.to_string());
        let out = run(std::process::Command::new(bin("vault-cli"))
            .args(["--addr", &addr, "--token", "x", "pull", "t/m:1", "--trust"])
            .arg(&pubfile)
            .arg("--to")
            .arg(&dest));
        assert_eq!(out.status.code(), Some(5), "{bad:?}: {out:?}");
        assert!(tree(&outside).is_empty(), "{bad:?} wrote outside");
        assert!(
            !dest.join("fine.dat").exists(),
            "{bad:?}: a file was written before the check"
        );
    }
}
