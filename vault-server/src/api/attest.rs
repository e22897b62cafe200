//! Attestors (admins register which key may attest what, where) and the
//! attestations attached to versions (verified, kept as signed, audited).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use vault_api::{AttestRequest, AttestationInfo, AttestorInfo, AttestorRequest};
use vault_manifest::PublicKey;
use vault_policy::{Action, Resource};
use vault_store::{AttestationRecord, AttestorRecord};

use super::auth::{authorize, authorize_artifact};
use super::error::{ApiJson, ApiQuery};
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::{attest, resolve};

fn admin(v: &AppState, p: &Principal) -> Result<(), ApiError> {
    authorize(
        v,
        p,
        Action::PolicyAdmin,
        Resource::Service("policies"),
        false,
    )
}

fn info(a: AttestorRecord) -> AttestorInfo {
    AttestorInfo {
        name: a.name,
        keyid: a.keyid,
        predicate_types: a.predicate_types,
        namespaces: a.namespaces,
        added: a.added,
        added_by: a.added_by,
    }
}

pub fn att_info(a: AttestationRecord) -> AttestationInfo {
    AttestationInfo {
        reference: format!("{}:{}", a.name, a.version),
        digest: a.digest,
        predicate_type: a.predicate_type,
        attestor: a.attestor,
        result: a.result,
        added: a.added,
        added_by: a.added_by,
        envelope: a.envelope,
    }
}

/// `POST /v1/attestors`.
pub async fn add_attestor(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<AttestorRequest>,
) -> Result<Json<AttestorInfo>, ApiError> {
    admin(&v, &p)?;
    if !vault_api::is_valid_alias(&req.name) {
        return Err(ApiError::bad_request(format!(
            "`{}` is not a valid attestor name (lowercase letter first, then letters, digits, `.`, `_`, `-`)",
            req.name
        )));
    }
    if req.predicate_types.is_empty() || req.namespaces.is_empty() {
        return Err(ApiError::bad_request(
            "an attestor is trusted for at least one predicate type and one namespace",
        ));
    }
    for t in &req.predicate_types {
        if t.len() > 512
            || !t.contains(':')
            || t.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::bad_request(format!(
                "`{t}` is not a predicate type URI"
            )));
        }
    }
    for ns in &req.namespaces {
        super::publishers::valid_namespace(ns)?;
    }
    super::scan::scoped(&p, req.namespaces.iter().map(String::as_str))?;
    let key = PublicKey::from_file_text(&req.public_key)?;
    let rec = AttestorRecord {
        name: req.name,
        keyid: key.keyid(),
        public_key: key.to_file_text(),
        predicate_types: req.predicate_types,
        namespaces: req.namespaces,
        added: vault_store::now(),
        added_by: p.name.clone(),
    };
    let mut ev = p.event("attestor_add", &format!("attestor:{}", rec.name), "ok");
    ev.detail = format!(
        "{} trusted for [{}] in [{}]",
        rec.keyid,
        rec.predicate_types.join(", "),
        rec.namespaces.join(", ")
    );
    let (v2, r) = (v.clone(), rec.clone());
    blocking(move || Ok(v2.change(|m| m.put_attestor(&r), |_| vec![ev.clone()])?)).await?;
    Ok(Json(info(rec)))
}

