//! Aliases: signed, sequenced, expiring records that point a name such as
//! `production` at a version.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{AliasDeleted, AliasInfo, AliasRequest, ArtifactName, Reference};
use vault_store::AliasEntry;

use super::auth::authorize_artifact;
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::resolve;
use vault_policy::Action;

fn info(e: &AliasEntry, digest: &str) -> AliasInfo {
    AliasInfo {
        name: e.name.clone(),
        alias: e.alias.clone(),
        version: e.version,
        digest: digest.to_owned(),
        sequence: e.sequence,
        expires: e.expires,
        signed: e.signed.clone(),
    }
}

pub async fn set(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<AliasRequest>,
) -> Result<Json<AliasInfo>, ApiError> {
    let r: Reference = req.reference.parse().map_err(ApiError::from)?;
    authorize_artifact(&v, &p, Action::Alias, r.name.as_str(), None, false).await?;
    let v2 = v.clone();
    let alias = req.alias.clone();
    let record = p.event("alias_set", &format!("{}:{alias}", r.name), "ok");
    let (entry, rec) = blocking(move || Ok(resolve::set_alias(&v2, &r, &alias, record)?)).await?;
    let digest = rec.digest;
    tracing::info!(name = %entry.name, alias = %entry.alias, version = entry.version,
        sequence = entry.sequence, principal = %p.name, "alias moved");
    Ok(Json(info(&entry, &digest)))
}

#[derive(Deserialize)]
pub struct AliasQuery {
    name: String,
    alias: String,
}

/// `DELETE /v1/aliases?name=…&alias=…`: remove an alias (the `delete`
/// action, admins by default), so the version it named can be deleted.
/// The alias's sequence is kept: a later record for it comes after every
/// record clients saw.
pub async fn delete(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<AliasQuery>,
) -> Result<Json<AliasDeleted>, ApiError> {
    let name: ArtifactName = q.name.parse().map_err(ApiError::from)?;
    authorize_artifact(&v, &p, Action::Delete, name.as_str(), None, false).await?;
    let (v2, p2, alias) = (v.clone(), p.clone(), q.alias.clone());
    let gone = blocking(move || {
        let record = p2.event("alias_delete", &format!("{name}:{alias}"), "ok");
        let gone = v2.change(
            |m| m.delete_alias(name.as_str(), &alias),
            |gone| {
                gone.iter()
                    .map(|g| {
                        let mut ev = record.clone();
                        ev.detail = format!(
                            "pointed at version {} (record sequence {})",
                            g.version, g.sequence
                        );
                        ev
                    })
                    .collect()
            },
        )?;
        gone.ok_or_else(|| ApiError::not_found(format!("no alias `{alias}` on `{name}`")))
    })
    .await?;
    tracing::info!(name = %gone.name, alias = %gone.alias, version = gone.version,
        principal = %p.name, "alias deleted");
    Ok(Json(AliasDeleted {
        name: gone.name,
        alias: gone.alias,
        version: gone.version,
    }))
}
