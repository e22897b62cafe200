//! The admission scan on the server: every push is judged from the stored
//! blobs; with `[scan] mode = "enforce"` (the default) a `fail` refuses the
//! push and nothing of it is kept; with `record` it is kept with its
//! verdict. The verdict is signed by the server key as an in-toto
//! statement about the version, and `show` and `pull` check and display it.

use super::*;

/// `os.system("echo owned")` as a protocol-0 pickle.
const RUNS_CODE: &[u8] = b"cos\nsystem\n(S'echo owned'\ntR.";

/// A safetensors file of `n` bytes of U8 data.
fn safetensors(path: &std::path::Path, n: usize) {
    let header = format!(r#"{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend(std::iter::repeat_n(7u8, n));
    fs::write(path, b).unwrap();
}

fn model_with_payload(s: &Server) -> std::path::PathBuf {
    let dir = s.tmp.path().join("evil-model");
    fs::create_dir_all(&dir).unwrap();
    safetensors(&dir.join("model.safetensors"), 4096);
    fs::write(dir.join("extra.pkl"), RUNS_CODE).unwrap();
    dir
}

#[test]
fn a_push_that_fails_the_scan_is_refused_and_nothing_is_kept() {
    let mut s = Server::start();
    let before = blob_files(&s.data_dir).len();
    let err = fails_with(
        s.cli().args(["push", "t/evil"]).arg(model_with_payload(&s)),
        5,
    );
    assert!(err.contains("admission scan"), "{err}");
    assert!(err.contains("extra.pkl"), "{err}");
    assert!(err.contains("os.system"), "{err}");
    let listed = ok(s.cli().args(["ls"]));
    assert!(!listed.contains("t/evil"), "{listed}");
    assert_eq!(blob_files(&s.data_dir).len(), before, "no blob is kept");
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "30"])));
    assert!(
        tail.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "scan_refuse" && e["outcome"] == "deny"),
        "{tail}"
    );

    // A clean model passes; its signed verdict is shown and pulled.
    let good = s.tmp.path().join("good");
    fs::create_dir_all(&good).unwrap();
    safetensors(&good.join("model.safetensors"), 1 << 20);
    fs::write(good.join("config.json"), b"{\"layers\": 2}").unwrap();
    let pushed = json(&ok(s.cli().args(["--json", "push", "t/good"]).arg(&good)));
    assert_eq!(pushed["scan"], "pass", "{pushed}");
    let shown = json(&ok(s.cli().args(["--json", "show", "t/good:1"])));
    assert_eq!(shown["scan"]["verdict"], "pass", "{shown}");
    assert_eq!(shown["scan"]["scanner"], "vault-scan/0.1.0", "{shown}");
    assert!(shown["scan"]["signed_by"]
        .as_str()
        .unwrap()
        .starts_with("ed25519:"));
    let pulled = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/good:1", "--to"])
        .arg(s.tmp.path().join("out"))));
    assert_eq!(pulled["scan"]["verdict"], "pass", "{pulled}");
    assert_eq!(s.terminate(), Some(0));
    let fsck = run(std::process::Command::new(bin("vault-server"))
        .args(["fsck", "--data-dir"])
        .arg(&s.data_dir));
    assert!(fsck.status.success(), "{fsck:?}");
}

#[test]
fn in_record_mode_a_failing_push_is_kept_with_its_verdict() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(cfg.path(), "[scan]\nmode = \"record\"\n").unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    let pushed = json(&ok(s
        .cli()
        .args(["--json", "push", "t/evil"])
        .arg(model_with_payload(&s))));
    assert_eq!(pushed["scan"], "fail", "{pushed}");
    let shown = ok(s.cli().args(["show", "t/evil:1"]));
    assert!(shown.contains("scan     fail"), "{shown}");
    assert!(shown.contains("extra.pkl"), "{shown}");
    let shown = json(&ok(s.cli().args(["--json", "show", "t/evil:1"])));
    let findings = shown["scan"]["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f.as_str().unwrap().contains("pickle.import")),
        "{shown}"
    );
    let pulled = ok(s
        .cli()
        .args(["pull", "t/evil:1", "--to"])
        .arg(s.tmp.path().join("out")));
    assert!(pulled.contains("scan     fail"), "{pulled}");
}