/// `GET /v1/attestors`.
pub async fn list_attestors(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<AttestorInfo>>, ApiError> {
    admin(&v, &p)?;
    let v2 = v.clone();
    let all = blocking(move || Ok(v2.meta.attestors()?)).await?;
    Ok(Json(all.into_iter().map(info).collect()))
}

#[derive(Deserialize)]
pub struct NameQuery {
    name: String,
}

/// `DELETE /v1/attestors?name=`: attestations it made stay kept.
pub async fn remove_attestor(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<NameQuery>,
) -> Result<StatusCode, ApiError> {
    admin(&v, &p)?;
    let ev = p.event("attestor_remove", &format!("attestor:{}", q.name), "ok");
    let (v2, name, p2) = (v.clone(), q.name.clone(), p.clone());
    let removed = blocking(move || {
        if let Some(a) = v2.meta.attestors()?.into_iter().find(|a| a.name == name) {
            super::scan::scoped(&p2, a.namespaces.iter().map(String::as_str))?;
        }
        Ok(v2.change(
            |m| m.remove_attestor(&name),
            |gone| if *gone { vec![ev.clone()] } else { Vec::new() },
        )?)
    })
    .await?;
    if !removed {
        return Err(ApiError::not_found(format!("no attestor `{}`", q.name)));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/attestations`: verify and keep a statement about a version.
/// Who may see the version may attach evidence; what makes it evidence is
/// the attestor's signature.
pub async fn attach(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<AttestRequest>,
) -> Result<Json<AttestationInfo>, ApiError> {
    let r: vault_api::Reference = req.reference.parse().map_err(ApiError::from)?;
    authorize_artifact(&v, &p, Action::Show, r.name.as_str(), None, false).await?;
    let (v2, p2) = (v.clone(), p.clone());
    let kept = blocking(move || {
        let rec = resolve::resolve(&v2, &r)?.record;
        let verified = attest::verify(&rec, &req.envelope, &v2.meta.attestors()?)?;
        let att = attest::record(&rec, &req.envelope, verified, &p2.name);
        let mut ev = p2.event("attest", &format!("{}:{}", rec.name, rec.version), "ok");
        ev.detail = format!(
            "{} by attestor {}{} ({})",
            att.predicate_type,
            att.attestor,
            att.result
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            att.digest
        );
        v2.change(
            |m| m.add_attestation(&att),
            |added| if *added { vec![ev.clone()] } else { Vec::new() },
        )?;
        Ok(att)
    })
    .await?;
    Ok(Json(att_info(kept)))
}

#[derive(Deserialize)]
pub struct RefQuery {
    #[serde(rename = "ref")]
    reference: String,
}

/// `GET /v1/attestations?ref=`.
pub async fn list(
    State(v): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<RefQuery>,
) -> Result<Json<Vec<AttestationInfo>>, ApiError> {
    let r: vault_api::Reference = q.reference.parse().map_err(ApiError::from)?;
    let via_alias = matches!(r.selector, vault_api::Selector::Alias(_));
    authorize_artifact(&v, &p, Action::Show, r.name.as_str(), None, via_alias).await?;
    let v2 = v.clone();
    let all = blocking(move || {
        let rec = resolve::resolve(&v2, &r)?.record;
        Ok(v2.meta.attestations(&rec.name, rec.version)?)
    })
    .await?;
    Ok(Json(all.into_iter().map(att_info).collect()))
}

/// `POST /v1/approvals`: the caller (allowed to `review` the artifact)
/// approves the version's exact bytes; never its own push.
pub async fn approve(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<vault_api::ApproveRequest>,
) -> Result<Json<AttestationInfo>, ApiError> {
    let r: vault_api::Reference = req.reference.parse().map_err(ApiError::from)?;
    if req.reason.len() > 1024 || req.reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a reason is at most 1 KiB of text without control characters",
        ));
    }
    authorize_artifact(&v, &p, Action::Review, r.name.as_str(), None, false).await?;
    let (v2, p2) = (v.clone(), p.clone());
    let kept = blocking(move || {
        let rec = resolve::resolve(&v2, &r)?.record;
        if rec.pushed_by == p2.name {
            return Err(ApiError::forbidden(format!(
                "`{}` pushed `{}:{}` and cannot approve it: another principal must",
                p2.name, rec.name, rec.version
            )));
        }
        let who = format!("approval:{}", p2.name);
        if v2
            .meta
            .attestations(&rec.name, rec.version)?
            .iter()
            .any(|a| a.attestor == who)
        {
            return Err(ApiError::new(
                vault_api::ErrorCode::Conflict,
                format!(
                    "`{}` already approved `{}:{}`",
                    p2.name, rec.name, rec.version
                ),
            ));
        }
        let att = attest::approval(
            &v2.signing_key,
            &rec,
            (&p2.name, &p2.role, &p2.token_id),
            &req.reason,
        )?;
        let mut ev = p2.event("approve", &format!("{}:{}", rec.name, rec.version), "ok");
        ev.detail = format!("{} ({}): {}", rec.digest, att.digest, req.reason);
        v2.change(|m| m.add_attestation(&att), |_| vec![ev.clone()])?;
        Ok(att)
    })
    .await?;
    Ok(Json(att_info(kept)))
}
