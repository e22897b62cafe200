//! A vault whose metadata lives in PostgreSQL: the real server on a real
//! database, over TLS (scripts/test.sh starts one and sets MLVAULT_PG_URL; without
//! it these tests say so and pass, unless MLVAULT_REQUIRE_PG is set).

use super::*;
use std::process::Command;

/// A fresh database on the test server, as a URL; `None` (the test is
/// skipped, and says so) when there is no server.
fn fresh_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("MLVAULT_PG_URL") else {
        assert!(
            std::env::var_os("MLVAULT_REQUIRE_PG").is_none(),
            "MLVAULT_REQUIRE_PG is set but MLVAULT_PG_URL is not"
        );
        eprintln!("SKIPPED: {test} (MLVAULT_PG_URL is not set; scripts/test.sh starts PostgreSQL)");
        return None;
    };
    let name = format!(
        "mlvault_e2e_{}_{}",
        std::process::id(),
        test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        ok(Command::new("psql").arg(&admin).args(["-q", "-c", &sql]));
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

#[test]
fn a_vault_on_postgres_serves_survives_a_restart_and_has_one_server() {
    let Some(url) = fresh_database("postgres serve") else {
        return;
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("server.toml");
    // Over TLS to the database, verified against the test cluster's CA.
    let ca = std::env::var("MLVAULT_PG_CA").expect("MLVAULT_PG_CA (scripts/postgres.sh sets it)");
    fs::write(
        &cfg,
        format!(
            "[metadata]\nbackend = \"postgres\"\nurl = \"{url}\"\nconnections = 4\nca_file = \"{ca}\"\n"
        ),
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap();
    let mut s = Server::start_init_with(&["--config", cfg_arg], &["--config", cfg_arg]);
    assert!(
        !s.data_dir.join("meta.redb").exists(),
        "the metadata is in the database, not in the data directory"
    );

    let src = s.tmp.path().join("model");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("weights.bin"), vec![7u8; 3 * MIB as usize + 5]).unwrap();
    let pushed = json(&ok(s
        .cli()
        .args(["--json", "push", "team/pg-model"])
        .arg(&src)));
    assert_eq!(pushed["version"], 1);
    let dest = s.tmp.path().join("deploy");
    ok(s.cli().args(["pull", "team/pg-model:1", "--to"]).arg(&dest));
    assert_eq!(
        fs::read(dest.join("weights.bin")).unwrap(),
        fs::read(src.join("weights.bin")).unwrap()
    );

    // A second server on the same database is refused while the first runs:
    // the audit chain is not shared yet.
    let other = tempfile::tempdir().unwrap();
    let (code, err) = failed_start(&[
        "--data-dir".as_ref(),
        s.data_dir.as_os_str(),
        "--unseal-identity".as_ref(),
        s.identity.as_os_str(),
        "--config".as_ref(),
        cfg.as_os_str(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("another vault-server is using this metadata database"),
        "{err}"
    );
    drop(other);

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
        fs::read(dest2.join("weights.bin")).unwrap().len(),
        3 * MIB as usize + 5
    );
    ok(s.cli().arg("verify").arg(&dest2));
}