#[test]
fn a_bad_config_mode_is_refused() {
    let mut s = Server::start();
    assert_eq!(s.terminate(), Some(0));
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(cfg.path(), "[scan]\nmode = \"warn-only\"\n").unwrap();
    let (code, err) = failed_start(&[
        "--data-dir".as_ref(),
        s.data_dir.as_os_str(),
        "--unseal-identity".as_ref(),
        s.identity.as_os_str(),
        "--config".as_ref(),
        cfg.path().as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("mode"), "{err}");
}

/// The shipped policies let a deployer download a model only when its
/// verdict is `pass`; the refusal says why to a deployer that may see the
/// version, and a trainer still pulls it to inspect.
#[test]
fn deployers_pull_only_models_that_pass_the_scan() {
    let s = Server::start();
    let good = s.tmp.path().join("good");
    safetensors_file(&good.join("model.safetensors"), 1 << 20, 1);
    ok(s.cli()
        .args(["push", "t/good", "--alias", "stable"])
        .arg(&good));
    let odd = s.tmp.path().join("odd");
    random_file(&odd.join("weights.dat"), 1 << 20, 2);
    let pushed = json(&ok(s
        .cli()
        .args(["--json", "push", "t/odd", "--alias", "stable"])
        .arg(&odd)));
    assert_eq!(pushed["scan"], "unsupported", "{pushed}");
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    ok(s.cli_with_token(&deployer)
        .args(["pull", "t/good:stable", "--to"])
        .arg(s.tmp.path().join("g")));
    let err = fails_with(
        s.cli_with_token(&deployer)
            .args(["pull", "t/odd:stable", "--to"])
            .arg(s.tmp.path().join("o")),
        3,
    );
    assert!(
        err.contains("admission scan verdict is `unsupported`"),
        "{err}"
    );
    assert!(!s.tmp.path().join("o/weights.dat").exists());
    // The deployer may still see why.
    let shown = ok(s.cli_with_token(&deployer).args(["show", "t/odd:stable"]));
    assert!(shown.contains("scan     unsupported"), "{shown}");
    // A trainer pulls it to look at it.
    ok(s.cli()
        .args(["pull", "t/odd:1", "--to"])
        .arg(s.tmp.path().join("t")));
}

/// A version an alias points at whose verdict is missing (pushed before
/// scans) or was made by another scanner is rescanned when a server
/// starts, and the rescan is audited with the change.
#[test]
fn aliased_versions_without_a_current_verdict_are_rescanned_at_start() {
    let Some(url) = pg_database("e2e rescan") else {
        return;
    };
    let (mut s, _cfg) = start_on_postgres(&url, &[]);
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 1 << 20, 3);
    ok(s.cli().args(["push", "t/m", "--alias", "stable"]).arg(&src));
    assert_eq!(s.terminate(), Some(0));
    // As a version pushed before the scan existed.
    ok(std::process::Command::new("psql").arg(&url).args([
        "-q",
        "-c",
        "UPDATE mlvault_kv SET v = convert_to((convert_from(v, 'UTF8')::jsonb - 'scan')::text, 'UTF8') \
         WHERE tbl = 'versions'",
    ]));
    s.restart();
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shown = json(&ok(s.cli().args(["--json", "show", "t/m:1"])));
        if shown["scan"]["verdict"] == "pass" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rescanned: {shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    ok(s.cli_with_token(&deployer)
        .args(["pull", "t/m:stable", "--to"])
        .arg(s.tmp.path().join("d")));
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "40"])));
    let rescan = tail
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "scan_rescan")
        .unwrap_or_else(|| panic!("no rescan entry: {tail}"));
    assert_eq!(rescan["resource"], "t/m:1");
    assert!(rescan["detail"].as_str().unwrap().contains("(was none)"));

    // An allowlist extension edited in the database no longer verifies:
    // scans of its namespace fail closed instead of widening.
    ok(s.admin()
        .args(["scan-allow", "t", FOREST_IMPORT, "--reason", "forests"]));
    ok(std::process::Command::new("psql").arg(&url).args([
        "-q",
        "-c",
        "UPDATE mlvault_kv SET v = convert_to(replace(convert_from(v, 'UTF8'), '\"sig\":\"', '\"sig\":\"AAAA'), 'UTF8') \
         WHERE tbl = 'config' AND k = convert_to('scan-allow/t', 'UTF8')",
    ]));
    let forest = s.tmp.path().join("forest");
    fs::create_dir_all(&forest).unwrap();
    fs::write(forest.join("model.joblib"), FOREST).unwrap();
    let out = run(s.cli().args(["push", "t/forest"]).arg(&forest));
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        s.log_text().contains("does not verify"),
        "the server names the cause in its log"
    );
    let listed = ok(s.cli().args(["ls"]));
    assert!(!listed.contains("t/forest"), "{listed}");
}

