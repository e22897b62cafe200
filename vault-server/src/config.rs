//! The server configuration file (`vault-server run --config FILE`, TOML).
//!
//! ```toml
//! [limits.default]                 # every role without its own entry
//! requests_per_minute = 6000
//! burst = 300
//! bytes_per_minute = 0             # 0: no byte limit
//!
//! [limits.roles.deployer]
//! requests_per_minute = 600
//! burst = 60
//! bytes_per_minute = 10737418240   # 10 GiB a minute
//!
//! [exfiltration]
//! window_secs = 600                # sliding window per principal
//! max_bytes = 53687091200          # 0: off
//! max_artifacts = 50               # distinct artifacts pulled; 0: off
//! suspend = true                   # suspend the token when a threshold is crossed
//!
//! [http]
//! max_json_bytes = 67108864        # largest JSON request body (413 above)
//! max_files = 100000               # most files in one manifest (at most 100000)
//! header_timeout_secs = 15         # slow-loris guard; --header-timeout-secs wins
//! body_timeout_secs = 60           # longest stall inside an upload body
//! max_open_uploads = 16            # open upload sessions per principal
//! max_pending_files = 100000       # files in a principal's open upload sessions
//! ```

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use vault_store::LocalReads;

use crate::exit::{fail, ExitStatus};

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Rate limits per role.
    #[serde(default)]
    pub limits: Limits,
    /// Exfiltration detection.
    #[serde(default)]
    pub exfiltration: Exfiltration,
    /// Where blobs live.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Request limits and timeouts.
    #[serde(default)]
    pub http: HttpLimits,
    /// Token administration.
    #[serde(default)]
    pub tokens: TokenPolicy,
    /// Where the metadata lives.
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// Anonymization jobs across replicas.
    #[serde(default)]
    pub jobs: JobsConfig,
    /// The admission scan of pushed files.
    #[serde(default)]
    pub scan: ScanConfig,
}

/// `[scan]`: what the admission scan's verdict on a push means.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanConfig {
    /// `enforce` (default): a push whose verdict is `fail` is refused and
    /// nothing of it is kept; `record`: every push is kept with its
    /// verdict, and policies decide who may pull what.
    #[serde(default)]
    pub mode: ScanMode,
}

/// See [`ScanConfig::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    #[default]
    Enforce,
    Record,
}

/// `[jobs]`: how long a server's claim on a job holds. A server renews
/// its claims every third of this; a job whose server stopped renewing
/// (it died) is taken over by another replica after it runs out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
}

fn default_lease() -> u64 {
    30
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            lease_secs: default_lease(),
        }
    }
}

/// `[metadata]`: the embedded redb file (default) or a PostgreSQL database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    /// `redb` (DATA_DIR/meta.redb) or `postgres`.
    #[serde(default)]
    pub backend: MetaBackend,
    /// The PostgreSQL URL (`postgres://user@host:port/db`). The environment
    /// variable MLVAULT_METADATA_URL wins, so a password need not be in the
    /// file.
    #[serde(default)]
    pub url: Option<String>,
    /// Connections in the pool (default 16).
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// The CA (PEM) the database's certificate is verified against. Given,
    /// every connection uses TLS; without it, a database on this machine is
    /// reached in clear and any other over TLS verified by the system's
    /// roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_connections() -> u32 {
    16
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            backend: MetaBackend::default(),
            url: None,
            connections: default_connections(),
            ca_file: None,
        }
    }
}

/// The URL may hold a password: it is never printed.
impl std::fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .field("connections", &self.connections)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// A metadata backend.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetaBackend {
    /// One redb file in the data directory.
    #[default]
    Redb,
    /// A PostgreSQL database.
    Postgres,
}

impl MetadataConfig {
    /// The PostgreSQL URL: MLVAULT_METADATA_URL, else `url`.
    pub fn postgres_url(&self) -> Option<String> {
        std::env::var("MLVAULT_METADATA_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
    }
}

/// `[tokens]`: separation of duties for token administration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    /// Roles whose new tokens stay inactive until an admin other than the
    /// one who created them approves (`vault-cli token approve ID`), e.g.
    /// `["trainer", "deployer", "steward"]`. When any role is listed, new
    /// `admin` tokens need approval too, or one admin could mint a second
    /// identity to approve its own requests.
    #[serde(default)]
    pub second_admin_for: Vec<String>,
}

impl TokenPolicy {
    /// Whether a new token of `role` needs a second admin's approval.
    pub fn needs_approval(&self, role: &str) -> bool {
        !self.second_admin_for.is_empty()
            && (role == "admin" || self.second_admin_for.iter().any(|r| r == role))
    }
}

