//! Aliases: signed, sequenced, expiring records that point a name such as
//! `production` at a version.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{AliasDeleted, AliasInfo, AliasRequest, ArtifactName, Reference};
use vault_store::AliasEntry;

use super::auth::{authorize_artifact, authorize_artifact_sync, may};
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::{promote, resolve};
use vault_policy::{Action, ArtifactContext};

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

/// `POST /v1/aliases`: point an alias at a version. The promotion gate
/// that guards the alias (policies/gates.toml) is judged on the version
/// first and its outcome is `context.gate` of the decision; a gate that
/// passed is granted into the signed record.
pub async fn set(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<AliasRequest>,
) -> Result<Json<AliasInfo>, ApiError> {
    let r: Reference = req.reference.parse().map_err(ApiError::from)?;
    let name = r.name.as_str().to_owned();
    let v2 = v.clone();
    let alias = req.alias.clone();
    let p2 = p.clone();
    let (entry, rec) = blocking(move || {
        let (v, p) = (v2, p2);
        let ctx = |gate| ArtifactContext {
            via_alias: false,
            scan: "",
            gate,
        };
        // A caller that may not move the alias whatever the evidence is
        // refused before anything is looked up: a forbidden artifact and
        // a missing one look the same to it.
        if !may(&v, &p, Action::Alias, &name, ctx("passed")) {
            authorize_artifact_sync(&v, &p, Action::Alias, &name, None, ctx("passed"))?;
        }
        let rec = resolve::alias_target(&v, &r, &alias)?;
        let judged = promote::judge(&v, &rec, &alias)?;
        let outcome = judged.as_ref().map_or("none", promote::Judged::as_str);
        if judged.is_some() {
            metrics::counter!("mlvault_gate_decisions_total", "outcome" => outcome).increment(1);
        }
        authorize_artifact_sync(&v, &p, Action::Alias, &name, None, ctx(outcome)).map_err(|e| {
            match &judged {
                Some(j) if !j.outcome.passed && e.code == vault_api::ErrorCode::Forbidden => {
                    ApiError::forbidden(j.refusal(&rec, &alias))
                }
                _ => e,
            }
        })?;
        let grant = judged.as_ref().and_then(promote::Judged::grant);
        let mut record = p.event("alias_set", &format!("{name}:{alias}"), "ok");
        if let Some(j) = judged.as_ref().filter(|j| !j.outcome.passed) {
            // Moved by a policy that lets this principal past a failed gate.
            record.outcome = "override".into();
            tracing::warn!(name = %name, alias = %alias, principal = %p.name,
                missing = %j.outcome.missing.join("; "), "alias moved past a failed gate");
        }
        let entry = resolve::set_alias(&v, &rec, &alias, grant, record)?;
        Ok((entry, rec))
    })
    .await?;
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
