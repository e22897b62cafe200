//! Push over HTTP: open a session, stream each file, commit the manifest.
//! The work is `domain::ingest`'s; here requests are parsed, authorized,
//! gated and audited. A version appears atomically at commit or not at all.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use vault_api::{
    CommitRequest, DeclareDigestRequest, DeclareDigestResponse, Kind, OpenUploadRequest,
    OpenUploadResponse, PushResult, UploadedFile,
};
use vault_policy::{Action, Authorize};
use vault_store::SessionRecord;

use super::auth::{authorize_artifact, authorize_artifact_as};
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::ingest::{self, Dedup, UploadPlan};

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
    let dedup = dedup(&v, &p, req.name.as_str(), req.kind, req.sensitivity.clone()).await?;
    let n = req.files.len();
    let plan = UploadPlan {
        name: req.name,
        kind: req.kind,
        files: req.files,
        sensitivity: req.sensitivity,
        principal: p.name.clone(),
    };
    let session = ingest::open(&v, plan, dedup).await?;
    tracing::info!(session = %session.id, name = %session.name, version = session.version,
        files = n, principal = %p.name, "upload opened");
    Ok(Json(OpenUploadResponse {
        needed: (0..n).filter(|&i| session.blobs[i].is_none()).collect(),
        session_id: session.id,
        version: session.version,
        expires_in: session.idle_secs,
    }))
}

/// The caller's own live session, which it may still push to; another
/// principal's session looks missing.
async fn own_session(v: &AppState, p: &Principal, id: String) -> Result<SessionRecord, ApiError> {
    let s = ingest::own_session(v, &p.name, id).await?;
    authorize_artifact(v, p, Action::Push, &s.name, Some(s.kind), false).await?;
    Ok(s)
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
    let file = ingest::file_of(&s, index)?.clone();
    let declared = if file.sha256.is_empty() {
        None
    } else {
        Some(
            hex::decode(&file.sha256)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ApiError::bad_request("bad sha256 in session"))?,
        )
    };
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
    let body = super::gate::gated(timed, super::gate::Gate::new(&v, &p))
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed();
    // Dedup can apply only to content whose digest is found as it arrives.
    let dedup = match declared {
        None => dedup(&v, &p, &s.name, s.kind, s.sensitivity.clone()).await?,
        Some(_) => None,
    };
    let found = ingest::store_file(&v, &s, index, (file.size, declared), body, dedup).await?;
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

/// Whether `p` is offered file-level dedup when pushing to `name`: only
/// when `p` may also pull the artifact under the label it has or will get
/// (from `requested`), and then only among blobs of that label whose
/// artifact `p` may pull. A blob committed under `raw-pii` is thus offered
/// only to pushes of `raw-pii` artifacts by those allowed to read them.
async fn dedup(
    v: &AppState,
    p: &Principal,
    name: &str,
    kind: Kind,
    requested: Option<String>,
) -> Result<Option<Dedup>, ApiError> {
    let (vc, pc, name) = (v.clone(), p.clone(), name.to_owned());
    blocking(move || {
        let label = authorize_artifact_as(
            &vc,
            &pc,
            Action::Pull,
            &name,
            Some(kind),
            requested.as_deref(),
            false,
        );
        let Ok(label) = label else {
            return Ok(None);
        };
        let (engine, info) = (vc.policy(), pc.info());
        let may_read = move |owner: &vault_store::ArtifactRecord| {
            let resource = vault_policy::Resource::Artifact {
                name: &owner.name,
                namespace: owner.name.split('/').next().unwrap_or_default(),
                kind: owner.kind.as_str(),
                sensitivity: &owner.sensitivity,
            };
            engine
                .decide(&info, Action::Pull, &resource, false.into())
                .allowed
        };
        Ok(Some(Dedup {
            namespace: name.split('/').next().unwrap_or_default().to_owned(),
            label,
            kind,
            may_read: Arc::new(may_read),
        }))
    })
    .await
}

/// The client hashed a file it declared without a digest before its upload
/// ended; if the namespace holds that content for it, the upload can stop.
pub async fn declare_digest(
    State(v): State<AppState>,
    p: Principal,
    Path((id, index)): Path<(String, usize)>,
    ApiJson(req): ApiJson<DeclareDigestRequest>,
) -> Result<Json<DeclareDigestResponse>, ApiError> {
    let s = own_session(&v, &p, id).await?;
    let dedup = dedup(&v, &p, &s.name, s.kind, s.sensitivity.clone()).await?;
    let held = ingest::declare_digest(&v, &s, index, &req.sha256, dedup).await?;
    Ok(Json(DeclareDigestResponse { held }))
}

pub async fn commit(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CommitRequest>,
) -> Result<Json<PushResult>, ApiError> {
    let s = own_session(&v, &p, id).await?;
    let record = p.event("push_commit", "", "ok");
    let (rec, signer) = ingest::commit_upload(&v, &s, req.envelope, record).await?;
    tracing::info!(name = %rec.name, version = rec.version, digest = %rec.digest,
        principal = %p.name, signer = signer.as_deref().unwrap_or("-"), "version committed");
    Ok(Json(PushResult {
        reference: format!("{}:{}", rec.name, rec.version),
        files: rec.files.len(),
        bytes: rec.bytes(),
        uploaded_bytes: rec.bytes(),
        hashed_bytes: 0,
        scan: rec.scan.map(|s| s.verdict),
        name: rec.name,
        version: rec.version,
        digest: rec.digest,
    }))
}

pub async fn abandon(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let s = own_session(&v, &p, id).await?;
    ingest::abandon(&v, s.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
