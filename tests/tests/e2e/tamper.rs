//! Tamper evidence of the audit log, and private data directories.

use super::*;
use std::ffi::OsStr;

fn start_args(s: &Server) -> Vec<std::ffi::OsString> {
    vec![
        "--data-dir".into(),
        s.data_dir.clone().into(),
        "--unseal-identity".into(),
        s.identity.clone().into(),
    ]
}

fn refused(s: &Server) -> String {
    let args = start_args(s);
    let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let (code, err) = failed_start(&refs);
    assert_eq!(code, Some(2), "{err}");
    err
}

/// `vault-server audit verify` on the data directory: (exit code, output).
fn offline(s: &Server, extra: &[&OsStr]) -> (Option<i32>, String) {
    let out = run(std::process::Command::new(bin("vault-server"))
        .args(["audit", "verify", "--data-dir"])
        .arg(&s.data_dir)
        .args(extra));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

fn log_lines(s: &Server) -> Vec<String> {
    fs::read_to_string(s.data_dir.join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn busy(s: &Server) {
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 10_000, 5);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    for _ in 0..3 {
        ok(s.cli().arg("ls"));
    }
}

/// A log cut back after a checkpoint verifies on its own, but not
/// against the checkpoint anchored in the metadata: the server refuses
/// to start; an auditor's kept checkpoint proves the cut offline; an
/// explicit reseal moves the log aside and records why (issue #22).
#[test]
fn a_cut_audit_log_stops_the_server_until_an_admin_reseals_it() {
    let mut s = Server::start();
    busy(&s);
    let kept = s.tmp.path().join("kept-checkpoint");
    fs::write(&kept, ok(s.admin().args(["audit", "checkpoint"]))).unwrap();
    assert!(fs::read_to_string(&kept)
        .unwrap()
        .starts_with("mlvault-audit/ed25519:"));
    busy(&s);
    assert_eq!(s.terminate(), Some(0));
    let (code, text) = offline(&s, &["--checkpoint".as_ref(), kept.as_os_str()]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact"), "{text}");

    let lines = log_lines(&s);
    let cut = lines.len() / 2;
    fs::write(
        s.data_dir.join("audit/audit.log"),
        lines[..cut].join("\n") + "\n",
    )
    .unwrap();
    // An attacker who also rewrites the exported copy of the anchor
    // does not fool the auditor's own checkpoint.
    fs::remove_file(s.data_dir.join("audit/checkpoint")).unwrap();
    let (code, text) = offline(&s, &["--checkpoint".as_ref(), kept.as_os_str()]);
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains("entries were cut or the log deleted"),
        "{text}"
    );
    let err = refused(&s);
    assert!(
        err.contains("does not verify") && err.contains("--reseal-audit"),
        "{err}"
    );

    // The admin reseals with a reason; the old log is kept aside.
    s.extra = vec![
        "--reseal-audit".into(),
        "restored from the 03:00 backup".into(),
    ];
    s.restart();
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "50"])));
    let reseal = tail
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "audit_reseal")
        .expect("the reseal is the new log's first entry");
    assert!(reseal["detail"]
        .as_str()
        .unwrap()
        .contains("restored from the 03:00 backup"));
    let aside: Vec<_> = fs::read_dir(s.data_dir.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit.log.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    ok(s.admin().args(["audit", "verify"]));
    s.extra.clear();
    s.restart();
    ok(s.cli().arg("ls"));
}

/// Deleting the log, editing an entry or reordering two stop the
/// server and are named offline; a hash-chained entry appended without
/// the server's seal is never signed over by a restart.
#[test]
fn deleted_edited_reordered_and_forged_logs_are_each_caught() {
    let mut s = Server::start();
    busy(&s);
    assert_eq!(s.terminate(), Some(0));
    let path = s.data_dir.join("audit/audit.log");
    let orig = log_lines(&s);
    let write = |ls: &[String]| {
        use std::os::unix::fs::PermissionsExt;
        fs::write(&path, ls.join("\n") + "\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    };

    let mut edited = orig.clone();
    edited[2] = edited[2].replacen("tester", "mallory", 1);
    assert_ne!(edited[2], orig[2]);
    write(&edited);
    let (code, text) = offline(&s, &[]);
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains("entry 3") && text.contains("edited"),
        "{text}"
    );
    assert!(refused(&s).contains("does not verify"));

    let mut reordered = orig.clone();
    reordered.swap(3, 4);
    write(&reordered);
    let (code, text) = offline(&s, &[]);
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("reordered"), "{text}");

    fs::remove_file(&path).unwrap();
    let (code, text) = offline(&s, &[]);
    assert_eq!(code, Some(5), "{text}");
    assert!(
        text.contains("missing") && text.contains("deleted"),
        "{text}"
    );
    assert!(refused(&s).contains("missing"));

    // A forged tail: chained and hashed right, but not sealed.
    let mut forged = orig.clone();
    let last: serde_json::Value = serde_json::from_str(orig.last().unwrap()).unwrap();
    // Fields in the order the server writes them (the hash covers the
    // entry's JSON with `hash` empty).
    let head = format!(
        r#"{{"seq":{},"time_ms":{},"kind":"event","principal":"ghost","action":"pull","resource":"hr/people:1","outcome":"allow","prev":"{}","hash":"#,
        last["seq"].as_u64().unwrap() + 1,
        last["time_ms"],
        last["hash"].as_str().unwrap()
    );
    let h = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}\n{head}\"\"}}", last["hash"].as_str().unwrap()).as_bytes(),
    );
    forged.push(format!("{head}\"{}\"}}", hex::encode(h.as_ref())));
    write(&forged);
    let (code, text) = offline(&s, &[]);
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("forged tail"), "{text}");
    s.restart();
    let log = fs::read_to_string(&path).unwrap();
    assert!(!log.contains("ghost"), "the forged entry was kept");
    assert!(log.contains("audit_recover"));
    ok(s.admin().args(["audit", "verify"]));
}

