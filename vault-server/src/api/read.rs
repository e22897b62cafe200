//! Resolve references, list artifacts, delete versions (the work is
//! `domain::resolve`'s and `domain::versions`').

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{
    ArtifactSummary, DeleteResult, Reference, ResolvedVersion, Selector, ServerKeyInfo,
    VersionSummary,
};
use vault_store::VersionRecord;

use super::auth::{authorize_artifact, authorize_artifact_sync};
use super::error::ApiQuery;
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::{resolve, versions};
use crate::vault::Vault;
use vault_policy::{Action, Authorize, Resource};

#[derive(Deserialize)]
pub struct RefQuery {
    #[serde(rename = "ref")]
    reference: String,
    /// Include the attestations kept about the version (`resolve` only).
    #[serde(default)]
    attestations: bool,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
}

fn parse_ref(s: &str) -> Result<Reference, ApiError> {
    s.parse().map_err(ApiError::from)
}

/// A job output that is not released (held for review, rejected or
/// withdrawn) is read only by principals that may review it; to anyone else
/// it does not exist.
pub fn check_released(
    v: &Vault,
    p: &Principal,
    rec: &VersionRecord,
    shown: &str,
) -> Result<(), ApiError> {
    if rec.released() {
        return Ok(());
    }
    authorize_artifact_sync(v, p, Action::Review, &rec.name, None, false).map_err(|e| {
        if e.code == vault_api::ErrorCode::Forbidden {
            ApiError::not_found(format!("`{shown}` not found"))
        } else {
            e
        }
    })
}

pub async fn server_key(State(v): State<AppState>) -> Json<ServerKeyInfo> {
    let p = v.signing_key.public();
    Json(ServerKeyInfo {
        public_key: p.to_file_text(),
        keyid: p.keyid(),
    })
}

pub async fn resolve(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RefQuery>,
) -> Result<Json<ResolvedVersion>, ApiError> {
    let r = parse_ref(&q.reference)?;
    let via_alias = matches!(r.selector, Selector::Alias(_));
    // Authorized before the lookup: a forbidden artifact and a missing one
    // look the same to a caller without a grant.
    authorize_artifact(&v, &p, Action::Show, r.name.as_str(), None, via_alias).await?;
    let v2 = v.clone();
    let with_attestations = q.attestations;
    let (rec, alias, pull_denied, attestations) = blocking(move || {
        let found = resolve::resolve(&v2, &r)?;
        check_released(&v2, &p, &found.record, &r.to_string())?;
        // What a download of this version's files would be told, asked
        // now (no audit entry: nothing is downloaded), so that a client
        // places nothing from its cache either.
        let rec = &found.record;
        let scan = rec.scan.as_ref().map_or("none", |s| s.verdict.as_str());
        // An alias names its target; other references are looked up.
        let aliased = via_alias
            || v2
                .meta
                .aliases(&rec.name)?
                .iter()
                .any(|a| a.version == rec.version);
        let ctx = vault_policy::ArtifactContext {
            via_alias: aliased,
            scan,
            gate: "",
        };
        let passing = vault_policy::ArtifactContext {
            via_alias: aliased,
            scan: "pass",
            gate: "",
        };
        // Seeing a version is not pulling it: a principal that may not
        // download its files is told so here, whatever its cache holds.
        let denied = (!super::files::may_pull(&v2, &p, &rec.name, ctx)).then(|| {
            if scan != "pass" && super::files::may_pull(&v2, &p, &rec.name, passing) {
                format!(
                    "`{}:{}` may not be pulled by `{}` (role `{}`): its admission scan verdict is `{scan}`, and policy lets this role pull only models that pass (`vault-cli show` lists the findings)",
                    rec.name, rec.version, p.name, p.role
                )
            } else {
                format!(
                    "`{}` (role `{}`) may not pull `{}:{}`",
                    p.name, p.role, rec.name, rec.version
                )
            }
        });
        let attestations = if with_attestations {
            v2.meta.attestations(&rec.name, rec.version)?
        } else {
            Vec::new()
        };
        Ok((found.record, found.alias, denied, attestations))
    })
    .await?;
    Ok(Json(ResolvedVersion {
        name: rec.name,
        version: rec.version,
        kind: rec.kind,
        digest: rec.digest,
        envelope: rec.envelope,
        created: rec.created,
        alias,
        report: rec.report,
        review: rec.review.map(|r| r.state.as_str().to_owned()),
        scan: rec.scan.map(|s| s.envelope),
        pull_denied,
        attestations: attestations
            .into_iter()
            .map(super::attest::att_info)
            .collect(),
    }))
}

pub async fn list(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<ArtifactSummary>>, ApiError> {
    let v2 = v.clone();
    let prefix = q.prefix.clone();
    let items = blocking(move || {
        let all = v2.meta.list(&q.prefix)?;
        // Only what the caller may see is listed: artifacts it may list,
        // raw-PII ones only if it may read them, versions held for review
        // only if it may review them. The policy is asked per artifact
        // without an audit entry; the listing is one entry.
        let engine = v2.policy();
        let info = p.info();
        let may = |a: &vault_store::ArtifactRecord, action: Action| {
            let resource = Resource::Artifact {
                name: &a.name,
                namespace: a.name.split('/').next().unwrap_or_default(),
                kind: a.kind.as_str(),
                sensitivity: &a.sensitivity,
            };
            engine
                .decide(&info, action, &resource, false.into())
                .allowed
        };
        let shown: Vec<_> = all
            .into_iter()
            .filter(|(a, _)| {
                may(a, Action::List) && (a.sensitivity != "raw-pii" || may(a, Action::Pull))
            })
            .map(|(a, mut vs)| {
                if vs.iter().any(|r| !r.released()) && !may(&a, Action::Review) {
                    vs.retain(VersionRecord::released);
                }
                (a, vs)
            })
            .collect();
        let mut ev = p.event("list", &format!("prefix:{prefix}"), "allow");
        ev.detail = format!("{} artifact(s)", shown.len());
        v2.audit
            .record(ev)
            .map_err(|e| ApiError::audit_unavailable(&e))?;
        Ok(shown)
    })
    .await?;
    let out = items
        .into_iter()
        .map(|(a, vs)| ArtifactSummary {
            name: a.name,
            kind: a.kind,
            versions: vs
                .into_iter()
                .map(|r| VersionSummary {
                    version: r.version,
                    files: r.files.len(),
                    bytes: r.bytes(),
                    digest: r.digest,
                    created: r.created,
                    review: r.review.map(|x| x.state.as_str().to_owned()),
                })
                .collect(),
        })
        .collect();
    Ok(Json(out))
}

pub async fn delete_version(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RefQuery>,
) -> Result<Json<DeleteResult>, ApiError> {
    let r = parse_ref(&q.reference)?;
    authorize_artifact(&v, &p, Action::Delete, r.name.as_str(), None, false).await?;
    let versions::Deleted {
        name,
        version,
        shredded,
    } = versions::delete(&v, r, p.event("version_delete", "", "ok")).await?;
    tracing::info!(%name, version, shredded, principal = %p.name, "version deleted");
    Ok(Json(DeleteResult {
        name,
        version,
        shredded_blobs: shredded,
    }))
}
