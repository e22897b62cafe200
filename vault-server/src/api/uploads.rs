//! Push: open a session, stream each file (encrypted as it arrives), commit
//! the manifest. A version appears atomically at commit or not at all.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use vault_api::{
    CommitRequest, DeclareDigestRequest, DeclareDigestResponse, OpenUploadRequest,
    OpenUploadResponse, PushResult, UploadedFile,
};
use vault_crypto::{BlobEncryptor, Dek, EncryptionContext};
use vault_store::{BlobRecord, SessionRecord, VersionFile, VersionRecord};

use super::auth::authorize_artifact;
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use crate::vault::Vault;
use vault_policy::{Action, Authorize};

/// Idle upload sessions are abandoned after this long.
pub const SESSION_TTL_SECS: u64 = 6 * 3600;

/// The digest a pending blob's record carries until the upload has found
/// the real one (a file declared without a digest).
const UNKNOWN_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn random_hex<const N: usize>() -> Result<String, ApiError> {
    Ok(hex::encode(
        vault_crypto::random_bytes::<N>().map_err(|e| ApiError::internal(e.to_string()))?,
    ))
}

pub async fn open(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<OpenUploadRequest>,
) -> Result<Json<OpenUploadResponse>, ApiError> {
    authorize_artifact(
        &v,
        &p,
        Action::Push,
        req.name.as_str(),
        Some(req.kind),
        false,
    )
    .await?;
    if let Some(s) = &req.sensitivity {
        if s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ApiError::bad_request(
                "sensitivity is a short label of lowercase letters, digits and `-`",
            ));
        }
    }
    if req.files.len() > v.http.max_files {
        return Err(ApiError::bad_request(format!(
            "manifest too large: {} files (this server takes at most {})",
            req.files.len(),
            v.http.max_files
        )));
    }
    // Same path and digest rules as a manifest; a digest left empty is one
    // the upload will find.
    let mut checked = req.files.clone();
    for f in checked.iter_mut().filter(|f| f.sha256.is_empty()) {
        f.sha256 = UNKNOWN_DIGEST.to_owned();
    }
    vault_manifest::Manifest::new(req.name.clone(), req.kind, 1, 0, checked, vec![])?;
    let now = vault_store::now();
    // Quotas per principal: an unfinished push holds metadata until it
    // expires, so one caller may not pile them up.
    let (meta, who, adding) = (v.meta.clone(), p.name.clone(), req.files.len());
    let adding_bytes: u64 = req.files.iter().map(|f| f.size).sum();
    let (max_open, max_files) = (v.http.max_open_uploads, v.http.max_pending_files);
    let max_bytes = v.http.max_pending_bytes;
    blocking(move || {
        let open: Vec<SessionRecord> = meta
            .list_sessions()?
            .into_iter()
            .filter(|s| s.principal == who && s.expires > now)
            .collect();
        let pending: usize = open.iter().map(|s| s.files.len()).sum();
        if open.len() >= max_open {
            return Err(quota(format!(
                "`{who}` has {} open uploads (at most {max_open}); finish or abandon one first",
                open.len()
            )));
        }
        let pending_bytes: u64 = open
            .iter()
            .flat_map(|s| &s.files)
            .map(|f| f.size)
            .sum();
        if pending_bytes.saturating_add(adding_bytes) > max_bytes {
            return Err(quota(format!(
                "`{who}`'s open uploads would declare {} bytes (at most {max_bytes}); finish them first",
                pending_bytes.saturating_add(adding_bytes)
            )));
        }
        if pending + adding > max_files {
            return Err(quota(format!(
                "`{who}`'s open uploads would list {} files (at most {max_files}); finish them first",
                pending + adding
            )));
        }
        Ok(())
    })
    .await?;
    let n = req.files.len();
    let namespace = req.name.namespace().to_owned();
    let blobs: Vec<Option<String>> =
        match dedup_label(&v, &p, req.name.as_str(), req.kind, req.sensitivity.clone()).await? {
            Some(label) => {
                let (vc, pc, files, kind) = (v.clone(), p.clone(), req.files.clone(), req.kind);
                blocking(move || {
                    files
                        .iter()
                        .map(|f| {
                            if f.sha256.is_empty() {
                                return Ok(None);
                            }
                            let want = Wanted {
                                namespace: &namespace,
                                label: &label,
                                kind,
                                sha256: &f.sha256,
                                size: f.size,
                            };
                            live_blob(&vc, &pc, &want)
                        })
                        .collect::<Result<Vec<_>, ApiError>>()
                })
                .await?
            }
            None => vec![None; n],
        };
    let needed: Vec<usize> = (0..n).filter(|&i| blobs[i].is_none()).collect();
    let idle = v.http.upload_idle_secs.clamp(1, SESSION_TTL_SECS);
    let session = SessionRecord {
        id: random_hex::<16>()?,
        name: req.name.to_string(),
        kind: req.kind,
        version: 0,
        files: req.files,
        blobs,
        principal: p.name.clone(),
        created: now,
        expires: now + idle,
        sensitivity: req.sensitivity,
        idle_secs: idle,
        deadline: now + SESSION_TTL_SECS,
    };
    let meta = v.meta.clone();
    let session = blocking(move || Ok(meta.open_session(session)?)).await?;
    tracing::info!(session = %session.id, name = %session.name, version = session.version,
        files = n, principal = %p.name, "upload opened");
    Ok(Json(OpenUploadResponse {
        session_id: session.id,
        version: session.version,
        needed,
        expires_in: idle,
    }))
}

