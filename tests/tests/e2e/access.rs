//! Role grants from the Cedar policies, for every kind of caller.

use super::*;
use std::path::Path;

const ALLOW: i32 = 0;
const DENY: i32 = 3;

/// The operations of the matrix, in column order.
const OPS: &[&str] = &[
    "push",
    "pull",
    "pull-alias",
    "show",
    "alias",
    "delete",
    "pull-raw-pii",
    "pull-dataset",
    "key-status",
    "token-list",
    "publisher-list",
    "policy-reload",
    "push-other-ns",
];

fn op(s: &Server, token: Option<&str>, name: &str, scratch: u32) -> std::process::Command {
    let mut c = match token {
        Some(t) => s.cli_with_token(t),
        None => {
            let mut c = s.cli();
            c.env_remove("MLVAULT_TOKEN");
            c
        }
    };
    let dest = s.tmp.path().join(format!("out-{name}-{scratch}"));
    let f = s.tmp.path().join("small.safetensors");
    match name {
        "push" => c.args(["push", "fraud/model"]).arg(&f),
        "pull" => c.args(["pull", "fraud/model:1", "--to"]).arg(&dest),
        "pull-alias" => c.args(["pull", "fraud/model:stable", "--to"]).arg(&dest),
        "show" => c.args(["show", "fraud/model:1"]),
        "alias" => c.args(["alias", "fraud/model:1", "staging"]),
        "delete" => c.args(["delete", &format!("fraud/scratch:{scratch}")]),
        "pull-raw-pii" => c.args(["pull", "fraud/raw", "--to"]).arg(&dest),
        "pull-dataset" => c.args(["pull", "fraud/data", "--to"]).arg(&dest),
        "key-status" => c.args(["key", "status"]),
        "token-list" => c.args(["token", "list"]),
        "publisher-list" => c.args(["publisher", "list", "fraud"]),
        "policy-reload" => c.args(["policy", "reload"]),
        "push-other-ns" => c.args(["push", "ads/model"]).arg(&f),
        other => panic!("unknown op {other}"),
    };
    c
}

