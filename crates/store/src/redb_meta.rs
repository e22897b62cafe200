//! The embedded metadata adapter: one redb file (ACID, crash-safe).

use std::path::Path;
use std::sync::{RwLock, RwLockReadGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vault_crypto::WrappedDek;

use crate::meta::MetaStore;
use crate::records::*;
use crate::{Error, Result};

const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const ARTIFACTS: TableDefinition<&str, &[u8]> = TableDefinition::new("artifacts");
/// Key: `name NUL zero-padded version`.
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
/// Key: digest, value: versions key.
const DIGESTS: TableDefinition<&str, &str> = TableDefinition::new("digests");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
/// Key: `namespace NUL sha256 NUL size`, value: blob id (live blobs only).
const CONTENT: TableDefinition<&str, &str> = TableDefinition::new("content");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Key: `namespace NUL keyid`.
const PUBLISHERS: TableDefinition<&str, &[u8]> = TableDefinition::new("publishers");
/// Key: `name NUL alias`.
const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");

const KEYRING_KEY: &str = "keyring";

/// Metadata in a redb database file.
pub struct RedbMeta {
    /// Compaction needs exclusive access; every transaction holds a read
    /// guard, so the write guard waits for them to finish.
    db: RwLock<Database>,
}

fn vkey(name: &str, version: u64) -> String {
    format!("{name}\0{version:020}")
}

/// Content index key. Unlabelled content keeps the original three-part key;
/// labelled content gets the label as a fourth part, so dedup never crosses
/// sensitivity labels.
fn ckey(ns: &str, label: &str, sha: &str, size: u64) -> String {
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

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Meta(e.to_string()))
}

fn dec<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt {
        table,
        detail: e.to_string(),
    })
}

fn get<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: &'static str,
    key: &str,
) -> Result<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(dec(table, v.value())?)),
        None => Ok(None),
    }
}

/// Marks, in `config`, metadata whose content index is scoped by
/// sensitivity label.
const LABELLED_CONTENT: &str = "content-index-labelled";

/// Once per database: blobs committed by versions of labelled artifacts
/// before dedup was scoped by label were indexed under the unlabelled key,
/// where pushes of anything in the namespace would find them. Give them
/// their artifact's label and move their index entry.
fn label_content(tx: &WriteTransaction) -> Result<()> {
    let mut config = tx.open_table(CONFIG)?;
    if config.get(LABELLED_CONTENT)?.is_some() {
        return Ok(());
    }
    let labels: std::collections::HashMap<String, String> = {
        let arts = tx.open_table(ARTIFACTS)?;
        let mut m = std::collections::HashMap::new();
        for row in arts.iter()? {
            let (_, v) = row?;
            let a: ArtifactRecord = dec("artifacts", v.value())?;
            if !a.sensitivity.is_empty() {
                m.insert(a.name, a.sensitivity);
            }
        }
        m
    };
    let versions = tx.open_table(VERSIONS)?;
    let mut blobs = tx.open_table(BLOBS)?;
    let mut content = tx.open_table(CONTENT)?;
    for row in versions.iter()? {
        let (_, v) = row?;
        let ver: VersionRecord = dec("versions", v.value())?;
        let Some(label) = labels.get(&ver.name) else {
            continue;
        };
        for f in &ver.files {
            let Some(mut b) = get::<BlobRecord>(&blobs, "blobs", &f.blob)? else {
                continue;
            };
            if !b.sensitivity.is_empty() {
                continue;
            }
            let old = ckey(&b.namespace, "", &b.sha256, b.size);
            if content.get(old.as_str())?.map(|id| id.value() == b.id) == Some(true) {
                content.remove(old.as_str())?;
            }
            b.sensitivity = label.clone();
            content.insert(
                ckey(&b.namespace, label, &b.sha256, b.size).as_str(),
                b.id.as_str(),
            )?;
            blobs.insert(b.id.as_str(), enc(&b)?.as_slice())?;
        }
    }
    config.insert(LABELLED_CONTENT, &b"1"[..])?;
    Ok(())
}