/// A per-principal upload quota is reached (429, retry in a minute).
fn quota(message: String) -> ApiError {
    metrics::counter!("mlvault_upload_quota_refusals_total").increment(1);
    let mut e = ApiError::new(vault_api::ErrorCode::RateLimited, message);
    e.retry_after = Some(60);
    e
}

/// The caller's own live session, or 404 (another principal's session looks
/// missing).
async fn own_session(v: &AppState, p: &Principal, id: String) -> Result<SessionRecord, ApiError> {
    let meta = v.meta.clone();
    let s = blocking(move || Ok(meta.session(&id)?)).await?;
    match s {
        Some(s) if s.principal == p.name && s.expires > vault_store::now() => {
            authorize_artifact(v, p, Action::Push, &s.name, Some(s.kind), false).await?;
            Ok(s)
        }
        _ => Err(ApiError::not_found("upload session not found or expired")),
    }
}

pub async fn upload_file(
    State(v): State<AppState>,
    p: Principal,
    Path((id, index)): Path<(String, usize)>,
    body: Body,
) -> Result<Json<UploadedFile>, ApiError> {
    let s = own_session(&v, &p, id).await?;
    // A spent byte budget is refused up front; every byte received is
    // charged as it arrives (see `gate`).
    v.limits
        .take_bytes(&p.role, &p.token_id, 1)
        .map_err(|wait| ApiError::rate_limited(wait.as_secs().max(1), "bytes per minute"))?;
    let file = s
        .files
        .get(index)
        .ok_or_else(|| ApiError::not_found(format!("file {index} is not in the session")))?
        .clone();
    let namespace = s.name.split('/').next().unwrap_or_default().to_owned();
    let blob_id: [u8; 16] =
        vault_crypto::random_bytes().map_err(|e| ApiError::internal(e.to_string()))?;
    // A file declared without a digest is hashed as it arrives (format v2
    // binds the digest at the end); until then its record carries zeros.
    let streamed = file.sha256.is_empty();
    let sha_hex = if streamed {
        UNKNOWN_DIGEST
    } else {
        file.sha256.as_str()
    };
    let sha = parse_digest(sha_hex)?;
    let ctx = EncryptionContext::new(blob_id, &namespace, file.size, sha)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ring = v.keyring();
    let dek = Dek::generate().map_err(|e| ApiError::internal(e.to_string()))?;
    let wrapped = ring
        .wrap_dek(&dek, &ctx)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut enc =
        BlobEncryptor::digest_last(&dek, ring.id(), wrapped.kek_version, ctx, v.segment_size)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    if !streamed {
        enc.set_digest(sha)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let rec = BlobRecord {
        id: hex::encode(blob_id),
        namespace: namespace.clone(),
        size: file.size,
        sha256: sha_hex.to_owned(),
        wrapped_dek: wrapped,
        refs: 0,
        pending_session: Some(s.id.clone()),
        created: vault_store::now(),
        sensitivity: String::new(),
        kind: String::new(),
        artifact: String::new(),
    };
    // Record the pending blob first: a crash mid-upload leaves a record that
    // session cleanup finds, never an unknown object.
    let (meta, sid, r) = (v.meta.clone(), s.id.clone(), rec.clone());
    let old = blocking(move || Ok(meta.attach_blob(&sid, index, &r)?)).await?;
    if let Some(old) = old {
        let _ = v.blobs.delete(&old.id).await;
    }
    // A body that stalls is cut off (slow uploads that never finish).
    let timeout = std::time::Duration::from_secs(v.http.body_timeout_secs);
    let timed = futures_util::stream::unfold(body.into_data_stream(), move |mut b| async move {
        match tokio::time::timeout(timeout, b.next()).await {
            Ok(Some(chunk)) => Some((chunk.map_err(|e| e.to_string()), b)),
            Ok(None) => None,
            Err(_) => Some((Err(format!("no data for {}s", timeout.as_secs())), b)),
        }
    })
    .boxed();
    let timed = super::gate::gated(timed, super::gate::Gate::new(&v, &p))
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    // Writing the blob and binding its digest run in a task of their own:
    // a client that drops the request (its file was found held meanwhile,
    // see `declare_digest`) must not cancel this between the object being
    // stored and the duplicate being removed, which would leave an orphan
    // object. A body cut off early still fails the write, which detaches.
    let file_size = file.size;
    let finish = {
        let (v, p, s, rec) = (v.clone(), p.clone(), s.clone(), rec.clone());
        async move {
            let written = keep_alive(&v, &s.id, v.blobs.write(&rec.id, enc, timed)).await;
            let found = match written {
                Ok(found) => found,
                Err(e) => {
                    let (meta, sid, bid) = (v.meta.clone(), s.id.clone(), rec.id.clone());
                    let _ = blocking(move || Ok(meta.detach_blob(&sid, index, &bid)?)).await;
                    return Err(ApiError::from(e));
                }
            };
            if streamed {
                let ctx = EncryptionContext::new(blob_id, &namespace, file_size, found)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                bind_found_digest(&v, &p, &s, index, &rec, &dek, &ctx).await?;
            }
            drop(dek);
            Ok(found)
        }
    };
    let found = tokio::spawn(finish)
        .await
        .map_err(|e| ApiError::internal(format!("upload task failed: {e}")))??;
    metrics::counter!("mlvault_bytes_in_total").increment(file.size);
    let mut ev = p.event(
        "transfer_in",
        &format!("{}:{} {}", s.name, s.version, file.path),
        "ok",
    );
    ev.bytes = file.size;
    let v2 = v.clone();
    blocking(move || {
        v2.audit
            .record(ev)
            .map_err(|e| ApiError::audit_unavailable(&e))
    })
    .await?;
    Ok(Json(UploadedFile {
        sha256: hex::encode(found),
    }))
}

/// Run `work` (an upload's write) while touching session `id` often
/// enough that it does not expire idle however long one file takes.
async fn keep_alive<T>(v: &AppState, id: &str, work: impl std::future::Future<Output = T>) -> T {
    let every = std::time::Duration::from_secs((v.http.upload_idle_secs / 3).max(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let (meta, id) = (v.meta.clone(), id.to_owned());
                let touched = blocking(move || Ok(meta.touch_session(&id, vault_store::now())?)).await;
                if let Err(e) = touched {
                    tracing::warn!(error = ?e.message, "cannot record upload activity");
                }
            }
        }
    }
}

