//! The embedded metadata backend: one redb file (ACID, crash-safe), a
//! table per [`Table`].

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::kv::{Kv, Meta, Table, Tx};
use crate::{Error, Result};

const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const ARTIFACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artifacts");
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
/// The two index tables were created holding text; kept so for old files.
const DIGESTS: TableDefinition<&str, &str> = TableDefinition::new("digests");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
const CONTENT: TableDefinition<&str, &str> = TableDefinition::new("content");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const PUBLISHERS: TableDefinition<&str, &[u8]> = TableDefinition::new("publishers");
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const ATTESTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("attestors");
const ATTESTATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("attestations");

/// How a table is defined in the file.
enum Def {
    Bytes(TableDefinition<'static, &'static str, &'static [u8]>),
    Text(TableDefinition<'static, &'static str, &'static str>),
}

fn def(t: Table) -> Def {
    match t {
        Table::Config => Def::Bytes(CONFIG),
        Table::Tokens => Def::Bytes(TOKENS),
        Table::Artifacts => Def::Bytes(ARTIFACTS),
        Table::Versions => Def::Bytes(VERSIONS),
        Table::Digests => Def::Text(DIGESTS),
        Table::Blobs => Def::Bytes(BLOBS),
        Table::Content => Def::Text(CONTENT),
        Table::Sessions => Def::Bytes(SESSIONS),
        Table::Publishers => Def::Bytes(PUBLISHERS),
        Table::Aliases => Def::Bytes(ALIASES),
        Table::Jobs => Def::Bytes(JOBS),
        Table::Attestors => Def::Bytes(ATTESTORS),
        Table::Attestations => Def::Bytes(ATTESTATIONS),
    }
}

fn as_text(t: Table, v: &[u8]) -> Result<&str> {
    std::str::from_utf8(v)
        .map_err(|_| Error::Meta(format!("a `{}` value that is not text", t.name())))
}

/// Rows of a table with `lo <= key < hi`.
fn rows<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    lo: &str,
    hi: Option<&str>,
    bytes: impl Fn(V::SelfType<'_>) -> Vec<u8>,
) -> Result<Vec<(String, Vec<u8>)>> {
    let range = match hi {
        Some(hi) => table.range::<&str>(lo..hi)?,
        None => table.range::<&str>(lo..)?,
    };
    let mut out = Vec::new();
    for row in range {
        let (k, v) = row?;
        out.push((k.value().to_owned(), bytes(v.value())));
    }
    Ok(out)
}

/// The tables of one redb file.
pub struct RedbKv {
    /// Compaction needs exclusive access; every transaction holds a read
    /// guard, so the write guard waits for them to finish.
    db: RwLock<Database>,
}

/// Metadata in a redb database file.
pub type RedbMeta = Meta<RedbKv>;

impl Meta<RedbKv> {
    /// Open (or create) the database at `path` and make sure every table exists.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        for t in Table::ALL {
            match def(t) {
                Def::Bytes(d) => drop(tx.open_table(d)?),
                Def::Text(d) => drop(tx.open_table(d)?),
            }
        }
        tx.commit()?;
        Meta::over(RedbKv {
            db: RwLock::new(db),
        })
    }
}

impl RedbKv {
    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }
}

struct ReadTx(ReadTransaction);
struct WriteTx<'a>(&'a WriteTransaction);

/// Open table `$t` in transaction `$tx` as `$tbl`, with `$bytes` turning
/// one of its values into bytes, and evaluate `$body`.
macro_rules! with_table {
    ($tx:expr, $t:expr, |$tbl:ident, $bytes:ident| $body:expr) => {
        match def($t) {
            Def::Bytes(d) => {
                #[allow(unused_mut)]
                let mut $tbl = $tx.open_table(d)?;
                let $bytes = |v: &[u8]| v.to_vec();
                let out = $body;
                out
            }
            Def::Text(d) => {
                #[allow(unused_mut)]
                let mut $tbl = $tx.open_table(d)?;
                let $bytes = |v: &str| v.as_bytes().to_vec();
                let out = $body;
                out
            }
        }
    };
}

