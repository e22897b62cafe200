//! Resolve references, list artifacts, delete versions.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{
    ArtifactSummary, DeleteResult, Reference, ResolvedVersion, Selector, ServerKeyInfo,
    VersionSummary,
};
use vault_store::{MetaStore, VersionRecord};

use super::auth::{authorize_artifact, authorize_artifact_sync};
use super::error::ApiQuery;
use super::{blocking, ApiError, AppState, Principal};
use crate::vault::Vault;
use vault_policy::{Action, Authorize, Resource};

#[derive(Deserialize)]
pub struct RefQuery {
    #[serde(rename = "ref")]
    reference: String,
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
}

fn parse_ref(s: &str) -> Result<Reference, ApiError> {
    s.parse()
        .map_err(|e: vault_api::NameError| ApiError::bad_request(e.to_string()))
}

/// Look a reference up. Missing and forbidden look the same to the caller.
/// Aliases resolve through their current record (see [`lookup_alias`]).
/// `latest` is the newest *released* version: a job output held for review
/// is named by its number.
pub fn lookup(meta: &dyn MetaStore, r: &Reference) -> Result<VersionRecord, ApiError> {
    let name = r.name.as_str();
    let found = match &r.selector {
        Selector::Latest => newest_released(meta, name)?,
        Selector::Version(n) => meta.version(name, *n)?,
        Selector::Digest(d) => meta.version_by_digest(d)?.filter(|v| v.name == name),
        Selector::Alias(a) => match meta.alias(name, a)? {
            Some(e) => meta.version(name, e.version)?,
            None => None,
        },
    };
    found.ok_or_else(|| ApiError::not_found(format!("`{r}` not found")))
}

fn newest_released(meta: &dyn MetaStore, name: &str) -> Result<Option<VersionRecord>, ApiError> {
    let Some(latest) = meta.latest_version(name)? else {
        return Ok(None);
    };
    if latest.released() {
        return Ok(Some(latest));
    }
    for n in (1..latest.version).rev() {
        if let Some(rec) = meta.version(name, n)?.filter(VersionRecord::released) {
            return Ok(Some(rec));
        }
    }
    Ok(None)
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

/// Resolve an alias reference with its (possibly renewed) signed record.
fn lookup_alias(
    v: &Vault,
    r: &Reference,
    alias: &str,
) -> Result<(VersionRecord, String), ApiError> {
    let name = r.name.as_str();
    let e = super::aliases::current(v, name, alias)?
        .ok_or_else(|| ApiError::not_found(format!("`{r}` not found")))?;
    let rec = v
        .meta
        .version(name, e.version)?
        .ok_or_else(|| ApiError::not_found(format!("`{r}` not found")))?;
    Ok((rec, e.signed))
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
    let (rec, alias) = blocking(move || {
        let (rec, alias) = match &r.selector {
            Selector::Alias(a) => lookup_alias(&v2, &r, a).map(|(rec, s)| (rec, Some(s)))?,
            _ => (lookup(v2.meta.as_ref(), &r)?, None),
        };
        check_released(&v2, &p, &rec, &r.to_string())?;
        Ok((rec, alias))
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
            engine.decide(&info, action, &resource, false).allowed
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
    if matches!(r.selector, Selector::Latest | Selector::Alias(_)) {
        return Err(ApiError::bad_request(
            "delete needs an exact version (`name:7` or `name@sha256:…`)",
        ));
    }
    authorize_artifact(&v, &p, Action::Delete, r.name.as_str(), None, false).await?;
    let meta = v.meta.clone();
    let (name, version, shredded) = blocking(move || {
        let rec = lookup(meta.as_ref(), &r)?;
        let shredded = meta.delete_version(&rec.name, rec.version)?;
        if let Err(e) = meta.reclaim() {
            tracing::warn!(error = %e, "metadata compaction after delete failed");
        }
        Ok((rec.name, rec.version, shredded))
    })
    .await?;
    // The wrapped DEKs are gone (crypto-shredded); the ciphertext objects go too.
    for b in &shredded {
        if let Err(e) = v.blobs.delete(&b.id).await {
            tracing::warn!(blob = %b.id, error = %e, "could not delete a shredded blob object (fsck removes orphans)");
        }
    }
    tracing::info!(%name, version, shredded = shredded.len(), principal = %p.name, "version deleted");
    Ok(Json(DeleteResult {
        name,
        version,
        shredded_blobs: shredded.len(),
    }))
}