/// Whether `p` is offered file-level dedup when pushing to `name`, and
/// among which blobs: `Some(label)`, the sensitivity label the artifact has
/// (or will get, from `requested`), when `p` may also pull it. Dedup tells
/// the pusher what the namespace holds, so it is offered only to a
/// principal that may read it, and never across labels: a blob committed
/// under `raw-pii` is offered only to pushes of `raw-pii` artifacts, which
/// only those allowed to read such data may pull.
async fn dedup_label(
    v: &AppState,
    p: &Principal,
    name: &str,
    kind: vault_api::Kind,
    requested: Option<String>,
) -> Result<Option<String>, ApiError> {
    let (vc, pc, name) = (v.clone(), p.clone(), name.to_owned());
    blocking(move || {
        Ok(super::auth::authorize_artifact_as(
            &vc,
            &pc,
            Action::Pull,
            &name,
            Some(kind),
            requested.as_deref(),
            false,
        )
        .ok())
    })
    .await
}

/// What a push would reuse: content of one kind and label in a namespace.
struct Wanted<'a> {
    namespace: &'a str,
    label: &'a str,
    kind: vault_api::Kind,
    sha256: &'a str,
    size: u64,
}

/// A committed blob holding this content that the caller may already read:
/// same namespace, label and kind, first committed by an artifact the
/// policy lets the caller pull. Otherwise `None`, and the caller sends the
/// bytes, so the answer says nothing about content it may not read. The
/// policy is asked without an audit entry (one per file would flood it);
/// the push itself is audited.
fn live_blob(v: &Vault, p: &Principal, w: &Wanted<'_>) -> Result<Option<String>, ApiError> {
    let Some(b) = v
        .meta
        .find_blob(w.namespace, w.kind.as_str(), w.label, w.sha256, w.size)?
        .filter(|b| b.pending_session.is_none() && b.refs > 0)
        .filter(|b| b.kind == w.kind.as_str() && !b.artifact.is_empty())
    else {
        return Ok(None);
    };
    let Some(owner) = v.meta.artifact(&b.artifact)? else {
        return Ok(None);
    };
    let resource = vault_policy::Resource::Artifact {
        name: &owner.name,
        namespace: owner.name.split('/').next().unwrap_or_default(),
        kind: owner.kind.as_str(),
        sensitivity: &owner.sensitivity,
    };
    let readable = owner.name.split('/').next() == Some(w.namespace)
        && owner.sensitivity == w.label
        && v.policy()
            .decide(&p.info(), Action::Pull, &resource, false)
            .allowed;
    Ok(readable.then_some(b.id))
}

