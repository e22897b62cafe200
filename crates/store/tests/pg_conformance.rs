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
        let name = format!("mlvault_test_{}_{}", std::process::id(), made.len());
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
        Arc::new(PgMeta::connect(&dbs.fresh(), 8).expect("connect to PostgreSQL"))
    };
    meta_conformance::run_all(&fresh);
    // Two replicas: two pools on one database, each its own connections.
    let pair = || -> (Arc<dyn MetaStore>, Arc<dyn MetaStore>) {
        let url = dbs.fresh();
        let a = PgMeta::connect(&url, 4).expect("replica a");
        let b = PgMeta::connect(&url, 4).expect("replica b");
        (Arc::new(a), Arc::new(b))
    };
    meta_conformance::run_shared(&pair);
}

#[test]
fn a_database_elsewhere_is_refused_without_tls() {
    for url in [
        "postgres://u@db.example.com:5432/vault",
        "postgres://u@10.0.0.5/vault",
    ] {
        let e = PgMeta::connect(url, 1).err().expect("refused");
        assert!(e.to_string().contains("TLS"), "{e}");
    }
}
