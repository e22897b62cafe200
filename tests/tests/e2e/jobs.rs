//! Anonymization jobs: specs, privacy goals, review before release.

use super::*;

pub(super) use vault_anonymize::synth::customers_spec;

pub(super) fn dataset(s: &Server, rows: usize) -> std::path::PathBuf {
    let dir = s.tmp.path().join("raw");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("customers.csv"),
        vault_anonymize::synth::generate(rows, 11),
    )
    .unwrap();
    dir
}

#[test]
fn a_job_turns_raw_pii_into_a_signed_anonymized_version_with_lineage() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let trainer = s.create_token("ml", "trainer", &["hr"], None);
    let raw = dataset(&s, 3000);
    let pushed = json(&ok(s
        .cli_with_token(&steward)
        .args([
            "--json",
            "push",
            "hr/customers",
            "--kind",
            "dataset",
            "--sensitivity",
            "raw-pii",
        ])
        .arg(&raw)));
    // Raw PII stays with the stewards.
    fails_with(
        s.cli_with_token(&trainer)
            .args(["pull", "hr/customers", "--to"])
            .arg(s.tmp.path().join("x")),
        3,
    );
    let spec = s.tmp.path().join("spec.toml");
    fs::write(&spec, customers_spec()).unwrap();
    let job = json(&ok(s
        .cli_with_token(&steward)
        .args([
            "--json",
            "anonymize",
            "hr/customers:1",
            "--to",
            "hr/customers-anon",
            "--wait",
            "--spec",
        ])
        .arg(&spec)));
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["output"], "hr/customers-anon:1");
    let report = &job["report"];
    assert!(report["k_after"].as_u64().unwrap() >= 5, "{report}");
    assert_eq!(report["rows_read"], 3000);
    assert!(report["pii_found"]["email"].as_u64().unwrap() > 0);

    // Held for review: only stewards of the namespace read it.
    let server_pub = s.data_dir.join("server-signing.pub");
    for r in ["hr/customers-anon", "hr/customers-anon:1"] {
        fails_with(
            s.cli_with_token(&trainer)
                .args(["pull", r, "--to"])
                .arg(s.tmp.path().join("early")),
            4,
        );
    }
    let listed = json(&ok(s.cli_with_token(&trainer).args([
        "--json",
        "ls",
        "hr/customers-anon",
    ])));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["versions"].as_array().unwrap().is_empty()),
        "{listed}"
    );
    let early = json(&ok(s.cli_with_token(&steward).args([
        "--json",
        "show",
        "hr/customers-anon:1",
    ])));
    assert_eq!(early["review"], "pending");
    assert_eq!(early["report_signed"], true);
    // A trainer cannot approve; a steward of another namespace does not see the job.
    let id = job["id"].as_str().unwrap();
    fails_with(s.cli_with_token(&trainer).args(["job", "approve", id]), 3);
    let fin = s.create_token("fin-dpo", "steward", &["fin"], None);
    fails_with(s.cli_with_token(&fin).args(["job", "approve", id]), 4);
    fails_with(
        s.cli_with_token(&steward)
            .args(["job", "withdraw", id, "--reason", "x"]),
        1,
    );
    let approved = json(&ok(s.cli_with_token(&steward).args([
        "--json",
        "job",
        "approve",
        id,
        "--reason",
        "scan clean, k=5",
    ])));
    assert_eq!(approved["review"]["state"], "approved", "{approved}");
    assert_eq!(approved["review"]["by"], "dpo");
    fails_with(s.cli_with_token(&steward).args(["job", "approve", id]), 1);

    // Trainers may read the anonymized output; nothing personal survives.
    let out = s.tmp.path().join("anon");
    ok(s.cli_with_token(&trainer)
        .args(["pull", "hr/customers-anon", "--trust"])
        .arg(&server_pub)
        .arg("--to")
        .arg(&out));
    // The report came along and verifies offline against the signed manifest.
    let verified = ok(s
        .cli()
        .args(["verify", "--trust"])
        .arg(&server_pub)
        .arg(&out));
    assert!(
        verified.contains("job report (signed in the manifest)"),
        "{verified}"
    );
    let report_file = out.join(".mlvault/report.json");
    let genuine = fs::read_to_string(&report_file).unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&genuine).unwrap();
    forged["k_after"] = serde_json::json!(50);
    fs::write(&report_file, forged.to_string()).unwrap();
    let bad = run(s.cli().arg("verify").arg(&out));
    let said = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(5), "{said}");
    assert!(
        said.contains("does not match the digest in the signed manifest"),
        "{said}"
    );
    fs::write(&report_file, &genuine).unwrap();
    let text = fs::read_to_string(out.join("customers.csv")).unwrap();
    let original = fs::read_to_string(raw.join("customers.csv")).unwrap();
    for line in original.lines().skip(1).take(200) {
        let fields: Vec<&str> = line.split(',').collect();
        for f in [fields[2], fields[3], fields[4]] {
            assert!(!text.contains(f), "`{f}` leaked");
        }
    }
    // Lineage: the source digest and the spec digest, signed by the server.
    let show = json(&ok(s.cli_with_token(&trainer).args([
        "--json",
        "show",
        "hr/customers-anon:1",
    ])));
    let p = &show["manifest"]["predicate"];
    assert_eq!(p["lineage"]["parents"][0], pushed["digest"]);
    let spec_digest = format!(
        "sha256:{}",
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            customers_spec().as_bytes()
        ))
    );
    assert_eq!(p["lineage"]["job_spec"], spec_digest.as_str());
    assert_eq!(show["report"]["k_after"], report["k_after"]);
    // The report is signed with the output.
    assert_eq!(show["report_signed"], true);
    assert_eq!(
        p["lineage"]["job_report"].as_str().unwrap(),
        vault_manifest::report_digest(&show["report"])
    );
    let human = ok(s
        .cli_with_token(&trainer)
        .args(["show", "hr/customers-anon:1"]));
    assert!(
        human.contains("signed with the manifest") && human.contains("review   approved"),
        "{human}"
    );
    // Withdrawn, it is gone for trainers again; the decisions are audited.
    ok(s.cli_with_token(&steward).args([
        "job",
        "withdraw",
        id,
        "--reason",
        "re-identification found",
    ]));
    fails_with(
        s.cli_with_token(&trainer)
            .args(["pull", "hr/customers-anon:1", "--to"])
            .arg(s.tmp.path().join("late")),
        4,
    );
    let audit = fs::read_to_string(s.data_dir.join("audit/audit.log")).unwrap();
    assert!(
        audit.contains("\"job_approve\"")
            && audit.contains("\"job_withdraw\"")
            && audit.contains("re-identification found"),
        "audit lacks the review decisions"
    );
    let status = json(&ok(s.cli_with_token(&steward).args([
        "--json",
        "job",
        "status",
        job["id"].as_str().unwrap(),
    ])));
    assert_eq!(status["report"], *report);
    let m = std::process::Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(&test_tls().0)
        .arg(format!("{}/metrics", s.addr))
        .output()
        .unwrap();
    let m = String::from_utf8_lossy(&m.stdout);
    assert!(
        m.contains("mlvault_jobs_total{state=\"succeeded\"} 1"),
        "{m}"
    );
}

