//! Metadata records. Stored as JSON values; field additions must stay
//! backward compatible (`#[serde(default)]`).

use serde::{Deserialize, Serialize};
use vault_api::{FileEntry, Kind};
use vault_crypto::{EncryptionContext, WrappedDek, WrappedKek};

use crate::{Error, Result};

/// One encrypted blob: where its key is and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BlobRecord {
    /// Random id (32 hex digits); also the object name's last segment.
    pub id: String,
    /// Namespace the blob belongs to (dedup never crosses it).
    pub namespace: String,
    /// Plaintext size.
    pub size: u64,
    /// Plaintext SHA-256, hex.
    pub sha256: String,
    /// The DEK, wrapped by a KEK version, bound to the context.
    pub wrapped_dek: WrappedDek,
    /// Committed versions that use this blob.
    pub refs: u64,
    /// Upload session that owns the blob until commit.
    #[serde(default)]
    pub pending_session: Option<String>,
    /// Creation time (epoch seconds).
    pub created: u64,
    /// Sensitivity label of the artifact whose version first committed the
    /// blob (empty: none). Dedup never crosses labels, so a blob of a
    /// `raw-pii` dataset is never offered to a push of anything else.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sensitivity: String,
    /// Kind (`model`, `dataset`) of the version that first committed the
    /// blob; dedup never crosses kinds. Empty for blobs recorded before it
    /// was kept: those are never reused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Artifact whose version first committed the blob: dedup offers it
    /// only to a caller the policy lets read that artifact.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub artifact: String,
}

impl BlobRecord {
    /// The encryption context this blob was written under.
    pub fn context(&self) -> Result<EncryptionContext> {
        let corrupt = |d: &str| Error::Corrupt {
            table: "blobs",
            detail: format!("blob {}: {d}", self.id),
        };
        let id: [u8; 16] = hex::decode(&self.id)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| corrupt("bad id"))?;
        let sha: [u8; 32] = hex::decode(&self.sha256)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| corrupt("bad sha256"))?;
        EncryptionContext::new(id, &self.namespace, self.size, sha)
            .map_err(|_| corrupt("bad namespace"))
    }
}

/// A file of a committed version and the blob that holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionFile {
    /// Path, size and digest as in the manifest.
    #[serde(flatten)]
    pub entry: FileEntry,
    /// Blob id.
    pub blob: String,
}

/// A committed version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Artifact name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Kind.
    pub kind: Kind,
    /// `sha256:` of the envelope text.
    pub digest: String,
    /// The envelope text exactly as committed.
    pub envelope: String,
    /// Files in manifest order.
    pub files: Vec<VersionFile>,
    /// Commit time (epoch seconds).
    pub created: u64,
    /// For anonymization outputs: the job report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// For anonymization outputs: the release review. A version without
    /// one (an ordinary push) is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// The admission scan's signed verdict (versions pushed before the
    /// scan existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanRecord>,
    /// The principal whose push committed it (`vault-server` for a job's
    /// output; empty for versions recorded before it was kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pushed_by: String,
}

/// An admission scan's verdict on a version: the verdict word, and the
/// DSSE envelope (an in-toto statement about the version's manifest
/// digest, signed by the server key) that carries it with every finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// `pass`, `warn`, `unsupported`, `incomplete` or `fail`.
    pub verdict: String,
    /// The scanner and its version (`vault-scan/0.1.0`).
    #[serde(default)]
    pub scanner: String,
    /// `sha256:` of the pickle import allowlist it used.
    #[serde(default)]
    pub allowlist: String,
    /// The signed statement, JSON text of a DSSE envelope.
    pub envelope: String,
}

impl VersionRecord {
    /// Total plaintext bytes.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.entry.size).sum()
    }

    /// Readable by every principal its grants allow (not held for review,
    /// rejected or withdrawn).
    pub fn released(&self) -> bool {
        self.review
            .as_ref()
            .is_none_or(|r| r.state == ReviewState::Approved)
    }
}

/// Where a job output stands in its release review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    /// Committed, readable only by reviewers of its namespace.
    Pending,
    /// Released by a reviewer.
    Approved,
    /// Refused by a reviewer; never released.
    Rejected,
    /// Released, then withdrawn by a reviewer.
    Withdrawn,
}

impl ReviewState {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Approved => "approved",
            ReviewState::Rejected => "rejected",
            ReviewState::Withdrawn => "withdrawn",
        }
    }
}

/// The release review of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Current state.
    pub state: ReviewState,
    /// Who decided (empty while pending).
    #[serde(default)]
    pub by: String,
    /// When the state was set (epoch seconds).
    pub at: u64,
    /// The reviewer's reason.
    #[serde(default)]
    pub reason: String,
}

/// Per-artifact state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactRecord {
    /// Name.
    pub name: String,
    /// Kind, fixed by the first push.
    pub kind: Kind,
    /// Next version number to hand out (never reused).
    pub next_version: u64,
    /// Sensitivity label fixed at first push ("" for none, "raw-pii", …).
    #[serde(default)]
    pub sensitivity: String,
}

