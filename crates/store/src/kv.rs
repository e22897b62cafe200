//! The metadata logic, written once over ordered key-value tables: every
//! [`MetaStore`] rule (version numbers, dedup index, reference counts,
//! compare-and-set) lives here, and a backend only provides transactions
//! over the tables ([`Kv`]). The embedded redb file and a shared
//! PostgreSQL database are such backends; both run the conformance suite.
//!
//! Keys are text and sort by their bytes; values are JSON records (the
//! `digests` and `content` tables hold a key of another table).

use serde::de::DeserializeOwned;
use serde::Serialize;
use vault_crypto::WrappedDek;

use crate::meta::MetaStore;
use crate::records::*;
use crate::{Error, Result};

/// The tables of the metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Settings and the key ring.
    Config,
    /// Tokens by the hash of their secret.
    Tokens,
    /// Artifacts by name.
    Artifacts,
    /// Versions by `name NUL zero-padded version`.
    Versions,
    /// Digest → versions key.
    Digests,
    /// Blobs by id.
    Blobs,
    /// Content key (see `ckey`) → blob id, live blobs only.
    Content,
    /// Upload sessions by id.
    Sessions,
    /// Publishers by `namespace NUL keyid`.
    Publishers,
    /// Alias entries by `name NUL alias`.
    Aliases,
    /// Anonymization jobs by id.
    Jobs,
    /// Attestors by name.
    Attestors,
    /// Attestations by `name NUL zero-padded version NUL envelope digest`.
    Attestations,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 13] = [
        Table::Config,
        Table::Tokens,
        Table::Artifacts,
        Table::Versions,
        Table::Digests,
        Table::Blobs,
        Table::Content,
        Table::Sessions,
        Table::Publishers,
        Table::Aliases,
        Table::Jobs,
        Table::Attestors,
        Table::Attestations,
    ];

    /// The table's name, as stored.
    pub fn name(self) -> &'static str {
        match self {
            Table::Config => "config",
            Table::Tokens => "tokens",
            Table::Artifacts => "artifacts",
            Table::Versions => "versions",
            Table::Digests => "digests",
            Table::Blobs => "blobs",
            Table::Content => "content",
            Table::Sessions => "sessions",
            Table::Publishers => "publishers",
            Table::Aliases => "aliases",
            Table::Jobs => "jobs",
            Table::Attestors => "attestors",
            Table::Attestations => "attestations",
        }
    }
}

/// One transaction over the tables.
pub trait Tx: Send {
    /// The value at `key`.
    fn get(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>>;
    /// Rows with `lo <= key < hi` (to the end without `hi`), in key order.
    fn range(&mut self, t: Table, lo: &str, hi: Option<&str>) -> Result<Vec<(String, Vec<u8>)>>;
    /// Set `key` (a write transaction only).
    fn put(&mut self, t: Table, key: &str, value: &[u8]) -> Result<()>;
    /// Remove `key`, returning what it held (a write transaction only).
    fn remove(&mut self, t: Table, key: &str) -> Result<Option<Vec<u8>>>;
}

/// A backend: transactions over the tables. A write transaction is all or
/// nothing and durable when `write` returns; `write` may run `f` more than
/// once (a database retries a transaction a concurrent one made fail), so
/// `f` computes everything from what it reads.
pub trait Kv: Send + Sync {
    /// Run `f` in a read transaction (a consistent snapshot).
    fn read<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R>;
    /// Run `f`, which makes exactly one read (one `get` or one `range`):
    /// a single statement is consistent by itself, so a backend may skip
    /// the transaction around it (one round trip instead of three).
    fn read_single<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.read(f)
    }
    /// Run `f` in a write transaction.
    fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R>;
    /// Run `f` in a write transaction, then `journal` in the same one: a
    /// store that keeps the log (see [`LogRow`]) passes its head, locked
    /// since the transaction began, and appends the rows `journal` returns
    /// before it commits; a store that keeps none passes `None` (the caller
    /// appends to its own log, and returns no rows). An error from either
    /// changes nothing. Both may run again when the store retries.
    fn write_journaled(
        &self,
        f: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
        journal: &mut Journal<'_>,
    ) -> Result<()> {
        self.write(|tx| {
            f(tx)?;
            let rows = journal(None)?;
            if rows.is_empty() {
                Ok(())
            } else {
                Err(Error::Meta(
                    "this metadata store keeps no log to append to".into(),
                ))
            }
        })
    }
    /// Compact storage after deletions, where the engine allows it.
    fn reclaim(&self) -> Result<()> {
        Ok(())
    }
}

