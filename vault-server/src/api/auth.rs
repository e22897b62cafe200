//! Authentication (bearer tokens) and the authorization seam every route
//! passes through.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use vault_store::MetaStore;

use super::{ApiError, AppState};
use crate::tokens;

/// Who is calling, from a verified token.
#[derive(Clone, Debug)]
pub struct Principal {
    pub name: String,
    pub role: String,
    /// Public id of the token used (for audit and revocation).
    #[allow(dead_code)]
    pub token_id: String,
}

/// Operations the authorizer decides on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    List,
    Show,
    Delete,
    Alias,
    PublisherAdmin,
    KeyAdmin,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::List => "list",
            Action::Show => "show",
            Action::Delete => "delete",
            Action::Alias => "alias",
            Action::PublisherAdmin => "publisher_admin",
            Action::KeyAdmin => "key_admin",
        }
    }
}

impl Principal {
    /// Decide whether this principal may do `action` on `resource`. Default
    /// deny. Until the Cedar policy engine lands, the built-in `admin` role
    /// may do everything and no other role exists.
    pub fn authorize(&self, action: Action, resource: &str) -> Result<(), ApiError> {
        if self.role == "admin" {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "`{}` may not {} `{resource}`",
            self.name,
            action.as_str()
        )))
    }
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
