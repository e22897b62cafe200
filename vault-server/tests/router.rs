//! The HTTP API in process: the router `vault_server::api::app` builds,
//! driven without a socket, for status codes and error bodies.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use vault_server::cli::UnsealArgs;
use vault_server::config::ServerConfig;
use vault_server::vault::{self, Vault};

struct Api {
    app: axum::Router,
    admin: String,
    _dir: tempfile::TempDir,
}

fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let unseal = UnsealArgs {
        unseal_identity: Some(dir.path().join("unseal.identity")),
        passphrase_env: None,
    };
    let admin = vault::init(&data, &unseal, &Default::default()).unwrap();
    let v = Vault::open(
        &data,
        &unseal,
        vault_crypto::DEFAULT_SEGMENT_SIZE,
        86400,
        true,
        None,
        &ServerConfig::default(),
        None,
    )
    .unwrap();
    Api {
        app: vault_server::api::app(Arc::new(v)),
        admin,
        _dir: dir,
    }
}

/// (status, JSON body or Null).
async fn call(
    a: &Api,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let resp = a
        .app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn code(v: &serde_json::Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn status_codes_and_error_bodies() {
    let a = api();
    let (s, _) = call(&a, "GET", "/healthz", None, "").await;
    assert_eq!(s, StatusCode::OK);

    let (s, b) = call(&a, "GET", "/v1/artifacts", None, "").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{b}"
    );
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));

    let (s, b) = call(&a, "GET", "/v1/artifacts", Some("mlv_wrong"), "").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{b}"
    );

    let admin = a.admin.clone();
    let (s, b) = call(
        &a,
        "GET",
        "/v1/resolve?ref=Not%20A%20Name",
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let (s, b) = call(&a, "POST", "/v1/uploads", Some(&admin), "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        !b["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{b}"
    );

    // The admin reads no artifact: a push is refused by the policy.
    let body = r#"{"name":"t/m","kind":"model","files":[{"path":"a","size":1,"sha256":""}]}"#;
    let (s, b) = call(&a, "POST", "/v1/uploads", Some(&admin), body).await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"), "{b}");

    let digest = format!("sha256:{}", "0".repeat(64));
    let (s, b) = call(
        &a,
        "GET",
        &format!("/v1/versions/{digest}/files/0"),
        Some(&admin),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");

    let (s, b) = call(&a, "GET", "/v1/keys", Some(&admin), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["current_version"], 1, "{b}");
}
