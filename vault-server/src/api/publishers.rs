//! Publisher keys: who may sign manifests for a namespace.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use vault_api::{PublisherInfo, PublisherRequest};
use vault_manifest::PublicKey;
use vault_store::PublisherRecord;

use super::auth::authorize;
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use vault_policy::{Action, Resource};

#[derive(Deserialize)]
pub struct NsQuery {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    keyid: String,
}

pub(super) fn valid_namespace(ns: &str) -> Result<(), ApiError> {
    format!("{ns}/x")
        .parse::<vault_api::ArtifactName>()
        .map(|_| ())
        .map_err(|_| ApiError::bad_request(format!("`{ns}` is not a valid namespace")))
}

fn info(r: PublisherRecord) -> PublisherInfo {
    PublisherInfo {
        namespace: r.namespace,
        keyid: r.keyid,
        added: r.added,
        added_by: r.added_by,
    }
}

pub async fn add(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<PublisherRequest>,
) -> Result<Json<PublisherInfo>, ApiError> {
    valid_namespace(&req.namespace)?;
    authorize(
        &v,
        &p,
        Action::PublisherAdmin,
        Resource::Namespace(&req.namespace),
        false,
    )?;
    let key = PublicKey::from_file_text(&req.public_key)?;
    let rec = PublisherRecord {
        namespace: req.namespace,
        keyid: key.keyid(),
        public_key: key.to_file_text(),
        added: vault_store::now(),
        added_by: p.name.clone(),
    };
    let (v2, r) = (v.clone(), rec.clone());
    let mut ev = p.event(
        "publisher_add",
        &format!("namespace:{}", rec.namespace),
        "ok",
    );
    ev.detail = format!("publisher key {}", rec.keyid);
    blocking(move || Ok(v2.change(|m| m.put_publisher(&r), |_| vec![ev.clone()])?)).await?;
    tracing::info!(namespace = %rec.namespace, keyid = %rec.keyid, principal = %p.name, "publisher added");
    Ok(Json(info(rec)))
}

pub async fn list(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Json<Vec<PublisherInfo>>, ApiError> {
    if !q.namespace.is_empty() {
        valid_namespace(&q.namespace)?;
    }
    authorize(
        &v,
        &p,
        Action::PublisherAdmin,
        Resource::Namespace(&q.namespace),
        false,
    )?;
    let meta = v.meta.clone();
    let recs = blocking(move || Ok(meta.publishers(&q.namespace)?)).await?;
    Ok(Json(recs.into_iter().map(info).collect()))
}

pub async fn remove(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<StatusCode, ApiError> {
    valid_namespace(&q.namespace)?;
    authorize(
        &v,
        &p,
        Action::PublisherAdmin,
        Resource::Namespace(&q.namespace),
        false,
    )?;
    let (v2, ns, kid) = (v.clone(), q.namespace.clone(), q.keyid.clone());
    let mut ev = p.event("publisher_remove", &format!("namespace:{ns}"), "ok");
    ev.detail = format!("publisher key {kid}");
    let removed = blocking(move || {
        Ok(v2.change(
            |m| m.remove_publisher(&ns, &kid),
            |removed| {
                if *removed {
                    vec![ev.clone()]
                } else {
                    Vec::new()
                }
            },
        )?)
    })
    .await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "`{}` is not a publisher of `{}`",
            q.keyid, q.namespace
        )));
    }
    tracing::info!(namespace = %q.namespace, keyid = %q.keyid, principal = %p.name, "publisher removed");
    Ok(StatusCode::NO_CONTENT)
}