#[test]
fn a_bad_spec_is_refused_before_the_job_starts() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let raw = dataset(&s, 50);
    ok(s.cli_with_token(&steward)
        .args(["push", "hr/customers", "--kind", "dataset"])
        .arg(&raw));
    for (spec, why) in [
        (
            "format = \"csv\"\n[[columns]]\nname = \"shoe_size\"\ntransform = \"redact\"\n",
            "not in the input",
        ),
        (
            "format = \"csv\"\n[[columns]]\nname = \"email\"\ntransform = \"explode\"\n",
            "unknown variant",
        ),
        (
            "format = \"csv\"\n[scrub]\ncustom = [{ name = \"x\", pattern = \"([\" }]\n",
            "custom detector",
        ),
        ("format = \"jsonl\"\n", "not a Jsonl file"),
        (
            "format = \"csv\"\n[[columns]]\nname = \"email\"\ntransform = \"redact\"\n",
            "does not say what to do with column(s) customer_id, name, ssn",
        ),
    ] {
        let f = s.tmp.path().join("spec.toml");
        fs::write(&f, spec).unwrap();
        let err = fails_with(
            s.cli_with_token(&steward)
                .args(["anonymize", "hr/customers:1", "--to", "hr/out", "--spec"])
                .arg(&f),
            1,
        );
        assert!(err.contains(why), "{why}: {err}");
    }
    let jobs = json(&ok(s
        .cli_with_token(&steward)
        .args(["--json", "job", "list"])));
    assert!(jobs.as_array().unwrap().is_empty());
}

