//! Ingest: the one write path. An upload session reserves the next version
//! number; each file becomes a blob (envelope from `vault-store`'s
//! [`NewBlob`], pending record first, then the object); the commit checks
//! the signed manifest against the session and records the version, its
//! digest index and its blob references in one metadata transaction.
//! Pushes (`api::uploads`) and anonymization jobs (`domain::anonymize`)
//! both go through here.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use vault_api::{FileEntry, Kind};
use vault_manifest::PublicKey;
use vault_store::{
    ArtifactRecord, BlobPlan, MetaStore, NewBlob, SessionRecord, VersionFile, VersionRecord,
    UNKNOWN_DIGEST,
};

use super::error::{blocking, Error, Result};
use crate::vault::Vault;

/// Longest an upload session lives, however busy.
pub const SESSION_TTL_SECS: u64 = 6 * 3600;

/// What a push may reuse instead of receiving bytes again: committed
/// content of one kind and sensitivity label in one namespace, first
/// committed by an artifact the pusher may read (`may_read`, the HTTP
/// layer's policy question). Dedup tells the pusher what the namespace
/// holds, so it never crosses namespaces, kinds or labels, and never
/// offers what the caller could not pull.
#[derive(Clone)]
pub struct Dedup {
    /// The namespace pushed to.
    pub namespace: String,
    /// The sensitivity label the pushed artifact has or will get.
    pub label: String,
    /// The kind pushed.
    pub kind: Kind,
    /// Whether the pusher may read an artifact (asked without an audit
    /// entry: one per file would flood the log; the push is audited).
    pub may_read: Arc<dyn Fn(&ArtifactRecord) -> bool + Send + Sync>,
}

impl Dedup {
    /// A committed blob holding this content that the pusher may reuse.
    pub fn find(&self, meta: &dyn MetaStore, sha256: &str, size: u64) -> Result<Option<String>> {
        let kind = self.kind.as_str();
        let Some(b) = meta
            .find_blob(&self.namespace, kind, &self.label, sha256, size)?
            .filter(|b| b.pending_session.is_none() && b.refs > 0)
            .filter(|b| b.kind == kind && !b.artifact.is_empty())
        else {
            return Ok(None);
        };
        let Some(owner) = meta.artifact(&b.artifact)? else {
            return Ok(None);
        };
        let readable = owner.name.split('/').next() == Some(self.namespace.as_str())
            && owner.sensitivity == self.label
            && (self.may_read)(&owner);
        Ok(readable.then_some(b.id))
    }
}

/// A push to open: what the client declared.
pub struct UploadPlan {
    /// The artifact pushed to.
    pub name: vault_api::ArtifactName,
    /// Model or dataset.
    pub kind: Kind,
    /// The files, a digest left empty for one the upload will find.
    pub files: Vec<FileEntry>,
    /// The label asked for a new artifact.
    pub sensitivity: Option<String>,
    /// Who pushes.
    pub principal: String,
}