/// One entry of a log kept in the metadata store (the audit chain that
/// replicas share), as a journaled write appends it.
#[derive(Debug, Clone)]
pub struct LogRow {
    /// Its sequence number: 1 after the head's.
    pub seq: u64,
    /// Its hash, the next head.
    pub hash: String,
    /// The entry, one line of text.
    pub line: String,
}

/// Makes the log entries of a journaled write (see [`Kv::write_journaled`]):
/// given the log's head (sequence number and hash of its last entry) when
/// the store keeps the log, returns the rows to append on it.
pub type Journal<'a> = dyn FnMut(Option<(u64, &str)>) -> Result<Vec<LogRow>> + Send + 'a;

/// A [`Kv`] inside a transaction already open: nested reads and writes
/// join it, so several [`MetaStore`] calls make one transaction.
struct InTx<'a>(std::sync::Mutex<&'a mut dyn Tx>);

impl Kv for InTx<'_> {
    fn read<R: Send>(&self, mut f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        let mut tx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut **tx)
    }

    fn write<R: Send>(&self, f: impl FnMut(&mut dyn Tx) -> Result<R> + Send) -> Result<R> {
        self.read(f)
    }

    fn write_journaled(
        &self,
        _: &mut (dyn FnMut(&mut dyn Tx) -> Result<()> + Send),
        _: &mut Journal<'_>,
    ) -> Result<()> {
        Err(Error::Meta("a journaled write inside another one".into()))
    }
}

/// Metadata over a [`Kv`] backend.
pub struct Meta<K: Kv> {
    pub(crate) kv: K,
}

const KEYRING_KEY: &str = "keyring";

/// Marks, in `config`, metadata whose content index is scoped by
/// sensitivity label.
const LABELLED_CONTENT: &str = "content-index-labelled";

pub(crate) fn vkey(name: &str, version: u64) -> String {
    format!("{name}\0{version:020}")
}

/// Content index key. Unlabelled content keeps the original three-part key;
/// labelled content gets the label as a fourth part, so dedup never crosses
/// sensitivity labels.
pub(crate) fn ckey(ns: &str, label: &str, sha: &str, size: u64) -> String {
    if label.is_empty() {
        format!("{ns}\0{sha}\0{size}")
    } else {
        format!("{ns}\0{label}\0{sha}\0{size}")
    }
}

/// The label part of the content key of content committed as `kind` under
/// `label`: blobs recorded before their kind was kept (empty `kind`) keep
/// the label-only key, which no lookup asks for any more.
fn index_label(kind: &str, label: &str) -> String {
    if kind.is_empty() {
        label.to_owned()
    } else {
        format!("{kind}\u{1}{label}")
    }
}

/// The content key a committed blob is indexed under.
fn blob_ckey(b: &BlobRecord) -> String {
    ckey(
        &b.namespace,
        &index_label(&b.kind, &b.sensitivity),
        &b.sha256,
        b.size,
    )
}

pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Meta(e.to_string()))
}