/// A live blob the session's file (`sha256`, `size` bytes) may reuse under
/// the dedup rule of [`dedup_label`].
async fn reusable_blob(
    v: &AppState,
    p: &Principal,
    s: &SessionRecord,
    sha256: &str,
    size: u64,
) -> Result<Option<String>, ApiError> {
    let Some(label) = dedup_label(v, p, &s.name, s.kind, s.sensitivity.clone()).await? else {
        return Ok(None);
    };
    let namespace = s.name.split('/').next().unwrap_or_default().to_owned();
    let (vc, pc, sha, kind) = (v.clone(), p.clone(), sha256.to_owned(), s.kind);
    blocking(move || {
        live_blob(
            &vc,
            &pc,
            &Wanted {
                namespace: &namespace,
                label: &label,
                kind,
                sha256: &sha,
                size,
            },
        )
    })
    .await
}

/// The client hashed a file it declared without a digest before its upload
/// ended. If the namespace holds that content (and the caller may reuse
/// it), the file points at the held blob and the upload can be dropped, as
/// if the digest had been declared at open.
pub async fn declare_digest(
    State(v): State<AppState>,
    p: Principal,
    Path((id, index)): Path<(String, usize)>,
    ApiJson(req): ApiJson<DeclareDigestRequest>,
) -> Result<Json<DeclareDigestResponse>, ApiError> {
    let s = own_session(&v, &p, id).await?;
    let file = s
        .files
        .get(index)
        .ok_or_else(|| ApiError::not_found(format!("file {index} is not in the session")))?;
    if !vault_api::valid_digest(&format!("sha256:{}", req.sha256)) {
        return Err(ApiError::bad_request(
            "sha256 must be 64 lowercase hex digits",
        ));
    }
    if !file.sha256.is_empty() {
        return Ok(Json(DeclareDigestResponse { held: false }));
    }
    let Some(reuse) = reusable_blob(&v, &p, &s, &req.sha256, file.size).await? else {
        return Ok(Json(DeclareDigestResponse { held: false }));
    };
    let (meta, sid, sha) = (v.meta.clone(), s.id.clone(), req.sha256.clone());
    let held = blocking(move || Ok(meta.reuse_blob(&sid, index, &sha, &reuse)?)).await?;
    Ok(Json(DeclareDigestResponse { held }))
}

fn parse_digest(hex_digest: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(hex_digest)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("bad sha256 in session"))
}