/// Open an upload session: check the plan (labels, size, path and digest
/// rules), the principal's quotas, and which files the namespace already
/// holds for this pusher (`dedup`); reserve the next version number.
pub async fn open(v: &Arc<Vault>, plan: UploadPlan, dedup: Option<Dedup>) -> Result<SessionRecord> {
    if let Some(s) = &plan.sensitivity {
        if s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::Invalid(
                "sensitivity is a short label of lowercase letters, digits and `-`".into(),
            ));
        }
    }
    if plan.files.len() > v.http.max_files {
        return Err(Error::Invalid(format!(
            "manifest too large: {} files (this server takes at most {})",
            plan.files.len(),
            v.http.max_files
        )));
    }
    // Same path and digest rules as a manifest; a digest left empty is one
    // the upload will find.
    let mut checked = plan.files.clone();
    for f in checked.iter_mut().filter(|f| f.sha256.is_empty()) {
        f.sha256 = UNKNOWN_DIGEST.to_owned();
    }
    vault_manifest::Manifest::new(plan.name.clone(), plan.kind, 1, 0, checked, vec![])?;
    let v2 = v.clone();
    blocking(move || {
        let now = vault_store::now();
        check_quotas(&v2, &plan.principal, &plan.files, now)?;
        let blobs = plan
            .files
            .iter()
            .map(|f| match &dedup {
                Some(d) if !f.sha256.is_empty() => d.find(v2.meta.as_ref(), &f.sha256, f.size),
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        let idle = v2.http.upload_idle_secs.clamp(1, SESSION_TTL_SECS);
        let session = SessionRecord {
            id: random_id::<16>()?,
            name: plan.name.to_string(),
            kind: plan.kind,
            version: 0,
            files: plan.files,
            blobs,
            principal: plan.principal,
            created: now,
            expires: now + idle,
            sensitivity: plan.sensitivity,
            idle_secs: idle,
            deadline: now + SESSION_TTL_SECS,
        };
        Ok(v2.meta.open_session(session)?)
    })
    .await
}

/// Open the session a job writes its output through: no quota, no dedup,
/// a week to finish, owned by `job:<id>`.
pub fn open_for_job(
    v: &Vault,
    target: &vault_api::ArtifactName,
    files: Vec<FileEntry>,
    job: &str,
) -> Result<SessionRecord> {
    let now = vault_store::now();
    let n = files.len();
    let session = SessionRecord {
        id: format!("job-{}", random_id::<12>()?),
        name: target.to_string(),
        kind: Kind::Dataset,
        version: 0,
        files,
        blobs: vec![None; n],
        principal: format!("job:{job}"),
        created: now,
        expires: now + 7 * 86400,
        sensitivity: None,
        idle_secs: 0,
        deadline: now + 7 * 86400,
    };
    Ok(v.meta.open_session(session)?)
}

/// Quotas per principal: an unfinished push holds metadata until it
/// expires, so one caller may not pile them up.
fn check_quotas(v: &Vault, who: &str, adding: &[FileEntry], now: u64) -> Result<()> {
    let open: Vec<SessionRecord> = v
        .meta
        .list_sessions()?
        .into_iter()
        .filter(|s| s.principal == who && s.expires > now)
        .collect();
    let max_open = v.http.max_open_uploads;
    if open.len() >= max_open {
        return Err(Error::Quota(format!(
            "`{who}` has {} open uploads (at most {max_open}); finish or abandon one first",
            open.len()
        )));
    }
    let pending = open.iter().flat_map(|s| &s.files);
    let bytes = pending
        .clone()
        .chain(adding)
        .fold(0u64, |n, f| n.saturating_add(f.size));
    let max_bytes = v.http.max_pending_bytes;
    if bytes > max_bytes {
        return Err(Error::Quota(format!(
            "`{who}`'s open uploads would declare {bytes} bytes (at most {max_bytes}); finish them first"
        )));
    }
    let files = pending.count() + adding.len();
    let max_files = v.http.max_pending_files;
    if files > max_files {
        return Err(Error::Quota(format!(
            "`{who}`'s open uploads would list {files} files (at most {max_files}); finish them first"
        )));
    }
    Ok(())
}

/// The live session `id` owned by `principal`; another principal's session
/// looks missing.
pub async fn own_session(v: &Arc<Vault>, principal: &str, id: String) -> Result<SessionRecord> {
    let meta = v.meta.clone();
    let s = blocking(move || Ok(meta.session(&id)?)).await?;
    match s {
        Some(s) if s.principal == principal && s.expires > vault_store::now() => Ok(s),
        _ => Err(Error::NotFound(
            "upload session not found or expired".into(),
        )),
    }
}

/// The file at `index` of a session.
pub fn file_of(s: &SessionRecord, index: usize) -> Result<&FileEntry> {
    s.files
        .get(index)
        .ok_or_else(|| Error::NotFound(format!("file {index} is not in the session")))
}

/// A body of plaintext, its errors already in words.
pub type Body = BoxStream<'static, std::result::Result<Bytes, String>>;

/// Store file `index` of session `s`: `size` bytes with `sha256` if known.
/// The pending blob is recorded before any byte is written, so a crash
/// leaves a record cleanup finds, never an unknown object. Content without
/// a declared digest is bound to the digest found, or (when `dedup` finds
/// the namespace holds it) pointed at the held blob and the copy dropped.
///
/// The write runs in a task of its own: a client that drops the request
/// (its file was found held meanwhile, see [`declare_digest`]) must not
/// cancel it between the object being stored and a duplicate being
/// removed. A body cut off early fails the write, which detaches the blob.
/// Returns the content's SHA-256.
pub async fn store_file(
    v: &Arc<Vault>,
    s: &SessionRecord,
    index: usize,
    file: (u64, Option<[u8; 32]>),
    body: Body,
    dedup: Option<Dedup>,
) -> Result<[u8; 32]> {
    let (size, sha256) = file;
    let ring = v.keyring();
    let namespace = s.name.split('/').next().unwrap_or_default();
    let blob = NewBlob::new(
        &ring,
        &BlobPlan {
            session: &s.id,
            namespace,
            size,
            sha256,
            segment_size: v.segment_size,
        },
    )?;
    let rec = blob.record().clone();
    let (meta, sid, r) = (v.meta.clone(), s.id.clone(), rec.clone());
    if let Some(old) = blocking(move || Ok(meta.attach_blob(&sid, index, &r)?)).await? {
        let _ = v.blobs.delete(&old.id).await;
    }
    let (v, s) = (v.clone(), s.clone());
    let task = async move {
        let written = keep_alive(&v, &s, v.blobs.write_new(blob, &ring, body)).await;
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                let (meta, sid, bid) = (v.meta.clone(), s.id.clone(), rec.id.clone());
                let _ = blocking(move || Ok(meta.detach_blob(&sid, index, &bid)?)).await;
                return Err(Error::from(e));
            }
        };
        if let Some(wrapped) = written.rewrapped {
            let sha_hex = hex::encode(written.sha256);
            let v2 = v.clone();
            let (sid, bid) = (s.id.clone(), rec.id.clone());
            let reuse = blocking(move || {
                let reuse = match &dedup {
                    Some(d) => d.find(v2.meta.as_ref(), &sha_hex, size)?,
                    None => None,
                };
                let bound =
                    v2.meta
                        .bind_blob(&sid, index, &bid, &sha_hex, &wrapped, reuse.as_deref())?;
                Ok(bound.then_some(reuse))
            })
            .await?;
            match reuse {
                // Held already: this copy is not needed.
                Some(Some(_)) => {
                    let _ = v.blobs.delete(&rec.id).await;
                }
                Some(None) => {}
                // The file was pointed elsewhere meanwhile (a held blob
                // found by the client's digest, or a newer upload).
                None => {
                    let _ = v.blobs.delete(&rec.id).await;
                    let (meta, sid, bid) = (v.meta.clone(), s.id.clone(), rec.id.clone());
                    let _ = blocking(move || Ok(meta.detach_blob(&sid, index, &bid)?)).await;
                    return Err(Error::Conflict(
                        "the file was uploaded again while this upload ran".into(),
                    ));
                }
            }
        }
        Ok(written.sha256)
    };
    tokio::spawn(task).await?
}

