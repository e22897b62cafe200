//! The `MetaStore` conformance suite (`vault_store::meta_conformance`)
//! against the embedded redb store. A new backend adds a file like this.

use std::sync::{Arc, Mutex};

use vault_store::{meta_conformance, MetaStore, RedbMeta};

#[test]
fn redb_keeps_the_metastore_contract() {
    let dirs = Mutex::new(Vec::new());
    let fresh = || -> Arc<dyn MetaStore> {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = RedbMeta::open(&dir.path().join("meta.redb")).expect("open redb");
        dirs.lock().expect("lock").push(dir);
        Arc::new(m)
    };
    meta_conformance::run_all(&fresh);
}

#[test]
fn redb_keeps_the_shared_store_rules_for_one_process() {
    let dirs = Mutex::new(Vec::new());
    let pair = || -> (Arc<dyn MetaStore>, Arc<dyn MetaStore>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let m: Arc<dyn MetaStore> =
            Arc::new(RedbMeta::open(&dir.path().join("meta.redb")).expect("open redb"));
        dirs.lock().expect("lock").push(dir);
        (m.clone(), m)
    };
    meta_conformance::run_shared(&pair);
}