impl RedbMeta {
    /// Open (or create) the database at `path` and make sure every table exists.
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(CONFIG)?;
            tx.open_table(TOKENS)?;
            tx.open_table(ARTIFACTS)?;
            tx.open_table(VERSIONS)?;
            tx.open_table(DIGESTS)?;
            tx.open_table(BLOBS)?;
            tx.open_table(CONTENT)?;
            tx.open_table(SESSIONS)?;
            tx.open_table(PUBLISHERS)?;
            tx.open_table(ALIASES)?;
            tx.open_table(JOBS)?;
            label_content(&tx)?;
        }
        tx.commit()?;
        Ok(Self {
            db: RwLock::new(db),
        })
    }

    fn db(&self) -> RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write<R>(&self, f: impl FnOnce(&WriteTransaction) -> Result<R>) -> Result<R> {
        let db = self.db();
        let tx = db.begin_write()?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    fn read_one<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&'static str, &'static [u8]>,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(def)?;
        get(&t, table, key)
    }

    fn read_all<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&'static str, &'static [u8]>,
        table: &'static str,
    ) -> Result<Vec<T>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(def)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(dec(table, v.value())?);
        }
        Ok(out)
    }
}

impl RedbMeta {
    fn update_token(&self, id: &str, f: impl FnOnce(&mut TokenRecord)) -> Result<bool> {
        self.write(|tx| {
            let mut t = tx.open_table(TOKENS)?;
            let mut found: Option<(String, TokenRecord)> = None;
            for item in t.iter()? {
                let (k, v) = item?;
                let rec: TokenRecord = dec("tokens", v.value())?;
                if rec.id == id {
                    found = Some((k.value().to_owned(), rec));
                    break;
                }
            }
            match found {
                Some((k, mut rec)) => {
                    f(&mut rec);
                    t.insert(k.as_str(), enc(&rec)?.as_slice())?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }
}

fn prefixed<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: &'static str,
    prefix: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for item in t.range::<&str>(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) {
            break;
        }
        out.push(dec(table, v.value())?);
    }
    Ok(out)
}

fn versions_of(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Vec<VersionRecord>> {
    let lo = format!("{name}\0");
    let hi = format!("{name}\u{1}");
    let mut out = Vec::new();
    for item in t.range::<&str>(lo.as_str()..hi.as_str())? {
        let (_, v) = item?;
        out.push(dec("versions", v.value())?);
    }
    Ok(out)
}

impl MetaStore for RedbMeta {
    fn config(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(CONFIG)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    fn put_config(&self, key: &str, value: &[u8]) -> Result<()> {
        self.write(|tx| {
            tx.open_table(CONFIG)?.insert(key, value)?;
            Ok(())
        })
    }

    fn put_job(&self, job: &JobRecord) -> Result<()> {
        let v = enc(job)?;
        self.write(|tx| {
            tx.open_table(JOBS)?.insert(job.id.as_str(), v.as_slice())?;
            Ok(())
        })
    }

    fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        self.read_one(JOBS, "jobs", id)
    }

    fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        self.read_all(JOBS, "jobs")
    }

    fn put_publisher(&self, rec: &PublisherRecord) -> Result<()> {
        let v = enc(rec)?;
        let k = format!("{}\0{}", rec.namespace, rec.keyid);
        self.write(|tx| {
            tx.open_table(PUBLISHERS)?
                .insert(k.as_str(), v.as_slice())?;
            Ok(())
        })
    }

    fn publishers(&self, namespace: &str) -> Result<Vec<PublisherRecord>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(PUBLISHERS)?;
        let prefix = if namespace.is_empty() {
            String::new()
        } else {
            format!("{namespace}\0")
        };
        prefixed(&t, "publishers", &prefix)
    }

    fn remove_publisher(&self, namespace: &str, keyid: &str) -> Result<bool> {
        let k = format!("{namespace}\0{keyid}");
        self.write(|tx| Ok(tx.open_table(PUBLISHERS)?.remove(k.as_str())?.is_some()))
    }

    fn alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>> {
        let e: Option<AliasEntry> =
            self.read_one(ALIASES, "aliases", &format!("{name}\0{alias}"))?;
        Ok(e.filter(|e| !e.is_deleted()))
    }

    fn aliases(&self, name: &str) -> Result<Vec<AliasEntry>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(ALIASES)?;
        let all: Vec<AliasEntry> = prefixed(&t, "aliases", &format!("{name}\0"))?;
        Ok(all.into_iter().filter(|e| !e.is_deleted()).collect())
    }

