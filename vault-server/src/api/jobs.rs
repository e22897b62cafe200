//! Anonymization jobs over HTTP: start, status, list.

use axum::extract::{Path, State};
use axum::Json;
use vault_api::{ErrorCode, JobRequest, Kind, Reference, ReviewRequest, Selector};
use vault_policy::{Action, Resource};
use vault_store::{JobRecord, Review, ReviewState};

use super::auth::{authorize, authorize_artifact};
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use crate::domain::anonymize;

/// Largest spec accepted.
const MAX_SPEC: usize = 256 << 10;

fn with_live(mut j: JobRecord) -> JobRecord {
    if let Some(rows) = anonymize::live_rows(&j.id) {
        j.rows = rows;
    }
    j
}

pub async fn create(
    State(v): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<JobRequest>,
) -> Result<Json<JobRecord>, ApiError> {
    if req.spec.len() > MAX_SPEC {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "job spec larger than 256 KiB",
        ));
    }
    let spec = vault_anonymize::Spec::parse(&req.spec)?;
    // A bad custom pattern is refused now, not when the job runs; patterns
    // compile (size-limited) off the async workers.
    let s2 = spec.clone();
    blocking(move || {
        vault_anonymize::Job::new(s2, [0; 32])?;
        Ok(())
    })
    .await?;
    let r: Reference = req.source.parse().map_err(ApiError::from)?;
    let target: vault_api::ArtifactName = req.target.parse().map_err(ApiError::from)?;
    authorize_artifact(
        &v,
        &p,
        Action::Anonymize,
        r.name.as_str(),
        None,
        matches!(r.selector, Selector::Alias(_)),
    )
    .await?;
    authorize_artifact(
        &v,
        &p,
        Action::Push,
        target.as_str(),
        Some(Kind::Dataset),
        false,
    )
    .await?;
    let record = p.event("job_queue", target.as_str(), "ok");
    let job = anonymize::queue(
        &v,
        anonymize::JobPlan {
            spec_text: req.spec,
            spec,
            source: r,
            target,
            principal: p.name.clone(),
        },
        record,
    )
    .await?;
    Ok(Json(job))
}

/// Jobs, their specs and reports are visible only to principals of the
/// job's namespaces (source and target); an unscoped token sees all.
fn visible(p: &Principal, j: &JobRecord) -> bool {
    let ns = |r: &str| r.split('/').next().unwrap_or_default().to_owned();
    p.namespaces.is_empty()
        || (p.namespaces.contains(&ns(&j.source)) && p.namespaces.contains(&ns(&j.target)))
}

pub async fn status(
    State(v): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    authorize(&v, &p, Action::JobRead, Resource::Service("jobs"), false)?;
    let meta = v.meta.clone();
    let i = id.clone();
    let job = blocking(move || Ok(meta.job(&i)?))
        .await?
        .filter(|j| visible(&p, j))
        .ok_or_else(|| ApiError::not_found(format!("job `{id}` not found")))?;
    Ok(Json(with_live(job)))
}

pub async fn list(
    State(v): State<AppState>,
    p: Principal,
) -> Result<Json<Vec<JobRecord>>, ApiError> {
    authorize(&v, &p, Action::JobRead, Resource::Service("jobs"), false)?;
    let meta = v.meta.clone();
    let mut all = blocking(move || Ok(meta.list_jobs()?)).await?;
    all.retain(|j| visible(&p, j));
    all.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(Json(all.into_iter().map(with_live).collect()))
}

/// A reviewer's decision on a job's output: `approve` (pending → approved:
/// released to everyone its grants allow), `reject` (pending → rejected:
/// never released) or `withdraw` (approved → withdrawn). Only principals
/// that may `review` the output artifact decide; each decision is audited.
pub async fn review(
    State(v): State<AppState>,
    p: Principal,
    Path((id, decision)): Path<(String, String)>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> Result<Json<JobRecord>, ApiError> {
    let (from, to): (&[ReviewState], ReviewState) = match decision.as_str() {
        "approve" => (&[ReviewState::Pending], ReviewState::Approved),
        "reject" => (&[ReviewState::Pending], ReviewState::Rejected),
        "withdraw" => (&[ReviewState::Approved], ReviewState::Withdrawn),
        _ => {
            return Err(ApiError::not_found(format!(
                "no decision `{decision}` (approve, reject, withdraw)"
            )))
        }
    };
    let reason = req.reason.trim().to_owned();
    if to != ReviewState::Approved && reason.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{decision} needs a reason (--reason)"
        )));
    }
    if reason.len() > 1024 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a reason is at most 1 KiB of text without control characters",
        ));
    }
    let meta = v.meta.clone();
    let i = id.clone();
    let job = blocking(move || Ok(meta.job(&i)?))
        .await?
        .filter(|j| visible(&p, j))
        .ok_or_else(|| ApiError::not_found(format!("job `{id}` not found")))?;
    let (name, version) = anonymize::output_of(&job)?;
    let output = format!("{name}:{version}");
    authorize_artifact(&v, &p, Action::Review, &name, Some(Kind::Dataset), false).await?;
    let review = Review {
        state: to,
        by: p.name.clone(),
        at: vault_store::now(),
        reason,
    };
    let mut ev = p.event(&format!("job_{decision}"), &output, "ok");
    ev.detail = review.reason.clone();
    let (v2, r2) = (v.clone(), review.clone());
    let job = blocking(move || Ok(anonymize::decide(&v2, &id, from, r2, ev)?)).await?;
    tracing::info!(job = %job.id, output = %output, principal = %p.name, decision = %decision, "job output reviewed");
    Ok(Json(with_live(job)))
}