/// Run `work` (a file's write) while touching the session often enough
/// that it does not expire idle however long one file takes. Sessions
/// without an idle limit (jobs') are not touched.
async fn keep_alive<T>(v: &Vault, s: &SessionRecord, work: impl Future<Output = T>) -> T {
    if s.idle_secs == 0 {
        return work.await;
    }
    let every = std::time::Duration::from_secs((s.idle_secs / 3).max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let (meta, id) = (v.meta.clone(), s.id.clone());
                let touched = blocking(move || Ok(meta.touch_session(&id, vault_store::now())?)).await;
                if let Err(e) = touched {
                    tracing::warn!(error = %e, "cannot record upload activity");
                }
            }
        }
    }
}

/// The client hashed a file it declared without a digest before its
/// upload ended. If the namespace holds that content and `dedup` offers
/// it, the file points at the held blob (the upload can be dropped), as if
/// the digest had been declared at open. Returns whether it does.
pub async fn declare_digest(
    v: &Arc<Vault>,
    s: &SessionRecord,
    index: usize,
    sha256: &str,
    dedup: Option<Dedup>,
) -> Result<bool> {
    let file = file_of(s, index)?;
    if !vault_api::valid_digest(&format!("sha256:{sha256}")) {
        return Err(Error::Invalid(
            "sha256 must be 64 lowercase hex digits".into(),
        ));
    }
    let Some(dedup) = dedup.filter(|_| file.sha256.is_empty()) else {
        return Ok(false);
    };
    let (v, sid, sha, size) = (v.clone(), s.id.clone(), sha256.to_owned(), file.size);
    blocking(move || {
        let Some(reuse) = dedup.find(v.meta.as_ref(), &sha, size)? else {
            return Ok(false);
        };
        Ok(v.meta.reuse_blob(&sid, index, &sha, &reuse)?)
    })
    .await
}

