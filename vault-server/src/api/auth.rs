//! Authentication (bearer tokens) and the authorization seam every route
//! passes through.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use vault_api::Kind;
use vault_audit::Event;
use vault_policy::{Action, ArtifactContext, Authorize, PrincipalInfo, Resource};
use vault_store::MetaStore;

use super::error::RequestId;
use super::{ApiError, AppState};
use crate::guard::AuthFailure;
use crate::tokens;
use crate::vault::Vault;

/// Who is calling, from a verified token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: String,
    /// Public id of the token used (for audit and revocation).
    #[allow(dead_code)]
    pub token_id: String,
    /// Namespaces the token is scoped to.
    pub namespaces: Vec<String>,
    /// The token's hash (its metadata key; not the secret), to check it
    /// again while a transfer runs.
    pub token_hash: String,
    /// Request id (for the audit log).
    pub request_id: String,
    /// Client address.
    pub client: String,
}

impl Principal {
    /// An audit event attributed to this principal.
    pub fn event(&self, action: &str, resource: &str, outcome: &str) -> Event {
        Event {
            principal: self.name.clone(),
            token_id: self.token_id.clone(),
            action: action.into(),
            resource: resource.into(),
            outcome: outcome.into(),
            request_id: self.request_id.clone(),
            client: self.client.clone(),
            ..Default::default()
        }
    }

    /// The principal as the policy engine sees it.
    pub fn info(&self) -> PrincipalInfo {
        PrincipalInfo {
            name: self.name.clone(),
            role: self.role.clone(),
            namespaces: self.namespaces.clone(),
        }
    }
}

/// Whether a token scoped to namespaces may act in `ns`: never in
/// another one, whatever a policy says (an admin token with
/// `--namespace` included).
pub fn in_scope(p: &Principal, ns: &str) -> bool {
    p.namespaces.is_empty() || p.namespaces.iter().any(|n| n == ns)
}

/// The decision on a request, with the token's namespace scope applied,
/// without an audit entry: [`authorize`] records it; a hypothetical (what
/// a download would be told) does not.
pub fn decide(
    v: &Vault,
    p: &Principal,
    action: Action,
    resource: &Resource<'_>,
    ctx: ArtifactContext<'_>,
) -> vault_policy::Decision {
    let mut d = v.policy().decide(&p.info(), action, resource, ctx);
    let ns = match resource {
        Resource::Artifact { namespace, .. } => Some(*namespace),
        Resource::Namespace(n) => Some(*n),
        Resource::Service(_) => None,
    };
    if d.allowed && ns.is_some_and(|ns| !in_scope(p, ns)) {
        d.allowed = false;
        d.reasons = vec!["token-namespaces".into()];
    }
    d
}

/// Ask the policy set; default deny. A denial names the action and the
/// resource, and nothing else.
pub fn authorize<'c>(
    v: &Vault,
    p: &Principal,
    action: Action,
    resource: Resource<'_>,
    ctx: impl Into<ArtifactContext<'c>>,
) -> Result<(), ApiError> {
    let d = decide(v, p, action, &resource, ctx.into());
    let mut ev = p.event(
        action.as_str(),
        &resource.to_string(),
        if d.allowed { "allow" } else { "deny" },
    );
    ev.detail = d.reasons.join(",");
    v.audit
        .record(ev)
        .map_err(|e| ApiError::audit_unavailable(&e))?;
    if d.allowed {
        return Ok(());
    }
    metrics::counter!("mlvault_authz_denied_total").increment(1);
    tracing::info!(principal = %p.name, role = %p.role, action = action.as_str(),
        resource = %resource, "denied");
    Err(ApiError::forbidden(format!(
        "`{}` (role `{}`) may not {} `{resource}`",
        p.name,
        p.role,
        action.as_str()
    )))
}

/// Authorize an artifact action, with the artifact's kind and sensitivity
/// from the metadata (a missing artifact has kind `hint` or "").
pub fn authorize_artifact_sync<'c>(
    v: &Vault,
    p: &Principal,
    action: Action,
    name: &str,
    hint: Option<Kind>,
    ctx: impl Into<ArtifactContext<'c>>,
) -> Result<(), ApiError> {
    authorize_artifact_as(v, p, action, name, hint, None, ctx).map(|_| ())
}

/// [`authorize_artifact_sync`] for an artifact that may not exist yet and
/// would get the sensitivity label `label_hint` (a push's request).
/// Returns the artifact's label (its own if it exists).
pub fn authorize_artifact_as<'c>(
    v: &Vault,
    p: &Principal,
    action: Action,
    name: &str,
    hint: Option<Kind>,
    label_hint: Option<&str>,
    ctx: impl Into<ArtifactContext<'c>>,
) -> Result<String, ApiError> {
    // Kind and label are fixed at the first push: a cached record is right.
    let art = v.artifact_cache.get(name, || v.meta.artifact(name))?;
    let kind = art
        .as_ref()
        .map(|a| a.kind.as_str())
        .or(hint.map(Kind::as_str))
        .unwrap_or("");
    let sensitivity = match &art {
        Some(a) => a.sensitivity.as_str(),
        None => label_hint.unwrap_or(""),
    };
    let namespace = name.split('/').next().unwrap_or_default();
    authorize(
        v,
        p,
        action,
        Resource::Artifact {
            name,
            namespace,
            kind,
            sensitivity,
        },
        ctx,
    )?;
    Ok(sensitivity.to_owned())
}

