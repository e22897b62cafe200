//! A vault whose metadata lives in PostgreSQL: the real server on a real
//! database, over TLS (scripts/test.sh starts one and sets MLVAULT_PG_URL;
//! without it these tests say so and pass, unless MLVAULT_REQUIRE_PG is
//! set), and the config rules that keep metadata where it is meant to be.

use super::*;
use std::process::Command;

#[test]
fn a_vault_on_postgres_serves_survives_a_restart_and_has_one_server() {
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
