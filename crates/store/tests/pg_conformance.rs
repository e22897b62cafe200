//! The `MetaStore` conformance suite against PostgreSQL, and the checks
//! for several replicas sharing one database. Needs a server:
//! `MLVAULT_PG_URL` names one whose user may create databases (scripts/test.sh
//! starts one); without it the test says so and passes, unless
//! `MLVAULT_REQUIRE_PG` is set (CI), when it fails.
#![cfg(feature = "postgres")]

use std::sync::{Arc, Mutex};

use vault_store::{meta_conformance, MetaStore, PgMeta};

fn admin_url() -> Option<String> {
    match std::env::var("MLVAULT_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var_os("MLVAULT_REQUIRE_PG").is_none(),
                "MLVAULT_REQUIRE_PG is set but MLVAULT_PG_URL is not"
            );
            eprintln!("SKIPPED: PostgreSQL tests (MLVAULT_PG_URL is not set; scripts/test.sh starts a server)");
            None
        }
    }
}

/// Fresh databases on one server, dropped when done.
struct Databases {
    admin: String,
    made: Mutex<Vec<String>>,
}

impl Databases {
    fn fresh(&self) -> String {
        let mut made = self.made.lock().unwrap();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("mlvault_test_{}_{n}", std::process::id());
        let mut c =
            postgres::Client::connect(&self.admin, postgres::NoTls).expect("connect as admin");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .expect("drop an old database");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a database");
        made.push(name.clone());
        let mut cfg: postgres::Config = self.admin.parse().unwrap();
        cfg.dbname(&name);
        // Back to a URL the backend parses.
        let host = match &cfg.get_hosts()[0] {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        };
        format!(
            "postgres://{}@{}:{}/{name}",
            cfg.get_user().unwrap_or("postgres"),
            host,
            cfg.get_ports().first().copied().unwrap_or(5432)
        )
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) else {
            return;
        };
        let made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        for name in made.iter() {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

#[test]
fn postgres_keeps_the_metastore_contract_and_replicas_share_it() {
    let Some(admin) = admin_url() else { return };
    let dbs = Databases {
        admin,
        made: Mutex::new(Vec::new()),
    };
    let fresh = || -> Arc<dyn MetaStore> {
        Arc::new(PgMeta::connect(&dbs.fresh(), 8, None).expect("connect to PostgreSQL"))
    };
    meta_conformance::run_all(&fresh);
    // Two replicas: two pools on one database, each its own connections.
    let pair = || -> (Arc<dyn MetaStore>, Arc<dyn MetaStore>) {
        let url = dbs.fresh();
        let a = PgMeta::connect(&url, 4, None).expect("replica a");
        let b = PgMeta::connect(&url, 4, None).expect("replica b");
        (Arc::new(a), Arc::new(b))
    };
    meta_conformance::run_shared(&pair);
}

#[test]
fn tls_to_the_database_is_required_and_verified_when_asked() {
    let Some(admin) = admin_url() else { return };
    let ca = std::env::var("MLVAULT_PG_CA").expect("MLVAULT_PG_CA (scripts/postgres.sh sets it)");
    let dbs = Databases {
        admin,
        made: Mutex::new(Vec::new()),
    };
    let url = dbs.fresh();
    // In clear on loopback without a CA; over TLS with one.
    let plain = PgMeta::connect(&url, 1, None).expect("connect in clear");
    assert!(!plain.connection_encrypted().unwrap());
    let tls = PgMeta::connect(&url, 2, Some(std::path::Path::new(&ca))).expect("connect over TLS");
    assert!(
        tls.connection_encrypted().unwrap(),
        "PostgreSQL reports the connection encrypted"
    );
    tls.put_config("k", b"over tls").unwrap();
    assert_eq!(
        plain.config("k").unwrap().as_deref(),
        Some(&b"over tls"[..])
    );
    // Another CA's certificate is refused, and nothing falls back to clear.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=another CA", "-keyout"])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{made:?}");
    let e = PgMeta::connect(&url, 1, Some(&other))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("PostgreSQL"), "{e}");
    // A CA file that holds no certificate is refused before connecting.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = PgMeta::connect(&url, 1, Some(&empty))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("no certificate"), "{e}");
}

/// Appends to the shared log from two replicas, many writers each, form
/// one chain: every row builds on the one before it, no sequence number
/// is missing or taken twice, and the head is the last row.
#[test]
fn appends_and_journaled_changes_from_two_replicas_form_one_chain() {
    let Some(admin) = admin_url() else { return };
    let dbs = Databases {
        admin,
        made: Mutex::new(Vec::new()),
    };
    let url = dbs.fresh();
    let a = Arc::new(PgMeta::connect(&url, 4, None).expect("replica a"));
    let b = Arc::new(PgMeta::connect(&url, 4, None).expect("replica b"));
    const EACH: u64 = 25;
    let rows = |seq: u64, head: &str| {
        vec![
            vault_store::LogRow {
                seq: seq + 1,
                hash: format!("h{}", seq + 1),
                line: format!("{} {head}", seq + 1),
            },
            vault_store::LogRow {
                seq: seq + 2,
                hash: format!("h{}", seq + 2),
                line: format!("{} h{}", seq + 2, seq + 1),
            },
        ]
    };
    std::thread::scope(|scope| {
        // Two writers append alone (the audit writer of each replica);
        // two make changes journaled in the same transaction.
        for (w, m) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            scope.spawn(move || {
                for i in 0..EACH {
                    if w < 2 {
                        m.log_append(&mut |seq, head| rows(seq, head))
                            .expect("append");
                    } else {
                        let key = format!("change-{w}-{i}");
                        m.journaled(
                            &mut |s: &dyn MetaStore| s.put_config(&key, b"made"),
                            &mut |head| {
                                let (seq, hash) = head.expect("the database keeps the log");
                                Ok(rows(seq, hash))
                            },
                        )
                        .expect("journaled change");
                    }
                }
            });
        }
    });
    for w in 2..4 {
        for i in 0..EACH {
            assert!(
                a.config(&format!("change-{w}-{i}")).unwrap().is_some(),
                "journaled change {w}-{i} was made"
            );
        }
    }
    let mut lines = Vec::new();
    b.log_scan(&mut |l: &[u8]| {
        lines.push(String::from_utf8(l.to_vec()).unwrap());
        true
    })
    .unwrap();
    assert_eq!(lines.len() as u64, 4 * EACH * 2);
    for (i, l) in lines.iter().enumerate() {
        let seq = i as u64 + 1;
        let prev = if seq == 1 {
            "0".repeat(64)
        } else {
            format!("h{}", seq - 1)
        };
        assert_eq!(
            l,
            &format!("{seq} {prev}"),
            "row {seq} builds on row {}",
            seq - 1
        );
    }
    assert_eq!(
        a.log_head().unwrap(),
        (4 * EACH * 2, format!("h{}", 4 * EACH * 2))
    );
    assert_eq!(a.log_tail(2).unwrap(), lines[lines.len() - 2..].to_vec());
}