fn dec<T: DeserializeOwned>(t: Table, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt {
        table: t.name(),
        detail: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(tx: &mut dyn Tx, t: Table, key: &str) -> Result<Option<T>> {
    tx.get(t, key)?.map(|v| dec(t, &v)).transpose()
}

fn put<T: Serialize>(tx: &mut dyn Tx, t: Table, key: &str, v: &T) -> Result<()> {
    tx.put(t, key, &enc(v)?)
}

fn text(t: Table, v: Vec<u8>) -> Result<String> {
    String::from_utf8(v).map_err(|_| Error::Corrupt {
        table: t.name(),
        detail: "a key that is not UTF-8".into(),
    })
}

/// The first key after every key that starts with `prefix`.
fn successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        let mut next = c as u32 + 1;
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn prefixed<T: DeserializeOwned>(tx: &mut dyn Tx, t: Table, prefix: &str) -> Result<Vec<T>> {
    let hi = successor(prefix);
    tx.range(t, prefix, hi.as_deref())?
        .into_iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| dec(t, &v))
        .collect()
}

fn all<T: DeserializeOwned>(tx: &mut dyn Tx, t: Table) -> Result<Vec<T>> {
    prefixed(tx, t, "")
}

fn versions_of(tx: &mut dyn Tx, name: &str) -> Result<Vec<VersionRecord>> {
    prefixed(tx, Table::Versions, &format!("{name}\0"))
}

/// Once per database: blobs committed by versions of labelled artifacts
/// before dedup was scoped by label were indexed under the unlabelled key,
/// where pushes of anything in the namespace would find them. Give them
/// their artifact's label and move their index entry.
fn label_content(tx: &mut dyn Tx) -> Result<()> {
    if tx.get(Table::Config, LABELLED_CONTENT)?.is_some() {
        return Ok(());
    }
    let labels: std::collections::HashMap<String, String> =
        all::<ArtifactRecord>(tx, Table::Artifacts)?
            .into_iter()
            .filter(|a| !a.sensitivity.is_empty())
            .map(|a| (a.name, a.sensitivity))
            .collect();
    for ver in all::<VersionRecord>(tx, Table::Versions)? {
        let Some(label) = labels.get(&ver.name) else {
            continue;
        };
        for f in &ver.files {
            let Some(mut b) = get::<BlobRecord>(tx, Table::Blobs, &f.blob)? else {
                continue;
            };
            if !b.sensitivity.is_empty() {
                continue;
            }
            let old = ckey(&b.namespace, "", &b.sha256, b.size);
            if tx.get(Table::Content, &old)?.as_deref() == Some(b.id.as_bytes()) {
                tx.remove(Table::Content, &old)?;
            }
            b.sensitivity = label.clone();
            tx.put(
                Table::Content,
                &ckey(&b.namespace, label, &b.sha256, b.size),
                b.id.as_bytes(),
            )?;
            put(tx, Table::Blobs, &b.id, &b)?;
        }
    }
    tx.put(Table::Config, LABELLED_CONTENT, b"1")
}

/// Rows copied per transaction by [`Meta::copy_into`].
const COPY_BATCH: usize = 1000;

impl<K: Kv> Meta<K> {
    /// Copy every row of every table into `dst`, which must hold no vault
    /// (a backend migration: the rows are the same bytes in either).
    /// Returns the rows copied per table.
    pub fn copy_into<D: Kv>(&self, dst: &Meta<D>) -> Result<Vec<(&'static str, usize)>> {
        let mut copied = Vec::new();
        if dst
            .kv
            .read(|tx| tx.get(Table::Config, KEYRING_KEY))?
            .is_some()
        {
            return Err(Error::Conflict(
                "the target already holds a vault; a migration needs an empty one".into(),
            ));
        }
        // Settings a fresh store writes for itself (see `over`) are
        // replaced by the source's; every other table must be empty.
        for t in Table::ALL.into_iter().filter(|t| *t != Table::Config) {
            if !dst.kv.read(|tx| tx.range(t, "", None))?.is_empty() {
                return Err(Error::Conflict(format!(
                    "the target already holds rows in `{}`; a migration needs an empty database (an interrupted one leaves rows behind: drop the database and create it again)",
                    t.name()
                )));
            }
        }
        // Settings (the key ring among them) last: a copy cut short never
        // looks like a vault, and a rerun names the rows it left.
        let order = Table::ALL
            .into_iter()
            .filter(|t| *t != Table::Config)
            .chain([Table::Config]);
        for t in order {
            let rows = self.kv.read(|tx| tx.range(t, "", None))?;
            for chunk in rows.chunks(COPY_BATCH) {
                dst.kv.write(|tx| {
                    for (k, v) in chunk {
                        tx.put(t, k, v)?;
                    }
                    Ok(())
                })?;
            }
            copied.push((t.name(), rows.len()));
        }
        Ok(copied)
    }

    /// Whether every table of `other` holds exactly the rows of this one.
    pub fn same_rows<D: Kv>(&self, other: &Meta<D>) -> Result<Option<String>> {
        for t in Table::ALL {
            let mine = self.kv.read(|tx| tx.range(t, "", None))?;
            let theirs = other.kv.read(|tx| tx.range(t, "", None))?;
            if mine != theirs {
                return Ok(Some(format!(
                    "table `{}`: {} rows here, {} there, or their content differs",
                    t.name(),
                    mine.len(),
                    theirs.len()
                )));
            }
        }
        Ok(None)
    }

    /// Metadata over `kv`, brought up to date (see `label_content`).
    pub fn over(kv: K) -> Result<Self> {
        kv.write(label_content)?;
        Ok(Self { kv })
    }

    fn read_one<T: DeserializeOwned + Send>(&self, t: Table, key: &str) -> Result<Option<T>> {
        self.kv.read_single(|tx| get(tx, t, key))
    }

    fn read_all<T: DeserializeOwned + Send>(&self, t: Table) -> Result<Vec<T>> {
        self.kv.read_single(|tx| all(tx, t))
    }

    fn update_token(&self, id: &str, f: impl Fn(&mut TokenRecord) + Sync) -> Result<bool> {
        self.kv.write(|tx| {
            for (k, v) in tx.range(Table::Tokens, "", None)? {
                let mut rec: TokenRecord = dec(Table::Tokens, &v)?;
                if rec.id == id {
                    f(&mut rec);
                    put(tx, Table::Tokens, &k, &rec)?;
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

impl<K: Kv> MetaStore for Meta<K> {
    fn journaled(
        &self,
        change: &mut (dyn FnMut(&dyn MetaStore) -> Result<()> + Send),
        journal: &mut Journal<'_>,
    ) -> Result<()> {
        self.kv.write_journaled(
            &mut |tx| {
                let inner = Meta {
                    kv: InTx(std::sync::Mutex::new(tx)),
                };
                change(&inner)
            },
            journal,
        )
    }

    fn config(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv.read_single(|tx| tx.get(Table::Config, key))
    }

    fn put_config(&self, key: &str, value: &[u8]) -> Result<()> {
        self.kv.write(|tx| tx.put(Table::Config, key, value))
    }

    fn put_job(&self, job: &JobRecord) -> Result<()> {
        self.kv.write(|tx| put(tx, Table::Jobs, &job.id, job))
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.read_one(Table::Jobs, id)
    }

    fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        self.read_all(Table::Jobs)
    }

    fn claim_job(
        &self,
        id: &str,
        owner: &str,
        now: u64,
        until: u64,
        force: bool,
    ) -> Result<Option<JobRecord>> {
        self.kv.write(|tx| {
            let Some(mut job) = get::<JobRecord>(tx, Table::Jobs, id)? else {
                return Ok(None);
            };
            let free = job.owner.is_empty() || job.owner == owner || job.lease_until < now;
            if !job.is_unfinished() || !(free || force) {
                return Ok(None);
            }
            job.owner = owner.to_owned();
            job.lease_until = until;
            put(tx, Table::Jobs, id, &job)?;
            Ok(Some(job))
        })
    }

    fn put_owned_job(&self, job: &JobRecord) -> Result<bool> {
        self.kv
            .write(|tx| match get::<JobRecord>(tx, Table::Jobs, &job.id)? {
                Some(cur) if cur.owner == job.owner && cur.is_unfinished() => {
                    put(tx, Table::Jobs, &job.id, job)?;
                    Ok(true)
                }
                _ => Ok(false),
            })
    }

    fn commit_job(&self, session: &str, version: &VersionRecord, job: &JobRecord) -> Result<bool> {
        self.kv.write(|tx| {
            match get::<JobRecord>(tx, Table::Jobs, &job.id)? {
                Some(cur) if cur.owner == job.owner && cur.state == "running" => {}
                _ => return Ok(false),
            }
            commit_in(tx, session, version)?;
            put(tx, Table::Jobs, &job.id, job)?;
            Ok(true)
        })
    }

    fn put_publisher(&self, rec: &PublisherRecord) -> Result<()> {
        let k = format!("{}\0{}", rec.namespace, rec.keyid);
        self.kv.write(|tx| put(tx, Table::Publishers, &k, rec))
    }

    fn publishers(&self, namespace: &str) -> Result<Vec<PublisherRecord>> {
        let prefix = if namespace.is_empty() {
            String::new()
        } else {
            format!("{namespace}\0")
        };
        self.kv
            .read_single(|tx| prefixed(tx, Table::Publishers, &prefix))
    }

    fn remove_publisher(&self, namespace: &str, keyid: &str) -> Result<bool> {
        let k = format!("{namespace}\0{keyid}");
        self.kv
            .write(|tx| Ok(tx.remove(Table::Publishers, &k)?.is_some()))
    }

    fn put_attestor(&self, rec: &AttestorRecord) -> Result<()> {
        self.kv
            .write(|tx| put(tx, Table::Attestors, &rec.name, rec))
    }

    fn attestors(&self) -> Result<Vec<AttestorRecord>> {
        self.read_all(Table::Attestors)
    }

    fn remove_attestor(&self, name: &str) -> Result<bool> {
        self.kv
            .write(|tx| Ok(tx.remove(Table::Attestors, name)?.is_some()))
    }

    fn add_attestation(&self, rec: &AttestationRecord) -> Result<bool> {
        let k = format!("{}\0{}", vkey(&rec.name, rec.version), rec.digest);
        let vk = vkey(&rec.name, rec.version);
        self.kv.write(|tx| {
            if tx.get(Table::Versions, &vk)?.is_none() {
                return Err(Error::NotFound(format!("{}:{}", rec.name, rec.version)));
            }
            if tx.get(Table::Attestations, &k)?.is_some() {
                return Ok(false);
            }
            put(tx, Table::Attestations, &k, rec)?;
            Ok(true)
        })
    }

    fn attestations(&self, name: &str, version: u64) -> Result<Vec<AttestationRecord>> {
        let prefix = format!("{}\0", vkey(name, version));
        self.kv
            .read_single(|tx| prefixed(tx, Table::Attestations, &prefix))
    }

    fn alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>> {
        let e: Option<AliasEntry> = self.read_one(Table::Aliases, &format!("{name}\0{alias}"))?;
        Ok(e.filter(|e| !e.is_deleted()))
    }

    fn aliases(&self, name: &str) -> Result<Vec<AliasEntry>> {
        let all: Vec<AliasEntry> = self
            .kv
            .read(|tx| prefixed(tx, Table::Aliases, &format!("{name}\0")))?;
        Ok(all.into_iter().filter(|e| !e.is_deleted()).collect())
    }

    fn alias_sequence(&self, name: &str, alias: &str) -> Result<Option<u64>> {
        let e: Option<AliasEntry> = self.read_one(Table::Aliases, &format!("{name}\0{alias}"))?;
        Ok(e.map(|e| e.sequence))
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>> {
        let k = format!("{name}\0{alias}");
        self.kv.write(|tx| {
            let Some(current) =
                get::<AliasEntry>(tx, Table::Aliases, &k)?.filter(|e| !e.is_deleted())
            else {
                return Ok(None);
            };
            let tombstone = AliasEntry {
                version: 0,
                sequence: current.sequence + 1,
                expires: 0,
                signed: String::new(),
                ..current.clone()
            };
            put(tx, Table::Aliases, &k, &tombstone)?;
            Ok(Some(current))
        })
    }

    fn put_alias(&self, entry: &AliasEntry, expected: Option<u64>) -> Result<bool> {
        let k = format!("{}\0{}", entry.name, entry.alias);
        self.kv.write(|tx| {
            let current: Option<AliasEntry> = get(tx, Table::Aliases, &k)?;
            if current.map(|c| c.sequence) != expected {
                return Ok(false);
            }
            put(tx, Table::Aliases, &k, entry)?;
            Ok(true)
        })
    }

    fn reclaim(&self) -> Result<()> {
        self.kv.reclaim()
    }

    fn keyring(&self) -> Result<Option<KeyringRecord>> {
        self.read_one(Table::Config, KEYRING_KEY)
    }

    fn put_keyring(&self, rec: &KeyringRecord) -> Result<()> {
        self.kv.write(|tx| put(tx, Table::Config, KEYRING_KEY, rec))
    }

    fn swap_keyring(&self, old: &KeyringRecord, new: &KeyringRecord) -> Result<bool> {
        let (want, v) = (enc(old)?, enc(new)?);
        self.kv.write(|tx| {
            let same = tx.get(Table::Config, KEYRING_KEY)?.as_deref() == Some(want.as_slice());
            if same {
                tx.put(Table::Config, KEYRING_KEY, &v)?;
            }
            Ok(same)
        })
    }

    fn put_token(&self, hash: &str, rec: &TokenRecord) -> Result<()> {
        self.kv.write(|tx| put(tx, Table::Tokens, hash, rec))
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.read_one(Table::Tokens, hash)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read_all(Table::Tokens)
    }

    fn revoke_token(&self, id: &str) -> Result<bool> {
        self.update_token(id, |t| t.revoked = true)
    }

    fn approve_token(&self, id: &str, by: &str) -> Result<bool> {
        self.update_token(id, |t| {
            t.pending = false;
            t.approved_by = by.to_owned();
        })
    }

    fn suspend_token(&self, id: &str, suspended: bool) -> Result<bool> {
        self.update_token(id, |t| t.suspended = suspended)
    }

    fn open_session(&self, session: SessionRecord) -> Result<SessionRecord> {
        self.kv.write(|tx| {
            let mut session = session.clone();
            let mut art: ArtifactRecord = match get(tx, Table::Artifacts, &session.name)? {
                Some(a) => a,
                None => ArtifactRecord {
                    name: session.name.clone(),
                    kind: session.kind,
                    next_version: 1,
                    sensitivity: session.sensitivity.clone().unwrap_or_default(),
                },
            };
            if let Some(s) = &session.sensitivity {
                if *s != art.sensitivity {
                    return Err(Error::Conflict(format!(
                        "`{}` has sensitivity `{}`, fixed at its first push",
                        session.name, art.sensitivity
                    )));
                }
            }
            if art.kind != session.kind {
                return Err(Error::Conflict(format!(
                    "`{}` is a {}, not a {}",
                    session.name,
                    art.kind.as_str(),
                    session.kind.as_str()
                )));
            }
            session.version = art.next_version;
            art.next_version += 1;
            put(tx, Table::Artifacts, &session.name, &art)?;
            put(tx, Table::Sessions, &session.id, &session)?;
            Ok(session)
        })
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        self.read_one(Table::Sessions, id)
    }

    fn list_sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read_all(Table::Sessions)
    }

    fn attach_blob(
        &self,
        session: &str,
        index: usize,
        blob: &BlobRecord,
    ) -> Result<Option<BlobRecord>> {
        self.kv.write(|tx| {
            let mut s: SessionRecord = get(tx, Table::Sessions, session)?
                .ok_or_else(|| Error::NotFound(format!("upload session `{session}`")))?;
            let slot = s
                .blobs
                .get_mut(index)
                .ok_or_else(|| Error::NotFound(format!("file {index} of the session")))?;
            let old_id = slot.replace(blob.id.clone());
            s.touch(crate::now());
            put(tx, Table::Sessions, session, &s)?;
            let mut old = None;
            if let Some(old_id) = old_id {
                let rec: Option<BlobRecord> = get(tx, Table::Blobs, &old_id)?;
                // Only a blob this session owns is dropped; a dedup'd live blob stays.
                if let Some(rec) = rec.filter(|r| r.pending_session.as_deref() == Some(session)) {
                    tx.remove(Table::Blobs, &old_id)?;
                    old = Some(rec);
                }
            }
            put(tx, Table::Blobs, &blob.id, blob)?;
            Ok(old)
        })
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<bool> {
        self.kv.write(|tx| {
            let Some(mut s) = get::<SessionRecord>(tx, Table::Sessions, id)? else {
                return Ok(false);
            };
            s.touch(now);
            put(tx, Table::Sessions, id, &s)?;
            Ok(true)
        })
    }

    fn detach_blob(&self, session: &str, index: usize, blob_id: &str) -> Result<()> {
        self.kv.write(|tx| {
            if let Some(mut s) = get::<SessionRecord>(tx, Table::Sessions, session)? {
                if let Some(slot) = s.blobs.get_mut(index) {
                    if slot.as_deref() == Some(blob_id) {
                        *slot = None;
                    }
                }
                put(tx, Table::Sessions, session, &s)?;
            }
            let rec: Option<BlobRecord> = get(tx, Table::Blobs, blob_id)?;
            if rec.is_some_and(|r| r.pending_session.as_deref() == Some(session)) {
                tx.remove(Table::Blobs, blob_id)?;
            }
            Ok(())
        })
    }

    fn bind_blob(
        &self,
        session: &str,
        index: usize,
        blob_id: &str,
        sha256: &str,
        wrapped: &WrappedDek,
        reuse: Option<&str>,
    ) -> Result<bool> {
        self.kv.write(|tx| {
            let Some(mut s) = get::<SessionRecord>(tx, Table::Sessions, session)? else {
                return Ok(false);
            };
            if s.blobs.get(index).and_then(|b| b.as_deref()) != Some(blob_id) {
                return Ok(false);
            }
            let Some(mut rec) = get::<BlobRecord>(tx, Table::Blobs, blob_id)?
                .filter(|r| r.pending_session.as_deref() == Some(session))
            else {
                return Ok(false);
            };
            if let Some(f) = s.files.get_mut(index) {
                f.sha256 = sha256.to_owned();
            }
            s.touch(crate::now());
            match reuse {
                Some(other) => {
                    s.blobs[index] = Some(other.to_owned());
                    tx.remove(Table::Blobs, blob_id)?;
                }
                None => {
                    rec.sha256 = sha256.to_owned();
                    rec.wrapped_dek = wrapped.clone();
                    put(tx, Table::Blobs, blob_id, &rec)?;
                }
            }
            put(tx, Table::Sessions, session, &s)?;
            Ok(true)
        })
    }

    fn reuse_blob(&self, session: &str, index: usize, sha256: &str, reuse: &str) -> Result<bool> {
        self.kv.write(|tx| {
            let Some(mut s) = get::<SessionRecord>(tx, Table::Sessions, session)? else {
                return Ok(false);
            };
            match s.files.get_mut(index) {
                Some(f) if f.sha256.is_empty() => f.sha256 = sha256.to_owned(),
                _ => return Ok(false),
            }
            let old = s.blobs[index].replace(reuse.to_owned());
            s.touch(crate::now());
            if let Some(old) = old {
                let rec: Option<BlobRecord> = get(tx, Table::Blobs, &old)?;
                if rec.is_some_and(|r| r.pending_session.as_deref() == Some(session)) {
                    tx.remove(Table::Blobs, &old)?;
                }
            }
            put(tx, Table::Sessions, session, &s)?;
            Ok(true)
        })
    }

    fn commit(&self, session: &str, version: &VersionRecord) -> Result<()> {
        self.kv.write(|tx| commit_in(tx, session, version))
    }

    fn abandon_session(&self, id: &str) -> Result<Vec<BlobRecord>> {
        self.kv.write(|tx| {
            let Some(s) = get::<SessionRecord>(tx, Table::Sessions, id)? else {
                return Ok(Vec::new());
            };
            tx.remove(Table::Sessions, id)?;
            let mut dropped = Vec::new();
            for bid in s.blobs.iter().flatten() {
                let rec: Option<BlobRecord> = get(tx, Table::Blobs, bid)?;
                if let Some(rec) = rec.filter(|r| r.pending_session.as_deref() == Some(id)) {
                    tx.remove(Table::Blobs, bid)?;
                    dropped.push(rec);
                }
            }
            Ok(dropped)
        })
    }

    fn artifact(&self, name: &str) -> Result<Option<ArtifactRecord>> {
        self.read_one(Table::Artifacts, name)
    }

    fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>> {
        self.read_one(Table::Versions, &vkey(name, version))
    }

    fn set_review(
        &self,
        name: &str,
        version: u64,
        from: &[ReviewState],
        review: &Review,
    ) -> Result<bool> {
        let key = vkey(name, version);
        self.kv.write(|tx| {
            let Some(mut rec) = get::<VersionRecord>(tx, Table::Versions, &key)? else {
                return Err(Error::NotFound(format!("version {version} of `{name}`")));
            };
            let now = rec.review.as_ref().map(|r| r.state);
            if !now.is_some_and(|s| from.contains(&s)) {
                return Ok(false);
            }
            rec.review = Some(review.clone());
            put(tx, Table::Versions, &key, &rec)?;
            Ok(true)
        })
    }

    fn set_scan(&self, name: &str, version: u64, scan: &ScanRecord) -> Result<bool> {
        let k = vkey(name, version);
        self.kv.write(|tx| {
            let Some(mut rec) = get::<VersionRecord>(tx, Table::Versions, &k)? else {
                return Ok(false);
            };
            rec.scan = Some(scan.clone());
            put(tx, Table::Versions, &k, &rec)?;
            Ok(true)
        })
    }

    fn latest_version(&self, name: &str) -> Result<Option<VersionRecord>> {
        self.kv.read_single(|tx| Ok(versions_of(tx, name)?.pop()))
    }

    fn version_by_digest(&self, digest: &str) -> Result<Option<VersionRecord>> {
        self.kv.read(|tx| {
            let Some(key) = tx.get(Table::Digests, digest)? else {
                return Ok(None);
            };
            let key = text(Table::Digests, key)?;
            get(tx, Table::Versions, &key)
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<(ArtifactRecord, Vec<VersionRecord>)>> {
        self.kv.read(|tx| {
            let mut out = Vec::new();
            for art in prefixed::<ArtifactRecord>(tx, Table::Artifacts, prefix)? {
                let vs = versions_of(tx, &art.name)?;
                if !vs.is_empty() {
                    out.push((art, vs));
                }
            }
            Ok(out)
        })
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<Vec<BlobRecord>> {
        self.kv.write(|tx| {
            let key = vkey(name, version);
            let held: Vec<AliasEntry> = prefixed(tx, Table::Aliases, &format!("{name}\0"))?;
            if let Some(a) = held.iter().find(|a| a.version == version) {
                return Err(Error::Conflict(format!(
                    "alias `{}` points at `{name}:{version}`; move it before deleting",
                    a.alias
                )));
            }
            let rec: VersionRecord = match tx.remove(Table::Versions, &key)? {
                Some(v) => dec(Table::Versions, &v)?,
                None => return Err(Error::NotFound(format!("`{name}:{version}`"))),
            };
            tx.remove(Table::Digests, &rec.digest)?;
            let mut shredded = Vec::new();
            for f in &rec.files {
                let Some(mut b) = get::<BlobRecord>(tx, Table::Blobs, &f.blob)? else {
                    continue;
                };
                b.refs = b.refs.saturating_sub(1);
                if b.refs == 0 {
                    tx.remove(Table::Blobs, &b.id)?;
                    tx.remove(Table::Content, &blob_ckey(&b))?;
                    shredded.push(b);
                } else {
                    put(tx, Table::Blobs, &b.id, &b)?;
                }
            }
            Ok(shredded)
        })
    }

    fn blob(&self, id: &str) -> Result<Option<BlobRecord>> {
        self.read_one(Table::Blobs, id)
    }

    fn list_blobs(&self) -> Result<Vec<BlobRecord>> {
        self.read_all(Table::Blobs)
    }

    fn swap_dek(&self, id: &str, old: &WrappedDek, new: &WrappedDek) -> Result<bool> {
        self.kv.write(|tx| {
            let Some(mut b) = get::<BlobRecord>(tx, Table::Blobs, id)? else {
                return Ok(false);
            };
            if &b.wrapped_dek != old {
                return Ok(false);
            }
            b.wrapped_dek = new.clone();
            put(tx, Table::Blobs, id, &b)?;
            Ok(true)
        })
    }

    fn find_blob(
        &self,
        namespace: &str,
        kind: &str,
        label: &str,
        sha256: &str,
        size: u64,
    ) -> Result<Option<BlobRecord>> {
        let key = ckey(namespace, &index_label(kind, label), sha256, size);
        self.kv.read(|tx| {
            let Some(id) = tx.get(Table::Content, &key)? else {
                return Ok(None);
            };
            let id = text(Table::Content, id)?;
            get(tx, Table::Blobs, &id)
        })
    }
}

/// Record `version` from upload `session`: the version, its digest, and a
/// reference to each blob, which becomes content others may dedup against.
fn commit_in(tx: &mut dyn Tx, session: &str, version: &VersionRecord) -> Result<()> {
    if tx.remove(Table::Sessions, session)?.is_none() {
        return Err(Error::NotFound(format!("upload session `{session}`")));
    }
    let key = vkey(&version.name, version.version);
    if tx.get(Table::Versions, &key)?.is_some() {
        return Err(Error::Conflict(format!(
            "version {} of `{}` exists",
            version.version, version.name
        )));
    }
    put(tx, Table::Versions, &key, version)?;
    tx.put(Table::Digests, &version.digest, key.as_bytes())?;
    let label = get::<ArtifactRecord>(tx, Table::Artifacts, &version.name)?
        .map(|a| a.sensitivity)
        .unwrap_or_default();
    for f in &version.files {
        let mut b: BlobRecord = get(tx, Table::Blobs, &f.blob)?
            .ok_or_else(|| Error::NotFound(format!("blob of `{}`", f.entry.path)))?;
        if b.refs == 0 {
            b.sensitivity = label.clone();
            b.kind = version.kind.as_str().to_owned();
            b.artifact = version.name.clone();
        }
        b.refs += 1;
        b.pending_session = None;
        put(tx, Table::Blobs, &b.id, &b)?;
        tx.put(Table::Content, &blob_ckey(&b), b.id.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn a_prefix_successor_bounds_every_key_with_the_prefix() {
        assert_eq!(successor("ab\0").as_deref(), Some("ab\u{1}"));
        assert_eq!(successor("").as_deref(), None);
        assert_eq!(successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(successor("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        // Every key with the prefix sorts below the successor.
        let p = "ns/m\0";
        let hi = successor(p).unwrap();
        for k in ["ns/m\0", "ns/m\0\u{10FFFF}", "ns/m\0zzz"] {
            assert!(k.as_bytes() < hi.as_bytes(), "{k:?}");
        }
        assert!("ns/m\u{1}".as_bytes() >= hi.as_bytes());
    }
}