/// `anonymize --wait --json` of `spec` over `source`: the job record,
/// whatever its outcome.
fn run_job(s: &Server, token: &str, source: &str, target: &str, spec: &str) -> serde_json::Value {
    let f = s.tmp.path().join("job-spec.toml");
    fs::write(&f, spec).unwrap();
    let out = run(s
        .cli_with_token(token)
        .args([
            "--json",
            "anonymize",
            source,
            "--to",
            target,
            "--wait",
            "--spec",
        ])
        .arg(&f));
    json(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn a_jsonl_job_fails_closed_and_releases_nothing() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let raw = s.tmp.path().join("events");
    fs::create_dir_all(&raw).unwrap();
    let mut lines = String::new();
    for i in 0..200 {
        lines.push_str(&format!(
            "{{\"user\":{{\"email\":\"u{i}@example.com\",\"ssn\":\"123-45-{:04}\"}},\"n\":{i},\"text\":\"call +44 20 7946 {:04}\"}}\n",
            1000 + i,
            1000 + i
        ));
    }
    fs::write(raw.join("events.jsonl"), &lines).unwrap();
    ok(s.cli_with_token(&steward)
        .args(["push", "hr/events", "--kind", "dataset"])
        .arg(&raw));
    let base = "format = \"jsonl\"\nscan = true\nkeep = [\"n\"]\n[[columns]]\nname = \"text\"\ntransform = \"scrub\"\n[[columns]]\nname = \"user.ssn\"\ntransform = \"drop\"\n";
    // A typo in a field name: the real field would have passed raw.
    let typo = format!("{base}[[columns]]\nname = \"user.emial\"\ntransform = \"pseudonymize\"\n");
    let job = run_job(&s, &steward, "hr/events:1", "hr/events-anon", &typo);
    assert_eq!(job["state"], "failed", "{job:#}");
    let err = job["error"].as_str().unwrap();
    assert!(
        err.contains("user.emial") && err.contains("no record"),
        "{err}"
    );
    // The real field, unlisted, is refused too.
    let job = run_job(&s, &steward, "hr/events:1", "hr/events-anon", base);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("user.email"),
        "{job:#}"
    );
    fails_with(
        s.cli_with_token(&steward).args(["show", "hr/events-anon"]),
        4,
    );
    // Named, the job runs and its scan covers JSON Lines.
    let good = format!("{base}[[columns]]\nname = \"user.email\"\ntransform = \"pseudonymize\"\n");
    let job = run_job(&s, &steward, "hr/events:1", "hr/events-anon", &good);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["report"]["scanned"], true);
    assert_eq!(job["report"]["pii_found"]["phone"], 200, "{job:#}");
    assert!(
        job["report"]["scan_findings"]
            .as_object()
            .unwrap()
            .is_empty(),
        "{job:#}"
    );
    let out = s.tmp.path().join("events-anon");
    ok(s.cli_with_token(&steward)
        .args(["pull", job["output"].as_str().unwrap(), "--to"])
        .arg(&out));
    let text = fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(
        !text.contains("@example.com") && !text.contains("123-45-") && !text.contains("20 7946"),
        "{text}"
    );
    // The human status shows what the scan found.
    let human = ok(s
        .cli_with_token(&steward)
        .args(["job", "status", job["id"].as_str().unwrap()]));
    assert!(
        human.contains("scan: no PII found in the output"),
        "{human}"
    );
    assert!(human.contains("warning: no [kanon] section"), "{human}");
}

