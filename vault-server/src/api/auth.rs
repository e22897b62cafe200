//! Authentication (bearer tokens) and the authorization seam every route
//! passes through.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use vault_api::Kind;
use vault_policy::{Action, Authorize, PrincipalInfo, Resource};
use vault_store::MetaStore;

use super::{ApiError, AppState};
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
}

impl Principal {
    /// The principal as the policy engine sees it.
    pub fn info(&self) -> PrincipalInfo {
        PrincipalInfo {
            name: self.name.clone(),
            role: self.role.clone(),
            namespaces: self.namespaces.clone(),
        }
    }
}

/// Ask the policy set; default deny. A denial names the action and the
/// resource, and nothing else.
pub fn authorize(
    v: &Vault,
    p: &Principal,
    action: Action,
    resource: Resource<'_>,
    via_alias: bool,
) -> Result<(), ApiError> {
    let d = v.policy().decide(&p.info(), action, &resource, via_alias);
    if d.allowed {
        return Ok(());
    }
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
pub fn authorize_artifact_sync(
    v: &Vault,
    p: &Principal,
    action: Action,
    name: &str,
    hint: Option<Kind>,
    via_alias: bool,
) -> Result<(), ApiError> {
    let art = v.meta.artifact(name)?;
    let kind = art
        .as_ref()
        .map(|a| a.kind.as_str())
        .or(hint.map(Kind::as_str))
        .unwrap_or("");
    let sensitivity = art.as_ref().map_or("", |a| a.sensitivity.as_str());
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
        via_alias,
    )
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

fn lookup(meta: &dyn MetaStore, secret: &str) -> Result<Principal, ApiError> {
    let rec = meta
        .token_by_hash(&tokens::hash(secret))?
        .ok_or_else(|| ApiError::unauthenticated("invalid token"))?;
    if rec.revoked {
        return Err(ApiError::unauthenticated("token revoked"));
    }
    if rec.expires.is_some_and(|e| e <= vault_store::now()) {
        return Err(ApiError::unauthenticated("token expired"));
    }
    Ok(Principal {
        name: rec.principal,
        role: rec.role,
        token_id: rec.id,
        namespaces: rec.namespaces,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::unauthenticated("missing bearer token (set MLVAULT_TOKEN or --token)")
            })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| ApiError::unauthenticated("malformed Authorization header"))?
            .to_owned();
        let meta = state.meta.clone();
        super::blocking(move || lookup(meta.as_ref(), &secret)).await
    }
}