impl Tx for ReadTx {
    fn get(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>> {
        with_table!(self.0, t, |tbl, bytes| Ok(tbl
            .get(key)?
            .map(|v| bytes(v.value()))))
    }
    fn range(&mut self, t: Table, lo: &str, hi: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        with_table!(self.0, t, |tbl, bytes| rows(&tbl, lo, hi, bytes))
    }
    fn put(&mut self, t: Table, _: &str, _: &[u8]) -> Result<()> {
        Err(read_only(t))
    }
    fn remove(&mut self, t: Table, _: &str) -> Result<Option<Vec<u8>>> {
        Err(read_only(t))
    }
}

fn read_only(t: Table) -> Error {
    Error::Meta(format!("a write to `{}` in a read transaction", t.name()))
}

impl Tx for WriteTx<'_> {
    fn get(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>> {
        with_table!(self.0, t, |tbl, bytes| Ok(tbl
            .get(key)?
            .map(|v| bytes(v.value()))))
    }
    fn range(&mut self, t: Table, lo: &str, hi: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        with_table!(self.0, t, |tbl, bytes| rows(&tbl, lo, hi, bytes))
    }
    fn put(&mut self, t: Table, key: &str, value: &[u8]) -> Result<()> {
        match def(t) {
            Def::Bytes(d) => drop(self.0.open_table(d)?.insert(key, value)?),
            Def::Text(d) => drop(self.0.open_table(d)?.insert(key, as_text(t, value)?)?),
        }
        Ok(())
    }
    fn remove(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>> {
        with_table!(self.0, t, |tbl, bytes| Ok(tbl
            .remove(key)?
            .map(|v| bytes(v.value()))))
    }
}

impl Kv for RedbKv {
    fn read<R: Send>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        let db = self.db();
        let mut tx = ReadTx(db.begin_read()?);
        f(&mut tx)
    }

    fn write<R: Send>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        let db = self.db();
        let tx = db.begin_write()?;
        let r = f(&mut WriteTx(&tx))?;
        tx.commit()?;
        Ok(r)
    }

