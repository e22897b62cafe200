//! A vault whose metadata lives in PostgreSQL: the real server on a real
//! database, over TLS (scripts/test.sh starts one and sets MLVAULT_PG_URL;
//! without it these tests say so and pass, unless MLVAULT_REQUIRE_PG is
//! set); two replicas on it and on a real Garage, one of them killed; and
//! the config rules that keep metadata where it is meant to be.

use super::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_vault_on_postgres_serves_and_survives_a_restart() {
    let Some(url) = pg_database("e2e serve") else {
        return;
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("server.toml");
    // Over TLS to the database, verified against the test cluster's CA.
    assert!(
        std::env::var_os("MLVAULT_PG_CA").is_some(),
        "MLVAULT_PG_CA (scripts/postgres.sh sets it)"
    );
    write_postgres_config(&cfg, &url);
    let cfg_arg = cfg.to_str().unwrap();
    let mut s = Server::start_init_with(&["--config", cfg_arg], &["--config", cfg_arg]);
    assert!(
        !s.data_dir.join("meta.redb").exists(),
        "the metadata is in the database, not in the data directory"
    );

    let src = s.tmp.path().join("model");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("weights.dat"), vec![7u8; 3 * MIB as usize + 5]).unwrap();
    let pushed = json(&ok(s
        .cli()
        .args(["--json", "push", "team/pg-model"])
        .arg(&src)));
    assert_eq!(pushed["version"], 1);
    let dest = s.tmp.path().join("deploy");
    ok(s.cli().args(["pull", "team/pg-model:1", "--to"]).arg(&dest));
    assert_eq!(
        fs::read(dest.join("weights.dat")).unwrap(),
        fs::read(src.join("weights.dat")).unwrap()
    );

    // A replica joins only with the vault's unseal identity.
    let stranger = tempfile::tempdir().unwrap();
    let other_id = stranger.path().join("other.identity");
    ok(Command::new(bin("vault-server"))
        .args(["init", "--data-dir"])
        .arg(stranger.path().join("elsewhere"))
        .arg("--unseal-identity")
        .arg(&other_id));
    let out = run(Command::new(bin("vault-server"))
        .args(["init", "--join", "--data-dir"])
        .arg(stranger.path().join("replica"))
        .arg("--unseal-identity")
        .arg(&other_id)
        .args(["--config", cfg_arg]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not open with this unseal identity"),
        "{out:?}"
    );
    assert!(
        !stranger.path().join("replica/master.key.age").exists(),
        "a refused join leaves no key behind"
    );

    // And a new vault cannot be initialized over one that exists.
    let again = tempfile::tempdir().unwrap();
    let out = run(Command::new(bin("vault-server"))
        .args(["init", "--data-dir"])
        .arg(again.path().join("data"))
        .arg("--unseal-identity")
        .arg(again.path().join("id"))
        .args(["--config", cfg_arg]));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a vault"));

    // Restarted, the server finds everything in the database.
    s.restart();
    let listed = ok(s.cli().args(["ls", "team/pg-model"]));
    assert!(listed.contains("team/pg-model"), "{listed}");
    let dest2 = s.tmp.path().join("deploy2");
    ok(s.cli().args(["pull", "team/pg-model", "--to"]).arg(&dest2));
    assert_eq!(
        fs::read(dest2.join("weights.dat")).unwrap().len(),
        3 * MIB as usize + 5
    );
    ok(s.cli().arg("verify").arg(&dest2));

    // A change and its audit entry commit together: when the entry cannot
    // be written (here a trigger refuses it, as a full disk would), the
    // alias does not move either, and its sequence is not used up.
    ok(Command::new("psql").arg(&url).args([
        "-q",
        "-c",
        "CREATE FUNCTION refuse_alias_entries() RETURNS trigger AS $$ BEGIN \
           IF NEW.line LIKE '%\"action\":\"alias_set\"%' THEN RAISE EXCEPTION 'no space left'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql",
        "-c",
        "CREATE TRIGGER refuse_alias_entries BEFORE INSERT ON mlvault_audit \
         FOR EACH ROW EXECUTE FUNCTION refuse_alias_entries()",
    ]));
    let out = run(s.cli().args(["alias", "team/pg-model:1", "stable"]));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit log"),
        "{out:?}"
    );
    let missing = run(s
        .cli()
        .args(["pull", "team/pg-model:stable", "--to"])
        .arg(s.tmp.path().join("never")));
    assert_eq!(missing.status.code(), Some(4), "{missing:?}");
    ok(Command::new("psql").arg(&url).args([
        "-q",
        "-c",
        "DROP TRIGGER refuse_alias_entries ON mlvault_audit",
    ]));
    let set = json(&ok(s.cli().args([
        "--json",
        "alias",
        "team/pg-model:1",
        "stable",
    ])));
    assert_eq!(
        set["sequence"], 1,
        "the refused move used no sequence: {set}"
    );
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "20"])));
    let moved = tail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alias_set")
        .collect::<Vec<_>>();
    assert_eq!(moved.len(), 1, "one entry for the one move: {tail}");
    assert!(
        moved[0]["detail"].as_str().unwrap().contains("sequence 1"),
        "{tail}"
    );
    ok(s.admin().args(["audit", "verify"]));

    // Someone with access to the database cuts the audit chain back to an
    // earlier sealed entry and moves the head with it: the chain verifies
    // on its own, but not against the checkpoint the server exported.
    assert_eq!(s.terminate(), Some(0));
    ok(Command::new("psql").arg(&url).args([
        "-q",
        "-c",
        "WITH cut AS (SELECT max(seq) AS seq FROM mlvault_audit WHERE line::json->>'sig' IS NOT NULL AND seq < (SELECT max(seq) - 2 FROM mlvault_audit)) \
         DELETE FROM mlvault_audit WHERE seq > (SELECT seq FROM cut)",
        "-c",
        "UPDATE mlvault_audit_head SET seq = a.seq, hash = a.line::json->>'hash' \
         FROM (SELECT seq, line FROM mlvault_audit ORDER BY seq DESC LIMIT 1) a WHERE id = 1",
    ]));
    let data_dir = s.data_dir.clone();
    let verify = || {
        run(Command::new(bin("vault-server"))
            .args(["audit", "verify", "--data-dir"])
            .arg(&data_dir)
            .args(["--config", cfg_arg]))
    };
    let out = verify();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checkpoint covers"),
        "{out:?}"
    );
    let (code, err) = failed_start(&[
        "--data-dir".as_ref(),
        s.data_dir.as_os_str(),
        "--unseal-identity".as_ref(),
        s.identity.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no longer reaches"), "{err}");
    // Once understood, the loss is recorded in the chain, which goes on.
    s.extra = vec![
        "--config".into(),
        cfg_arg.into(),
        "--reseal-audit".into(),
        "restored from last night's backup".into(),
    ];
    s.restart();
    let tail = ok(s.admin().args(["audit", "tail", "-n", "20"]));
    assert!(tail.contains("audit_rollback"), "{tail}");
    assert_eq!(s.terminate(), Some(0));
    let out = verify();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_metadata_section_that_contradicts_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    for (text, says) in [
        // A database named, but the backend left at its default (redb):
        // the metadata would silently stay in the data directory.
        (
            "[metadata]\nurl = \"postgres://u@127.0.0.1/v\"\n",
            "for backend = \"postgres\"",
        ),
        ("[metadata]\nbackend = \"postgress\"\n", "unknown variant"),
        (
            "[metadata]\nbackend = \"postgres\"\nconnections = 0\n",
            "connections must be at least 1",
        ),
    ] {
        fs::write(&cfg, text).unwrap();
        let data = dir.path().join("data");
        let out = run(Command::new(bin("vault-server"))
            .args(["init", "--data-dir"])
            .arg(&data)
            .arg("--unseal-identity")
            .arg(dir.path().join("id"))
            .arg("--config")
            .arg(&cfg));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(says), "{text}: {err}");
        assert!(!data.exists(), "a refused init creates nothing");
    }
}