#[test]
fn a_csv_with_a_repeated_header_or_a_broken_quote_leaks_nothing() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    s.push_dataset(
        &steward,
        "hr/dup",
        "people.csv",
        b"id,name,name\n1,Ann Lee,Ann Lee\n",
        &[],
    );
    let f = s.tmp.path().join("spec.toml");
    fs::write(
        &f,
        "format = \"csv\"\nkeep = [\"id\"]\n[[columns]]\nname = \"name\"\ntransform = \"drop\"\n",
    )
    .unwrap();
    let err = fails_with(
        s.cli_with_token(&steward)
            .args(["anonymize", "hr/dup:1", "--to", "hr/out", "--spec"])
            .arg(&f),
        1,
    );
    assert!(err.contains("repeats column names: name"), "{err}");
    // An unterminated quote in the last column swallows the rows after it.
    let broken = b"id,notes\n1,fine\n2,\"open\n3,SSN 123-45-6789\n4,ann@example.com\n";
    s.push_dataset(&steward, "hr/quote", "notes.csv", broken, &[]);
    let spec = "format = \"csv\"\nkeep = [\"id\", \"notes\"]\non_error = \"fail\"\n";
    let job = run_job(&s, &steward, "hr/quote:1", "hr/quote-anon", spec);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("unterminated quote opened at line 3"),
        "{job:#}"
    );
    let job = run_job(
        &s,
        &steward,
        "hr/quote:1",
        "hr/quote-anon",
        &spec.replace("fail", "skip"),
    );
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(
        (
            job["report"]["rows_written"].as_u64(),
            job["report"]["malformed_rows"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let out = s.tmp.path().join("quote-anon");
    ok(s.cli_with_token(&steward)
        .args(["pull", job["output"].as_str().unwrap(), "--to"])
        .arg(&out));
    assert_eq!(
        fs::read_to_string(out.join("notes.csv")).unwrap(),
        "id,notes\n1,fine\n"
    );
}

#[test]
fn jobs_are_visible_only_in_their_namespace() {
    let s = Server::start();
    let hr = s.create_token("dpo", "steward", &["hr"], None);
    let fin = s.create_token("fin-dpo", "steward", &["fin"], None);
    let raw = dataset(&s, 3000);
    ok(s.cli_with_token(&hr)
        .args(["push", "hr/customers", "--kind", "dataset"])
        .arg(&raw));
    let job = run_job(
        &s,
        &hr,
        "hr/customers:1",
        "hr/customers-anon",
        &customers_spec(),
    );
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let id = job["id"].as_str().unwrap();
    let mine = json(&ok(s.cli_with_token(&hr).args(["--json", "job", "list"])));
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let theirs = json(&ok(s.cli_with_token(&fin).args(["--json", "job", "list"])));
    assert!(theirs.as_array().unwrap().is_empty(), "{theirs}");
    let err = fails_with(s.cli_with_token(&fin).args(["job", "status", id]), 4);
    assert!(!err.contains("hr/") && !err.contains("spec"), "{err}");
}

#[test]
fn a_job_interrupted_by_a_crash_runs_again_and_commits_once() {
    let mut s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let raw = dataset(&s, 150_000);
    ok(s.cli_with_token(&steward)
        .args(["push", "hr/customers", "--kind", "dataset"])
        .arg(&raw));
    let blobs_before = blob_files(&s.data_dir).len();
    let spec = s.tmp.path().join("spec.toml");
    fs::write(&spec, customers_spec()).unwrap();
    let id = ok(s
        .cli_with_token(&steward)
        .args(["anonymize", "hr/customers:1", "--to", "hr/anon", "--spec"])
        .arg(&spec))
    .trim()
    .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let st = json(&ok(s
            .cli_with_token(&steward)
            .args(["--json", "job", "status", &id])));
        if st["state"] == "running" && st["rows"].as_u64().unwrap_or(0) > 1000 {
            break;
        }
        assert_ne!(
            st["state"], "succeeded",
            "job finished before the crash could happen"
        );
        assert!(std::time::Instant::now() < deadline, "job never ran: {st}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.kill();
    s.restart();
    let done = json(&ok(s
        .cli_with_token(&steward)
        .args(["--json", "job", "wait", &id])));
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    // One committed output; the crashed attempt left nothing behind.
    let ls = json(&ok(s
        .cli_with_token(&steward)
        .args(["--json", "ls", "hr/anon"])));
    assert_eq!(ls[0]["versions"].as_array().unwrap().len(), 1);
    assert_eq!(blob_files(&s.data_dir).len(), blobs_before + 1);
    let dest = s.tmp.path().join("anon");
    ok(s.cli_with_token(&steward)
        .args(["pull", done["output"].as_str().unwrap(), "--to"])
        .arg(&dest));
    assert!(fs::metadata(dest.join("customers.csv")).unwrap().len() > 1_000_000);
}
