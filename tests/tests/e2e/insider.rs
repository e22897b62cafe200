//! Insider attacks (issue #21): dedup, binding, quotas, revocation, admin separation.

use super::skeleton::curl_as;
use super::*;

fn audit_actions(s: &Server, action: &str) -> usize {
    fs::read_to_string(s.data_dir.join("audit/audit.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(&format!("\"action\":\"{action}\"")))
        .count()
}

#[test]
fn listings_hide_raw_pii_and_write_one_audit_entry() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let trainer = s.create_token("ml", "trainer", &["hr"], None);
    let pii = ["--sensitivity", "raw-pii"];
    s.push_dataset(&steward, "hr/people", "a.csv", b"a\n1\n", &pii);
    for i in 0..5 {
        s.push_dataset(&trainer, &format!("hr/plain-{i}"), "a.csv", b"a\n1\n", &[]);
    }
    let before = audit_actions(&s, "list");
    let seen = json(&ok(s
        .cli_with_token(&trainer)
        .args(["--json", "ls", "hr/"])));
    let names: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(!names.contains(&"hr/people"), "{names:?}");
    assert_eq!(
        audit_actions(&s, "list"),
        before + 1,
        "one entry per listing"
    );
    let stewards = json(&ok(s
        .cli_with_token(&steward)
        .args(["--json", "ls", "hr/"])));
    assert_eq!(stewards.as_array().unwrap().len(), 6);
}

#[test]
fn a_download_by_digest_does_not_name_what_it_may_not_read() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let outsider = s.create_token("fin-ml", "trainer", &["fin"], None);
    let pii = ["--sensitivity", "raw-pii"];
    let pushed = s.push_dataset(&steward, "hr/people", "a.csv", b"ssn\n123-45-6789\n", &pii);
    let digest = pushed["digest"].as_str().unwrap();
    let (code, body) = curl_as(
        &s,
        &outsider,
        "GET",
        &format!("/v1/versions/{digest}/files/0"),
        None,
    );
    let (missing_code, missing) = curl_as(
        &s,
        &outsider,
        "GET",
        &format!("/v1/versions/sha256:{}/files/0", "0".repeat(64)),
        None,
    );
    assert_eq!((code, missing_code), (404, 404), "{body} / {missing}");
    assert!(!body.contains("hr/") && !body.contains("6789"), "{body}");
}

/// Unfinished uploads hold metadata until they expire: a principal may
/// keep only so many open, listing only so many files (issue #21 item
/// 5). Another principal is not affected.
#[test]
fn upload_sessions_have_a_quota_per_principal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    fs::write(
        &cfg,
        "[http]\nmax_open_uploads = 2\nmax_pending_files = 5\nmax_pending_bytes = 4194304\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let a = s.create_token("a", "trainer", &["t"], None);
    let b = s.create_token("b", "trainer", &["t"], None);
    let open_sized = |token: &str, name: &str, files: usize, size: u64| {
        let entries: Vec<serde_json::Value> = (0..files)
            .map(|i| serde_json::json!({"path": format!("f{i}.dat"), "size": size, "sha256": ""}))
            .collect();
        let body = serde_json::json!({"name": name, "kind": "model", "files": entries});
        curl_as(
            &s,
            token,
            "POST",
            "/v1/uploads",
            Some(body.to_string().as_bytes()),
        )
    };
    let open = |token: &str, name: &str, files: usize| open_sized(token, name, files, 1);
    let (code, body) = open_sized(&a, "t/big", 2, 3 << 20);
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("would declare 6291456 bytes (at most 4194304)"),
        "{body}"
    );
    assert_eq!(open(&a, "t/one", 2).0, 200);
    let (code, body) = open(&a, "t/two", 4);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("would list 6 files (at most 5)"), "{body}");
    assert_eq!(open(&a, "t/two", 3).0, 200);
    let (code, body) = open(&a, "t/three", 1);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("2 open uploads (at most 2)"), "{body}");
    assert_eq!(
        open(&b, "t/four", 1).0,
        200,
        "another principal has its own quota"
    );
    // A whole push still works within the quota.
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), MIB, 93);
    ok(s.cli_with_token(&b).args(["push", "t/pushed"]).arg(&src));
}