    fn alias_sequence(&self, name: &str, alias: &str) -> Result<Option<u64>> {
        let e: Option<AliasEntry> =
            self.read_one(ALIASES, "aliases", &format!("{name}\0{alias}"))?;
        Ok(e.map(|e| e.sequence))
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<Option<AliasEntry>> {
        let k = format!("{name}\0{alias}");
        self.write(|tx| {
            let mut t = tx.open_table(ALIASES)?;
            let Some(current) = get::<AliasEntry>(&t, "aliases", &k)?.filter(|e| !e.is_deleted())
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
            t.insert(k.as_str(), enc(&tombstone)?.as_slice())?;
            Ok(Some(current))
        })
    }

    fn put_alias(&self, entry: &AliasEntry, expected: Option<u64>) -> Result<bool> {
        let k = format!("{}\0{}", entry.name, entry.alias);
        let v = enc(entry)?;
        self.write(|tx| {
            let mut t = tx.open_table(ALIASES)?;
            let current: Option<AliasEntry> = get(&t, "aliases", &k)?;
            if current.map(|c| c.sequence) != expected {
                return Ok(false);
            }
            t.insert(k.as_str(), v.as_slice())?;
            Ok(true)
        })
    }

    fn reclaim(&self) -> Result<()> {
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        db.compact().map_err(|e| Error::Meta(e.to_string()))?;
        Ok(())
    }

    fn keyring(&self) -> Result<Option<KeyringRecord>> {
        self.read_one(CONFIG, "config", KEYRING_KEY)
    }

    fn put_keyring(&self, rec: &KeyringRecord) -> Result<()> {
        let v = enc(rec)?;
        self.write(|tx| {
            tx.open_table(CONFIG)?.insert(KEYRING_KEY, v.as_slice())?;
            Ok(())
        })
    }

    fn swap_keyring(&self, old: &KeyringRecord, new: &KeyringRecord) -> Result<bool> {
        let (want, v) = (enc(old)?, enc(new)?);
        self.write(|tx| {
            let mut t = tx.open_table(CONFIG)?;
            let same = t
                .get(KEYRING_KEY)?
                .is_some_and(|cur| cur.value() == want.as_slice());
            if same {
                t.insert(KEYRING_KEY, v.as_slice())?;
            }
            Ok(same)
        })
    }

    fn put_token(&self, hash: &str, rec: &TokenRecord) -> Result<()> {
        let v = enc(rec)?;
        self.write(|tx| {
            tx.open_table(TOKENS)?.insert(hash, v.as_slice())?;
            Ok(())
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.read_one(TOKENS, "tokens", hash)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read_all(TOKENS, "tokens")
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

    fn open_session(&self, mut session: SessionRecord) -> Result<SessionRecord> {
        self.write(|tx| {
            let mut arts = tx.open_table(ARTIFACTS)?;
            let mut art: ArtifactRecord = match get(&arts, "artifacts", &session.name)? {
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
            arts.insert(session.name.as_str(), enc(&art)?.as_slice())?;
            tx.open_table(SESSIONS)?
                .insert(session.id.as_str(), enc(&session)?.as_slice())?;
            Ok(session)
        })
    }

    fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        self.read_one(SESSIONS, "sessions", id)
    }

    fn list_sessions(&self) -> Result<Vec<SessionRecord>> {
        self.read_all(SESSIONS, "sessions")
    }

    fn attach_blob(
        &self,
        session: &str,
        index: usize,
        blob: &BlobRecord,
    ) -> Result<Option<BlobRecord>> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            let mut s: SessionRecord = get(&sessions, "sessions", session)?
                .ok_or_else(|| Error::NotFound(format!("upload session `{session}`")))?;
            let slot = s
                .blobs
                .get_mut(index)
                .ok_or_else(|| Error::NotFound(format!("file {index} of the session")))?;
            let old_id = slot.replace(blob.id.clone());
            s.touch(crate::now());
            sessions.insert(session, enc(&s)?.as_slice())?;
            let mut blobs = tx.open_table(BLOBS)?;
            let mut old = None;
            if let Some(old_id) = old_id {
                let rec: Option<BlobRecord> = get(&blobs, "blobs", &old_id)?;
                // Only a blob this session owns is dropped; a dedup'd live blob stays.
                if let Some(rec) = rec.filter(|r| r.pending_session.as_deref() == Some(session)) {
                    blobs.remove(old_id.as_str())?;
                    old = Some(rec);
                }
            }
            blobs.insert(blob.id.as_str(), enc(blob)?.as_slice())?;
            Ok(old)
        })
    }

    fn touch_session(&self, id: &str, now: u64) -> Result<bool> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            let Some(mut s) = get::<SessionRecord>(&sessions, "sessions", id)? else {
                return Ok(false);
            };
            s.touch(now);
            sessions.insert(id, enc(&s)?.as_slice())?;
            Ok(true)
        })
    }

    fn detach_blob(&self, session: &str, index: usize, blob_id: &str) -> Result<()> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            if let Some(mut s) = get::<SessionRecord>(&sessions, "sessions", session)? {
                if let Some(slot) = s.blobs.get_mut(index) {
                    if slot.as_deref() == Some(blob_id) {
                        *slot = None;
                    }
                }
                sessions.insert(session, enc(&s)?.as_slice())?;
            }
            let mut blobs = tx.open_table(BLOBS)?;
            let rec: Option<BlobRecord> = get(&blobs, "blobs", blob_id)?;
            if rec.is_some_and(|r| r.pending_session.as_deref() == Some(session)) {
                blobs.remove(blob_id)?;
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
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            let Some(mut s) = get::<SessionRecord>(&sessions, "sessions", session)? else {
                return Ok(false);
            };
            if s.blobs.get(index).and_then(|b| b.as_deref()) != Some(blob_id) {
                return Ok(false);
            }
            let mut blobs = tx.open_table(BLOBS)?;
            let Some(mut rec) = get::<BlobRecord>(&blobs, "blobs", blob_id)?
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
                    blobs.remove(blob_id)?;
                }
                None => {
                    rec.sha256 = sha256.to_owned();
                    rec.wrapped_dek = wrapped.clone();
                    blobs.insert(blob_id, enc(&rec)?.as_slice())?;
                }
            }
            sessions.insert(session, enc(&s)?.as_slice())?;
            Ok(true)
        })
    }

    fn reuse_blob(&self, session: &str, index: usize, sha256: &str, reuse: &str) -> Result<bool> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            let Some(mut s) = get::<SessionRecord>(&sessions, "sessions", session)? else {
                return Ok(false);
            };
            match s.files.get_mut(index) {
                Some(f) if f.sha256.is_empty() => f.sha256 = sha256.to_owned(),
                _ => return Ok(false),
            }
            let old = s.blobs[index].replace(reuse.to_owned());
            s.touch(crate::now());
            let mut blobs = tx.open_table(BLOBS)?;
            if let Some(old) = old {
                let rec: Option<BlobRecord> = get(&blobs, "blobs", &old)?;
                if rec.is_some_and(|r| r.pending_session.as_deref() == Some(session)) {
                    blobs.remove(old.as_str())?;
                }
            }
            sessions.insert(session, enc(&s)?.as_slice())?;
            Ok(true)
        })
    }

    fn commit(&self, session: &str, version: &VersionRecord) -> Result<()> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            if sessions.remove(session)?.is_none() {
                return Err(Error::NotFound(format!("upload session `{session}`")));
            }
            let key = vkey(&version.name, version.version);
            let mut versions = tx.open_table(VERSIONS)?;
            if versions.get(key.as_str())?.is_some() {
                return Err(Error::Conflict(format!(
                    "version {} of `{}` exists",
                    version.version, version.name
                )));
            }
            versions.insert(key.as_str(), enc(version)?.as_slice())?;
            tx.open_table(DIGESTS)?
                .insert(version.digest.as_str(), key.as_str())?;
            let mut blobs = tx.open_table(BLOBS)?;
            let mut content = tx.open_table(CONTENT)?;
            let label =
                get::<ArtifactRecord>(&tx.open_table(ARTIFACTS)?, "artifacts", &version.name)?
                    .map(|a| a.sensitivity)
                    .unwrap_or_default();
            for f in &version.files {
                let mut b: BlobRecord = get(&blobs, "blobs", &f.blob)?
                    .ok_or_else(|| Error::NotFound(format!("blob of `{}`", f.entry.path)))?;
                if b.refs == 0 {
                    b.sensitivity = label.clone();
                    b.kind = version.kind.as_str().to_owned();
                    b.artifact = version.name.clone();
                }
                b.refs += 1;
                b.pending_session = None;
                blobs.insert(b.id.as_str(), enc(&b)?.as_slice())?;
                content.insert(blob_ckey(&b).as_str(), b.id.as_str())?;
            }
            Ok(())
        })
    }

    fn abandon_session(&self, id: &str) -> Result<Vec<BlobRecord>> {
        self.write(|tx| {
            let mut sessions = tx.open_table(SESSIONS)?;
            let s: Option<SessionRecord> = get(&sessions, "sessions", id)?;
            let Some(s) = s else { return Ok(Vec::new()) };
            sessions.remove(id)?;
            let mut blobs = tx.open_table(BLOBS)?;
            let mut dropped = Vec::new();
            for bid in s.blobs.iter().flatten() {
                let rec: Option<BlobRecord> = get(&blobs, "blobs", bid)?;
                if let Some(rec) = rec.filter(|r| r.pending_session.as_deref() == Some(id)) {
                    blobs.remove(bid.as_str())?;
                    dropped.push(rec);
                }
            }
            Ok(dropped)
        })
    }

    fn artifact(&self, name: &str) -> Result<Option<ArtifactRecord>> {
        self.read_one(ARTIFACTS, "artifacts", name)
    }

    fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>> {
        self.read_one(VERSIONS, "versions", &vkey(name, version))
    }

    fn set_review(
        &self,
        name: &str,
        version: u64,
        from: &[ReviewState],
        review: &Review,
    ) -> Result<bool> {
        let key = vkey(name, version);
        self.write(|tx| {
            let mut versions = tx.open_table(VERSIONS)?;
            let mut rec: VersionRecord = match versions.get(key.as_str())? {
                Some(b) => dec("versions", b.value())?,
                None => return Err(Error::NotFound(format!("version {version} of `{name}`"))),
            };
            let now = rec.review.as_ref().map(|r| r.state);
            if !now.is_some_and(|s| from.contains(&s)) {
                return Ok(false);
            }
            rec.review = Some(review.clone());
            versions.insert(key.as_str(), enc(&rec)?.as_slice())?;
            Ok(true)
        })
    }

    fn latest_version(&self, name: &str) -> Result<Option<VersionRecord>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let t = tx.open_table(VERSIONS)?;
        Ok(versions_of(&t, name)?.pop())
    }

    fn version_by_digest(&self, digest: &str) -> Result<Option<VersionRecord>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let d = tx.open_table(DIGESTS)?;
        let Some(key) = d.get(digest)?.map(|v| v.value().to_owned()) else {
            return Ok(None);
        };
        let t = tx.open_table(VERSIONS)?;
        get(&t, "versions", &key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(ArtifactRecord, Vec<VersionRecord>)>> {
        let db = self.db();
        let tx = db.begin_read()?;
        let arts = tx.open_table(ARTIFACTS)?;
        let versions = tx.open_table(VERSIONS)?;
        let mut out = Vec::new();
        for item in arts.range::<&str>(prefix..)? {
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            let art: ArtifactRecord = dec("artifacts", v.value())?;
            let vs = versions_of(&versions, &art.name)?;
            if !vs.is_empty() {
                out.push((art, vs));
            }
        }
        Ok(out)
    }

    fn delete_version(&self, name: &str, version: u64) -> Result<Vec<BlobRecord>> {
        self.write(|tx| {
            let key = vkey(name, version);
            {
                let aliases = tx.open_table(ALIASES)?;
                let held: Vec<AliasEntry> = prefixed(&aliases, "aliases", &format!("{name}\0"))?;
                if let Some(a) = held.iter().find(|a| a.version == version) {
                    return Err(Error::Conflict(format!(
                        "alias `{}` points at `{name}:{version}`; move it before deleting",
                        a.alias
                    )));
                }
            }
            let mut versions = tx.open_table(VERSIONS)?;
            let rec: VersionRecord = match versions.remove(key.as_str())? {
                Some(v) => dec("versions", v.value())?,
                None => return Err(Error::NotFound(format!("`{name}:{version}`"))),
            };
            tx.open_table(DIGESTS)?.remove(rec.digest.as_str())?;
            let mut blobs = tx.open_table(BLOBS)?;
            let mut content = tx.open_table(CONTENT)?;
            let mut shredded = Vec::new();
            for f in &rec.files {
                let Some(mut b) = get::<BlobRecord>(&blobs, "blobs", &f.blob)? else {
                    continue;
                };
                b.refs = b.refs.saturating_sub(1);
                if b.refs == 0 {
                    blobs.remove(b.id.as_str())?;
                    content.remove(blob_ckey(&b).as_str())?;
                    shredded.push(b);
                } else {
                    blobs.insert(b.id.as_str(), enc(&b)?.as_slice())?;
                }
            }
            Ok(shredded)
        })
    }

    fn blob(&self, id: &str) -> Result<Option<BlobRecord>> {
        self.read_one(BLOBS, "blobs", id)
    }

    fn list_blobs(&self) -> Result<Vec<BlobRecord>> {
        self.read_all(BLOBS, "blobs")
    }

    fn swap_dek(&self, id: &str, old: &WrappedDek, new: &WrappedDek) -> Result<bool> {
        self.write(|tx| {
            let mut blobs = tx.open_table(BLOBS)?;
            let Some(mut b) = get::<BlobRecord>(&blobs, "blobs", id)? else {
                return Ok(false);
            };
            if &b.wrapped_dek != old {
                return Ok(false);
            }
            b.wrapped_dek = new.clone();
            blobs.insert(id, enc(&b)?.as_slice())?;
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
        let db = self.db();
        let tx = db.begin_read()?;
        let c = tx.open_table(CONTENT)?;
        let Some(id) = c
            .get(ckey(namespace, &index_label(kind, label), sha256, size).as_str())?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        let b = tx.open_table(BLOBS)?;
        get(&b, "blobs", &id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