#[test]
fn every_operation_for_every_kind_of_caller_matches_the_policy_table() {
    let s = Server::start();
    // A model the admission scan passes: deployers pull only such.
    let f = s.tmp.path().join("small.safetensors");
    safetensors_file(&f, 4096, 1);
    let trainer = s.create_token("ci-fraud", "trainer", &["fraud"], Some("1h"));
    let deployer = s.create_token("fraud-api", "deployer", &["fraud"], Some("1h"));
    let steward = s.create_token("dpo", "steward", &["fraud"], Some("1h"));
    let other = s.create_token("ci-ads", "trainer", &["ads"], Some("1h"));
    let expired = s.create_token("old", "trainer", &["fraud"], Some("1s"));
    let revoked = s.create_token("gone", "trainer", &["fraud"], Some("1h"));
    let gone_id = s.token_id("gone");
    // The secret is never listed.
    let list = json(&ok(s.admin().args(["--json", "token", "list"])));
    assert!(!list.to_string().contains(&revoked));
    ok(s.admin().args(["token", "revoke", &gone_id]));
    let human = ok(s.admin().args(["token", "list"]));
    let gone = human.lines().find(|l| l.contains(&gone_id)).unwrap();
    assert!(
        (gone.contains(" in 1h ") || gone.contains(" in 59m ")) && gone.ends_with("revoked"),
        "{human}"
    );

    // Fixtures, made by the trainer of `fraud`.
    let t = |c: &mut std::process::Command| ok(c);
    t(s.cli_with_token(&trainer)
        .args(["push", "fraud/model", "--alias", "stable"])
        .arg(&f));
    t(s.cli_with_token(&trainer)
        .args(["push", "fraud/data", "--kind", "dataset"])
        .arg(&f));
    t(s.cli_with_token(&trainer)
        .args([
            "push",
            "fraud/raw",
            "--kind",
            "dataset",
            "--sensitivity",
            "raw-pii",
        ])
        .arg(&f));
    std::thread::sleep(std::time::Duration::from_millis(1100));

    use ALLOW as A;
    use DENY as D;
    #[rustfmt::skip]
    let table: Vec<(&str, Option<&str>, [i32; 13])> = vec![
        //                         push pull alias show  alias del  raw  data keys tok  pub  pol  other
        ("no token",  None,              [D, D, D, D, D, D, D, D, D, D, D, D, D]),
        ("bad token", Some("mlv_bad"),   [D, D, D, D, D, D, D, D, D, D, D, D, D]),
        ("expired",   Some(&expired),    [D, D, D, D, D, D, D, D, D, D, D, D, D]),
        ("revoked",   Some(&revoked),    [D, D, D, D, D, D, D, D, D, D, D, D, D]),
        ("admin",     Some(&s.admin_token), [D, D, D, D, A, A, D, D, A, A, A, A, D]),
        ("trainer",   Some(&trainer),    [A, A, A, A, A, D, D, A, D, D, D, D, D]),
        ("deployer",  Some(&deployer),   [D, D, A, D, D, D, D, D, D, D, D, D, D]),
        // Stewards see models (to approve them), never pull them.
        ("steward",   Some(&steward),    [D, D, D, A, D, D, A, A, D, D, D, D, D]),
        ("other ns",  Some(&other),      [D, D, D, D, D, D, D, D, D, D, D, D, A]),
    ];
    let mut scratch = 0;
    let mut failures = Vec::new();
    for (who, token, expected) in &table {
        for (i, name) in OPS.iter().enumerate() {
            if *name == "delete" {
                t(s.cli_with_token(&trainer)
                    .args(["push", "fraud/scratch"])
                    .arg(&f));
                scratch += 1;
            }
            let out = run(&mut op(&s, *token, name, scratch));
            let code = out.status.code().unwrap_or(-1);
            if code != expected[i] {
                failures.push(format!(
                    "{who} {name}: exit {code}, expected {} ({})",
                    expected[i],
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "policy matrix mismatches:\n{}",
        failures.join("\n")
    );

    // Listings show only what the caller may see.
    let names = |tok: &str| -> Vec<String> {
        json(&ok(s.cli_with_token(tok).args(["--json", "ls"])))
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&deployer), ["fraud/model", "fraud/scratch"]);
    assert_eq!(names(&steward), ["fraud/data", "fraud/raw"]);
    assert!(names(&other).iter().all(|n| n.starts_with("ads/")));
}

#[test]
fn a_forbidden_artifact_and_a_missing_one_look_the_same() {
    let s = Server::start();
    let f = s.tmp.path().join("small.dat");
    random_file(&f, 100, 1);
    let fraud = s.create_token("ci-fraud", "trainer", &["fraud"], None);
    let ads = s.create_token("ci-ads", "trainer", &["ads"], None);
    ok(s.cli_with_token(&fraud)
        .args(["push", "fraud/secret-model"])
        .arg(&f));
    let exists = fails_with(
        s.cli_with_token(&ads).args(["show", "fraud/secret-model"]),
        3,
    );
    let missing = fails_with(
        s.cli_with_token(&ads).args(["show", "fraud/no-such-model"]),
        3,
    );
    let norm = |e: &str| e.replace("secret-model", "X").replace("no-such-model", "X");
    assert_eq!(norm(&exists), norm(&missing));
    // With a grant on the namespace, missing is 404.
    fails_with(
        s.cli_with_token(&fraud)
            .args(["show", "fraud/no-such-model"]),
        4,
    );
    // Revocation takes effect on the very next request.
    let id = s.token_id("ci-fraud");
    ok(s.cli_with_token(&fraud).arg("ls"));
    ok(s.admin().args(["token", "revoke", &id]));
    let err = fails_with(s.cli_with_token(&fraud).arg("ls"), 3);
    assert!(err.contains("revoked"), "{err}");
}

/// Start `s`'s vault again with the policy folder `dir`, which must be
/// refused (exit 2): the error.
pub(super) fn refused_with_policies(s: &Server, dir: &Path) -> String {
    let (code, err) = failed_start(&[
        "--data-dir".as_ref(),
        s.data_dir.as_os_str(),
        "--unseal-identity".as_ref(),
        s.identity.as_os_str(),
        "--policies".as_ref(),
        dir.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    err
}

pub(super) fn copy_policies(to: &Path) {
    let repo = Path::new("../policies");
    fs::create_dir_all(to).unwrap();
    for f in [
        "schema.cedarschema",
        "roles.cedar",
        "guards.cedar",
        "gates.toml",
    ] {
        fs::copy(repo.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn policy_check_reports_file_and_line_and_reload_keeps_the_old_set_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pol");
    copy_policies(&dir);
    // The offline check is the server binary's: the policy engine stays
    // out of the CLI that deploy jobs install.
    let cli = || std::process::Command::new(bin("vault-server"));
    let out = ok(cli().args(["policy", "check"]).arg(&dir));
    assert!(out.contains("valid"), "{out}");
    // The shipped folder itself is valid.
    ok(cli()
        .args(["policy", "check"])
        .arg(Path::new("../policies")));

    fs::write(
        dir.join("zz-bad.cedar"),
        "// a typo in an action name\npermit(principal, action == Vault::Action::\"pul\", resource);\n",
    )
    .unwrap();
    let err = fails_with(cli().args(["policy", "check"]).arg(&dir), 1);
    assert!(err.contains("zz-bad.cedar:2:"), "{err}");

    // A server on a good copy.
    let live = tmp.path().join("live");
    copy_policies(&live);
    let mut s = Server::start_with(&["--policies", live.to_str().unwrap()]);
    let f = s.tmp.path().join("small.dat");
    random_file(&f, 100, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    // An invalid set is refused; the running one stays.
    fs::copy(dir.join("zz-bad.cedar"), live.join("zz-bad.cedar")).unwrap();
    let err = fails_with(s.admin().args(["policy", "reload"]), 1);
    assert!(
        err.contains("zz-bad.cedar:2:") && err.contains("stays in force"),
        "{err}"
    );
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    // A valid but stricter set takes effect at once: no trainer grant.
    fs::remove_file(live.join("zz-bad.cedar")).unwrap();
    let roles = fs::read_to_string(live.join("roles.cedar")).unwrap();
    let strict = roles.replace("Vault::Role::\"trainer\"", "Vault::Role::\"nobody\"");
    fs::write(live.join("roles.cedar"), &strict).unwrap();
    ok(s.admin().args(["policy", "reload"]));
    fails_with(s.cli().args(["push", "t/m"]).arg(&f), 3);
    // SIGHUP reloads too.
    fs::write(live.join("roles.cedar"), &roles).unwrap();
    let pid = s.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if run(s.cli().args(["push", "t/m"]).arg(&f)).status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            s.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // A server refuses to start on an invalid folder.
    s.terminate();
    fs::write(
        live.join("zz-bad.cedar"),
        fs::read(dir.join("zz-bad.cedar")).unwrap(),
    )
    .unwrap();
    let err = refused_with_policies(&s, &live);
    assert!(err.contains("zz-bad.cedar:2:"), "{err}");
}

#[test]
fn tls_is_verified_by_the_client() {
    let s = Server::start();
    assert!(s.addr.starts_with("https://"));
    ok(s.cli().arg("ls"));
    // Without the private CA the server is not trusted.
    let mut c = s.cli();
    c.env_remove("MLVAULT_CA_CERT").arg("ls");
    let err = fails_with(&mut c, 7);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(err.contains("--ca-cert"), "{err}");
    // Plain HTTP to the TLS port does not get through either.
    let mut c = s.cli();
    c.env("MLVAULT_ADDR", s.addr.replace("https://", "http://"))
        .arg("ls");
    assert_ne!(run(&mut c).status.code(), Some(0));
}
