//! Promotion gates: an alias that a gate guards moves only on signed
//! evidence about the exact bytes; the signed record carries the grant,
//! and `pull --require-gate` / `verify --require-gate` check it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use super::*;

const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// The example evaluation harness, run with `token`'s client environment.
fn harness(s: &Server, token: &str, args: &[&OsStr]) -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new("../examples/eval/robustness.py"))
        .args(args);
    for (k, v) in s.cli_with_token(token).get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.env("VAULT_CLI", bin("vault-cli"));
    c
}

fn keygen(s: &Server, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = s.tmp.path().join("keys");
    fs::create_dir_all(&dir).unwrap();
    let key = dir.join(name);
    ok(s.cli().args(["keygen", "--out"]).arg(&key));
    let public = dir.join(format!("{name}.pub"));
    (key, public)
}

/// `verify --require-gate GATE DIR` finds a problem (exit 5): its report.
fn verify_fails(s: &Server, dir: &Path, gate: &str) -> String {
    let out = run(s.cli().args(["verify", "--require-gate", gate]).arg(dir));
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pull t/m:GATE --require-gate GATE --json` with `token`, into `dest`.
fn gated_pull(s: &Server, token: &str, gate: &str, dest: &Path) -> serde_json::Value {
    let r = format!("t/m:{gate}");
    json(&ok(s
        .cli_with_token(token)
        .args(["--json", "pull", &r, "--require-gate", gate, "--to"])
        .arg(dest)))
}

/// Attach a statement with `predicate` (JSON) about `r`, signed by `key`.
fn attest(s: &Server, r: &str, predicate: &str, key: &Path) {
    let file = s.tmp.path().join("predicate.json");
    fs::write(&file, predicate).unwrap();
    ok(s.cli()
        .args(["attest", r, "--predicate-type", TEST_RESULT, "--predicate"])
        .arg(&file)
        .arg("--sign-key")
        .arg(key));
}

fn alias_refused(s: &Server, r: &str, alias: &str) -> String {
    fails_with(s.cli().args(["alias", r, alias]), 3)
}

#[test]
fn production_moves_only_on_signed_evidence_and_pulls_check_the_grant() {
    let s = Server::start();
    let (eval_key, eval_pub) = keygen(&s, "eval");
    let (stranger, _) = keygen(&s, "stranger");
    ok(s.admin()
        .args(["attestor", "add", "adversarial-eval"])
        .arg(&eval_pub)
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let src = s.tmp.path().join("model");
    ok(&mut harness(
        &s,
        &s.token,
        &["make-model".as_ref(), src.as_os_str()],
    ));
    ok(s.cli().args(["push", "t/m"]).arg(&src));

    // Nothing yet: every missing piece is named, and nothing moved.
    let err = alias_refused(&s, "t/m:1", "production");
    for says in [
        "promotion gate `production`",
        "adversarial-eval",
        "1 approval(s) by principals other than the pusher `tester` with role steward (has 0)",
    ] {
        assert!(err.contains(says), "{says}: {err}");
    }
    fails_with(s.cli().args(["show", "t/m:production"]), 4);

    // The evaluation job pulls the exact version, evaluates it, attests.
    let pulled = s.tmp.path().join("eval");
    ok(s.cli().args(["pull", "t/m:1", "--to"]).arg(&pulled));
    let strict = ok(&mut harness(
        &s,
        &s.token,
        &[
            "evaluate".as_ref(),
            pulled.as_os_str(),
            "--epsilon".as_ref(),
            "0.5".as_ref(),
            "--sign-key".as_ref(),
            eval_key.as_os_str(),
        ],
    ));
    assert!(strict.contains("FAILED"), "{strict}");
    let steward = s.create_token("dpo", "steward", &["t"], None);
    ok(s.cli_with_token(&steward)
        .args(["approve", "t/m:1", "--reason", "eval report read"]));
    // The newest run by the attestor FAILED: refused, with the reason.
    let err = alias_refused(&s, "t/m:1", "production");
    assert!(err.contains("says FAILED"), "{err}");
    assert!(!err.contains("approval"), "{err}");
    // A PASSED statement signed by a key no attestor holds is not kept.
    let pred = s.tmp.path().join("pass.json");
    fs::write(&pred, r#"{"result": "PASSED"}"#).unwrap();
    let err = fails_with(
        s.cli()
            .args([
                "attest",
                "t/m:1",
                "--predicate-type",
                TEST_RESULT,
                "--predicate",
            ])
            .arg(&pred)
            .arg("--sign-key")
            .arg(&stranger),
        5,
    );
    assert!(err.contains("not signed by an attestor trusted"), "{err}");
    alias_refused(&s, "t/m:1", "production");
    // The harness at its default strength passes it (a later second: of
    // results accepted in the same second, a FAILED one decides).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let passed = ok(&mut harness(
        &s,
        &s.token,
        &[
            "evaluate".as_ref(),
            pulled.as_os_str(),
            "--sign-key".as_ref(),
            eval_key.as_os_str(),
        ],
    ));
    assert!(passed.contains("PASSED"), "{passed}");
    // The steward's token is revoked (stolen, or the steward left): its
    // approval no longer counts, and another steward approves.
    ok(s.admin().args(["token", "revoke", &s.token_id("dpo")]));
    let err = alias_refused(&s, "t/m:1", "production");
    assert!(err.contains("with role steward (has 0)"), "{err}");
    let steward = s.create_token("dpo2", "steward", &["t"], None);
    ok(s.cli_with_token(&steward)
        .args(["approve", "t/m:1", "--reason", "second reviewer"]));
    let moved = json(&ok(s.cli().args([
        "--json",
        "alias",
        "t/m:1",
        "production",
    ])));
    let record: serde_json::Value =
        serde_json::from_str(moved["signed"].as_str().unwrap()).unwrap();
    let rec: serde_json::Value = serde_json::from_str(record["record"].as_str().unwrap()).unwrap();
    let evidence = rec["gate"]["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 3, "scan, test result, approval: {rec}");
    let policy_check = ok(Command::new(bin("vault-server"))
        .args(["policy", "check"])
        .arg(Path::new("../policies")));
    assert!(
        policy_check.contains(rec["gate"]["digest"].as_str().unwrap()),
        "the record names the shipped gate: {policy_check}"
    );

    let shown = ok(s.cli().args(["show", "t/m:production"]));
    assert!(
        shown.contains("granted by the promotion gate `production`"),
        "{shown}"
    );
    let (_, _, metrics) = observe_https(&s, "/metrics", None);
    assert!(
        metrics.contains("mlvault_gate_decisions_total{outcome=\"failed\"} 4"),
        "{metrics}"
    );
    // A push that names the gated alias keeps the version and says why
    // the alias did not move.
    safetensors_file(&src.join("model.safetensors"), 4096, 9);
    let err = fails_with(
        s.cli()
            .args(["push", "t/m", "--alias", "production"])
            .arg(&src),
        3,
    );
    assert!(
        err.contains("pushed t/m:2") && err.contains("alias `production` was not moved"),
        "{err}"
    );

    // A deploy job requires the gate: it gets the version and the grant.
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    let dest = s.tmp.path().join("serve");
    let out = gated_pull(&s, &deployer, "production", &dest);
    assert_eq!(out["gate"]["gate"], rec["gate"]["digest"], "{out}");
    assert_eq!(out["gate"]["evidence"].as_array().unwrap().len(), 3);
    let listed = out["attestations"].as_array().unwrap();
    assert_eq!(listed.len(), 4, "two results and two approvals: {out}");
    assert!(listed.iter().any(|a| a["result"] == "FAILED"));
    // Offline, later: the promotion record kept beside the manifest.
    let verified = ok(s
        .cli()
        .args(["verify", "--require-gate", "production"])
        .arg(&dest));
    assert!(
        verified.contains("promotion gate `production`"),
        "{verified}"
    );
    let err = verify_fails(&s, &dest, "staging");
    assert!(err.contains("not for the gate `staging`"), "{err}");

    // Tampered promotion records are caught offline.
    let kept = dest.join(".mlvault/promotion.json");
    let original = fs::read_to_string(&kept).unwrap();
    let mut p: serde_json::Value = serde_json::from_str(&original).unwrap();
    p["evidence"].as_array_mut().unwrap().pop();
    fs::write(&kept, p.to_string()).unwrap();
    let err = verify_fails(&s, &dest, "production");
    assert!(err.contains("not delivered"), "{err}");
    let mut p: serde_json::Value = serde_json::from_str(&original).unwrap();
    let mut signed: serde_json::Value =
        serde_json::from_str(p["record"].as_str().unwrap()).unwrap();
    let inner = signed["record"]
        .as_str()
        .unwrap()
        .replace("\"version\":1", "\"version\":2");
    assert_ne!(inner, signed["record"].as_str().unwrap());
    signed["record"] = inner.into();
    p["record"] = signed.to_string().into();
    fs::write(&kept, p.to_string()).unwrap();
    let err = verify_fails(&s, &dest, "production");
    assert!(err.contains("signature"), "{err}");

    // An alias no gate guards moves freely; its record carries no grant,
    // so a pull that requires a gate places nothing.
    ok(s.cli().args(["alias", "t/m:1", "stable"]));
    let none = s.tmp.path().join("none");
    let err = fails_with(
        s.cli_with_token(&deployer)
            .args(["pull", "t/m:stable", "--require-gate", "stable", "--to"])
            .arg(&none),
        5,
    );
    assert!(err.contains("carries no gate grant"), "{err}");
    assert!(!none.join("model.safetensors").exists());
    // The gate is named by the alias the reference names.
    fails_with(
        s.cli_with_token(&deployer)
            .args(["pull", "t/m:stable", "--require-gate", "production", "--to"])
            .arg(&none),
        2,
    );

    // Approvals never come from the principal that pushed.
    let data = s.tmp.path().join("rows.csv");
    fs::write(&data, "a,b\n1,2\n").unwrap();
    ok(s.cli_with_token(&steward)
        .args(["push", "t/rows", "--kind", "dataset"])
        .arg(&data));
    let err = fails_with(s.cli_with_token(&steward).args(["approve", "t/rows:1"]), 3);
    assert!(err.contains("cannot approve it"), "{err}");

    // The audit log names each attestation, approval and the gated move.
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "80"])));
    let tail = tail.as_array().unwrap();
    assert!(tail.iter().filter(|e| e["action"] == "attest").count() >= 2);
    assert!(tail.iter().any(|e| e["action"] == "approve"));
    let gated = tail
        .iter()
        .find(|e| e["action"] == "alias_set" && e["resource"] == "t/m:production")
        .unwrap_or_else(|| panic!("no gated move: {tail:?}"));
    assert!(
        gated["detail"].as_str().unwrap().contains("gate sha256:"),
        "{gated}"
    );
}

/// Evidence made by another DSSE implementation (securesystemslib, as an
/// evaluation pipeline outside mlvault would sign it) is kept and counted
/// by the gate; the grant names it and the deploy job's pull checks it.
#[test]
fn a_gate_counts_a_test_result_signed_by_another_dsse_tool() {
    let Some(py) = interop_python() else { return };
    let s = Server::start();
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 4096, 11);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let shown = json(&ok(s.cli().args(["--json", "show", "t/m:1"])));
    let digest = shown["digest"].as_str().unwrap();
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "t/m:1", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": TEST_RESULT,
        "predicate": {"result": "PASSED", "configuration": [], "passedTests": ["pgd-linf"]},
    });
    let dir = s.tmp.path().join("sslib");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("statement.json"), statement.to_string()).unwrap();
    let envelope = ok(Command::new(&py)
        .arg(Path::new("../scripts/interop/dsse_tool.py"))
        .arg("sign")
        .arg(&dir)
        .arg(dir.join("statement.json")));
    fs::write(dir.join("envelope.json"), envelope.trim()).unwrap();
    // Their key, as PEM, is the attestor's.
    ok(s.admin()
        .args(["attestor", "add", "adversarial-eval"])
        .arg(dir.join("key.pub.pem"))
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let kept = json(&ok(s
        .cli()
        .args(["--json", "attest", "t/m:1", "--envelope"])
        .arg(dir.join("envelope.json"))));
    assert_eq!(kept["result"], "PASSED", "{kept}");
    let steward = s.create_token("dpo", "steward", &["t"], None);
    ok(s.cli_with_token(&steward).args(["approve", "t/m:1"]));
    ok(s.cli().args(["alias", "t/m:1", "production"]));
    let out = gated_pull(&s, &s.token, "production", &s.tmp.path().join("d"));
    let evidence = out["gate"]["evidence"].as_array().unwrap();
    assert!(
        evidence.iter().any(|e| e["digest"] == kept["digest"]),
        "the grant names their envelope: {out}"
    );
}

/// A gate file with an error is refused at reload (the running gates stay)
/// and at start; evidence older than the gate accepts no longer counts;
/// renewed records keep the grant of the move; a break-glass policy moves
/// past a failed gate, audited, with no grant in the record.
#[test]
fn gate_files_are_validated_and_evidence_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("policies");
    super::access::copy_policies(&live);
    // A break-glass rule: admins may move a gated alias past a failed gate.
    let guards = fs::read_to_string(live.join("guards.cedar")).unwrap();
    let glass = guards.replace(
        "when { context.gate == \"failed\" };",
        "when { context.gate == \"failed\" }\nunless { principal in Vault::Role::\"admin\" };",
    );
    assert_ne!(glass, guards);
    fs::write(live.join("guards.cedar"), glass).unwrap();
    let gate = r#"
[[gate]]
alias = "canary"
namespaces = ["t"]
scan = ["pass"]

[[gate.evidence]]
predicate_type = "https://in-toto.io/attestation/test-result/v0.1"
max_age = "6s"
"#;
    fs::write(live.join("gates.toml"), gate).unwrap();
    let mut s = Server::start_with(&["--policies", live.to_str().unwrap(), "--alias-ttl", "4s"]);
    let (key, public) = keygen(&s, "eval");
    ok(s.admin()
        .args(["attestor", "add", "ci-eval"])
        .arg(&public)
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 4096, 5);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    // `production` is not guarded by this folder's gates; `canary` is.
    ok(s.cli().args(["alias", "t/m:1", "production"]));
    let err = alias_refused(&s, "t/m:1", "canary");
    assert!(err.contains("test-result"), "{err}");
    attest(&s, "t/m:1", r#"{"result": "WARNED"}"#, &key);
    let err = alias_refused(&s, "t/m:1", "canary");
    assert!(err.contains("says WARNED"), "{err}");
    // A later second: of results accepted in one second, WARNED decides.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let attested = std::time::Instant::now();
    attest(&s, "t/m:1", r#"{"result": "PASSED"}"#, &key);
    ok(s.cli().args(["alias", "t/m:1", "canary"]));

    // A broken gate file: refused at reload, the running gate stays.
    fs::write(
        live.join("gates.toml"),
        gate.replace("namespaces", "namespace"),
    )
    .unwrap();
    let err = fails_with(s.admin().args(["policy", "reload"]), 1);
    assert!(
        err.contains("gates.toml:") && err.contains("stays in force"),
        "{err}"
    );
    fs::write(live.join("gates.toml"), gate.replace("6s", "3 weeks")).unwrap();
    let err = fails_with(s.admin().args(["policy", "reload"]), 1);
    assert!(
        err.contains("gates.toml") && err.contains("duration"),
        "{err}"
    );

    // Past the gate's age the same evidence no longer moves the alias;
    // the record granted earlier is renewed (ttl 4s) with its grant.
    let expired = std::time::Duration::from_secs(8);
    std::thread::sleep(expired.saturating_sub(attested.elapsed()));
    let err = alias_refused(&s, "t/m:1", "canary");
    assert!(err.contains("more than 6s"), "{err}");
    let dest = s.tmp.path().join("d");
    let out = gated_pull(&s, &s.token, "canary", &dest);
    assert!(
        out["alias_sequence"].as_u64().unwrap() >= 2,
        "renewed: {out}"
    );
    assert_eq!(
        out["gate"]["evidence"].as_array().unwrap().len(),
        2,
        "{out}"
    );

    // Past a failed gate only by the break-glass rule: audited as an
    // override, and the record carries no grant a deploy job would accept.
    ok(s.admin().args(["alias", "t/m:1", "canary"]));
    let err = fails_with(
        s.cli()
            .args(["pull", "t/m:canary", "--require-gate", "canary", "--to"])
            .arg(s.tmp.path().join("glass")),
        5,
    );
    assert!(err.contains("carries no gate grant"), "{err}");
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "20"])));
    assert!(
        tail.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "alias_set" && e["outcome"] == "override"),
        "{tail}"
    );

    // A server does not start on a broken gate file.
    s.terminate();
    let err = super::access::refused_with_policies(&s, &live);
    assert!(err.contains("gates.toml"), "{err}");
}

/// On PostgreSQL, where an insider can edit rows: a promotion record
/// tampered with in the database, and an older one put back (a replay),
/// are both refused by `pull --require-gate`.
#[test]
fn tampered_and_replayed_promotion_records_are_refused() {
    let Some(url) = pg_database("e2e gates") else {
        return;
    };
    let (s, _cfg) = start_on_postgres(&url, &[]);
    let (key, public) = keygen(&s, "eval");
    ok(s.admin()
        .args(["attestor", "add", "adversarial-eval"])
        .arg(&public)
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let steward = s.create_token("dpo", "steward", &["t"], None);
    let src = s.tmp.path().join("m");
    for v in 1..=2u64 {
        safetensors_file(&src.join("model.safetensors"), 4096, v);
        ok(s.cli().args(["push", "t/m"]).arg(&src));
        let r = format!("t/m:{v}");
        attest(&s, &r, r#"{"result": "PASSED"}"#, &key);
        ok(s.cli_with_token(&steward).args(["approve", &r]));
    }
    let psql = |sql: &str| ok(Command::new("psql").arg(&url).args(["-qAt", "-c", sql]));
    let select = "SELECT convert_from(v, 'UTF8') FROM mlvault_kv WHERE tbl = 'aliases'";
    ok(s.cli().args(["alias", "t/m:1", "production"]));
    let first = psql(select).trim().to_owned();
    assert!(first.contains("\"version\":1"), "{first}");
    ok(s.cli().args(["alias", "t/m:2", "production"]));
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    let pull = |to: &str| {
        let mut c = s.cli_with_token(&deployer);
        c.args([
            "pull",
            "t/m:production",
            "--require-gate",
            "production",
            "--to",
        ])
        .arg(s.tmp.path().join(to));
        c
    };
    ok(&mut pull("a"));
    // Tampered: the signed record's digests edited in the database.
    psql(
        "UPDATE mlvault_kv SET v = convert_to(replace(convert_from(v, 'UTF8'), 'sha256:', 'sha256:0'), 'UTF8') \
         WHERE tbl = 'aliases'",
    );
    let err = fails_with(&mut pull("b"), 5);
    assert!(err.contains("signature"), "{err}");
    // Replayed: version 1's record, granted by the same gate, put back.
    assert!(!first.contains("$j$"));
    psql(&format!(
        "UPDATE mlvault_kv SET v = convert_to($j${first}$j$, 'UTF8') WHERE tbl = 'aliases'"
    ));
    let err = fails_with(&mut pull("c"), 5);
    assert!(err.contains("rollback"), "{err}");
    assert!(!s.tmp.path().join("c/model.safetensors").exists());
}

/// An insider with write access to the database pastes the production
/// record's grant into the record of an ungated alias. The server renews
/// records past half their life, but only what verifies with its key: the
/// forged grant is never re-signed, and the deploy job refuses it.
#[test]
fn a_grant_pasted_in_the_database_is_not_renewed_into_a_valid_record() {
    let Some(url) = pg_database("e2e gate laundering") else {
        return;
    };
    let (s, _cfg) = start_on_postgres(&url, &["--alias-ttl", "4s"]);
    let (key, public) = keygen(&s, "eval");
    ok(s.admin()
        .args(["attestor", "add", "adversarial-eval"])
        .arg(&public)
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 4096, 3);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    attest(&s, "t/m:1", r#"{"result": "PASSED"}"#, &key);
    let steward = s.create_token("dpo", "steward", &["t"], None);
    ok(s.cli_with_token(&steward).args(["approve", "t/m:1"]));
    ok(s.cli().args(["alias", "t/m:1", "production"]));
    ok(s.cli().args(["alias", "t/m:1", "stable"]));
    let psql = |sql: &str| ok(Command::new("psql").arg(&url).args(["-qAt", "-c", sql]));
    let row = |alias: &str| -> serde_json::Value {
        let text = psql(&format!(
            "SELECT convert_from(v, 'UTF8') FROM mlvault_kv WHERE tbl = 'aliases' \
             AND convert_from(v, 'UTF8') LIKE '%\"alias\":\"{alias}\"%'"
        ));
        serde_json::from_str(text.trim()).unwrap()
    };
    let inner = |entry: &serde_json::Value| -> (serde_json::Value, serde_json::Value) {
        let signed: serde_json::Value =
            serde_json::from_str(entry["signed"].as_str().unwrap()).unwrap();
        let rec = serde_json::from_str(signed["record"].as_str().unwrap()).unwrap();
        (signed, rec)
    };
    let (_, production) = inner(&row("production"));
    assert!(production["gate"].is_object(), "{production}");
    let mut stable = row("stable");
    let (mut signed, mut rec) = inner(&stable);
    assert!(rec.get("gate").is_none(), "{rec}");
    rec["gate"] = production["gate"].clone();
    signed["record"] = rec.to_string().into();
    stable["signed"] = signed.to_string().into();
    let forged = stable.to_string();
    assert!(!forged.contains("$j$"));
    psql(&format!(
        "UPDATE mlvault_kv SET v = convert_to($j${forged}$j$, 'UTF8') WHERE tbl = 'aliases' \
         AND convert_from(v, 'UTF8') LIKE '%\"alias\":\"stable\"%'"
    ));
    // Past half the record's life: a read would renew it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let err = fails_with(
        s.cli()
            .args(["pull", "t/m:stable", "--require-gate", "stable", "--to"])
            .arg(s.tmp.path().join("d")),
        5,
    );
    assert!(err.contains("signature"), "{err}");
    assert!(!s.tmp.path().join("d/model.safetensors").exists());
    assert!(s.log_text().contains("not renewed"), "{}", s.log_text());
    // The untouched production record is still renewed, with its grant.
    let out = gated_pull(&s, &s.token, "production", &s.tmp.path().join("p"));
    assert!(out["alias_sequence"].as_u64().unwrap() >= 2, "{out}");
}