/// Whether `p` may do `action` on the existing artifact `name` in context
/// `ctx`, asked of the policies without an audit entry (a hypothetical).
pub fn may(v: &Vault, p: &Principal, action: Action, name: &str, ctx: ArtifactContext<'_>) -> bool {
    // Kind and label are fixed at the first push: a cached record is right.
    let Ok(Some(art)) = v.artifact_cache.get(name, || v.meta.artifact(name)) else {
        return false;
    };
    let resource = Resource::Artifact {
        name,
        namespace: name.split('/').next().unwrap_or_default(),
        kind: art.kind.as_str(),
        sensitivity: &art.sensitivity,
    };
    decide(v, p, action, &resource, ctx).allowed
}

/// [`authorize_artifact_sync`] off the async workers.
pub async fn authorize_artifact(
    v: &AppState,
    p: &Principal,
    action: Action,
    name: &str,
    hint: Option<Kind>,
    via_alias: bool,
) -> Result<(), ApiError> {
    let (v, p, name) = (v.clone(), p.clone(), name.to_owned());
    super::blocking(move || authorize_artifact_sync(&v, &p, action, &name, hint, via_alias)).await
}

fn lookup(v: &Vault, secret: &str) -> Result<Principal, ApiError> {
    let token_hash = tokens::hash(secret);
    let rec = v
        .token_cache
        .get(&token_hash, || v.meta.token_by_hash(&token_hash))?
        .ok_or_else(|| ApiError::unauthenticated("invalid token"))?;
    usable(&rec)?;
    Ok(Principal {
        name: rec.principal,
        role: rec.role,
        token_id: rec.id,
        namespaces: rec.namespaces,
        token_hash,
        request_id: String::new(),
        client: String::new(),
    })
}

/// Whether the token with `hash` may still be used (a transfer checks
/// this as it proceeds).
pub fn still_usable(meta: &dyn MetaStore, hash: &str) -> Result<(), ApiError> {
    let rec = meta
        .token_by_hash(hash)?
        .ok_or_else(|| ApiError::unauthenticated("token deleted"))?;
    usable(&rec)
}

fn usable(rec: &vault_store::TokenRecord) -> Result<(), ApiError> {
    if rec.revoked {
        return Err(ApiError::unauthenticated("token revoked"));
    }
    if rec.expires.is_some_and(|e| e <= vault_store::now()) {
        return Err(ApiError::unauthenticated("token expired"));
    }
    if rec.pending {
        return Err(ApiError::unauthenticated(format!(
            "token awaits approval by a second admin (`vault-cli token approve {}`)",
            rec.id
        )));
    }
    if rec.suspended {
        return Err(ApiError::unauthenticated(format!(
            "token suspended by exfiltration detection; an admin can lift it with `vault-cli token unsuspend {}`",
            rec.id
        )));
    }
    Ok(())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let request_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let client = peer.map(|c| c.to_string()).unwrap_or_default();
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|h| {
                h.to_str()
                    .ok()
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.len() <= 256)
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::unauthenticated("malformed Authorization header"))
            })
            .unwrap_or_else(|| {
                Err(ApiError::unauthenticated(
                    "missing bearer token (set MLVAULT_TOKEN or --token)",
                ))
            });
        let v = state.clone();
        let (rid, cl) = (request_id.clone(), client.clone());
        let mut p = super::blocking(move || {
            let found = secret.and_then(|s| lookup(&v, &s));
            match found {
                Ok(p) => Ok(p),
                Err(e) => {
                    metrics::counter!("mlvault_auth_failures_total").increment(1);
                    match v.floods.failed_auth(peer.map(|p| p.ip())) {
                        AuthFailure::Audit => {}
                        AuthFailure::Hold => return Err(e),
                        AuthFailure::Limited(secs) => return Err(ApiError::auth_flood(secs)),
                    }
                    let ev = Event {
                        principal: "-".into(),
                        action: "authenticate".into(),
                        resource: "-".into(),
                        outcome: "deny".into(),
                        request_id: rid,
                        client: cl,
                        detail: e.message.clone(),
                        ..Default::default()
                    };
                    v.audit
                        .record(ev)
                        .map_err(|a| ApiError::audit_unavailable(&a))?;
                    Err(e)
                }
            }
        })
        .await?;
        p.request_id = request_id;
        p.client = client;
        state.limits.request(&p.role, &p.token_id).map_err(|secs| {
            state
                .floods
                .hold(("rate_limited", p.name.clone(), p.token_id.clone()));
            ApiError::rate_limited(secs, "requests per minute")
        })?;
        Ok(p)
    }
}

/// Write the floods held back since the last call as one summary entry
/// per source (`outcome` `flood`, `count` events); returns how many.
pub fn flush_floods(v: &Vault) -> Result<usize, String> {
    let held = v.floods.drain();
    for ((action, principal, source), n) in &held {
        let mut ev = Event {
            principal: principal.clone(),
            action: (*action).into(),
            resource: "-".into(),
            outcome: "flood".into(),
            count: *n,
            ..Default::default()
        };
        if *action == "authenticate" {
            ev.client = source.clone();
            ev.detail =
                format!("{n} failed authentications from this address, not logged one by one");
        } else {
            ev.token_id = source.clone();
            ev.detail = format!("{n} requests over the token's rate limit, not logged one by one");
        }
        v.audit.record(ev)?;
    }
    Ok(held.len())
}
