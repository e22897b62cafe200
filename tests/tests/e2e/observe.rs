//! The audit chain, metrics, rate limits and exfiltration detection.

use super::*;

use super::observe_https as https;

#[test]
fn every_decision_and_transfer_is_in_a_verifiable_chain() {
    let mut s = Server::start();
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 300_000, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    ok(s.cli()
        .args(["pull", "t/m", "--to"])
        .arg(s.tmp.path().join("o")));
    fails_with(s.cli().args(["key", "status"]), 3);
    fails_with(s.cli_with_token("mlv_wrong").arg("ls"), 3);
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "50"])));
    let entries = tail.as_array().unwrap();
    let human = ok(s.admin().args(["audit", "tail", "-n", "1"]));
    let when = human.split_whitespace().nth(1).unwrap_or_default();
    assert!(when.len() == 24 && when.ends_with('Z'), "{human}");
    let has = |action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    assert!(
        has("push", "allow") && has("show", "allow") && has("pull", "allow"),
        "{tail:#}"
    );
    assert!(
        has("key_admin", "deny") && has("authenticate", "deny"),
        "{tail:#}"
    );
    let out = entries
        .iter()
        .find(|e| e["action"] == "transfer_out")
        .expect("transfer_out entry");
    assert_eq!(out["bytes"], 300_000);
    assert_eq!(out["principal"], "tester");
    assert!(out["token_id"].as_str().unwrap().starts_with("tok_"));
    assert!(out["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(!out["request_id"].as_str().unwrap().is_empty());
    let inn = entries
        .iter()
        .find(|e| e["action"] == "transfer_in")
        .expect("transfer_in entry");
    assert_eq!(inn["bytes"], 300_000);
    let text = fs::read_to_string(s.data_dir.join("audit/audit.log")).unwrap();
    assert!(
        !text.contains(&s.token) && !text.contains(&s.admin_token) && !text.contains("mlv_wrong")
    );
    let v = json(&ok(s.admin().args(["--json", "audit", "verify"])));
    assert!(v["first_bad"].is_null(), "{v}");
    assert!(v["checkpoints"].as_u64().unwrap() >= 1);

    // Tamper with the file on disk: edit, delete, reorder. Each is found.
    s.terminate();
    let original = fs::read_to_string(s.data_dir.join("audit/audit.log")).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    let target = lines
        .iter()
        .position(|l| l.contains("\"transfer_out\""))
        .unwrap();
    let mut edited = lines.clone();
    let e = edited[target].replace("\"bytes\":300000", "\"bytes\":3");
    edited[target] = &e;
    let mut deleted = lines.clone();
    deleted.remove(target);
    let mut reordered = lines.clone();
    reordered.swap(target, target + 1);
    for (what, version) in [
        ("edited", edited),
        ("deleted", deleted),
        ("reordered", reordered),
    ] {
        fs::write(
            s.data_dir.join("audit/audit.log"),
            version.join("\n") + "\n",
        )
        .unwrap();
        // Offline, the first bad line is named; the server refuses to
        // start on such a log (see `tamper`).
        let err = fails_with(
            std::process::Command::new(bin("vault-server"))
                .args(["audit", "verify", "--data-dir"])
                .arg(&s.data_dir),
            5,
        );
        assert!(
            err.contains(&format!("line {}", target + 1)),
            "{what}: {err}"
        );
    }
    fs::write(s.data_dir.join("audit/audit.log"), &original).unwrap();
    s.restart();
    ok(s.admin().args(["audit", "verify"]));
}

#[test]
fn an_unwritable_audit_log_fails_requests_closed_but_health_and_metrics_answer() {
    let s = Server::start();
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 1000, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    let log = s.data_dir.join("audit/audit.log");
    fs::remove_file(&log).unwrap();
    fs::create_dir(&log).unwrap();
    let err = fails_with(
        s.cli()
            .args(["pull", "t/m", "--to"])
            .arg(s.tmp.path().join("o")),
        7,
    );
    assert!(err.contains("audit log"), "{err}");
    assert!(!s.tmp.path().join("o/w.dat").exists());
    let (code, _, body) = https(&s, "/readyz", None);
    assert_eq!(code, 503);
    assert!(body.contains("audit log"), "{body}");
    assert_eq!(https(&s, "/healthz", None).0, 200);
    let (code, _, metrics) = https(&s, "/metrics", None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mlvault_audit_failures_total"),
        "{metrics}"
    );
    // Repaired, it serves again.
    fs::remove_dir(&log).unwrap();
    ok(s.cli()
        .args(["pull", "t/m", "--to"])
        .arg(s.tmp.path().join("o2")));
    assert_eq!(https(&s, "/readyz", None).0, 200);
}

#[test]
fn rate_limits_are_per_token_with_retry_after() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        cfg.path(),
        // One request back every 3 s: slow enough that a loaded machine
        // starting the CLI does not earn a fresh one in between.
        "[limits.roles.trainer]\nrequests_per_minute = 20\nburst = 5\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    let noisy = s.create_token("noisy", "trainer", &["t"], None);
    let quiet = s.create_token("quiet", "trainer", &["t"], None);
    let mut limited = None;
    for _ in 0..10 {
        let (code, head, _) = https(&s, "/v1/artifacts", Some(&noisy));
        if code == 429 {
            limited = Some(head);
            break;
        }
        assert_eq!(code, 200);
    }
    let head = limited.expect("no 429 after 10 requests with a burst of 5");
    assert!(head.to_lowercase().contains("retry-after:"), "{head}");
    // Another token of the same role is not slowed.
    for _ in 0..4 {
        assert_eq!(https(&s, "/v1/artifacts", Some(&quiet)).0, 200);
    }
    // The CLI retries with backoff, then gives up with exit code 6.
    for _ in 0..20 {
        https(&s, "/v1/artifacts", Some(&noisy));
    }
    let err = fails_with(s.cli_with_token(&noisy).args(["--retries", "0", "ls"]), 6);
    assert!(err.contains("rate limit"), "{err}");
    // With retries it waits as told (Retry-After, with jitter) and gets through.
    let started = std::time::Instant::now();
    ok(s.cli_with_token(&noisy).args(["--retries", "5", "ls"]));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "no backoff"
    );
    let (_, _, metrics) = https(&s, "/metrics", None);
    assert!(metrics.contains("mlvault_rate_limited_total"), "{metrics}");
}