/// A streamed file's upload is done: record the digest it was found to
/// have (in `ctx`), with the DEK wrapped for that context; or, when the
/// namespace already holds the same content and the pusher may reuse it
/// (see [`dedup_label`]), keep that blob and drop the new copy.
async fn bind_found_digest(
    v: &AppState,
    p: &Principal,
    s: &SessionRecord,
    index: usize,
    rec: &BlobRecord,
    dek: &Dek,
    ctx: &EncryptionContext,
) -> Result<(), ApiError> {
    let sha_hex = hex::encode(ctx.plaintext_sha256());
    let wrapped = v
        .keyring()
        .wrap_dek(dek, ctx)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let reuse = reusable_blob(v, p, s, &sha_hex, rec.size).await?;
    let (meta, sid, bid, r) = (v.meta.clone(), s.id.clone(), rec.id.clone(), reuse.clone());
    let bound = blocking(move || {
        Ok(meta.bind_blob(&sid, index, &bid, &sha_hex, &wrapped, r.as_deref())?)
    })
    .await?;
    if !bound {
        // The file was pointed elsewhere meanwhile (a held blob found by
        // the client's digest, or a newer upload): this copy is not needed.
        let _ = v.blobs.delete(&rec.id).await;
        let (meta, sid, bid) = (v.meta.clone(), s.id.clone(), rec.id.clone());
        let _ = blocking(move || Ok(meta.detach_blob(&sid, index, &bid)?)).await;
        return Err(ApiError::new(
            vault_api::ErrorCode::Conflict,
            "the file was uploaded again while this upload ran",
        ));
    }
    if reuse.is_some() {
        let _ = v.blobs.delete(&rec.id).await;
    }
    Ok(())
}

pub async fn commit(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<PushResult>, ApiError> {
    let s = own_session(&v, &p, id).await?;
    let (env, m) = vault_manifest::parse_envelope(&req.envelope)
        .map_err(|e| ApiError::integrity(format!("manifest refused: {e}")))?;
    let pr = m.predicate();
    if pr.name.as_str() != s.name || pr.kind != s.kind || pr.version != s.version {
        return Err(ApiError::integrity(format!(
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
        return Err(ApiError::integrity(
            "manifest file list disagrees with the uploaded files (paths, sizes or digests)",
        ));
    }
    let namespace = s.name.split('/').next().unwrap_or_default().to_owned();
    let meta = v.meta.clone();
    let signer =
        blocking(move || super::publishers::check_signed(meta.as_ref(), &namespace, &env)).await?;
    let mut files = Vec::with_capacity(s.files.len());
    for f in m.files() {
        let i = s
            .files
            .iter()
            .position(|x| x.path == f.path)
            .ok_or_else(|| ApiError::integrity("file set mismatch"))?;
        let blob = s.blobs[i].clone().ok_or_else(|| {
            ApiError::bad_request(format!("file `{}` was not uploaded", f.path.escape_debug()))
        })?;
        files.push(VersionFile {
            entry: f.clone(),
            blob,
        });
    }
    let rec = VersionRecord {
        name: s.name.clone(),
        version: s.version,
        kind: s.kind,
        digest: vault_manifest::digest_of(req.envelope.as_bytes()),
        envelope: req.envelope,
        files,
        created: vault_store::now(),
        report: None,
        review: None,
    };
    let result = PushResult {
        reference: format!("{}:{}", rec.name, rec.version),
        name: rec.name.clone(),
        version: rec.version,
        digest: rec.digest.clone(),
        files: rec.files.len(),
        bytes: rec.bytes(),
        uploaded_bytes: rec.bytes(),
        hashed_bytes: 0,
    };
    let (meta, sid) = (v.meta.clone(), s.id.clone());
    blocking(move || Ok(meta.commit(&sid, &rec)?)).await?;
    tracing::info!(name = %result.name, version = result.version, digest = %result.digest,
        principal = %p.name, signer = signer.as_deref().unwrap_or("-"), "version committed");
    Ok(Json(result))
}

pub async fn abandon(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = own_session(&v, &p, id).await?;
    let meta = v.meta.clone();
    let dropped = blocking(move || Ok(meta.abandon_session(&s.id)?)).await?;
    for b in dropped {
        let _ = v.blobs.delete(&b.id).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Abandon expired sessions and delete their blobs. Run periodically.
pub async fn sweep_sessions(v: &AppState) -> Result<usize, ApiError> {
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
        let meta = v.meta.clone();
        let dropped = blocking(move || Ok(meta.abandon_session(&id)?)).await?;
        for b in dropped {
            let _ = v.blobs.delete(&b.id).await;
        }
    }
    Ok(n)
}
