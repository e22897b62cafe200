//! Push: open a session, stream each file (encrypted as it arrives), commit
//! the manifest. A version appears atomically at commit or not at all.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use vault_api::{CommitRequest, OpenUploadRequest, OpenUploadResponse, PushResult, UploadedFile};
use vault_crypto::{BlobEncryptor, Dek, EncryptionContext};
use vault_store::{BlobRecord, SessionRecord, VersionFile, VersionRecord};

use super::auth::authorize_artifact;
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use vault_policy::Action;

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
    let n = req.files.len();
    // File-level dedup within the namespace, offered only to a principal
    // that may also pull there (else it would learn what the namespace holds).
    let may_pull = authorize_artifact(
        &v,
        &p,
        Action::Pull,
        req.name.as_str(),
        Some(req.kind),
        false,
    )
    .await
    .is_ok();
    let namespace = req.name.namespace().to_owned();
    let blobs: Vec<Option<String>> = if may_pull {
        let (meta, files) = (v.meta.clone(), req.files.clone());
        blocking(move || {
            files
                .iter()
                .map(|f| {
                    if f.sha256.is_empty() {
                        return Ok(None);
                    }
                    Ok(meta
                        .find_blob(&namespace, &f.sha256, f.size)?
                        .filter(|b| b.pending_session.is_none() && b.refs > 0)
                        .map(|b| b.id))
                })
                .collect::<Result<Vec<_>, ApiError>>()
        })
        .await?
    } else {
        vec![None; n]
    };
    let needed: Vec<usize> = (0..n).filter(|&i| blobs[i].is_none()).collect();
    let session = SessionRecord {
        id: random_hex::<16>()?,
        name: req.name.to_string(),
        kind: req.kind,
        version: 0,
        files: req.files,
        blobs,
        principal: p.name.clone(),
        created: now,
        expires: now + SESSION_TTL_SECS,
        sensitivity: req.sensitivity,
    };
    let meta = v.meta.clone();
    let session = blocking(move || Ok(meta.open_session(session)?)).await?;
    tracing::info!(session = %session.id, name = %session.name, version = session.version,
        files = n, principal = %p.name, "upload opened");
    Ok(Json(OpenUploadResponse {
        session_id: session.id,
        version: session.version,
        needed,
        expires_in: SESSION_TTL_SECS,
    }))
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
    let declared = s.files.get(index).map_or(0, |f| f.size);
    v.limits
        .bytes(&p.role, &p.token_id, declared)
        .map_err(|secs| ApiError::rate_limited(secs, "bytes per minute"))?;
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
    let mut enc = BlobEncryptor::digest_last(
        &dek,
        ring.id(),
        wrapped.kek_version,
        ctx.clone(),
        v.segment_size,
    )
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
    let found = match v.blobs.write(&rec.id, enc, timed).await {
        Ok(found) => found,
        Err(e) => {
            let (meta, sid, bid) = (v.meta.clone(), s.id.clone(), rec.id.clone());
            let _ = blocking(move || Ok(meta.detach_blob(&sid, index, &bid)?)).await;
            return Err(ApiError::from(e));
        }
    };
    if streamed {
        bind_found_digest(&v, &p, &s, index, &rec, &dek, found).await?;
    }
    drop(dek);
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

fn parse_digest(hex_digest: &str) -> Result<[u8; 32], ApiError> {
    hex::decode(hex_digest)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::bad_request("bad sha256 in session"))
}

/// A streamed file's upload is done: record the digest it was found to
/// have, with the DEK wrapped for that context; or, when the namespace
/// already holds the same content and the pusher may pull there (the dedup
/// rule of `open`), keep that blob and drop the new copy.
async fn bind_found_digest(
    v: &AppState,
    p: &Principal,
    s: &SessionRecord,
    index: usize,
    rec: &BlobRecord,
    dek: &Dek,
    found: [u8; 32],
) -> Result<(), ApiError> {
    let sha_hex = hex::encode(found);
    let blob_id: [u8; 16] = hex::decode(&rec.id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::internal("bad blob id"))?;
    let ctx = EncryptionContext::new(blob_id, &rec.namespace, rec.size, found)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let wrapped = v
        .keyring()
        .wrap_dek(dek, &ctx)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let may_pull = authorize_artifact(v, p, Action::Pull, &s.name, Some(s.kind), false)
        .await
        .is_ok();
    let (meta, ns, sh, size) = (
        v.meta.clone(),
        rec.namespace.clone(),
        sha_hex.clone(),
        rec.size,
    );
    let reuse = if may_pull {
        blocking(move || {
            Ok(meta
                .find_blob(&ns, &sh, size)?
                .filter(|b| b.pending_session.is_none() && b.refs > 0)
                .map(|b| b.id))
        })
        .await?
    } else {
        None
    };
    let (meta, sid, bid, r) = (v.meta.clone(), s.id.clone(), rec.id.clone(), reuse.clone());
    let bound = blocking(move || {
        Ok(meta.bind_blob(&sid, index, &bid, &sha_hex, &wrapped, r.as_deref())?)
    })
    .await?;
    if !bound {
        let _ = v.blobs.delete(&rec.id).await;
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