/// Wait up to `secs` for `done`; how long it took.
fn within(secs: u64, what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs}s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn two_replicas_share_one_vault_and_one_survives_the_others_death() {
    let Some(url) = pg_database("e2e replicas") else {
        return;
    };
    let Some(garage) = Garage::start("two replicas on PostgreSQL and Garage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    garage.server_config(&cfg);
    let text = fs::read_to_string(&cfg).unwrap()
        + &postgres_config(&url)
        // A job or an upload whose replica died is taken over, or swept,
        // within seconds.
        + "[jobs]\nlease_secs = 3\n[http]\nupload_idle_secs = 2\n";
    fs::write(&cfg, text).unwrap();
    let policies = dir.path().join("policies");
    super::access::copy_policies(&policies);
    let (cfg_arg, pol_arg) = (cfg.to_str().unwrap(), policies.to_str().unwrap());
    let args = ["--config", cfg_arg, "--policies", pol_arg];
    let mut a = Server::start_init_with(&["--config", cfg_arg], &args);
    let mut b = a.replica(&["--config", cfg_arg], &args);

    // A push through one is pulled, verified, through the other.
    let src = a.tmp.path().join("model");
    random_file(&src.join("weights.dat"), 2 * MIB + 3, 1);
    ok(a.cli().args(["push", "t/r"]).arg(&src));
    let got = b.tmp.path().join("from-b");
    ok(b.cli().args(["pull", "t/r:1", "--to"]).arg(&got));
    assert_same_tree(&src, &got);
    random_file(&src.join("weights.dat"), MIB, 2);
    let pushed = json(&ok(b.cli().args(["--json", "push", "t/r"]).arg(&src)));
    assert_eq!(pushed["version"], 2, "one version sequence for both");
    let got = a.tmp.path().join("from-a");
    ok(a.cli().args(["pull", "t/r:2", "--to"]).arg(&got));
    assert_same_tree(&src, &got);

    // An alias moved on one is seen, with its next sequence, on the other.
    let on_a = json(&ok(a.cli().args(["--json", "alias", "t/r:1", "stable"])));
    assert_eq!(on_a["sequence"], 1);
    let pulled = json(&ok(b
        .cli()
        .args(["--json", "pull", "t/r:stable", "--to"])
        .arg(b.tmp.path().join("prod1"))));
    assert_eq!(pulled["version"], 1);
    let on_b = json(&ok(b.cli().args(["--json", "alias", "t/r:2", "stable"])));
    assert_eq!(on_b["sequence"], 2, "{on_b}");
    let pulled = json(&ok(a
        .cli()
        .args(["--json", "pull", "t/r:stable", "--to"])
        .arg(a.tmp.path().join("prod2"))));
    assert_eq!(pulled["version"], 2);

    // A token revoked on one is refused by the other within a second.
    let t = a.create_token("ci", "deployer", &["t"], None);
    ok(b.cli_with_token(&t).args(["ls", "t/r"]));
    ok(a.admin().args(["token", "revoke", &a.token_id("ci")]));
    let took = within(1, "revocation reaching the other replica", || {
        !run(b.cli_with_token(&t).args(["ls", "t/r"]))
            .status
            .success()
    });
    eprintln!("revocation seen by the other replica after {took:?}");

    // A policy reload on one reaches the other within a second.
    let roles = fs::read_to_string(policies.join("roles.cedar")).unwrap();
    let strict = roles.replace("Vault::Role::\"trainer\"", "Vault::Role::\"nobody\"");
    fs::write(policies.join("roles.cedar"), strict).unwrap();
    ok(a.admin().args(["policy", "reload"]));
    let took = within(1, "a policy reload reaching the other replica", || {
        !run(b.cli().args(["push", "t/r"]).arg(&src))
            .status
            .success()
    });
    eprintln!("policy reload followed by the other replica after {took:?}");
    fs::write(policies.join("roles.cedar"), &roles).unwrap();
    ok(b.admin().args(["policy", "reload"]));
    within(1, "the reload back reaching the first replica", || {
        run(a.cli().args(["push", "t/r"]).arg(&src))
            .status
            .success()
    });

    // Replica A dies (SIGKILL) while it runs a job and takes pushes.
    let steward = a.create_token("dpo", "steward", &["hr"], None);
    let raw = super::jobs::dataset(&a, 60_000);
    ok(a.cli_with_token(&steward)
        .args(["push", "hr/customers", "--kind", "dataset"])
        .arg(&raw));
    let spec = a.tmp.path().join("spec.toml");
    fs::write(&spec, super::jobs::customers_spec()).unwrap();
    let job = ok(a
        .cli_with_token(&steward)
        .args(["anonymize", "hr/customers:1", "--to", "hr/anon", "--spec"])
        .arg(&spec))
    .trim()
    .to_owned();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let acknowledged = std::sync::Mutex::new(Vec::new());
    /// Stops the pushes however the scope ends (a failed wait included).
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    std::thread::scope(|scope| {
        let (a_ref, stop, acked) = (&a, &stop, &acknowledged);
        let _stop = StopOnDrop(stop);
        scope.spawn(move || {
            for i in 0u64.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let d = a_ref.tmp.path().join(format!("k{i}"));
                random_file(&d.join("w.dat"), 256 * 1024 + i, 100 + i);
                let out = run(a_ref.cli().args(["--json", "push", "t/k"]).arg(&d));
                if out.status.success() {
                    let v = json(&String::from_utf8_lossy(&out.stdout));
                    acked
                        .lock()
                        .unwrap()
                        .push((d, v["version"].as_u64().unwrap()));
                }
            }
        });
        // Killed during pushes: at least one acknowledged first (each now
        // also waits for its admission scan), then while the job runs.
        within(30, "a push acknowledged by the first replica", || {
            !acked.lock().unwrap().is_empty()
        });
        // Rows are counted live by the replica that runs the job.
        within(60, "the job running on the first replica", || {
            let st = json(&ok(a_ref
                .cli_with_token(&steward)
                .args(["--json", "job", "status", &job])));
            st["state"] == "running" && st["rows"].as_u64().unwrap_or(0) > 0
        });
        ok(Command::new("kill").args(["-KILL", &a_ref.pid().to_string()]));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    a.kill();
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(!acknowledged.is_empty(), "no push finished before the kill");

    // The other keeps serving: it takes the job over once A's claim runs
    // out, and the output is committed once.
    let done = json(&ok(b
        .cli_with_token(&steward)
        .args(["--json", "job", "wait", &job])));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(done["attempts"].as_u64().unwrap() >= 2, "{done}");
    let ls = json(&ok(b
        .cli_with_token(&steward)
        .args(["--json", "ls", "hr/anon"])));
    assert_eq!(
        ls[0]["versions"].as_array().unwrap().len(),
        1,
        "committed once: {ls}"
    );
    assert!(
        b.log_text().contains("taking over an anonymization job"),
        "{}",
        b.log_text()
    );
    // Every acknowledged push pulls, verified, through the survivor.
    for (d, v) in &acknowledged {
        let to = b.tmp.path().join(format!("k-back-{v}"));
        ok(b.cli().args(["pull", &format!("t/k:{v}"), "--to"]).arg(&to));
        assert_same_tree(d, &to);
    }

    // The upload the dead replica left open is swept by the survivor.
    std::thread::sleep(Duration::from_secs(4));
    // Both replicas' entries form one chain that verifies.
    let stopped = b.terminate();
    let log = b.log_text();
    let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert_eq!(
        stopped,
        Some(0),
        "the survivor did not stop on SIGTERM:\n{tail}"
    );
    let out = run(Command::new(bin("vault-server"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&b.data_dir)
        .args(["--config", cfg_arg]));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(report["intact"], true, "{report}");
    assert!(report["entries"].as_u64().unwrap() > 20, "{report}");
    // And the metadata agrees with the blob store.
    let out = run(Command::new(bin("vault-server"))
        .args(["fsck", "--json", "--data-dir"])
        .arg(&b.data_dir)
        .args(["--config", cfg_arg]));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_single_node_vault_migrates_to_postgres_and_verifies() {
    let Some(url) = pg_database("e2e migrate") else {
        return;
    };
    // A single-node vault on redb with versions, an alias, a token.
    let mut s = Server::start();
    let src = s.tmp.path().join("model");
    safetensors_file(&src.join("weights.safetensors"), MIB + 7, 3);
    ok(s.cli().args(["push", "t/mig"]).arg(&src));
    safetensors_file(&src.join("weights.safetensors"), 2 * MIB, 4);
    ok(s.cli().args(["push", "t/mig"]).arg(&src));
    ok(s.cli().args(["alias", "t/mig:1", "stable"]));
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    assert_eq!(s.terminate(), Some(0));
    let migrate = |to: &str, extra: &[&str]| {
        let mut c = Command::new(bin("vault-server"));
        c.args(["migrate", "--from"])
            .arg(&s.data_dir)
            .arg("--unseal-identity")
            .arg(&s.identity)
            .args(extra)
            .env("MLVAULT_METADATA_URL", to);
        if let Ok(ca) = std::env::var("MLVAULT_PG_CA") {
            c.args(["--ca-file", &ca]);
        }
        c
    };
    // A log that does not verify is not copied.
    let log = s.data_dir.join("audit/audit.log");
    let kept = fs::read(&log).unwrap();
    let edited = String::from_utf8(kept.clone())
        .unwrap()
        .replacen("\"tester\"", "\"mallory\"", 1);
    fs::write(&log, edited).unwrap();
    let err = fails_with(&mut migrate(&url, &[]), 5);
    assert!(err.contains("audit log does not verify"), "{err}");
    fs::write(&log, &kept).unwrap();

    let out = json(&ok(&mut migrate(&url, &["--json"])));
    assert_eq!(out["verified"], true, "{out}");
    assert_eq!(out["versions"], 2, "{out}");
    assert_eq!(out["aliases"], 1, "{out}");
    assert!(out["audit_entries"].as_u64().unwrap() > 5, "{out}");
    // Once done, the database holds a vault: a second copy is refused.
    let err = fails_with(&mut migrate(&url, &[]), 2);
    assert!(err.contains("already holds a vault"), "{err}");

    // The same data directory serves from the database.
    let cfg = s.tmp.path().join("pg.toml");
    write_postgres_config(&cfg, &url);
    s.extra = vec!["--config".into(), cfg.to_str().unwrap().into()];
    s.restart();
    let d = s.tmp.path().join("prod");
    let p = json(&ok(s
        .cli_with_token(&deployer)
        .args(["--json", "pull", "t/mig:stable", "--to"])
        .arg(&d)));
    assert_eq!(p["version"], 1);
    let d2 = s.tmp.path().join("v2");
    ok(s.cli().args(["pull", "t/mig:2", "--to"]).arg(&d2));
    assert_same_tree(&src, &d2);
    let moved = json(&ok(s.cli().args(["--json", "alias", "t/mig:2", "stable"])));
    assert_eq!(moved["sequence"], 2, "the alias sequence goes on: {moved}");
    // The audit log goes on as the shared chain, one chain from the start.
    let stopped = s.terminate();
    let log = s.log_text();
    let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert_eq!(
        stopped,
        Some(0),
        "the server did not stop on SIGTERM:\n{tail}"
    );
    let out = run(Command::new(bin("vault-server"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(&s.data_dir)
        .args(["--config", cfg.to_str().unwrap()]));
    let report = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        report["entries"].as_u64().unwrap() > out_entries_floor(&kept),
        "{report}"
    );
}

/// Entries in a log file's text.
fn out_entries_floor(log: &[u8]) -> u64 {
    log.iter().filter(|b| **b == b'\n').count() as u64
}