/// `run` refuses a data directory, or a file in it, that group or
/// others may read or write, naming it and the fix (issue #22 item 3).
#[test]
fn a_data_directory_open_to_other_users_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = Server::start();
    s.kill();
    for (path, mode) in [
        (s.data_dir.clone(), 0o755),
        (s.data_dir.join("meta.redb"), 0o644),
        (s.data_dir.join("audit/audit.log"), 0o660),
        (s.data_dir.join("blobs"), 0o755),
    ] {
        let before = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(before & 0o077, 0, "{} was created open", path.display());
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let err = refused(&s);
        assert!(
            err.contains(&path.display().to_string()) && err.contains("chmod -R go-rwx"),
            "{err}"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(before)).unwrap();
    }
    s.restart();
    ok(s.cli().arg("ls"));
}

/// Every change is recorded by an entry written with it (`outcome` `ok`,
/// after the `allow` decision), naming what it changed: the push's
/// version and digest, the alias's new sequence, the token, the key
/// version; and the log still verifies.
#[test]
fn every_change_is_recorded_with_what_it_changed() {
    let mut s = Server::start();
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 10_000, 9);
    let pushed = json(&ok(s.cli().args(["--json", "push", "t/m"]).arg(&f)));
    let digest = pushed["digest"].as_str().unwrap().to_owned();
    ok(s.cli().args(["alias", "t/m:1", "stable"]));
    ok(s.cli().args(["alias", "t/m:1", "stable"]));
    ok(s.admin().args(["alias", "t/m", "stable", "--delete"]));
    s.create_token("robot", "deployer", &["t"], None);
    let id = s.token_id("robot");
    ok(s.admin().args(["token", "revoke", &id]));
    ok(s.admin().args(["key", "rotate"]));
    ok(s.admin().args(["delete", "t/m:1"]));

    let tail = json(&ok(s
        .admin()
        .args(["--json", "audit", "tail", "-n", "200"])));
    let entries = tail.as_array().unwrap();
    let changes = |action: &str| -> Vec<&serde_json::Value> {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == "ok")
            .collect()
    };
    let commit = changes("push_commit");
    assert_eq!(commit.len(), 1, "{tail}");
    assert_eq!(commit[0]["resource"], "t/m:1");
    assert!(commit[0]["detail"].as_str().unwrap().contains(&digest));
    let moves = changes("alias_set");
    assert_eq!(moves.len(), 2, "{tail}");
    assert!(moves[1]["detail"].as_str().unwrap().contains("sequence 2"));
    assert_eq!(changes("alias_delete").len(), 1, "{tail}");
    // A token that reads data is created with an `alert` outcome.
    assert!(
        entries.iter().any(|e| e["action"] == "token_create"
            && e["outcome"] == "alert"
            && e["detail"]
                .as_str()
                .unwrap()
                .contains("principal robot role deployer")),
        "{tail}"
    );
    let revoked = changes("token_revoke");
    assert_eq!(revoked.len(), 1, "{tail}");
    assert_eq!(revoked[0]["resource"], format!("token:{id}"));
    let rotated = changes("key_rotate");
    assert_eq!(rotated.len(), 1, "{tail}");
    assert_eq!(rotated[0]["detail"], "2", "the new KEK version: {tail}");
    let deleted = changes("version_delete");
    assert_eq!(deleted.len(), 1, "{tail}");
    assert!(deleted[0]["detail"].as_str().unwrap().contains(&digest));
    // Each change entry comes after the decision that allowed it.
    let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| entries.iter().position(pred).unwrap();
    assert!(
        pos(&|e| e["action"] == "push" && e["outcome"] == "allow")
            < pos(&|e| e["action"] == "push_commit")
    );
    ok(s.admin().args(["audit", "verify"]));
    assert_eq!(s.terminate(), Some(0));
    let (code, out) = offline(&s, &[]);
    assert_eq!(code, Some(0), "{out}");
}
