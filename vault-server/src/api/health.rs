//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(v): State<AppState>) -> (StatusCode, Json<Value>) {
    let meta = v.meta.clone();
    let meta_ok = tokio::task::spawn_blocking(move || meta.keyring().is_ok())
        .await
        .unwrap_or(false);
    let blobs_ok = v.blobs.ping().await;
    let mut reasons = Vec::new();
    if !meta_ok {
        reasons.push("metadata store unavailable".to_owned());
    }
    if let Err(e) = blobs_ok {
        reasons.push(e.to_string());
    }
    if let Some(e) = v.audit.failure() {
        reasons.push(e);
    }
    if reasons.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reasons": reasons})),
        )
    }
}

pub async fn metrics() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics_setup::render(),
    )
}