/// Limits on what one request may carry and how slowly.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// Largest JSON request body in bytes (larger: 413).
    #[serde(default = "default_json_bytes")]
    pub max_json_bytes: usize,
    /// Most files one manifest may list (at most 100,000).
    #[serde(default = "default_max_files")]
    pub max_files: usize,
    /// Seconds a client has to send its request headers.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
    /// Seconds an upload body may stall between two chunks.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: u64,
    /// Open (unexpired, uncommitted) upload sessions one principal may hold.
    #[serde(default = "default_open_uploads")]
    pub max_open_uploads: usize,
    /// Files one principal's open upload sessions may list together: what
    /// an unfinished push may make the metadata hold.
    #[serde(default = "default_max_files")]
    pub max_pending_files: usize,
    /// Open connections in all (lowered to what the file-descriptor limit
    /// allows, less 64 kept for the server's own files).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64 counts as
    /// one address).
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Seconds a connection may move no byte while none of its requests is
    /// being handled (silent TCP, a quiet TLS session, idle HTTP/1
    /// keep-alive or HTTP/2) before it is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a connection may move no byte at all, even with a request
    /// in a handler (a client that stopped reading).
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_secs: u64,
    /// Failed authentications one client address may make per minute
    /// (burst the same); more get 429 and are only counted.
    #[serde(default = "default_failed_auth")]
    pub failed_auth_per_minute: u32,
    /// Bytes one principal's open upload sessions may declare together.
    #[serde(default = "default_pending_bytes")]
    pub max_pending_bytes: u64,
    /// Seconds an upload session may go without activity before it expires
    /// and its partial blobs are deleted (at most 6 hours in all).
    #[serde(default = "default_upload_idle")]
    pub upload_idle_secs: u64,
    /// Failed authentications written one entry each per minute, from all
    /// addresses together; the rest go into summary entries.
    #[serde(default = "default_failed_auth_audit")]
    pub failed_auth_audit_per_minute: u32,
}

fn default_pending_bytes() -> u64 {
    1 << 40
}
fn default_upload_idle() -> u64 {
    900
}
fn default_failed_auth() -> u32 {
    30
}
fn default_failed_auth_audit() -> u32 {
    600
}

fn default_max_connections() -> usize {
    4096
}
fn default_max_connections_per_client() -> usize {
    256
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_stall_timeout() -> u64 {
    300
}

fn default_open_uploads() -> usize {
    16
}

fn default_json_bytes() -> usize {
    64 << 20
}
fn default_max_files() -> usize {
    vault_manifest::MAX_FILES
}
fn default_header_timeout() -> u64 {
    15
}
fn default_body_timeout() -> u64 {
    60
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_json_bytes: default_json_bytes(),
            max_files: default_max_files(),
            header_timeout_secs: default_header_timeout(),
            body_timeout_secs: default_body_timeout(),
            max_open_uploads: default_open_uploads(),
            max_pending_files: default_max_files(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            idle_timeout_secs: default_idle_timeout(),
            stall_timeout_secs: default_stall_timeout(),
            failed_auth_per_minute: default_failed_auth(),
            max_pending_bytes: default_pending_bytes(),
            upload_idle_secs: default_upload_idle(),
            failed_auth_audit_per_minute: default_failed_auth_audit(),
        }
    }
}

/// Blob backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `DATA_DIR/blobs` (the embedded default).
    #[default]
    Local,
    /// Any S3-compatible store (AWS, MinIO, Ceph, Garage).
    S3,
    /// Google Cloud Storage (cargo feature `gcp`).
    Gcs,
    /// Azure Blob Storage (cargo feature `azure`).
    Azure,
    /// In memory, lost at exit (tests).
    Memory,
}

/// A secret string from the config; never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `[storage]`.
///
/// ```toml
/// [storage]
/// backend = "s3"
/// endpoint = "http://127.0.0.1:3900"   # omit for AWS
/// bucket = "mlvault"
/// region = "garage"
/// allow_http = true                     # loopback or a trusted network only
/// # access_key_id / secret_access_key, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
/// ```
///
/// The local backend (`backend = "local"`, the default) reads a blob with
/// direct I/O, unless it was read within the last `hot_read_secs` (default
/// 600; 0: always direct), which reads it through the page cache so a model
/// in demand is served from memory; `page_cache_reads = true` reads every
/// blob through the page cache.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Which backend.
    #[serde(default)]
    pub backend: Backend,
    /// S3 endpoint URL (non-AWS stores).
    pub endpoint: Option<String>,
    /// Bucket (or Azure container).
    pub bucket: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id (else `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret key (else `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// Allow an `http://` endpoint.
    #[serde(default)]
    pub allow_http: bool,
    /// Per-request timeout (large parts need time).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Local backend: read blobs through the page cache instead of with
    /// direct I/O (writes are direct either way).
    #[serde(default)]
    pub page_cache_reads: bool,
    /// Local backend: a blob read again within this many seconds of its
    /// last read is read through the page cache (0: never).
    #[serde(default = "default_hot_read_secs")]
    pub hot_read_secs: u64,
}

