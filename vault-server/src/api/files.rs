//! Pull: stream one file of a version as verified plaintext, with
//! `Range: bytes=N-` resume.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use futures_util::{stream, StreamExt};

use super::gate::{gated, Gate};

use super::auth::authorize_artifact_sync;
use super::{blocking, ApiError, AppState, Principal};
use vault_policy::Action;

/// Plaintext verified before a download answers (one default segment): held
/// in memory per request until the answer starts, so kept small for many
/// concurrent pulls.
const VERIFY_BEFORE_ANSWER: u64 = 1 << 20;

/// Parse `bytes=N-`; other range forms are refused.
fn range_start(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(h) = headers.get(header::RANGE) else {
        return Ok(0);
    };
    h.to_str()
        .ok()
        .and_then(|s| s.strip_prefix("bytes="))
        .and_then(|s| s.strip_suffix('-'))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::bad_request("only `Range: bytes=N-` is supported"))
}

pub async fn download(
    State(v): State<AppState>,
    p: Principal,
    Path((digest, index)): Path<(String, usize)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !vault_api::valid_digest(&digest) {
        return Err(ApiError::bad_request("bad digest"));
    }
    let offset = range_start(&headers)?;
    let (v2, d, p2) = (v.clone(), digest.clone(), p.clone());
    let rec = blocking(move || {
        let p = p2;
        let rec = v2
            .meta
            .version_by_digest(&d)?
            .ok_or_else(|| ApiError::not_found(format!("version `{d}` not found")))?;
        // "Through an alias" for a download: the version is an alias target.
        let via_alias = v2
            .meta
            .aliases(&rec.name)?
            .iter()
            .any(|a| a.version == rec.version);
        // The admission scan's verdict on what is downloaded decides too.
        let scan = rec.scan.as_ref().map_or("none", |s| s.verdict.as_str());
        let ctx = vault_policy::ArtifactContext {
            via_alias,
            scan,
            gate: "",
        };
        authorize_artifact_sync(&v2, &p, Action::Pull, &rec.name, None, ctx).map_err(
            |e| {
                if e.code != vault_api::ErrorCode::Forbidden {
                    return e;
                }
                // A caller that may see the version (its verdict passing)
                // learns that the verdict is what refuses it.
                let passing = vault_policy::ArtifactContext {
                    via_alias,
                    scan: "pass",
                    gate: "",
                };
                if scan != "pass" && may_pull(&v2, &p, &rec.name, passing) {
                    return ApiError::forbidden(format!(
                        "`{}:{}` may not be pulled by `{}` (role `{}`): its admission scan verdict is `{scan}`, and policy lets this role pull only models that pass (`vault-cli show` lists the findings)",
                        rec.name, rec.version, p.name, p.role
                    ));
                }
                // Forbidden looks like missing: a digest must not tell a
                // caller which artifact holds it.
                ApiError::not_found(format!("version `{d}` not found"))
            },
        )?;
        super::read::check_released(&v2, &p, &rec, &d)?;
        Ok(rec)
    })
    .await?;
    let file = rec
        .files
        .get(index)
        .ok_or_else(|| ApiError::not_found(format!("file {index} not in `{digest}`")))?
        .clone();
    let meta = v.meta.clone();
    let bid = file.blob.clone();
    let blob = blocking(move || Ok(meta.blob(&bid)?))
        .await?
        .ok_or_else(|| {
            ApiError::stored_integrity(format!("blob record `{}` is missing", file.blob))
        })?;
    // The blob must be the one this version's file names: its namespace,
    // size and digest (the context its DEK is bound to) must match. An
    // edited metadata record that points a version at another namespace's
    // blob is caught here, before a byte is sent.
    let namespace = rec.name.split('/').next().unwrap_or_default();
    if blob.namespace != namespace
        || blob.size != file.entry.size
        || blob.sha256 != file.entry.sha256
    {
        let mut ev = p.event(
            "integrity",
            &format!("{}:{}", rec.name, rec.version),
            "error",
        );
        ev.detail = format!(
            "file {index} is bound to blob {} of another context",
            blob.id
        );
        let _ = v.audit.record(ev);
        metrics::counter!("mlvault_integrity_failures_total").increment(1);
        tracing::error!(name = %rec.name, version = rec.version, file = index, blob = %blob.id,
            blob_namespace = %blob.namespace, "a version's file points at a blob of another context");
        return Err(ApiError::stored_integrity(format!(
            "file {index} of `{}:{}` is not bound to its stored blob; nothing was sent",
            rec.name, rec.version
        )));
    }
    let size = file.entry.size;
    // A spent byte budget is refused up front; every byte sent is charged
    // as it goes (see `gate`).
    v.limits
        .take_bytes(&p.role, &p.token_id, 1)
        .map_err(|wait| ApiError::rate_limited(wait.as_secs().max(1), "bytes per minute"))?;
    let (v2, who, what) = (v.clone(), p.name.clone(), rec.name.clone());
    let seen = size.saturating_sub(offset);
    let alert = blocking(move || Ok(v2.exfil.observe(&who, seen, &what)?)).await?;
    if let Some(alert) = alert {
        metrics::counter!("mlvault_exfiltration_alerts_total").increment(1);
        tracing::warn!(principal = %p.name, token = %p.token_id, %alert, "exfiltration alert");
        let mut ev = p.event("exfiltration_alert", &rec.name, "alert");
        ev.detail = alert.clone();
        let (v2, tid, suspend) = (v.clone(), p.token_id.clone(), v.exfil.suspend());
        blocking(move || {
            if suspend {
                // The alert and the suspension it causes, together.
                let mut suspended = ev.clone();
                suspended.action = "token_suspend".into();
                suspended.resource = format!("token:{tid}");
                suspended.detail = "suspended by exfiltration detection".into();
                v2.change(
                    |m| m.suspend_token(&tid, true),
                    |_| vec![ev.clone(), suspended.clone()],
                )?;
                v2.token_cache.clear();
            } else {
                v2.audit
                    .record(ev)
                    .map_err(|e| ApiError::audit_unavailable(&e))?;
            }
            Ok(())
        })
        .await?;
        if suspend {
            return Err(ApiError::forbidden(format!(
                "token suspended: {alert}; an admin can lift it with `vault-cli token unsuspend {}`",
                p.token_id
            )));
        }
    }
    if offset > size {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
        return Ok(r);
    }
    if let Some(at) = v.damaged_at(&blob.id) {
        // Found damaged while streaming earlier: check that segment first.
        let mut probe = v.blobs.read(&blob, &v.keyring(), at).await?;
        if let Some(Err(e)) = probe.next().await {
            return Err(e.into());
        }
        v.clear_damaged(&blob.id);
    }
    let mut plain = v.blobs.read(&blob, &v.keyring(), offset).await?;
    // Verify the start before committing to a status line, so
    // tampering there (all of a small file) is an error answer, not a cut
    // connection. Later damage cuts the response; the client resumes from
    // where it stopped and gets the error answer for that segment.
    let mut first = Vec::new();
    let mut verified = 0u64;
    while verified < VERIFY_BEFORE_ANSWER && offset + verified < size {
        match plain.next().await {
            Some(Ok(b)) => {
                verified += b.len() as u64;
                first.push(Ok(b));
            }
            Some(Err(e)) => return Err(e.into()),
            None => return Err(ApiError::stored_integrity("blob ended early")),
        }
    }
    let blob_id = blob.id.clone();
    // Record the transfer when the body has been sent (or cut).
    let mut done = TransferDone {
        v: Some(v.clone()),
        event: p.event(
            "transfer_out",
            &format!("{}:{} {}", rec.name, rec.version, file.entry.path),
            "ok",
        ),
        sent: 0,
        expected: size - offset,
    };
    let v_mark = v.clone();
    let mut streamed = 0u64;
    let verified = stream::iter(first).chain(plain).map(move |r| {
        if let Ok(b) = &r {
            streamed += b.len() as u64;
        }
        r.map_err(|e| {
            v_mark.mark_damaged(&blob_id, offset + streamed);
            tracing::error!(blob = %blob_id, error = %e, "blob failed verification mid-stream; aborting response");
            std::io::Error::other(e.to_string())
        })
    });
    let body = gated(verified.boxed(), Gate::new(&v, &p)).map(move |r| {
        if let Ok(b) = &r {
            done.add(b.len() as u64);
            metrics::counter!("mlvault_bytes_out_total").increment(b.len() as u64);
        }
        r
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size - offset));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(val) = HeaderValue::from_str(&file.entry.sha256) {
        h.insert("x-mlvault-sha256", val);
    }
    if offset > 0 {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let cr = format!("bytes {offset}-{}/{size}", size.saturating_sub(1));
        if let Ok(val) = HeaderValue::from_str(&cr) {
            resp.headers_mut().insert(header::CONTENT_RANGE, val);
        }
    }
    Ok(resp)
}