/// Commit a push: the DSSE envelope must name the session's artifact,
/// kind and version, list exactly the files uploaded (paths, sizes,
/// digests), and, where the namespace has publishers, be signed by one.
/// Returns the version recorded and the key id that signed it. `record`
/// is the audit event of the push, made in the commit's transaction.
pub async fn commit_upload(
    v: &Arc<Vault>,
    s: &SessionRecord,
    envelope: String,
    record: vault_audit::Event,
) -> Result<(VersionRecord, Option<String>)> {
    let (env, m) = vault_manifest::parse_envelope(&envelope)
        .map_err(|e| Error::Integrity(format!("manifest refused: {e}")))?;
    let pr = m.predicate();
    if pr.name.as_str() != s.name || pr.kind != s.kind || pr.version != s.version {
        return Err(Error::Integrity(format!(
            "manifest names {}:{} ({}), the session is for {}:{} ({})",
            pr.name,
            pr.version,
            pr.kind.as_str(),
            s.name,
            s.version,
            s.kind.as_str()
        )));
    }
    let mut declared = s.files.clone();
    declared.sort_by(|a, b| a.path.cmp(&b.path));
    if declared != m.files() {
        return Err(Error::Integrity(
            "manifest file list disagrees with the uploaded files (paths, sizes or digests)".into(),
        ));
    }
    let mut files = Vec::with_capacity(s.files.len());
    for f in m.files() {
        let i = s
            .files
            .iter()
            .position(|x| x.path == f.path)
            .ok_or_else(|| Error::Integrity("file set mismatch".into()))?;
        let blob = s.blobs[i].clone().ok_or_else(|| {
            Error::Invalid(format!("file `{}` was not uploaded", f.path.escape_debug()))
        })?;
        files.push(VersionFile {
            entry: f.clone(),
            blob,
        });
    }
    let mut rec = VersionRecord {
        name: s.name.clone(),
        version: s.version,
        kind: s.kind,
        digest: vault_manifest::digest_of(envelope.as_bytes()),
        envelope,
        files,
        created: vault_store::now(),
        report: None,
        review: None,
        scan: None,
        pushed_by: s.principal.clone(),
    };
    // The admission scan, from the stored blobs.
    let scanned = super::admission::scan_session(v, s).await?;
    if v.scan.mode == crate::config::ScanMode::Enforce
        && scanned.verdict == vault_scan::Verdict::Fail
    {
        let why = super::admission::refusal(&scanned);
        let mut ev = record.clone();
        ev.action = "scan_refuse".into();
        ev.resource = format!("{}:{}", rec.name, rec.version);
        ev.outcome = "deny".into();
        ev.detail = why.clone();
        let v2 = v.clone();
        blocking(move || v2.audit.record(ev).map_err(Error::Audit)).await?;
        // Nothing of a refused push is kept.
        abandon(v, s.id.clone()).await?;
        return Err(Error::Integrity(why));
    }
    rec.scan = Some(super::admission::sign(
        v,
        &rec.name,
        rec.version,
        &rec.digest,
        &scanned,
    )?);
    let (v, sid) = (v.clone(), s.id.clone());
    blocking(move || {
        let namespace = rec.name.split('/').next().unwrap_or_default();
        let signer = check_publishers(v.meta.as_ref(), namespace, &env)?;
        let mut ev = record;
        ev.resource = format!("{}:{}", rec.name, rec.version);
        ev.bytes = rec.bytes();
        ev.detail = format!(
            "{} {} file(s) signed by {}, scan {}",
            rec.digest,
            rec.files.len(),
            signer.as_deref().unwrap_or("an unregistered key"),
            rec.scan.as_ref().map_or("none", |s| s.verdict.as_str())
        );
        v.change(|m| m.commit(&sid, &rec), |_| vec![ev.clone()])?;
        Ok((rec, signer))
    })
    .await
}

/// Enforce the namespace's publishers on a manifest envelope: where any are
/// registered, one of them must have signed it.
fn check_publishers(
    meta: &dyn MetaStore,
    namespace: &str,
    env: &vault_manifest::Envelope,
) -> Result<Option<String>> {
    let pubs = meta.publishers(namespace)?;
    if pubs.is_empty() {
        return Ok(None);
    }
    let keys: Vec<PublicKey> = pubs
        .iter()
        .filter_map(|p| PublicKey::from_file_text(&p.public_key).ok())
        .collect();
    env.verify_any(&keys).map(Some).map_err(|e| {
        Error::Integrity(format!(
            "push refused: {e}; namespace `{namespace}` accepts only manifests signed by its registered publishers"
        ))
    })
}

/// Drop a session, its pending blob records and their objects.
pub async fn abandon(v: &Vault, id: String) -> Result<()> {
    let meta = v.meta.clone();
    let dropped = blocking(move || Ok(meta.abandon_session(&id)?)).await?;
    for b in dropped {
        let _ = v.blobs.delete(&b.id).await;
    }
    Ok(())
}

/// Abandon expired sessions and delete their blobs. Run periodically.
pub async fn sweep(v: &Vault) -> Result<usize> {
    let meta = v.meta.clone();
    let now = vault_store::now();
    let expired: Vec<String> = blocking(move || {
        Ok(meta
            .list_sessions()?
            .into_iter()
            .filter(|s| s.expires <= now)
            .map(|s| s.id)
            .collect())
    })
    .await?;
    let n = expired.len();
    for id in expired {
        abandon(v, id).await?;
    }
    Ok(n)
}

/// `N` random bytes in hex.
pub fn random_id<const N: usize>() -> Result<String> {
    Ok(hex::encode(vault_crypto::random_bytes::<N>()?))
}