fn default_hot_read_secs() -> u64 {
    600
}

impl StorageConfig {
    /// How the local backend reads blob data.
    pub fn local_reads(&self) -> LocalReads {
        if self.page_cache_reads {
            LocalReads::PageCache
        } else if self.hot_read_secs == 0 {
            LocalReads::Direct
        } else {
            LocalReads::Hot(std::time::Duration::from_secs(self.hot_read_secs))
        }
    }
}

fn default_timeout() -> u64 {
    300
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Local,
            endpoint: None,
            bucket: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            timeout_secs: default_timeout(),
            page_cache_reads: false,
            hot_read_secs: default_hot_read_secs(),
        }
    }
}

/// One role's limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Sustained requests per minute, per token.
    pub requests_per_minute: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Bytes per minute moved by one token (0: unlimited).
    #[serde(default)]
    pub bytes_per_minute: u64,
}

fn default_limit() -> Limit {
    Limit {
        requests_per_minute: 60_000,
        burst: 1_000,
        bytes_per_minute: 0,
    }
}

/// Limits: a default and per-role overrides.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// For roles without their own entry.
    #[serde(default = "default_limit")]
    pub default: Limit,
    /// Per role.
    #[serde(default)]
    pub roles: HashMap<String, Limit>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default: default_limit(),
            roles: HashMap::new(),
        }
    }
}

/// Exfiltration thresholds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exfiltration {
    /// Sliding window length.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// Bytes pulled in the window that raise an alert (0: off).
    #[serde(default)]
    pub max_bytes: u64,
    /// Distinct artifacts pulled in the window that raise an alert (0: off).
    #[serde(default)]
    pub max_artifacts: u64,
    /// Suspend the token on an alert.
    #[serde(default)]
    pub suspend: bool,
}

fn default_window() -> u64 {
    600
}

impl Default for Exfiltration {
    fn default() -> Self {
        Exfiltration {
            window_secs: default_window(),
            max_bytes: 0,
            max_artifacts: 0,
            suspend: false,
        }
    }
}

impl ServerConfig {
    /// Load a config file; none means the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config `{}`", path.display()))?;
        let c: ServerConfig = toml::from_str(&text).map_err(|e| {
            fail(
                ExitStatus::Usage,
                format!("config `{}`: {e}", path.display()),
            )
        })?;
        for (role, l) in std::iter::once(("default", &c.limits.default))
            .chain(c.limits.roles.iter().map(|(r, l)| (r.as_str(), l)))
        {
            if l.requests_per_minute == 0 || l.burst == 0 {
                return Err(fail(
                    ExitStatus::Usage,
                    format!(
                        "config `{}`: limits of `{role}` must be positive",
                        path.display()
                    ),
                ));
            }
        }
        if !(3..=3600).contains(&c.jobs.lease_secs) {
            return Err(fail(
                ExitStatus::Usage,
                format!(
                    "config `{}`: [jobs] lease_secs must be 3 to 3600",
                    path.display()
                ),
            ));
        }
        let h = &c.http;
        let bad = |what: &str| {
            Err(fail(
                ExitStatus::Usage,
                format!("config `{}`: [http] {what}", path.display()),
            ))
        };
        if h.max_json_bytes < 4096 {
            return bad("max_json_bytes must be at least 4096");
        }
        if h.max_files == 0 || h.max_files > vault_manifest::MAX_FILES {
            return bad("max_files must be between 1 and 100000");
        }
        if h.header_timeout_secs == 0 || h.body_timeout_secs == 0 {
            return bad("timeouts must be at least 1 second");
        }
        // Settings of the other backend would be ignored: refuse them, so a
        // typo in `backend` never leaves the metadata somewhere unintended.
        let m = &c.metadata;
        let wrong = |what: &str| {
            Err(fail(
                ExitStatus::Usage,
                format!("config `{}`: [metadata] {what}", path.display()),
            ))
        };
        if m.backend == MetaBackend::Redb && (m.url.is_some() || m.ca_file.is_some()) {
            return wrong(
                "url and ca_file are for backend = \"postgres\"; the default backend is redb",
            );
        }
        if m.connections == 0 {
            return wrong("connections must be at least 1");
        }
        Ok(c)
    }
}