/// Writes the `transfer_out` audit entry once: when the body completes, or
/// (dropped early) when the connection was cut.
struct TransferDone {
    v: Option<AppState>,
    event: vault_audit::Event,
    sent: u64,
    expected: u64,
}

impl TransferDone {
    fn add(&mut self, n: u64) {
        self.sent += n;
    }

    fn finish(&mut self, outcome: &str) {
        let Some(v) = self.v.take() else { return };
        let mut ev = std::mem::take(&mut self.event);
        ev.outcome = outcome.into();
        ev.bytes = self.sent;
        tokio::task::spawn_blocking(move || {
            if let Err(e) = v.audit.record(ev) {
                tracing::error!(error = %e, "audit entry of a transfer could not be written");
            }
        });
    }
}

impl Drop for TransferDone {
    fn drop(&mut self) {
        let outcome = if self.sent == self.expected {
            "ok"
        } else {
            "incomplete"
        };
        self.finish(outcome);
    }
}

/// Whether `p` may pull `name` in context `ctx`, asked of the policies
/// without an audit entry (a hypothetical: what a download would be told).
pub fn may_pull(
    v: &crate::vault::Vault,
    p: &Principal,
    name: &str,
    ctx: vault_policy::ArtifactContext<'_>,
) -> bool {
    super::auth::may(v, p, Action::Pull, name, ctx)
}
