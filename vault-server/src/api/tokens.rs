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
        pending: r.pending,
        created_by: r.created_by,
        approved_by: r.approved_by,
    }
}

/// The caller may administer tokens (the policy's `token_admin`).
fn token_admin(v: &AppState, p: &Principal) -> Result<(), ApiError> {
    authorize(v, p, Action::TokenAdmin, Resource::Service("tokens"), false)
}

/// Roles that read artifact data: a new token of one raises an alert.
const DATA_ROLES: [&str; 3] = ["trainer", "deployer", "steward"];

/// Whether the admin `p` may manage token `t`: any token for an admin with
/// no namespaces; for one scoped to namespaces, only tokens scoped to some
/// of them (never an unscoped one).
fn manages(p: &Principal, t: &TokenRecord) -> bool {
    p.namespaces.is_empty()
        || (!t.namespaces.is_empty() && t.namespaces.iter().all(|n| p.namespaces.contains(n)))
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
    token_admin(&v, &p)?;
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
    let pending = v.tokens.needs_approval(&req.role);
    let rec = TokenRecord {
        id,
        principal: req.principal,
        role: req.role,
        created: now,
        expires: req.ttl_secs.map(|t| now.saturating_add(t)),
        revoked: false,
        namespaces: req.namespaces,
        suspended: false,
        pending,
        created_by: p.name.clone(),
        approved_by: String::new(),
    };
    if !manages(&p, &rec) {
        return Err(ApiError::forbidden(format!(
            "`{}` may only create tokens scoped to its namespaces [{}]",
            p.name,
            p.namespaces.join(", ")
        )));
    }
    let data_role = DATA_ROLES.contains(&rec.role.as_str());
    let mut ev = p.event("token_create", &format!("token:{}", rec.id), "ok");
    ev.detail = format!(
        "principal {} role {} namespaces [{}]{}",
        rec.principal,
        rec.role,
        rec.namespaces.join(","),
        if pending {
            ", awaiting a second admin"
        } else {
            ""
        }
    );
    if data_role {
        ev.outcome = "alert".into();
    }
    let (v2, r, hash) = (v.clone(), rec.clone(), tokens::hash(&secret));
    blocking(move || Ok(v2.change(|m| m.put_token(&hash, &r), |_| vec![ev.clone()])?)).await?;
    if data_role {
        metrics::counter!("mlvault_data_tokens_created_total", "role" => rec.role.clone())
            .increment(1);
        tracing::warn!(token = %rec.id, principal = %rec.principal, role = %rec.role,
            by = %p.name, pending, "alert: a token that reads data was created");
    }
    tracing::info!(token = %rec.id, principal = %rec.principal, role = %rec.role,
        by = %p.name, pending, "token created");
    Ok(Json(TokenCreated {
        token: secret,
        info: info(rec),
    }))
}

pub async fn list(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    token_admin(&v, &p)?;
    let meta = v.meta.clone();
    let mut all = blocking(move || Ok(meta.list_tokens()?)).await?;
    all.retain(|t| manages(&p, t));
    all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(Json(all.into_iter().map(info).collect()))
}

/// Apply `change` to token `id` (an admin action), recorded as audit
/// `action` in the same transaction and logged as `what`; 404 if there
/// is no such token.
async fn change_token(
    v: &AppState,
    p: &Principal,
    id: &str,
    change: fn(&dyn vault_store::MetaStore, &str) -> vault_store::Result<bool>,
    (action, what): (&'static str, &'static str),
) -> Result<StatusCode, ApiError> {
    token_admin(v, p)?;
    let (v2, i, who) = (v.clone(), id.to_owned(), p.clone());
    let changed = blocking(move || {
        // A token outside the admin's namespaces looks missing.
        let Some(t) = v2.meta.list_tokens()?.into_iter().find(|t| t.id == i) else {
            return Ok(false);
        };
        if !manages(&who, &t) {
            return Ok(false);
        }
        let mut ev = who.event(action, &format!("token:{i}"), "ok");
        ev.detail = format!("principal {} role {}", t.principal, t.role);
        Ok(v2.change(
            |m| change(m, &i),
            |changed| {
                if *changed {
                    vec![ev.clone()]
                } else {
                    Vec::new()
                }
            },
        )?)
    })
    .await?;
    v.token_cache.clear();
    if !changed {
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
    change_token(
        &v,
        &p,
        &id,
        |m, i| m.revoke_token(i),
        ("token_revoke", "token revoked"),
    )
    .await
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
        ("token_unsuspend", "token suspension lifted"),
    )
    .await
}

/// `POST /v1/tokens/{id}/approve`: a second admin activates a token that
/// `[tokens] second_admin_for` held pending. The admin who created it
/// cannot approve it.
pub async fn approve(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    token_admin(&v, &p)?;
    let (v2, who, i) = (v.clone(), p.clone(), id.clone());
    let rec = blocking(move || {
        let t = v2
            .meta
            .list_tokens()?
            .into_iter()
            .find(|t| t.id == i && manages(&who, t))
            .ok_or_else(|| ApiError::not_found(format!("token `{i}` not found")))?;
        if !t.pending {
            return Err(ApiError::new(
                vault_api::ErrorCode::Conflict,
                format!("token `{i}` is not awaiting approval"),
            ));
        }
        if t.created_by == who.name {
            return Err(ApiError::forbidden(format!(
                "`{}` created token `{i}` and cannot approve it: another admin must",
                who.name
            )));
        }
        let mut ev = who.event("token_approve", &format!("token:{i}"), "ok");
        ev.detail = format!(
            "principal {} role {} created by {}",
            t.principal, t.role, t.created_by
        );
        v2.change(
            |m| m.approve_token(&i, &who.name),
            |changed| {
                if *changed {
                    vec![ev.clone()]
                } else {
                    Vec::new()
                }
            },
        )?;
        v2.token_cache.clear();
        Ok(TokenRecord {
            pending: false,
            approved_by: who.name.clone(),
            ..t
        })
    })
    .await?;
    tracing::info!(token = %id, by = %p.name, "token approved");
    Ok(Json(info(rec)))
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