/// An upload session that sees no activity for `upload_idle_secs`
/// expires and frees its quota; one whose files keep arriving does not.
#[test]
fn idle_upload_sessions_expire_and_busy_ones_live() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    fs::write(&cfg, "[http]\nupload_idle_secs = 3\nmax_open_uploads = 1\n").unwrap();
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let open = |token: &str, name: &str| {
        let entries: Vec<serde_json::Value> = (0..4)
            .map(|i| serde_json::json!({"path": format!("f{i}.dat"), "size": 1, "sha256": ""}))
            .collect();
        let body = serde_json::json!({"name": name, "kind": "model", "files": entries});
        let (code, body) = curl_as(
            &s,
            token,
            "POST",
            "/v1/uploads",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["expires_in"], 3);
        v["session_id"].as_str().unwrap().to_owned()
    };
    let put = |token: &str, id: &str, i: usize| {
        curl_as(
            &s,
            token,
            "PUT",
            &format!("/v1/uploads/{id}/files/{i}"),
            Some(b"x"),
        )
        .0
    };
    let busy_token = s.create_token("busy", "trainer", &["t"], None);
    let busy = open(&busy_token, "t/busy");
    let idle = open(&s.token, "t/idle");
    // One file every 1.5 s keeps `busy` alive past 3 s.
    for i in 0..4 {
        assert_eq!(
            put(&busy_token, &busy, i),
            200,
            "file {i} of the busy session"
        );
        std::thread::sleep(std::time::Duration::from_millis(1500));
    }
    assert_eq!(put(&s.token, &idle, 0), 404, "the idle session expired");
    // Its quota is free again.
    let _ = open(&s.token, "t/idle-again");
}

/// A deploy job with no saved state can refuse a replayed alias
/// record by its age (issue #21 item 9).
#[test]
fn pull_refuses_an_alias_record_older_than_max_record_age() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), 64 << 10, 94);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&src));
    let pull = |age: &str, state: &str| {
        run(s
            .cli()
            .env("MLVAULT_STATE_DIR", s.tmp.path().join(state))
            .args([
                "pull",
                "t/m:stable",
                "--no-cache",
                "--max-record-age",
                age,
                "--to",
            ])
            .arg(s.tmp.path().join(format!("d-{state}"))))
    };
    assert!(pull("1h", "fresh").status.success());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let old = pull("1s", "stateless");
    assert_eq!(old.status.code(), Some(5), "{old:?}");
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(err.contains("more than --max-record-age (1s)"), "{err}");
    assert!(!s.tmp.path().join("d-stateless/w.dat").exists());
}

