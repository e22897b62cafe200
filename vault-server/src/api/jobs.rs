//! Anonymization jobs over HTTP: start, status, list.

use axum::extract::{Path, State};
use axum::Json;
use vault_api::{ErrorCode, JobRequest, Kind, Reference, ReviewRequest, Selector};
use vault_policy::{Action, Resource};
use vault_store::{JobRecord, Review, ReviewState};

use super::auth::{authorize, authorize_artifact};
use super::error::ApiJson;
use super::{blocking, ApiError, AppState, Principal};
use crate::jobs;

/// Largest spec accepted.
const MAX_SPEC: usize = 256 << 10;

fn with_live(mut j: JobRecord) -> JobRecord {
    if let Some(rows) = jobs::live_rows(&j.id) {
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
    let spec = vault_anonymize::Spec::parse(&req.spec)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // A bad custom pattern is refused now, not when the job runs; patterns
    // compile (size-limited) off the async workers.
    let s2 = spec.clone();
    tokio::task::spawn_blocking(move || vault_anonymize::Job::new(s2, [0; 32]).map(|_| ()))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let r: Reference = req
        .source
        .parse()
        .map_err(|e: vault_api::NameError| ApiError::bad_request(e.to_string()))?;
    let target: vault_api::ArtifactName = req
        .target
        .parse()
        .map_err(|e: vault_api::NameError| ApiError::bad_request(e.to_string()))?;
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
    let meta = v.meta.clone();
    let r2 = r.clone();
    let src = blocking(move || super::read::lookup(meta.as_ref(), &r2)).await?;
    if src.kind != Kind::Dataset {
        return Err(ApiError::bad_request(format!(
            "`{r}` is a model; jobs anonymize datasets"
        )));
    }
    jobs::check_source(&v, &spec, &src)
        .await
        .map_err(|e| ApiError::bad_request(format!("job refused before it started: {e}")))?;
    let now = vault_store::now();
    let job = JobRecord {
        id: format!(
            "job_{}",
            hex::encode(
                vault_crypto::random_bytes::<8>().map_err(|e| ApiError::internal(e.to_string()))?
            )
        ),
        state: "queued".into(),
        source: format!("{}:{}", src.name, src.version),
        source_digest: src.digest.clone(),
        target: target.to_string(),
        spec_digest: vault_manifest::digest_of(req.spec.as_bytes()),
        spec: req.spec,
        principal: p.name.clone(),
        created: now,
        updated: now,
        rows: 0,
        session: None,
        output: None,
        report: None,
        error: None,
        attempts: 0,
        review: None,
    };
    let (meta, j) = (v.meta.clone(), job.clone());
    blocking(move || Ok(meta.put_job(&j)?)).await?;
    tracing::info!(job = %job.id, source = %job.source, target = %job.target, principal = %p.name, "anonymization job queued");
    tokio::spawn(jobs::run(v.clone(), job.id.clone()));
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
    let output = job
        .output
        .clone()
        .filter(|_| job.state == "succeeded")
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("job `{id}` has no output to review"),
            )
        })?;
    let (name, version) = output
        .rsplit_once(':')
        .and_then(|(n, ver)| Some((n.to_owned(), ver.parse::<u64>().ok()?)))
        .ok_or_else(|| ApiError::internal(format!("job output `{output}` is not name:version")))?;
    authorize_artifact(&v, &p, Action::Review, &name, Some(Kind::Dataset), false).await?;
    let review = Review {
        state: to,
        by: p.name.clone(),
        at: vault_store::now(),
        reason,
    };
    let (v2, r2, n2, jid) = (v.clone(), review.clone(), name.clone(), id.clone());
    let job = blocking(move || {
        let now = v2
            .meta
            .version(&n2, version)?
            .and_then(|r| r.review.map(|x| x.state));
        if !v2.meta.set_review(&n2, version, from, &r2)? {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "`{n2}:{version}` is {}; only a {} output can be {}",
                    now.map_or("released without review", |s| s.as_str()),
                    from[0].as_str(),
                    r2.state.as_str()
                ),
            ));
        }
        let mut job = v2
            .meta
            .job(&jid)?
            .ok_or_else(|| ApiError::not_found(format!("job `{jid}` not found")))?;
        job.review = Some(r2);
        job.updated = vault_store::now();
        v2.meta.put_job(&job)?;
        Ok(job)
    })
    .await?;
    let mut ev = p.event(&format!("job_{decision}"), &output, "ok");
    ev.detail = review.reason.clone();
    v.audit
        .record(ev)
        .map_err(|e| ApiError::audit_unavailable(&e))?;
    tracing::info!(job = %job.id, output = %output, principal = %p.name, decision = %decision, "job output reviewed");
    Ok(Json(with_live(job)))
}