#[test]
fn a_bytes_per_minute_limit_throttles_a_token_that_moves_too_much() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        cfg.path(),
        "[limits.roles.deployer]\nrequests_per_minute = 6000\nburst = 100\nbytes_per_minute = 3145728\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    let f = s.tmp.path().join("w.safetensors");
    // A whole minute's budget: the next pull finds it spent.
    safetensors_file(&f, 3 * MIB, 1);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&f));
    let deploy = s.create_token("api", "deployer", &["t"], None);
    let other = s.create_token("api2", "deployer", &["t"], None);
    let pull = |tok: &str, to: &str| {
        let mut c = s.cli_with_token(tok);
        c.args(["--retries", "0", "pull", "t/m:stable", "--no-cache", "--to"])
            .arg(s.tmp.path().join(to));
        c
    };
    ok(&mut pull(&deploy, "a"));
    // The budget is spent: the next pull gets bytes only as it refills
    // (51 KiB/s, about a minute for 3 MiB) ...
    let started = std::time::Instant::now();
    let mut slow = pull(&deploy, "b")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // ... while another token has its own budget.
    ok(&mut pull(&other, "c"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        slow.try_wait().unwrap().is_none(),
        "a spent budget let 3 MiB through in {:?}",
        started.elapsed()
    );
    let _ = slow.kill();
    let _ = slow.wait();
    assert!(!s.tmp.path().join("b/w.dat").exists());
}