/// Concurrent rotations each add their own KEK version: the key ring
/// is changed by compare-and-set, so none is lost and everything
/// pushed meanwhile stays readable (issue #21).
#[test]
fn concurrent_key_rotations_lose_no_version() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), 256 << 10, 95);
    let rotations: Vec<std::process::Child> = (0..8)
        .map(|_| {
            s.admin()
                .args(["key", "rotate"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..4 {
        ok(s.cli().args(["push", &format!("t/m{i}")]).arg(&src));
    }
    for mut c in rotations {
        assert!(c.wait().unwrap().success());
    }
    let st = json(&ok(s.admin().args(["--json", "key", "status"])));
    assert_eq!(st["current_version"], 9, "{st}");
    for i in 0..4 {
        let d = s.tmp.path().join(format!("d{i}"));
        ok(s.cli()
            .args(["pull", &format!("t/m{i}"), "--no-cache", "--to"])
            .arg(&d));
        assert_same_tree(&src, &d);
    }
}

#[test]
fn metrics_label_only_known_methods() {
    let s = Server::start();
    for m in ["BREW", "XYZZY", "GET"] {
        curl_as(&s, &s.token, m, "/healthz", None);
    }
    let (_, metrics) = curl_as(&s, &s.token, "GET", "/metrics", None);
    assert!(
        !metrics.contains("BREW") && !metrics.contains("XYZZY"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

/// `curl` sends `n` GETs of `path` with `token` over one connection;
/// the status codes, counted.
fn flood(s: &Server, token: &str, path: &str, n: usize) -> std::collections::HashMap<u16, usize> {
    let url = format!("{}{path}", s.addr);
    let out = std::process::Command::new("curl")
        .args(["-s", "--http1.1", "-w", "%{http_code}\\n"])
        .arg("--cacert")
        .arg(&test_tls().0)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .args((0..n).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output()
        .expect("curl");
    let mut codes = std::collections::HashMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        *codes.entry(l.trim().parse().unwrap_or(0)).or_insert(0) += 1;
    }
    codes
}

fn audit_entries(s: &Server) -> Vec<serde_json::Value> {
    fs::read_to_string(s.data_dir.join("audit/audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn floods_of_bad_tokens_and_listings_grow_the_audit_log_at_a_bounded_rate() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        cfg.path(),
        "[http]\nfailed_auth_per_minute = 10\n\
         [limits.roles.deployer]\nrequests_per_minute = 20\nburst = 20\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    let before = audit_entries(&s).len();

    let bad = flood(&s, "mlv_not_a_token", "/v1/artifacts", 300);
    assert_eq!(bad.get(&401), Some(&10), "{bad:?}");
    assert_eq!(bad.get(&429), Some(&290), "{bad:?}");
    // Another caller from the same address is served meanwhile.
    ok(s.cli().arg("ls"));
    let lists = flood(&s, &deployer, "/v1/artifacts", 200);
    let listed = lists.get(&200).copied().unwrap_or(0);
    assert!((20..=22).contains(&listed), "{lists:?}");
    assert_eq!(lists.get(&429).copied().unwrap_or(0), 200 - listed);
    ok(s.cli().arg("ls"));

    // The held-back events arrive as counted summaries (every 10 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let entries = loop {
        let e = audit_entries(&s);
        if e.iter().filter(|e| e["outcome"] == "flood").count() >= 2
            || std::time::Instant::now() > deadline
        {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let new = &entries[before..];
    let floods: Vec<_> = new.iter().filter(|e| e["outcome"] == "flood").collect();
    let auth = floods
        .iter()
        .find(|e| e["action"] == "authenticate")
        .expect("a summary of the bad-token flood");
    assert_eq!(auth["count"], 290);
    assert_eq!(auth["client"], "127.0.0.1");
    let limited = floods
        .iter()
        .find(|e| e["action"] == "rate_limited")
        .expect("a summary of the listing flood");
    assert_eq!(limited["principal"], "deploy");
    assert_eq!(limited["count"], (200 - listed) as u64);
    // 500 requests wrote: 10 failed authentications, one entry per
    // listing served, the two summaries and the CLI's own requests.
    let one_by_one = new
        .iter()
        .filter(|e| e["action"] == "authenticate" && e["outcome"] == "deny")
        .count();
    assert_eq!(one_by_one, 10);
    let deployer_lists = new
        .iter()
        .filter(|e| e["principal"] == "deploy" && e["action"] == "list")
        .count();
    assert_eq!(deployer_lists, listed);
    assert!(new.len() < 60, "{} entries for 500 requests", new.len());
    ok(s.admin().args(["audit", "verify"]));
}

/// Every byte of a transfer is charged to the byte budget (a pull
/// larger than a minute's budget waits for it), and revoking the
/// token cuts a pull that is already running (issue #21 items 6, 10).
#[test]
fn a_running_pull_is_throttled_per_byte_and_cut_by_revocation() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // 3 MiB a minute: the first 3 MiB go at once, the rest at 51 KiB/s.
    fs::write(
        cfg.path(),
        "[limits.roles.deployer]\nrequests_per_minute = 600\nburst = 60\nbytes_per_minute = 3145728\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    // Deployers pull only models the admission scan passes.
    let src = s.tmp.path().join("m.safetensors");
    safetensors_file(&src, 8 * MIB, 21);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&src));
    let deploy = s.create_token("api", "deployer", &["t"], None);
    let id = s.token_id("api");
    let dest = s.tmp.path().join("dest");
    let mut pull = s
        .cli_with_token(&deploy)
        .args(["pull", "t/m:stable", "--no-cache", "--to"])
        .arg(&dest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        pull.try_wait().unwrap().is_none(),
        "8 MiB went through a 3 MiB/min budget at once"
    );
    ok(s.admin().args(["token", "revoke", &id]));
    let revoked = std::time::Instant::now();
    let status = loop {
        if let Some(st) = pull.try_wait().unwrap() {
            break st;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(15),
            "the pull went on after its token was revoked"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut pull.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("revoked"), "{err}");
    assert!(
        !dest.join("m.dat").exists(),
        "a partial file reached the destination"
    );
    let entries = audit_entries(&s);
    let cut = entries
        .iter()
        .find(|e| e["action"] == "transfer_out" && e["principal"] == "api")
        .expect("the cut transfer is audited");
    assert_eq!(cut["outcome"], "incomplete");
    assert!(cut["bytes"].as_u64().unwrap() < 8 * MIB);
}

/// An alias pins the version it names: deleting that version needs the
/// alias gone first, which only an admin may do, audited; the alias's
/// sequence goes on afterwards (issue #21 item 9).
#[test]
fn an_admin_deletes_an_alias_so_the_version_it_pinned_can_be_deleted() {
    let s = Server::start();
    s.push_dataset(&s.token, "t/data", "a.csv", b"a\n1\n", &[]);
    let set = json(&ok(s.cli().args(["--json", "alias", "t/data:1", "pinned"])));
    ok(s.cli().args(["alias", "t/data:1", "pinned"]));
    let err = fails_with(s.admin().args(["delete", "t/data:1"]), 1);
    assert!(err.contains("alias `pinned`"), "{err}");
    // The trainer who set it may not delete it.
    fails_with(s.cli().args(["alias", "t/data", "pinned", "--delete"]), 3);
    // An alias deletion names the artifact, not a version.
    fails_with(
        s.admin().args(["alias", "t/data:1", "pinned", "--delete"]),
        2,
    );
    let gone = json(&ok(s
        .admin()
        .args(["--json", "alias", "t/data", "pinned", "--delete"])));
    assert_eq!(gone["version"], 1);
    fails_with(s.admin().args(["alias", "t/data", "pinned", "--delete"]), 4);
    fails_with(
        s.cli()
            .args(["pull", "t/data:pinned", "--to"])
            .arg(s.tmp.path().join("o")),
        4,
    );
    ok(s.admin().args(["delete", "t/data:1"]));
    let entries = audit_entries(&s);
    let del = entries
        .iter()
        .find(|e| e["action"] == "alias_delete")
        .expect("the deletion is audited");
    assert_eq!(del["resource"], "t/data:pinned");
    assert_eq!(del["principal"], "admin");
    // Set again, the alias continues its sequence: a client that saw
    // the old record takes the new one as newer, not as a rollback.
    s.push_dataset(&s.token, "t/data", "a.csv", b"a\n2\n", &[]);
    let again = json(&ok(s.cli().args(["--json", "alias", "t/data:2", "pinned"])));
    assert!(
        again["sequence"].as_u64().unwrap() > set["sequence"].as_u64().unwrap() + 1,
        "{again} after {set}"
    );
}

/// Someone who may write into a shared destination plants symbolic
/// links under it: `.mlvault` itself, its staging folder, the names
/// of the manifest, the report's temporary file and a partial file,
/// and a folder of the artifact. A pull, with and without the cache,
/// refuses or replaces each link and never writes outside (issue #21
/// item 7).
#[test]
fn links_planted_under_the_destination_are_never_followed() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("sub/w.dat"), 300_000, 71);
    fs::write(src.join("top.txt"), b"top").unwrap();
    let pushed = json(&ok(s.cli().args(["--json", "push", "t/m"]).arg(&src)));
    let sha = sha256_file(&src.join("sub/w.dat"));
    let outside = s.tmp.path().join("outside");
    let victim = outside.join("victim");
    let link = |from: &std::path::Path, to: &std::path::Path| {
        std::os::unix::fs::symlink(to, from).unwrap()
    };
    type Plant =
        fn(&std::path::Path, &std::path::Path, &str, &dyn Fn(&std::path::Path, &std::path::Path));
    let attacks: Vec<(&str, bool, Plant)> = vec![
        (".mlvault is a link", true, |dest, out, _, link| {
            link(&dest.join(".mlvault"), out)
        }),
        (
            "the staging folder is a link",
            true,
            |dest, out, _, link| {
                fs::create_dir_all(dest.join(".mlvault")).unwrap();
                link(&dest.join(".mlvault/partial"), out)
            },
        ),
        (
            "a folder of the artifact is a link",
            true,
            |dest, out, _, link| link(&dest.join("sub"), out),
        ),
        ("the manifest is a link", false, |dest, out, _, link| {
            fs::create_dir_all(dest.join(".mlvault")).unwrap();
            link(&dest.join(".mlvault/manifest.json"), &out.join("victim"))
        }),
        (
            "the manifest's temporary file is a link",
            false,
            |dest, out, _, link| {
                fs::create_dir_all(dest.join(".mlvault")).unwrap();
                link(
                    &dest.join(".mlvault/manifest.json.tmp"),
                    &out.join("victim"),
                )
            },
        ),
        ("a partial file is a link", false, |dest, out, sha, link| {
            fs::create_dir_all(dest.join(".mlvault/partial")).unwrap();
            link(
                &dest.join(format!(".mlvault/partial/{sha}-1")),
                &out.join("victim"),
            )
        }),
    ];
    for cache in [false, true] {
        for (what, refused, plant) in &attacks {
            let _ = fs::remove_dir_all(&outside);
            fs::create_dir_all(&outside).unwrap();
            fs::write(&victim, b"precious").unwrap();
            let dest = s.tmp.path().join(format!("dest-{cache}"));
            let _ = fs::remove_dir_all(&dest);
            fs::create_dir_all(&dest).unwrap();
            plant(&dest, &outside, &sha, &link);
            let mut pull = s.cli();
            pull.args(["pull", "t/m", "--to"]).arg(&dest);
            if !cache {
                pull.arg("--no-cache");
            }
            let out = run(&mut pull);
            let err = String::from_utf8_lossy(&out.stderr);
            if *refused {
                assert_eq!(out.status.code(), Some(5), "{what} (cache {cache}): {err}");
                assert!(err.contains("symbolic link"), "{what}: {err}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{what} (cache {cache}): {err}");
                ok(s.cli().arg("verify").arg(&dest));
                let m = fs::read_to_string(dest.join(".mlvault/manifest.json")).unwrap();
                assert!(m.contains("payload"), "{what}");
                assert!(pushed["digest"].is_string());
            }
            assert_eq!(
                fs::read(&victim).unwrap(),
                b"precious",
                "{what} (cache {cache})"
            );
            let names: Vec<_> = fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["victim"], "{what} (cache {cache}) wrote outside");
        }
    }
}

/// With `[tokens] second_admin_for`, a token that reads data (and any
/// new admin token) stays inactive until an admin other than its
/// creator approves; creation is audited as an alert and counted. An
/// admin token scoped to namespaces acts only on them and has no
/// server-wide duties (issue #21 item 8).
#[test]
fn data_tokens_need_a_second_admin_and_scoped_admins_stay_in_scope() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    fs::write(&cfg, "").unwrap();
    let mut s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    // The second admin exists before the rule is switched on.
    let bob = s.create_token("bob", "admin", &[], None);
    let ops = s.create_token("fraud-ops", "admin", &["fraud"], None);
    fs::write(
        &cfg,
        "[tokens]\nsecond_admin_for = [\"trainer\", \"deployer\", \"steward\"]\n",
    )
    .unwrap();
    s.restart();
    let create = |token: &str, principal: &str, role: &str, ns: &[&str]| {
        let mut c = s.cli_with_token(token);
        c.args([
            "--json",
            "token",
            "create",
            "--principal",
            principal,
            "--role",
            role,
        ]);
        for n in ns {
            c.args(["--namespace", n]);
        }
        c
    };
    let made = json(&ok(&mut create(&s.admin_token, "dpo", "steward", &["hr"])));
    assert_eq!(made["pending"], true, "{made}");
    let (secret, id) = (
        made["token"].as_str().unwrap().to_owned(),
        made["id"].as_str().unwrap().to_owned(),
    );
    let err = fails_with(s.cli_with_token(&secret).arg("ls"), 3);
    assert!(err.contains("awaits approval by a second admin"), "{err}");
    let err = fails_with(s.admin().args(["token", "approve", &id]), 3);
    assert!(err.contains("cannot approve it"), "{err}");
    let approved = json(&ok(s
        .cli_with_token(&bob)
        .args(["--json", "token", "approve", &id])));
    assert_eq!(approved["approved_by"], "bob");
    ok(s.cli_with_token(&secret).arg("ls"));
    fails_with(s.cli_with_token(&bob).args(["token", "approve", &id]), 1);
    // A new admin identity needs approval too: no admin approves its own
    // requests through a second name.
    let mallory = json(&ok(&mut create(&s.admin_token, "mallory", "admin", &[])));
    assert_eq!(mallory["pending"], true);
    let m = mallory["token"].as_str().unwrap().to_owned();
    fails_with(s.cli_with_token(&m).args(["token", "list"]), 3);
    // Audited as an alert, and counted.
    let entries = audit_entries(&s);
    let alert = entries
        .iter()
        .find(|e| e["action"] == "token_create" && e["detail"].as_str().unwrap().contains("dpo"))
        .expect("token creation is audited");
    assert_eq!(alert["outcome"], "alert");
    assert!(entries
        .iter()
        .any(|e| e["action"] == "token_approve" && e["principal"] == "bob"));
    let (_, _, metrics) = super::observe_https(&s, "/metrics", None);
    assert!(
        metrics.contains("mlvault_data_tokens_created_total{role=\"steward\"} 1"),
        "{metrics}"
    );

    // The scoped admin: only tokens within its namespaces ...
    fails_with(&mut create(&ops, "x", "trainer", &[]), 3);
    fails_with(&mut create(&ops, "x", "trainer", &["fraud", "hr"]), 3);
    let own = json(&ok(&mut create(&ops, "fraud-ci", "trainer", &["fraud"])));
    let listed = json(&ok(s
        .cli_with_token(&ops)
        .args(["--json", "token", "list"])));
    let mut principals: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["principal"].as_str().unwrap())
        .collect();
    principals.sort();
    assert_eq!(principals, ["fraud-ci", "fraud-ops"], "{listed}");
    fails_with(s.cli_with_token(&ops).args(["token", "revoke", &id]), 4);
    // ... no server-wide duties ...
    fails_with(s.cli_with_token(&ops).args(["audit", "tail"]), 3);
    fails_with(s.cli_with_token(&ops).args(["key", "status"]), 3);
    // ... and no artifact of another namespace.
    s.push_dataset(&s.token, "t/data", "a.csv", b"a\n1\n", &[]);
    fails_with(s.cli_with_token(&ops).args(["delete", "t/data:1"]), 3);
    ok(s.cli_with_token(&bob)
        .args(["token", "approve", own["id"].as_str().unwrap()]));
}
