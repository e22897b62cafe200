//! One error type for every handler: status code + `{"error": {...}}` body.
//! A 500 logs its detail and tells the client only the request id.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vault_api::{ErrorBody, ErrorCode, ErrorDetail, REQUEST_ID_HEADER};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for `Retry-After` (429).
    pub retry_after: Option<u64>,
    /// What only the log gets (paths, backend messages), with the request id.
    pub log_detail: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after: None,
            log_detail: None,
        }
    }
    pub fn rate_limited(secs: u64, what: &str) -> Self {
        metrics::counter!("mlvault_rate_limited_total").increment(1);
        let mut e = Self::new(
            ErrorCode::RateLimited,
            format!("rate limit of this token's role reached ({what}); retry in {secs}s"),
        );
        e.retry_after = Some(secs);
        e
    }
    /// Too many failed authentications from one client address.
    pub fn auth_flood(secs: u64) -> Self {
        metrics::counter!("mlvault_rate_limited_total").increment(1);
        let mut e = Self::new(
            ErrorCode::RateLimited,
            format!("too many failed authentications from this address; retry in {secs}s"),
        );
        e.retry_after = Some(secs);
        e
    }
    /// The audit log cannot be written: fail closed.
    pub fn audit_unavailable(detail: &str) -> Self {
        metrics::counter!("mlvault_audit_failures_total").increment(1);
        tracing::error!(detail, "audit log unavailable: refusing the request");
        Self::new(
            ErrorCode::Unavailable,
            "the audit log cannot be written; the server refuses requests until it can (see /readyz)",
        )
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, m)
    }
    pub fn unauthenticated(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, m)
    }
    pub fn integrity(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Integrity, m)
    }
    /// Detail goes to the log only.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, detail)
    }
    /// Stored data failed verification: the server's fault, reported as an
    /// integrity failure so clients stop and say so.
    pub fn stored_integrity(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Integrity,
            message: detail.into(),
            retry_after: None,
            log_detail: None,
        }
    }
    /// A server-side failure the client hears about in `message`, with the
    /// cause (a path, a backend's words) for the log only.
    fn with_log_detail(mut self, detail: String) -> Self {
        self.log_detail = Some(detail);
        self
    }
}

impl From<vault_store::Error> for ApiError {
    fn from(e: vault_store::Error) -> Self {
        use vault_store::Error as E;
        match e {
            E::NotFound(m) => ApiError::not_found(m),
            E::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            E::Mismatch(m) => ApiError::integrity(m),
            E::Body(m) => ApiError::bad_request(format!("upload interrupted: {m}")),
            E::Backend(m) => ApiError::new(
                ErrorCode::Unavailable,
                "the blob store failed or is unreachable; nothing was changed (the server log has the cause)",
            )
            .with_log_detail(m),
            E::MissingBlob(m) => ApiError::stored_integrity(
                "a stored file of this version is missing from the blob store; nothing was sent (an administrator can run `vault-server fsck`)",
            )
            .with_log_detail(format!("blob missing from the store: {m}")),
            E::Full(m) => {
                metrics::counter!("mlvault_storage_full_total").increment(1);
                let mut e = ApiError::new(
                    ErrorCode::Unavailable,
                    "the server's blob store is out of space; nothing was stored (an administrator must free space)",
                )
                .with_log_detail(m);
                e.status = StatusCode::INSUFFICIENT_STORAGE;
                e
            }
            E::Crypto(c) => {
                ApiError::stored_integrity(format!("stored data failed verification: {c}"))
            }
            E::Journal(m) => ApiError::audit_unavailable(&m),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<crate::domain::Error> for ApiError {
    fn from(e: crate::domain::Error) -> Self {
        use crate::domain::Error as E;
        match e {
            E::Invalid(m) => ApiError::bad_request(m),
            E::NotFound(m) => ApiError::not_found(m),
            E::Integrity(m) => ApiError::integrity(m),
            E::Conflict(m) => ApiError::new(ErrorCode::Conflict, m),
            E::Quota(m) => {
                metrics::counter!("mlvault_upload_quota_refusals_total").increment(1);
                let mut e = ApiError::new(ErrorCode::RateLimited, m);
                e.retry_after = Some(60);
                e
            }
            E::Store(e) => e.into(),
            E::Manifest(e) => e.into(),
            E::Audit(detail) => ApiError::audit_unavailable(&detail),
            e @ (E::Crypto(_) | E::Task(_)) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<vault_manifest::Error> for ApiError {
    fn from(e: vault_manifest::Error) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<vault_api::NameError> for ApiError {
    fn from(e: vault_api::NameError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// A job spec the anonymizer refuses (parsing, patterns) is the caller's.
impl From<vault_anonymize::Error> for ApiError {
    fn from(e: vault_anonymize::Error) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// The audit log could not be read (a tail, a verification): the detail
/// goes to the log.
impl From<vault_audit::Error> for ApiError {
    fn from(e: vault_audit::Error) -> Self {
        ApiError::internal(format!("audit log: {e}"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl From<vault_crypto::Error> for ApiError {
    fn from(e: vault_crypto::Error) -> Self {
        ApiError::stored_integrity(e.to_string())
    }
}

tokio::task_local! {
    static REQUEST_ID: String;
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rid = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let message = if self.code == ErrorCode::Internal {
            tracing::error!(request_id = %rid, detail = %self.message, "internal error");
            format!("internal error (request id {rid})")
        } else {
            if self.status.is_server_error() {
                let detail = self.log_detail.as_deref().unwrap_or(&self.message);
                tracing::error!(request_id = %rid, code = ?self.code, detail = %detail, "request failed");
            } else {
                tracing::info!(request_id = %rid, code = ?self.code, detail = %self.message, "request refused");
            }
            match self.log_detail {
                Some(_) => format!("{} (request id {rid})", self.message),
                None => self.message,
            }
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// The request id, for handlers and the audit log.
#[derive(Clone)]
pub struct RequestId(pub String);

/// Route-level metrics: count and time every matched request.
pub async fn metrics_layer(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    // A fixed set of labels: any other method a client invents is
    // `other`, so the metrics output cannot grow without bound.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    // Which clients speak HTTP/2 (the CLI keeps to HTTP/1.1).
    let version = match req.version() {
        axum::http::Version::HTTP_2 => "HTTP/2.0",
        axum::http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("mlvault_http_requests_total", "route" => route.clone(), "method" => method, "status" => status, "version" => version)
        .increment(1);
    metrics::histogram!("mlvault_http_request_duration_seconds", "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// Middleware: give every request an id, echo it in `x-request-id`, log the
/// outcome.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let rid = vault_crypto::random_bytes::<8>()
        .map(hex::encode)
        .unwrap_or_default();
    req.extensions_mut().insert(RequestId(rid.clone()));
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = std::time::Instant::now();
    let mut resp = REQUEST_ID.scope(rid.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    tracing::debug!(request_id = %rid, %method, %path, status = resp.status().as_u16(),
        ms = start.elapsed().as_millis() as u64, "request");
    resp
}

/// `Json<T>` whose rejections (malformed JSON, wrong content type, too
/// large) answer in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(match rej.status().as_u16() {
                413 => ApiError::new(ErrorCode::TooLarge, "request body too large"),
                415 => ApiError::bad_request("expected `Content-Type: application/json`"),
                _ => ApiError::bad_request(rej.body_text()),
            }),
        }
    }
}

/// `Query<T>` whose rejections answer in the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|rej| ApiError::bad_request(rej.body_text()))
    }
}
