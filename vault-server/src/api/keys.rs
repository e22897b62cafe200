//! Key administration: status, rotate, rewrap, retire.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use vault_api::{ErrorCode, KeyStatus, RetireRequest, RewrapResult};

use super::auth::authorize;
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use vault_policy::{Action, Resource};

fn status_of(v: &AppState) -> Result<KeyStatus, ApiError> {
    let ring = v.keyring();
    let mut by: BTreeMap<u32, u64> = BTreeMap::new();
    for b in v.meta.list_blobs()? {
        *by.entry(b.wrapped_dek.kek_version).or_default() += 1;
    }
    Ok(KeyStatus {
        keyring_id: hex::encode(ring.id().as_bytes()),
        current_version: ring.current_version(),
        versions: ring.versions(),
        min_decryption_version: ring.min_decryption_version(),
        blobs_by_version: by.into_iter().collect(),
    })
}

pub async fn status(State(v): State<AppState>, p: Principal) -> Result<Json<KeyStatus>, ApiError> {
    authorize(&v, &p, Action::KeyAdmin, Resource::Service("keys"), false)?;
    let v2 = v.clone();
    Ok(Json(blocking(move || status_of(&v2)).await?))
}

pub async fn rotate(State(v): State<AppState>, p: Principal) -> Result<Json<KeyStatus>, ApiError> {
    authorize(&v, &p, Action::KeyAdmin, Resource::Service("keys"), false)?;
    let v2 = v.clone();
    let record = p.event("key_rotate", "keys", "ok");
    let s = blocking(move || {
        let version = v2.rotate(record)?;
        tracing::info!(version, "KEK rotated");
        status_of(&v2)
    })
    .await?;
    Ok(Json(s))
}

/// Rewrap every DEK not under the current KEK (`domain::versions::rewrap`).
pub async fn rewrap(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<RewrapResult>, ApiError> {
    authorize(&v, &p, Action::KeyAdmin, Resource::Service("keys"), false)?;
    let v2 = v.clone();
    let r = blocking(move || Ok(crate::domain::versions::rewrap(&v2)?)).await?;
    Ok(Json(RewrapResult {
        rewrapped: r.rewrapped,
        already_current: r.already,
        current_version: r.current,
    }))
}

pub async fn retire(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<RetireRequest>,
) -> Result<Json<KeyStatus>, ApiError> {
    authorize(&v, &p, Action::KeyAdmin, Resource::Service("keys"), false)?;
    let v2 = v.clone();
    let record = p.event("key_retire", "keys", "ok");
    let s = blocking(move || {
        let min = req.min_decryption_version;
        let stale = v2
            .meta
            .list_blobs()?
            .iter()
            .filter(|b| b.wrapped_dek.kek_version < min)
            .count();
        if stale > 0 {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("{stale} blobs are still wrapped by KEK versions below {min}; run `vault-cli key rewrap` first"),
            ));
        }
        v2.retire(min, record)
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
        status_of(&v2)
    })
    .await?;
    Ok(Json(s))
}
