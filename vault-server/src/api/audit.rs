//! Reading the audit log: tail and verify.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_audit::{Entry, Report};
use vault_policy::{Action, Resource};

use super::auth::authorize;
use super::error::ApiQuery;
use super::{blocking, ApiError, AppState, Principal};

#[derive(Deserialize)]
pub struct TailQuery {
    #[serde(default = "default_n")]
    n: usize,
}

fn default_n() -> usize {
    20
}

pub async fn tail(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<TailQuery>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    authorize(&v, &p, Action::AuditRead, Resource::Service("audit"), false)?;
    let n = q.n.clamp(1, 10_000);
    let v2 = v.clone();
    let entries = blocking(move || Ok(v2.audit.tail(n)?)).await?;
    Ok(Json(entries))
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint note (C2SP
/// signed-note text), after sealing what was written so far, for an
/// auditor to keep elsewhere and give to `vault-server audit verify`.
pub async fn checkpoint(
    State(v): State<AppState>,
    p: Principal,
) -> Result<axum::response::Response, ApiError> {
    authorize(&v, &p, Action::AuditRead, Resource::Service("audit"), false)?;
    let v2 = v.clone();
    let note = blocking(move || {
        v2.audit
            .checkpoint()
            .map_err(|e| ApiError::audit_unavailable(&e))?;
        v2.audit
            .latest_checkpoint()
            .ok_or_else(|| ApiError::not_found("no checkpoint yet"))
    })
    .await?;
    let mut r = axum::response::Response::new(axum::body::Body::from(note));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

pub async fn verify(State(v): State<AppState>, p: Principal) -> Result<Json<Report>, ApiError> {
    authorize(&v, &p, Action::AuditRead, Resource::Service("audit"), false)?;
    let v2 = v.clone();
    let report = blocking(move || {
        // Seal what has been written so far, then walk the chain.
        let _ = v2.audit.checkpoint();
        Ok(v2.audit.verify(&v2.signing_key.public())?)
    })
    .await?;
    Ok(Json(report))
}
