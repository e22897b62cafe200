//! The admission scan's allowlist per namespace: an admin extends the
//! pickle imports a namespace's models may make (scikit-learn estimators,
//! say), recorded in the audit log with the change; every verdict names
//! the allowlist (and extension) it used, and versions aliases point at
//! are rescanned when it changes.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use vault_api::{ScanAllowRequest, ScanAllowlist};
use vault_policy::{Action, Resource};

use super::auth::authorize;
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::admission::{self, Extension};

/// Entries in one extension at most.
const MAX_IMPORTS: usize = 1000;

#[derive(Deserialize)]
pub struct NsQuery {
    namespace: String,
}

/// An admin token scoped to namespaces (`--namespace`) administers only
/// those: never another namespace's trust settings.
pub(super) fn scoped<'a>(
    p: &Principal,
    namespaces: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    for ns in namespaces {
        if !super::auth::in_scope(p, ns) {
            return Err(ApiError::forbidden(format!(
                "`{}` may only administer its namespaces [{}], not `{ns}`",
                p.name,
                p.namespaces.join(", ")
            )));
        }
    }
    Ok(())
}

/// A valid namespace, and a principal the policies let administer them.
fn admit(v: &AppState, p: &Principal, ns: &str) -> Result<(), ApiError> {
    super::publishers::valid_namespace(ns)?;
    scoped(p, [ns])?;
    authorize(
        v,
        p,
        Action::PolicyAdmin,
        Resource::Service("policies"),
        false,
    )
}

fn view(v: &crate::vault::Vault, ns: &str, rescans: usize) -> Result<ScanAllowlist, ApiError> {
    let a = admission::allowlist_for(v, ns)?;
    let r = a.record.unwrap_or(Extension {
        namespace: ns.to_owned(),
        imports: Vec::new(),
        reason: String::new(),
        by: String::new(),
        at: 0,
    });
    Ok(ScanAllowlist {
        namespace: ns.to_owned(),
        imports: r.imports,
        reason: r.reason,
        by: r.by,
        at: r.at,
        extension: a.extension.unwrap_or_default(),
        allowlist: a.digest,
        rescans,
    })
}

/// `GET /v1/scan/allowlist?namespace=NS`.
pub async fn get(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Json<ScanAllowlist>, ApiError> {
    admit(&v, &p, &q.namespace)?;
    let v2 = v.clone();
    Ok(Json(blocking(move || view(&v2, &q.namespace, 0)).await?))
}

/// `PUT /v1/scan/allowlist`: replace a namespace's extension (none with
/// no imports), then rescan what its aliases point at, in the background.
pub async fn put(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<ScanAllowRequest>,
) -> Result<Json<ScanAllowlist>, ApiError> {
    admit(&v, &p, &req.namespace)?;
    if req.imports.len() > MAX_IMPORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_IMPORTS} imports in an extension"
        )));
    }
    for i in &req.imports {
        vault_scan::valid_import(i).map_err(ApiError::bad_request)?;
        if vault_scan::DEFAULT_ALLOWLIST.contains(&i.as_str()) {
            return Err(ApiError::bad_request(format!(
                "`{i}` is already allowed by default"
            )));
        }
    }
    let mut imports = req.imports.clone();
    imports.sort();
    imports.dedup();
    if req.reason.trim().is_empty()
        || req.reason.len() > 1024
        || req.reason.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(
            "an allowlist change needs a reason: 1 KiB of text at most, without control characters",
        ));
    }
    let ext = Extension {
        namespace: req.namespace.clone(),
        imports,
        reason: req.reason.clone(),
        by: p.name.clone(),
        at: vault_store::now(),
    };
    let record = admission::sign_extension(&v, &ext)?.into_bytes();
    let mut ev = p.event(
        "scan_allowlist",
        &format!("namespace:{}", req.namespace),
        "ok",
    );
    ev.detail = format!(
        "{} ({}): {}",
        if ext.imports.is_empty() {
            "extension removed".to_string()
        } else {
            format!("allows {}", ext.imports.join(", "))
        },
        vault_manifest::digest_of(&record),
        ext.reason
    );
    let (v2, ns) = (v.clone(), req.namespace.clone());
    let due = blocking(move || {
        let key = admission::extension_key(&ns);
        v2.change(
            |m| {
                if ext.imports.is_empty() {
                    // No "remove": an empty record is no extension.
                    m.put_config(&key, b"")
                } else {
                    m.put_config(&key, &record)
                }
            },
            |_| vec![ev.clone()],
        )?;
        Ok(admission::due_for_rescan(&v2, Some(&ns))?.len())
    })
    .await?;
    tracing::info!(namespace = %req.namespace, by = %p.name, rescans = due, "scan allowlist changed");
    tokio::spawn(admission::rescan_aliased(
        v.clone(),
        Some(req.namespace.clone()),
    ));
    let v2 = v.clone();
    Ok(Json(
        blocking(move || view(&v2, &req.namespace, due)).await?,
    ))
}