/// A scikit-learn estimator, as joblib pickles it: an import outside the
/// default allowlist.
const FOREST: &[u8] =
    b"\x80\x02csklearn.ensemble._forest\nRandomForestClassifier\nq\x00)\x81q\x01.";
const FOREST_IMPORT: &str = "sklearn.ensemble._forest RandomForestClassifier";

/// A namespace's allowlist extension admits exactly its imports, in that
/// namespace only; it is audited, named in later verdicts, refused for
/// modules that run code, and what the namespace's aliases point at is
/// rescanned when it changes.
#[test]
fn a_namespace_allowlist_extension_is_audited_scoped_and_rescans_its_aliases() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(cfg.path(), "[scan]\nmode = \"record\"\n").unwrap();
    let s = Server::start_with(&["--config", cfg.path().to_str().unwrap()]);
    let dir = s.tmp.path().join("forest");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("model.joblib"), FOREST).unwrap();
    let pushed = json(&ok(s
        .cli()
        .args(["--json", "push", "t/forest", "--alias", "stable"])
        .arg(&dir)));
    assert_eq!(pushed["scan"], "fail", "{pushed}");
    let shown = json(&ok(s.cli().args(["--json", "show", "t/forest:1"])));
    let findings = shown["scan"]["findings"].to_string();
    assert!(findings.contains(FOREST_IMPORT), "{findings}");
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    let pull = |to: &str| {
        run(s
            .cli_with_token(&deployer)
            .args(["pull", "t/forest:stable", "--to"])
            .arg(s.tmp.path().join(to)))
    };
    assert_eq!(pull("d0").status.code(), Some(3));

    // Modules that run or resolve code are never allowed; a change needs
    // a reason; only admins change it.
    for bad in [
        "os system",
        "builtins getattr",
        "importlib.util find_spec",
        "numpy eval",
    ] {
        let err = fails_with(
            s.admin().args(["scan-allow", "t", bad, "--reason", "no"]),
            1,
        );
        assert!(err.contains("never allowed"), "{bad}: {err}");
    }
    fails_with(s.admin().args(["scan-allow", "t", FOREST_IMPORT]), 2);
    // An admin token scoped to another namespace changes nothing here.
    let scoped = s.create_token("ops-k", "admin", &["k"], None);
    let err = fails_with(
        s.cli_with_token(&scoped)
            .args(["scan-allow", "t", FOREST_IMPORT, "--reason", "mine"]),
        3,
    );
    assert!(err.contains("only administer its namespaces"), "{err}");
    fails_with(
        s.cli()
            .args(["scan-allow", "t", FOREST_IMPORT, "--reason", "mine"]),
        3,
    );

    let set = json(&ok(s.admin().args([
        "--json",
        "scan-allow",
        "t",
        FOREST_IMPORT,
        "--reason",
        "fraud team's random forests",
    ])));
    assert_eq!(set["rescans"], 1, "{set}");
    let allowlist = set["allowlist"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shown = json(&ok(s.cli().args(["--json", "show", "t/forest:1"])));
        if shown["scan"]["verdict"] == "pass" {
            assert_eq!(shown["scan"]["allowlist"], allowlist.as_str());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not rescanned: {shown}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(pull("d1").status.code(), Some(0));
    // A new push in the namespace passes; the same file elsewhere fails.
    let again = json(&ok(s.cli().args(["--json", "push", "t/forest2"]).arg(&dir)));
    assert_eq!(again["scan"], "pass", "{again}");
    let elsewhere = json(&ok(s.cli().args(["--json", "push", "k/forest"]).arg(&dir)));
    assert_eq!(elsewhere["scan"], "fail", "{elsewhere}");

    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "60"])));
    let entries = tail.as_array().unwrap();
    let change = entries
        .iter()
        .find(|e| e["action"] == "scan_allowlist")
        .unwrap_or_else(|| panic!("{tail}"));
    assert!(change["detail"].as_str().unwrap().contains(FOREST_IMPORT));
    assert!(entries
        .iter()
        .any(|e| e["action"] == "scan_rescan" && e["resource"] == "t/forest:1"));

    // Cleared, the aliased version is rescanned back to `fail`.
    ok(s.admin()
        .args(["scan-allow", "t", "--clear", "--reason", "forests retired"]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while json(&ok(s.cli().args(["--json", "show", "t/forest:1"])))["scan"]["verdict"] != "fail" {
        assert!(std::time::Instant::now() < deadline, "not rescanned back");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(pull("d2").status.code(), Some(3));
}

const TEST_RESULT: &str = "https://in-toto.io/attestation/test-result/v0.1";

/// Attestations: kept only when a registered attestor trusted for the
/// predicate type and namespace signed a statement about the version's
/// exact bytes; each other case is refused with its reason, and what is
/// kept is listed and audited.
#[test]
fn attestations_are_kept_only_from_trusted_attestors_about_the_exact_version() {
    let s = Server::start();
    let keys = s.tmp.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    for k in ["eval", "stranger"] {
        ok(s.cli().args(["keygen", "--out"]).arg(keys.join(k)));
    }
    let key = |k: &str| keys.join(k);
    let pubkey = |k: &str| keys.join(format!("{k}.pub"));
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 4096, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    safetensors_file(&src.join("model.safetensors"), 4096, 2);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    ok(s.cli().args(["push", "k/m"]).arg(&src));
    // Only admins register attestors.
    fails_with(
        s.cli()
            .args(["attestor", "add", "eval"])
            .arg(pubkey("eval"))
            .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]),
        3,
    );
    // An admin token scoped to another namespace registers none for `t`.
    let scoped = s.create_token("ops-k", "admin", &["k"], None);
    fails_with(
        s.cli_with_token(&scoped)
            .args(["attestor", "add", "eval-k"])
            .arg(pubkey("stranger"))
            .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]),
        3,
    );
    ok(s.admin()
        .args(["attestor", "add", "adversarial-eval"])
        .arg(pubkey("eval"))
        .args(["--predicate-type", TEST_RESULT, "--namespace", "t"]));
    let result = s.tmp.path().join("result.json");
    fs::write(
        &result,
        r#"{"result": "PASSED", "configuration": [], "passedTests": ["fgsm-eps-0.03"]}"#,
    )
    .unwrap();
    let attest = |r: &str, pt: &str, k: &str| {
        let mut c = s.cli();
        c.args(["--json", "attest", r, "--predicate-type", pt, "--predicate"])
            .arg(&result)
            .arg("--sign-key")
            .arg(key(k));
        c
    };
    let kept = json(&ok(&mut attest("t/m:1", TEST_RESULT, "eval")));
    assert_eq!(kept["attestor"], "adversarial-eval", "{kept}");
    assert_eq!(kept["result"], "PASSED", "{kept}");

    let refused = [
        (
            attest("t/m:1", TEST_RESULT, "stranger"),
            "not signed by an attestor trusted",
        ),
        (
            attest("t/m:1", "https://example.com/other/v1", "eval"),
            "no attestor is trusted for predicate type",
        ),
        (
            attest("k/m:1", TEST_RESULT, "eval"),
            "no attestor is trusted for predicate type",
        ),
    ];
    for (mut c, why) in refused {
        let err = fails_with(&mut c, 5);
        assert!(err.contains(why), "{why}: {err}");
    }
    // A statement about version 1 sent as evidence about version 2.
    let env = s.tmp.path().join("v1.json");
    fs::write(&env, kept["envelope"].as_str().unwrap()).unwrap();
    let err = fails_with(s.cli().args(["attest", "t/m:2", "--envelope"]).arg(&env), 5);
    assert!(err.contains("not about `t/m:2`"), "{err}");
    // A test result without its result.
    fs::write(&result, r#"{"configuration": []}"#).unwrap();
    let err = fails_with(&mut attest("t/m:1", TEST_RESULT, "eval"), 1);
    assert!(err.contains("PASSED, WARNED or FAILED"), "{err}");
    // The same envelope again is kept once.
    ok(s.cli().args(["attest", "t/m:1", "--envelope"]).arg(&env));
    let listed = json(&ok(s.cli().args(["--json", "attestations", "t/m:1"])));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let shown = json(&ok(s.cli().args(["--json", "show", "t/m:1"])));
    assert_eq!(shown["attestations"][0]["result"], "PASSED", "{shown}");
    let shown = ok(s.cli().args(["show", "t/m:1"]));
    assert!(shown.contains("by adversarial-eval: PASSED"), "{shown}");
    assert!(json(&ok(s.cli().args(["--json", "attestations", "t/m:2"])))
        .as_array()
        .unwrap()
        .is_empty());
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "60"])));
    let entries = tail.as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "attestor_add"));
    let attested: Vec<_> = entries.iter().filter(|e| e["action"] == "attest").collect();
    assert_eq!(attested.len(), 1, "{tail}");
    assert!(attested[0]["detail"].as_str().unwrap().contains("PASSED"));
}

