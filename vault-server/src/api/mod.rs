//! The HTTP API. [`app`] builds the router apart from any socket so tests
//! and `run` share it.

mod aliases;
mod attest;
mod audit;
mod auth;
mod error;
mod files;
mod gate;
mod health;
mod jobs;
mod keys;
mod publishers;
mod read;
mod scan;
mod tokens;
mod uploads;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::vault::Vault;

pub use auth::{flush_floods, Principal};
pub use error::ApiError;

/// Shared state of every handler.
pub type AppState = Arc<Vault>;

/// The API router.
pub fn app(vault: Arc<Vault>) -> Router {
    // Largest JSON request body (`[http] max_json_bytes`; the default of
    // 64 MiB fits a manifest of 100,000 files).
    let json_limit = vault.http.max_json_bytes;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/uploads", post(uploads::open))
        .route("/v1/uploads/{id}", delete(uploads::abandon))
        .route("/v1/uploads/{id}/files/{index}", put(uploads::upload_file))
        .route(
            "/v1/uploads/{id}/files/{index}/digest",
            post(uploads::declare_digest),
        )
        .route("/v1/uploads/{id}/commit", post(uploads::commit))
        .route("/v1/resolve", get(read::resolve))
        .route("/v1/artifacts", get(read::list))
        .route("/v1/versions", delete(read::delete_version))
        .route("/v1/versions/{digest}/files/{index}", get(files::download))
        .route("/v1/server-key", get(read::server_key))
        .route("/v1/aliases", post(aliases::set).delete(aliases::delete))
        .route(
            "/v1/publishers",
            post(publishers::add)
                .get(publishers::list)
                .delete(publishers::remove),
        )
        .route("/v1/tokens", post(tokens::create).get(tokens::list))
        .route("/v1/tokens/{id}", delete(tokens::revoke))
        .route("/v1/tokens/{id}/unsuspend", post(tokens::unsuspend))
        .route("/v1/tokens/{id}/approve", post(tokens::approve))
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::status))
        .route("/v1/jobs/{id}/{decision}", post(jobs::review))
        .route("/v1/audit/tail", get(audit::tail))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/metrics", get(health::metrics))
        .route("/v1/policy/reload", post(tokens::reload_policy))
        .route("/v1/scan/allowlist", get(scan::get).put(scan::put))
        .route(
            "/v1/attestors",
            post(attest::add_attestor)
                .get(attest::list_attestors)
                .delete(attest::remove_attestor),
        )
        .route("/v1/attestations", post(attest::attach).get(attest::list))
        .route("/v1/approvals", post(attest::approve))
        .route("/v1/keys", get(keys::status))
        .route("/v1/keys/rotate", post(keys::rotate))
        .route("/v1/keys/rewrap", post(keys::rewrap))
        .route("/v1/keys/retire", post(keys::retire))
        .route_layer(axum::middleware::from_fn(error::metrics_layer))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn(error::request_id))
        .with_state(vault)
}

/// Run blocking metadata work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(|| vault_store::may_block(f))
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}