#[test]
fn metrics_count_requests_bytes_and_failures() {
    let s = Server::start();
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 5000, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    ok(s.cli()
        .args(["pull", "t/m", "--to"])
        .arg(s.tmp.path().join("o")));
    fails_with(s.cli_with_token("mlv_nope").arg("ls"), 3);
    // The server offers HTTP/2 over TLS (curl takes it) ...
    let h2 = std::process::Command::new("curl")
        .args([
            "-sf",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--cacert",
        ])
        .arg(&test_tls().0)
        .arg(format!("{}/healthz", s.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2");
    let (code, head, m) = https(&s, "/metrics", None);
    assert_eq!(code, 200, "{head}");
    // ... and the CLI, built here with reqwest's HTTP/2 unified in,
    // still moves files over HTTP/1.1: a connection per file.
    assert!(
        m.contains("route=\"/healthz\",method=\"GET\",status=\"200\",version=\"HTTP/2.0\""),
        "{m}"
    );
    assert!(
        !m.contains("{index}\",method=\"GET\",status=\"200\",version=\"HTTP/2.0\""),
        "{m}"
    );
    for needle in [
        "mlvault_http_requests_total{route=\"/v1/versions/{digest}/files/{index}\",method=\"GET\",status=\"200\",version=\"HTTP/1.1\"}",
        "mlvault_http_request_duration_seconds_bucket",
        "mlvault_bytes_out_total 5000",
        "mlvault_bytes_in_total 5000",
        "mlvault_auth_failures_total 1",
        "mlvault_sealed 0",
    ] {
        assert!(m.contains(needle), "missing `{needle}` in:\n{m}");
    }
    // Names of artifacts never become metric labels.
    assert!(!m.contains("t/m"));
}

#[test]
fn a_token_that_pulls_everything_is_flagged_and_suspended_others_are_not() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        cfg.path(),
        "[exfiltration]\nwindow_secs = 600\nmax_artifacts = 3\nsuspend = true\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    // Models the admission scan passes: deployers pull only such.
    let f = s.tmp.path().join("w.safetensors");
    for i in 0..5 {
        safetensors_file(&f, 1000, 50 + i);
        ok(s.cli().args(["push", &format!("t/m{i}")]).arg(&f));
    }
    ok(s.cli().args(["alias", "t/m0:1", "stable"]));
    let scraper = s.create_token("scraper", "trainer", &["t"], None);
    let deploy = s.create_token("api", "deployer", &["t"], None);
    for i in 0..3 {
        ok(s.cli_with_token(&scraper)
            .args(["pull", &format!("t/m{i}"), "--to"])
            .arg(s.tmp.path().join(format!("s{i}"))));
    }
    let err = fails_with(
        s.cli_with_token(&scraper)
            .args(["pull", "t/m3", "--to"])
            .arg(s.tmp.path().join("s3")),
        3,
    );
    assert!(err.contains("suspended"), "{err}");
    let err = fails_with(s.cli_with_token(&scraper).arg("ls"), 3);
    assert!(err.contains("suspended"), "{err}");
    // A normal deploy token is untouched.
    for _ in 0..3 {
        ok(s.cli_with_token(&deploy)
            .args(["pull", "t/m0:stable", "--to"])
            .arg(s.tmp.path().join("d")));
    }
    let tail = json(&ok(s
        .admin()
        .args(["--json", "audit", "tail", "-n", "100"])));
    let alert = tail
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "exfiltration_alert")
        .expect("alert in audit");
    assert_eq!(alert["principal"], "scraper");
    let (_, _, m) = https(&s, "/metrics", None);
    assert!(m.contains("mlvault_exfiltration_alerts_total 1"), "{m}");
    // An admin lifts the suspension.
    let id = s.token_id("scraper");
    // The token list says so (issue #21: suspended tokens showed as active).
    let list = ok(s.admin().args(["token", "list"]));
    let line = list.lines().find(|l| l.contains("scraper")).unwrap();
    assert!(line.trim_end().ends_with("suspended"), "{list}");
    let listed = json(&ok(s.admin().args(["--json", "token", "list"])));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["principal"] == "scraper" && x["suspended"] == true));
    ok(s.admin().args(["token", "unsuspend", &id]));
    ok(s.cli_with_token(&scraper).arg("ls"));
}
