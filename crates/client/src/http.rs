//! The HTTP client and its small JSON helpers.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use vault_api::{
    AliasDeleted, AliasInfo, AliasRequest, ArtifactName, ArtifactSummary, DeleteResult, ErrorBody,
    KeyStatus, PolicyStatus, PublisherInfo, PublisherRequest, Reference, ResolvedVersion,
    RetireRequest, RewrapResult, ServerKeyInfo, TokenCreated, TokenInfo, TokenRequest,
};

use crate::{Error, Result};

/// A connection to one mlvault server.
#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    base: String,
    token: Option<String>,
    retries: u32,
}

impl Client {
    /// `addr` is the server URL (`http://127.0.0.1:7450`); `token` the bearer
    /// token; `ca_cert` a PEM file of extra trusted roots for a private CA.
    pub fn new(addr: &str, token: Option<String>, ca_cert: Option<&Path>) -> Result<Self> {
        let base = addr.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "server address `{addr}` must start with http:// or https://"
            )));
        }
        // HTTP/1.1 always, whatever features the build unified into
        // reqwest: each file of a transfer then has its own connection (its
        // own TLS stream, decrypted on its own core), with no HTTP/2 flow
        // control between the bytes and the disk. Over TLS on loopback an
        // HTTP/2 push of 1 GiB took 1.75-1.98 s against 1.23-1.32 s.
        let mut b = reqwest::Client::builder()
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("mlvault-client/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                Error::io(format!("cannot read CA certificate `{}`", ca.display()), e)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Usage(format!("bad CA certificate `{}`: {e}", ca.display())))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| Error::Usage(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            token,
            retries: RATE_LIMIT_RETRIES,
        })
    }

    /// Retries after a 429 before giving up (default [`RATE_LIMIT_RETRIES`]).
    pub fn with_retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The server URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Send, and turn a non-2xx answer into an [`Error`]. A 429 is retried
    /// (when the body can be replayed) after `Retry-After` with jitter, up to
    /// [`RATE_LIMIT_RETRIES`] times.
    pub(crate) async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let mut attempt = 0;
        let mut rb = rb;
        loop {
            let retry = rb.try_clone();
            let resp = rb.send().await?;
            if resp.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || attempt >= self.retries {
                return check(resp).await;
            }
            let Some(next) = retry else {
                return check(resp).await;
            };
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .min(30);
            attempt += 1;
            tokio::time::sleep(jittered(wait, attempt)).await;
            rb = next;
        }
    }

    pub(crate) async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        resp.json()
            .await
            .map_err(|e| Error::Server(format!("unexpected answer from the server: {e}")))
    }

    /// Liveness: `GET /healthz` answers 200 (no token needed).
    pub async fn health(&self) -> Result<()> {
        let resp = self.send(self.request(Method::GET, "/healthz")).await?;
        // Read the body so the connection goes back to the pool.
        resp.bytes().await?;
        Ok(())
    }

    /// Resolve a reference to a version and its manifest envelope.
    pub async fn resolve(&self, r: &Reference) -> Result<ResolvedVersion> {
        self.json(
            self.request(Method::GET, "/v1/resolve")
                .query(&[("ref", r.to_string())]),
        )
        .await
    }

    /// [`Client::resolve`], with the attestations kept about the version.
    pub async fn resolve_with_attestations(&self, r: &Reference) -> Result<ResolvedVersion> {
        self.json(
            self.request(Method::GET, "/v1/resolve")
                .query(&[("ref", r.to_string()), ("attestations", "true".into())]),
        )
        .await
    }

    /// Artifacts whose name starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ArtifactSummary>> {
        self.json(
            self.request(Method::GET, "/v1/artifacts")
                .query(&[("prefix", prefix)]),
        )
        .await
    }

    /// Delete a version (crypto-shredding its blobs).
    pub async fn delete(&self, r: &Reference) -> Result<DeleteResult> {
        self.json(
            self.request(Method::DELETE, "/v1/versions")
                .query(&[("ref", r.to_string())]),
        )
        .await
    }

    /// Point `alias` at the version `r` names.
    pub async fn set_alias(&self, r: &Reference, alias: &str) -> Result<AliasInfo> {
        self.json(
            self.request(Method::POST, "/v1/aliases")
                .json(&AliasRequest {
                    reference: r.to_string(),
                    alias: alias.to_owned(),
                }),
        )
        .await
    }

    /// Delete `alias` of the artifact `name`.
    pub async fn delete_alias(&self, name: &ArtifactName, alias: &str) -> Result<AliasDeleted> {
        self.json(
            self.request(Method::DELETE, "/v1/aliases")
                .query(&[("name", name.as_str()), ("alias", alias)]),
        )
        .await
    }

    /// The server signing key pinned for this server (by an earlier pull)
    /// in the default state folder, if any.
    pub fn pinned_server_key(&self) -> Result<Option<vault_manifest::PublicKey>> {
        let st = crate::ServerState::load(&crate::default_state_dir(), self.base())?;
        st.server_key
            .as_deref()
            .map(|t| {
                vault_manifest::PublicKey::from_file_text(t)
                    .map_err(|e| Error::Usage(format!("pinned server key: {e}")))
            })
            .transpose()
    }

    /// The server's signing public key (alias records, scan verdicts).
    pub async fn server_key(&self) -> Result<ServerKeyInfo> {
        self.json(self.request(Method::GET, "/v1/server-key")).await
    }

    /// Register a publisher key for a namespace.
    pub async fn publisher_add(&self, namespace: &str, public_key: &str) -> Result<PublisherInfo> {
        self.json(
            self.request(Method::POST, "/v1/publishers")
                .json(&PublisherRequest {
                    namespace: namespace.to_owned(),
                    public_key: public_key.to_owned(),
                }),
        )
        .await
    }

    /// Publisher keys of a namespace (all with `""`).
    pub async fn publisher_list(&self, namespace: &str) -> Result<Vec<PublisherInfo>> {
        self.json(
            self.request(Method::GET, "/v1/publishers")
                .query(&[("namespace", namespace)]),
        )
        .await
    }

    /// Remove a publisher key.
    pub async fn publisher_remove(&self, namespace: &str, keyid: &str) -> Result<()> {
        self.send(
            self.request(Method::DELETE, "/v1/publishers")
                .query(&[("namespace", namespace), ("keyid", keyid)]),
        )
        .await
        .map(|_| ())
    }

    /// A namespace's admission-scan allowlist (its extension and digest).
    pub async fn scan_allowlist(&self, namespace: &str) -> Result<vault_api::ScanAllowlist> {
        self.json(
            self.request(Method::GET, "/v1/scan/allowlist")
                .query(&[("namespace", namespace)]),
        )
        .await
    }

    /// Replace a namespace's allowlist extension (none with no imports).
    pub async fn set_scan_allowlist(
        &self,
        req: &vault_api::ScanAllowRequest,
    ) -> Result<vault_api::ScanAllowlist> {
        self.json(self.request(Method::PUT, "/v1/scan/allowlist").json(req))
            .await
    }

    /// Trust a key for attestations of some predicate types and namespaces.
    pub async fn attestor_add(
        &self,
        req: &vault_api::AttestorRequest,
    ) -> Result<vault_api::AttestorInfo> {
        self.json(self.request(Method::POST, "/v1/attestors").json(req))
            .await
    }

    /// Every attestor.
    pub async fn attestor_list(&self) -> Result<Vec<vault_api::AttestorInfo>> {
        self.json(self.request(Method::GET, "/v1/attestors")).await
    }

    /// Stop trusting an attestor (its attestations stay kept).
    pub async fn attestor_remove(&self, name: &str) -> Result<()> {
        self.send(
            self.request(Method::DELETE, "/v1/attestors")
                .query(&[("name", name)]),
        )
        .await
        .map(|_| ())
    }

    /// Attach a signed attestation (DSSE envelope text) to a version.
    pub async fn attest(
        &self,
        r: &Reference,
        envelope: &str,
    ) -> Result<vault_api::AttestationInfo> {
        self.json(
            self.request(Method::POST, "/v1/attestations")
                .json(&vault_api::AttestRequest {
                    reference: r.to_string(),
                    envelope: envelope.to_owned(),
                }),
        )
        .await
    }

    /// Approve a version's exact bytes as the token's principal.
    pub async fn approve(&self, r: &Reference, reason: &str) -> Result<vault_api::AttestationInfo> {
        self.json(
            self.request(Method::POST, "/v1/approvals")
                .json(&vault_api::ApproveRequest {
                    reference: r.to_string(),
                    reason: reason.to_owned(),
                }),
        )
        .await
    }

    /// The attestations kept about a version.
    pub async fn attestations(&self, r: &Reference) -> Result<Vec<vault_api::AttestationInfo>> {
        self.json(
            self.request(Method::GET, "/v1/attestations")
                .query(&[("ref", r.to_string())]),
        )
        .await
    }

    /// Create a token; the secret is in the answer, once.
    pub async fn token_create(&self, req: &TokenRequest) -> Result<TokenCreated> {
        self.json(self.request(Method::POST, "/v1/tokens").json(req))
            .await
    }

    /// Every token (never the secrets).
    pub async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        self.json(self.request(Method::GET, "/v1/tokens")).await
    }

    /// Revoke a token by id; effective on the next request.
    pub async fn token_revoke(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::DELETE, &format!("/v1/tokens/{id}")))
            .await
            .map(|_| ())
    }

    /// Start an anonymization job.
    pub async fn job_create(&self, req: &vault_api::JobRequest) -> Result<serde_json::Value> {
        self.json(self.request(Method::POST, "/v1/jobs").json(req))
            .await
    }

    /// A job's record.
    pub async fn job_status(&self, id: &str) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, &format!("/v1/jobs/{id}")))
            .await
    }

    /// Every job.
    pub async fn job_list(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, "/v1/jobs")).await
    }

    /// A reviewer's decision on a job's output: `approve`, `reject` or
    /// `withdraw`. Returns the job record.
    pub async fn job_review(
        &self,
        id: &str,
        decision: &str,
        reason: &str,
    ) -> Result<serde_json::Value> {
        let body = vault_api::ReviewRequest {
            reason: reason.to_owned(),
        };
        self.json(
            self.request(Method::POST, &format!("/v1/jobs/{id}/{decision}"))
                .json(&body),
        )
        .await
    }

    /// Lift a token's suspension.
    pub async fn token_unsuspend(&self, id: &str) -> Result<()> {
        self.send(self.request(Method::POST, &format!("/v1/tokens/{id}/unsuspend")))
            .await
            .map(|_| ())
    }

    /// Approve a token another admin created (`[tokens] second_admin_for`).
    pub async fn token_approve(&self, id: &str) -> Result<TokenInfo> {
        self.json(self.request(Method::POST, &format!("/v1/tokens/{id}/approve")))
            .await
    }

    /// The last `n` audit entries.
    pub async fn audit_tail(&self, n: usize) -> Result<serde_json::Value> {
        self.json(
            self.request(Method::GET, "/v1/audit/tail")
                .query(&[("n", n.to_string())]),
        )
        .await
    }

    /// The latest signed checkpoint note of the audit log.
    pub async fn audit_checkpoint(&self) -> Result<String> {
        let resp = self
            .send(self.request(Method::GET, "/v1/audit/checkpoint"))
            .await?;
        resp.text()
            .await
            .map_err(|e| Error::Server(format!("unexpected answer from the server: {e}")))
    }

    /// Walk the audit chain on the server.
    pub async fn audit_verify(&self) -> Result<serde_json::Value> {
        self.json(self.request(Method::GET, "/v1/audit/verify"))
            .await
    }

    /// Make the server reload its policy folder.
    pub async fn policy_reload(&self) -> Result<PolicyStatus> {
        self.json(self.request(Method::POST, "/v1/policy/reload"))
            .await
    }

    /// Key ring status.
    pub async fn key_status(&self) -> Result<KeyStatus> {
        self.json(self.request(Method::GET, "/v1/keys")).await
    }

    /// Add a KEK version.
    pub async fn key_rotate(&self) -> Result<KeyStatus> {
        self.json(self.request(Method::POST, "/v1/keys/rotate"))
            .await
    }

    /// Rewrap every DEK under the current KEK.
    pub async fn key_rewrap(&self) -> Result<RewrapResult> {
        self.json(self.request(Method::POST, "/v1/keys/rewrap"))
            .await
    }

    /// Refuse KEK versions below `min`.
    pub async fn key_retire(&self, min: u32) -> Result<KeyStatus> {
        self.json(
            self.request(Method::POST, "/v1/keys/retire")
                .json(&RetireRequest {
                    min_decryption_version: min,
                }),
        )
        .await
    }
}

/// How often a rate-limited request is retried before giving up (exit 6).
pub const RATE_LIMIT_RETRIES: u32 = 3;

/// `base` seconds plus up to 50% random jitter, growing with the attempt.
fn jittered(base: u64, attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let ms = base.max(1) * 1000 * u64::from(attempt);
    Duration::from_millis(ms + u64::from(nanos) % (ms / 2 + 1))
}

async fn check(resp: Response) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = status.as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => Err(Error::from_api(code, Some(b.error.code), b.error.message)),
        Err(_) => {
            let msg = if text.trim().is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {}", text.trim())
            };
            Err(Error::from_api(code, None, msg))
        }
    }
}