/// An open upload session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Random id.
    pub id: String,
    /// Artifact name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Version reserved for the push.
    pub version: u64,
    /// Declared files.
    pub files: Vec<FileEntry>,
    /// Blob id per file once uploaded (or reused by dedup).
    pub blobs: Vec<Option<String>>,
    /// Who opened it.
    pub principal: String,
    /// Creation time.
    pub created: u64,
    /// When an idle session is abandoned.
    pub expires: u64,
    /// Sensitivity label requested by the push.
    #[serde(default)]
    pub sensitivity: Option<String>,
    /// Seconds without activity after which the session expires (0: only
    /// `expires` counts). Activity (a file started, finished or found
    /// held, and a running upload every so often) moves `expires` to now
    /// plus this, never past `deadline`.
    #[serde(default)]
    pub idle_secs: u64,
    /// Latest `expires` activity can reach.
    #[serde(default)]
    pub deadline: u64,
}

impl SessionRecord {
    /// Record activity at `now`.
    pub fn touch(&mut self, now: u64) {
        if self.idle_secs > 0 {
            let until = now.saturating_add(self.idle_secs).min(self.deadline);
            self.expires = self.expires.max(until);
        }
    }
}

/// A bearer token; the secret itself is never stored, only its hash (the key).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (shown in listings, used to revoke).
    pub id: String,
    /// Principal name.
    pub principal: String,
    /// Role.
    pub role: String,
    /// Creation time.
    pub created: u64,
    /// Expiry (epoch seconds), if any.
    pub expires: Option<u64>,
    /// Revoked tokens are refused.
    pub revoked: bool,
    /// Artifact namespaces the token is scoped to.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Suspended by exfiltration detection until an admin lifts it.
    #[serde(default)]
    pub suspended: bool,
    /// Waiting for a second admin's approval: refused until then.
    #[serde(default)]
    pub pending: bool,
    /// The principal that created it ("" for `init` and `dev`).
    #[serde(default)]
    pub created_by: String,
    /// The admin that approved it, when approval was required.
    #[serde(default)]
    pub approved_by: String,
}

/// Stored key ring state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyringRecord {
    /// Ring id.
    pub id: vault_crypto::KeyringId,
    /// Wrapped KEKs.
    pub keks: Vec<WrappedKek>,
    /// Minimum decryption version.
    pub min_decryption_version: u32,
}

/// A key allowed to sign manifests for a namespace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublisherRecord {
    /// Namespace.
    pub namespace: String,
    /// `ed25519:<hex sha256 of the key>`.
    pub keyid: String,
    /// The public key file text.
    pub public_key: String,
    /// When it was registered (epoch seconds).
    pub added: u64,
    /// Who registered it.
    pub added_by: String,
}

/// A key trusted to sign attestations of some predicate types about
/// versions in some namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestorRecord {
    /// Its name (`adversarial-eval`).
    pub name: String,
    /// `ed25519:<hex sha256 of the key>`.
    pub keyid: String,
    /// The public key file text.
    pub public_key: String,
    /// Predicate type URIs it is trusted for.
    pub predicate_types: Vec<String>,
    /// Namespaces it is trusted for.
    pub namespaces: Vec<String>,
    /// When it was registered (epoch seconds).
    pub added: u64,
    /// Who registered it.
    pub added_by: String,
}

/// A verified attestation about a version, kept as it was signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationRecord {
    /// Artifact name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// `sha256:` of the envelope text.
    pub digest: String,
    /// The DSSE envelope, exactly as received.
    pub envelope: String,
    /// The statement's predicate type.
    pub predicate_type: String,
    /// The attestor whose key signed it.
    pub attestor: String,
    /// For test results: `PASSED`, `WARNED` or `FAILED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When it was attached (epoch seconds).
    pub added: u64,
    /// Who attached it.
    pub added_by: String,
}

/// The current signed record of one alias.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasEntry {
    /// Artifact name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// Version it points at.
    pub version: u64,
    /// Sequence of the signed record.
    pub sequence: u64,
    /// Expiry of the signed record (epoch seconds).
    pub expires: u64,
    /// The signed record (JSON of `vault_manifest::SignedAlias`).
    pub signed: String,
}

impl AliasEntry {
    /// A deleted alias: version 0 (versions start at 1), no record; kept
    /// so its sequence goes on.
    pub fn is_deleted(&self) -> bool {
        self.version == 0
    }
}

/// An anonymization job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// Random id (`job_…`).
    pub id: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub state: String,
    /// Source reference as resolved (`name:version`).
    pub source: String,
    /// Source manifest digest.
    pub source_digest: String,
    /// Target artifact name.
    pub target: String,
    /// The spec (TOML text).
    pub spec: String,
    /// `sha256:` of the spec text.
    pub spec_digest: String,
    /// Who started it.
    pub principal: String,
    /// Creation time.
    pub created: u64,
    /// Last state change.
    pub updated: u64,
    /// Rows processed so far (last pass).
    #[serde(default)]
    pub rows: u64,
    /// Upload session of the output while running.
    #[serde(default)]
    pub session: Option<String>,
    /// Output reference once committed.
    #[serde(default)]
    pub output: Option<String>,
    /// The report.
    #[serde(default)]
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Times it was (re)started.
    #[serde(default)]
    pub attempts: u32,
    /// The release review of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
    /// The server process running it (empty while nobody has claimed it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// Until when (Unix seconds) its owner's claim holds unless renewed;
    /// after that another server may take the job over.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lease_until: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl JobRecord {
    /// Whether it still has to run (queued, or running when its server stopped).
    pub fn is_unfinished(&self) -> bool {
        self.state == "queued" || self.state == "running"
    }
}
