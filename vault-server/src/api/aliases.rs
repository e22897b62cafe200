//! Aliases: signed, sequenced, expiring records that point a name such as
//! `production` at a version.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{AliasDeleted, AliasInfo, AliasRequest, ArtifactName, Reference, Selector};
use vault_manifest::{AliasRecord, SignedAlias};
use vault_store::AliasEntry;

use super::auth::authorize_artifact;
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use crate::vault::Vault;
use vault_policy::Action;

pub fn info(e: &AliasEntry, digest: &str) -> AliasInfo {
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

/// Sign and store a record for `name:alias` → `version`, with the next
/// sequence number. Retries if another writer moved the alias meanwhile.
pub fn write_alias(
    v: &Vault,
    name: &str,
    alias: &str,
    version: u64,
    digest: &str,
) -> Result<AliasEntry, ApiError> {
    loop {
        let current = v.meta.alias_sequence(name, alias)?;
        let sequence = current.map_or(1, |c| c + 1);
        let now = vault_store::now();
        let record = AliasRecord {
            name: name.to_owned(),
            alias: alias.to_owned(),
            version,
            digest: digest.to_owned(),
            sequence,
            issued: now,
            expires: now + v.alias_ttl,
        };
        let signed = SignedAlias::sign(&record, &v.signing_key)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let entry = AliasEntry {
            name: name.to_owned(),
            alias: alias.to_owned(),
            version,
            sequence,
            expires: record.expires,
            signed: serde_json::to_string(&signed)
                .map_err(|e| ApiError::internal(e.to_string()))?,
        };
        if v.meta.put_alias(&entry, current)? {
            return Ok(entry);
        }
    }
}

pub async fn set(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<AliasRequest>,
) -> Result<Json<AliasInfo>, ApiError> {
    let r: Reference = req
        .reference
        .parse()
        .map_err(|e: vault_api::NameError| ApiError::bad_request(e.to_string()))?;
    if matches!(r.selector, Selector::Alias(_)) {
        return Err(ApiError::bad_request(
            "point an alias at a version number or digest, not at another alias",
        ));
    }
    if !vault_api::is_valid_alias(&req.alias) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid alias (lowercase letter first, then letters, digits, `.`, `_`, `-`; `latest` is reserved for the newest version)",
            req.alias
        )));
    }
    authorize_artifact(&v, &p, Action::Alias, r.name.as_str(), None, false).await?;
    let v2 = v.clone();
    let alias = req.alias.clone();
    let (entry, digest) = blocking(move || {
        let rec = super::read::lookup(v2.meta.as_ref(), &r)?;
        if !rec.released() {
            return Err(ApiError::bad_request(format!(
                "`{}:{}` is an anonymization output not released by a reviewer (`vault-cli job approve`)",
                rec.name, rec.version
            )));
        }
        let e = write_alias(&v2, &rec.name, &alias, rec.version, &rec.digest)?;
        Ok((e, rec.digest))
    })
    .await?;
    tracing::info!(name = %entry.name, alias = %entry.alias, version = entry.version,
        sequence = entry.sequence, principal = %p.name, "alias moved");
    Ok(Json(info(&entry, &digest)))
}

/// The alias entry to serve, renewed first if it is past half its life.
pub fn current(v: &Vault, name: &str, alias: &str) -> Result<Option<AliasEntry>, ApiError> {
    let Some(e) = v.meta.alias(name, alias)? else {
        return Ok(None);
    };
    let now = vault_store::now();
    if v.alias_renewal && e.expires.saturating_sub(now) < v.alias_ttl / 2 {
        let rec = v.meta.version(name, e.version)?;
        if let Some(rec) = rec {
            return write_alias(v, name, alias, e.version, &rec.digest).map(Some);
        }
    }
    Ok(Some(e))
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
    let name: ArtifactName = q
        .name
        .parse()
        .map_err(|e: vault_api::NameError| ApiError::bad_request(e.to_string()))?;
    authorize_artifact(&v, &p, Action::Delete, name.as_str(), None, false).await?;
    let (v2, p2, alias) = (v.clone(), p.clone(), q.alias.clone());
    let gone = blocking(move || {
        let gone = v2
            .meta
            .delete_alias(name.as_str(), &alias)?
            .ok_or_else(|| ApiError::not_found(format!("no alias `{alias}` on `{name}`")))?;
        let mut ev = p2.event("alias_delete", &format!("{name}:{alias}"), "ok");
        ev.detail = format!(
            "pointed at version {} (record sequence {})",
            gone.version, gone.sequence
        );
        v2.audit
            .record(ev)
            .map_err(|e| ApiError::audit_unavailable(&e))?;
        Ok(gone)
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
