//! Token administration: create (secret shown once), list, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use vault_api::{ErrorCode, PolicyStatus, TokenCreated, TokenInfo, TokenRequest};
use vault_policy::{Action, Resource};
use vault_store::TokenRecord;

use super::auth::authorize;
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use crate::tokens;

fn info(r: TokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id,
        principal: r.principal,
        role: r.role,
        namespaces: r.namespaces,
        created: r.created,
        expires: r.expires,
        revoked: r.revoked,
        suspended: r.suspended,
    }
}

fn check_label(what: &str, s: &str, extra: &[u8]) -> Result<(), ApiError> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || b == b'_'
                || extra.contains(&b)
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} `{s}` must start with a lowercase letter and use lowercase letters, digits, `-`, `_`"
        )))
    }
}

pub async fn create(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenCreated>, ApiError> {
    authorize(
        &v,
        &p,
        Action::TokenAdmin,
        Resource::Service("tokens"),
        false,
    )?;
    check_label("principal", &req.principal, b".@")?;
    check_label("role", &req.role, b"")?;
    for ns in &req.namespaces {
        format!("{ns}/x")
            .parse::<vault_api::ArtifactName>()
            .map_err(|_| ApiError::bad_request(format!("`{ns}` is not a valid namespace")))?;
    }
    if req.ttl_secs == Some(0) {
        return Err(ApiError::bad_request("ttl must be positive"));
    }
    let (secret, id) = tokens::generate()?;
    let now = vault_store::now();
    let rec = TokenRecord {
        id,
        principal: req.principal,
        role: req.role,
        created: now,
        expires: req.ttl_secs.map(|t| now.saturating_add(t)),
        revoked: false,
        namespaces: req.namespaces,
        suspended: false,
    };
    let (meta, r, hash) = (v.meta.clone(), rec.clone(), tokens::hash(&secret));
    blocking(move || Ok(meta.put_token(&hash, &r)?)).await?;
    tracing::info!(token = %rec.id, principal = %rec.principal, role = %rec.role,
        by = %p.name, "token created");
    Ok(Json(TokenCreated {
        token: secret,
        info: info(rec),
    }))
}

pub async fn list(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    authorize(
        &v,
        &p,
        Action::TokenAdmin,
        Resource::Service("tokens"),
        false,
    )?;
    let meta = v.meta.clone();
    let mut all = blocking(move || Ok(meta.list_tokens()?)).await?;
    all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(Json(all.into_iter().map(info).collect()))
}

/// Apply `change` to token `id` (an admin action); 404 if there is no such token.
async fn change_token(
    v: &AppState,
    p: &Principal,
    id: &str,
    change: fn(&dyn vault_store::MetaStore, &str) -> vault_store::Result<bool>,
    what: &'static str,
) -> Result<StatusCode, ApiError> {
    authorize(v, p, Action::TokenAdmin, Resource::Service("tokens"), false)?;
    let (meta, i) = (v.meta.clone(), id.to_owned());
    if !blocking(move || Ok(change(meta.as_ref(), &i)?)).await? {
        return Err(ApiError::not_found(format!("token `{id}` not found")));
    }
    tracing::info!(token = %id, by = %p.name, "{what}");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_token(&v, &p, &id, |m, i| m.revoke_token(i), "token revoked").await
}

pub async fn unsuspend(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change_token(
        &v,
        &p,
        &id,
        |m, i| m.suspend_token(i, false),
        "token suspension lifted",
    )
    .await
}

pub async fn reload_policy(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<PolicyStatus>, ApiError> {
    authorize(
        &v,
        &p,
        Action::PolicyAdmin,
        Resource::Service("policies"),
        false,
    )?;
    let v2 = v.clone();
    let n = blocking(move || {
        v2.reload_policy().map_err(|e| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("policy reload refused, the running set stays in force: {e}"),
            )
        })
    })
    .await?;
    tracing::info!(policies = n, by = %p.name, "policies reloaded");
    Ok(Json(PolicyStatus {
        policies: n,
        source: source_name(&v),
    }))
}

pub fn source_name(v: &AppState) -> String {
    v.policy_source
        .as_deref()
        .map_or("(built-in defaults)".into(), |p| p.display().to_string())
}