    fn reclaim(&self) -> Result<()> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.compact().map_err(|e| Error::Meta(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{ckey, enc, vkey};
    use crate::records::*;
    use crate::MetaStore;
    use vault_api::{FileEntry, Kind};
    use vault_crypto::{Dek, EncryptionContext, Keyring, MasterKey};

    /// Metadata written before dedup was scoped by label: a `raw-pii`
    /// artifact's blob indexed under the unlabelled key. Opening it moves the
    /// entry under the label, once.
    #[test]
    fn opening_old_metadata_scopes_labelled_content_by_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let (ring, _) = Keyring::create(&MasterKey::generate().unwrap()).unwrap();
        let sha = "ab".repeat(32);
        let ctx = EncryptionContext::new([1; 16], "hr", 5, [0xab; 32]).unwrap();
        let blob = BlobRecord {
            id: "01".repeat(16),
            namespace: "hr".into(),
            size: 5,
            sha256: sha.clone(),
            wrapped_dek: ring.wrap_dek(&Dek::generate().unwrap(), &ctx).unwrap(),
            refs: 1,
            pending_session: None,
            created: 0,
            sensitivity: String::new(),
            kind: String::new(),
            artifact: String::new(),
        };
        let version = VersionRecord {
            name: "hr/people".into(),
            version: 1,
            kind: Kind::Dataset,
            digest: format!("sha256:{}", "cd".repeat(32)),
            envelope: String::new(),
            files: vec![VersionFile {
                entry: FileEntry {
                    path: "p.csv".into(),
                    size: 5,
                    sha256: sha.clone(),
                },
                blob: blob.id.clone(),
            }],
            created: 0,
            report: None,
            review: None,
            scan: None,
            pushed_by: String::new(),
        };
        let art = ArtifactRecord {
            name: "hr/people".into(),
            kind: Kind::Dataset,
            next_version: 2,
            sensitivity: "raw-pii".into(),
        };
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let put = |t: TableDefinition<&str, &[u8]>, k: &str, v: Vec<u8>| {
                    tx.open_table(t).unwrap().insert(k, v.as_slice()).unwrap();
                };
                put(ARTIFACTS, &art.name, enc(&art).unwrap());
                put(VERSIONS, &vkey("hr/people", 1), enc(&version).unwrap());
                put(BLOBS, &blob.id, enc(&blob).unwrap());
                tx.open_table(CONTENT)
                    .unwrap()
                    .insert(ckey("hr", "", &sha, 5).as_str(), blob.id.as_str())
                    .unwrap();
            }
            tx.commit().unwrap();
        }
        for _ in 0..2 {
            let meta = RedbMeta::open(&path).unwrap();
            assert!(meta.find_blob("hr", "", "", &sha, 5).unwrap().is_none());
            let found = meta
                .find_blob("hr", "", "raw-pii", &sha, 5)
                .unwrap()
                .unwrap();
            assert_eq!(
                (found.id.as_str(), found.sensitivity.as_str()),
                (blob.id.as_str(), "raw-pii")
            );
        }
    }

    #[test]
    fn a_review_moves_only_from_the_states_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let rec = |review: Option<Review>| VersionRecord {
            name: "hr/out".into(),
            version: 1,
            kind: Kind::Dataset,
            digest: format!("sha256:{}", "ef".repeat(32)),
            envelope: String::new(),
            files: vec![],
            created: 0,
            report: None,
            review,
            scan: None,
            pushed_by: String::new(),
        };
        let pending = Review {
            state: ReviewState::Pending,
            by: String::new(),
            at: 1,
            reason: String::new(),
        };
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(VERSIONS)
                .unwrap()
                .insert(
                    vkey("hr/out", 1).as_str(),
                    enc(&rec(Some(pending))).unwrap().as_slice(),
                )
                .unwrap();
            tx.open_table(VERSIONS)
                .unwrap()
                .insert(
                    vkey("hr/plain", 1).as_str(),
                    enc(&rec(None)).unwrap().as_slice(),
                )
                .unwrap();
            tx.commit().unwrap();
        }
        let meta = RedbMeta::open(&path).unwrap();
        let approve = Review {
            state: ReviewState::Approved,
            by: "dpo".into(),
            at: 2,
            reason: "ok".into(),
        };
        assert!(!meta.version("hr/out", 1).unwrap().unwrap().released());
        // Withdraw needs an approved version: nothing changes.
        let withdraw = Review {
            state: ReviewState::Withdrawn,
            ..approve.clone()
        };
        assert!(!meta
            .set_review("hr/out", 1, &[ReviewState::Approved], &withdraw)
            .unwrap());
        assert!(meta
            .set_review("hr/out", 1, &[ReviewState::Pending], &approve)
            .unwrap());
        assert!(!meta
            .set_review("hr/out", 1, &[ReviewState::Pending], &approve)
            .unwrap());
        let got = meta.version("hr/out", 1).unwrap().unwrap();
        assert!(got.released());
        assert_eq!(got.review, Some(approve.clone()));
        assert!(meta
            .set_review("hr/out", 1, &[ReviewState::Approved], &withdraw)
            .unwrap());
        assert!(!meta.version("hr/out", 1).unwrap().unwrap().released());
        // A version without a review (an ordinary push) cannot be put under one.
        assert!(!meta
            .set_review("hr/plain", 1, &[ReviewState::Pending], &approve)
            .unwrap());
        assert!(matches!(
            meta.set_review("hr/none", 1, &[ReviewState::Pending], &approve),
            Err(Error::NotFound(_))
        ));
    }
}