/// Approvals: a principal allowed to review a model approves its exact
/// bytes, once, never its own push; kept as a server-signed attestation
/// and audited.
#[test]
fn approvals_record_who_approved_which_digest_and_never_the_pusher() {
    let s = Server::start();
    let src = s.tmp.path().join("m");
    safetensors_file(&src.join("model.safetensors"), 4096, 7);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let steward = s.create_token("dpo", "steward", &["t"], None);
    let pusher = s.token_id("tester");
    assert!(!pusher.is_empty());
    // The principal that pushed does not approve its own push (with the
    // shipped policies a trainer may not review at all).
    fails_with(s.cli().args(["approve", "t/m:1"]), 3);
    let kept = json(&ok(s.cli_with_token(&steward).args([
        "--json",
        "approve",
        "t/m:1",
        "--reason",
        "red-team report 12 reviewed",
    ])));
    assert_eq!(kept["attestor"], "approval:dpo", "{kept}");
    assert_eq!(kept["predicate_type"], "https://mlvault.dev/approval/v1");
    fails_with(s.cli_with_token(&steward).args(["approve", "t/m:1"]), 1);
    // A deployer may not approve.
    let deployer = s.create_token("deploy", "deployer", &["t"], None);
    fails_with(s.cli_with_token(&deployer).args(["approve", "t/m:1"]), 3);
    let listed = json(&ok(s.cli().args(["--json", "attestations", "t/m:1"])));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let tail = json(&ok(s.admin().args(["--json", "audit", "tail", "-n", "40"])));
    assert!(tail
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "approve" && e["principal"] == "dpo"));
}
