//! Request and response bodies of the HTTP API (`/v1/...`).

use serde::{Deserialize, Serialize};

use crate::ArtifactName;

/// What an artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Model weights and their files.
    Model,
    /// A training dataset.
    Dataset,
}

impl Kind {
    /// `model` or `dataset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Dataset => "dataset",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "model" => Ok(Kind::Model),
            "dataset" => Ok(Kind::Dataset),
            other => Err(format!(
                "unknown kind `{other}` (expected model or dataset)"
            )),
        }
    }
}

/// One file of an artifact version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative, normalized path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the contents.
    pub sha256: String,
}

/// `POST /v1/uploads`: open an upload session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenUploadRequest {
    /// Artifact name.
    pub name: ArtifactName,
    /// Artifact kind.
    pub kind: Kind,
    /// Every file of the new version. A file's `sha256` may be left empty:
    /// the client hashes it while uploading, and the server, which hashes
    /// what it receives, answers the upload with the digest it found. Such
    /// a file is never deduplicated before upload (its content is unknown),
    /// only after (the server then keeps one copy).
    pub files: Vec<FileEntry>,
    /// Sensitivity label, fixed at the first push (e.g. `raw-pii`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitivity: Option<String>,
}

/// Answer to [`OpenUploadRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpenUploadResponse {
    /// Session id to use in the file and commit calls.
    pub session_id: String,
    /// The version number reserved for this push (never reused).
    pub version: u64,
    /// Indexes (into `files`) the server still needs uploaded.
    pub needed: Vec<usize>,
    /// Seconds until an idle session is abandoned.
    pub expires_in: u64,
}

/// Answer to `PUT /v1/uploads/{id}/files/{index}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UploadedFile {
    /// Lowercase hex SHA-256 of the bytes the server received.
    pub sha256: String,
}

/// `POST /v1/uploads/{id}/files/{index}/digest`: the client finished
/// hashing a file it is still uploading (declared without a digest).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeclareDigestRequest {
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
}

/// Answer to [`DeclareDigestRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeclareDigestResponse {
    /// The namespace holds this content and the caller may use it: the file
    /// now points at that blob, and the upload in flight can be dropped.
    /// Otherwise nothing changed and the upload must finish.
    pub held: bool,
}

/// `POST /v1/uploads/{id}/commit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitRequest {
    /// The DSSE envelope of the manifest, as JSON text; its SHA-256 is the
    /// version's digest.
    pub envelope: String,
}

/// Answer to a commit, and the shape of `vault-cli push --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushResult {
    /// `name:version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Artifact name.
    pub name: String,
    /// New version number.
    pub version: u64,
    /// `sha256:<hex>` of the manifest envelope.
    pub digest: String,
    /// Number of files.
    pub files: usize,
    /// Total plaintext bytes.
    pub bytes: u64,
    /// Bytes actually sent (dedup skips some).
    pub uploaded_bytes: u64,
    /// Bytes the client read to hash (files unchanged since an earlier push
    /// reuse their recorded digest). Set by the client.
    #[serde(default)]
    pub hashed_bytes: u64,
    /// The admission scan's verdict on the version (`pass`, `warn`,
    /// `unsupported`, `incomplete`, `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
}

/// `GET /v1/resolve?ref=…`: a version's manifest and file list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResolvedVersion {
    /// Artifact name.
    pub name: String,
    /// Version number.
    pub version: u64,
    /// Artifact kind.
    pub kind: Kind,
    /// `sha256:<hex>` of the envelope.
    pub digest: String,
    /// The DSSE envelope JSON text exactly as committed.
    pub envelope: String,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// For an alias reference: the signed alias record (JSON of a
    /// `SignedAlias`), which the client verifies against the server key it trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// For anonymization outputs: the job report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// For anonymization outputs: the release review (`pending`,
    /// `approved`, `rejected`, `withdrawn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    /// The admission scan's verdict: a DSSE envelope (JSON text) whose
    /// in-toto statement names this version's manifest digest, signed by
    /// the server key. Absent for versions pushed before scans existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
    /// Why the caller may not download this version's files (its scan
    /// verdict, under the policies), when it may not: a client then places
    /// nothing, not even from its own cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_denied: Option<String>,
    /// The attestations and approvals kept about the version, when asked
    /// for (`attestations=true`): what a pull reports, and the evidence a
    /// gated alias record names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationInfo>,
}

/// One version in a listing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionSummary {
    /// Version number.
    pub version: u64,
    /// Manifest digest.
    pub digest: String,
    /// Files in the version.
    pub files: usize,
    /// Total plaintext bytes.
    pub bytes: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// For anonymization outputs: the release review state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
}

/// One artifact in `GET /v1/artifacts`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactSummary {
    /// Artifact name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Live versions, oldest first.
    pub versions: Vec<VersionSummary>,
}

/// `DELETE /v1/versions?ref=…` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteResult {
    /// Artifact name.
    pub name: String,
    /// Deleted version.
    pub version: u64,
    /// Blobs whose keys were destroyed (no other version used them).
    pub shredded_blobs: usize,
}

/// `DELETE /v1/aliases?name=…&alias=…` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasDeleted {
    /// Artifact name.
    pub name: String,
    /// The deleted alias.
    pub alias: String,
    /// The version it pointed at.
    pub version: u64,
}

/// `GET /v1/keys` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyStatus {
    /// Key ring id (hex).
    pub keyring_id: String,
    /// KEK version used for new blobs.
    pub current_version: u32,
    /// Every KEK version in the ring.
    pub versions: Vec<u32>,
    /// Versions below this are refused.
    pub min_decryption_version: u32,
    /// Blob count per KEK version that wraps their DEK.
    pub blobs_by_version: Vec<(u32, u64)>,
}

/// `POST /v1/keys/rewrap` answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RewrapResult {
    /// DEKs rewrapped by this run.
    pub rewrapped: u64,
    /// DEKs already under the current version.
    pub already_current: u64,
    /// The KEK version everything is now wrapped with.
    pub current_version: u32,
}

/// `POST /v1/keys/retire` body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetireRequest {
    /// New minimum decryption version.
    pub min_decryption_version: u32,
}

/// `POST /v1/publishers`: allow a key to sign manifests for a namespace.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublisherRequest {
    /// Namespace (first segment of artifact names).
    pub namespace: String,
    /// The public key file text (`mlvault-ed25519 <base64> …`).
    pub public_key: String,
}

/// A registered publisher key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublisherInfo {
    /// Namespace.
    pub namespace: String,
    /// Key id.
    pub keyid: String,
    /// Registration time (epoch seconds).
    pub added: u64,
    /// Who registered it.
    pub added_by: String,
}

/// `POST /v1/aliases`: point an alias at a version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasRequest {
    /// `ns/name:VERSION` or `ns/name@sha256:…` (a bare name means the latest).
    #[serde(rename = "ref")]
    pub reference: String,
    /// Alias name, e.g. `production`.
    pub alias: String,
}

/// An alias as the server signed it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AliasInfo {
    /// Artifact name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// Version it points at.
    pub version: u64,
    /// That version's digest.
    pub digest: String,
    /// Record sequence (only grows).
    pub sequence: u64,
    /// Record expiry (epoch seconds).
    pub expires: u64,
    /// The signed record, JSON text of a `SignedAlias`.
    pub signed: String,
}

/// `GET /v1/server-key`: the key that signs alias records (and job manifests).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServerKeyInfo {
    /// Public key file text.
    pub public_key: String,
    /// Key id.
    pub keyid: String,
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Principal name.
    pub principal: String,
    /// Role.
    pub role: String,
    /// Lifetime in seconds (none: no expiry).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Artifact namespaces the token may act on.
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// A token as listed (never the secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Principal.
    pub principal: String,
    /// Role.
    pub role: String,
    /// Namespaces.
    pub namespaces: Vec<String>,
    /// Creation time (epoch seconds).
    pub created: u64,
    /// Expiry (epoch seconds).
    pub expires: Option<u64>,
    /// Revoked?
    pub revoked: bool,
    /// Suspended (refused until an admin lifts it)?
    #[serde(default)]
    pub suspended: bool,
    /// Waiting for a second admin's approval (`token approve ID`)?
    #[serde(default)]
    pub pending: bool,
    /// Who created it ("" for the tokens of `init` and `dev`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
    /// Who approved it, when approval was required.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub approved_by: String,
}

/// Answer to `POST /v1/tokens`: the secret, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The bearer token. Shown once; the server keeps only its hash.
    pub token: String,
    /// Its description.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Answer to `POST /v1/policy/reload`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// Policies in force.
    pub policies: usize,
    /// Where they were loaded from.
    pub source: String,
}

/// `POST /v1/jobs`: start an anonymization job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRequest {
    /// Source dataset reference.
    pub source: String,
    /// Target dataset name (a new version is committed there).
    pub target: String,
    /// The job spec, TOML text.
    pub spec: String,
}

/// `POST /v1/jobs/{id}/approve|reject|withdraw`: a reviewer's decision on
/// a job's output.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// Why (required to reject or withdraw).
    #[serde(default)]
    pub reason: String,
}

/// `PUT /v1/scan/allowlist`: set (or, with no imports, remove) a
/// namespace's extension of the admission scan's pickle import allowlist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanAllowRequest {
    /// The namespace.
    pub namespace: String,
    /// `module name` entries allowed beside the defaults.
    pub imports: Vec<String>,
    /// Why (recorded in the audit log and the extension).
    pub reason: String,
}

/// A namespace's scan allowlist: the defaults and its extension.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanAllowlist {
    /// The namespace.
    pub namespace: String,
    /// The extension's entries (empty: none).
    pub imports: Vec<String>,
    /// Why it was set.
    #[serde(default)]
    pub reason: String,
    /// Who set it.
    #[serde(default)]
    pub by: String,
    /// When (seconds since the Unix epoch; 0: never).
    #[serde(default)]
    pub at: u64,
    /// `sha256:` of the extension record (empty: none).
    #[serde(default)]
    pub extension: String,
    /// `sha256:` of the whole allowlist the namespace's scans use, as its
    /// verdicts record it.
    pub allowlist: String,
    /// Versions aliases point at that are queued for a rescan.
    #[serde(default)]
    pub rescans: usize,
}

/// `POST /v1/attestors`: trust a key for attestations of some predicate
/// types in some namespaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestorRequest {
    /// Its name (lowercase letter first, then letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The public key file text.
    pub public_key: String,
    /// Predicate type URIs it may attest.
    pub predicate_types: Vec<String>,
    /// Namespaces it may attest about.
    pub namespaces: Vec<String>,
}

/// A registered attestor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestorInfo {
    /// Its name.
    pub name: String,
    /// Its key id.
    pub keyid: String,
    /// Predicate types it may attest.
    pub predicate_types: Vec<String>,
    /// Namespaces it may attest about.
    pub namespaces: Vec<String>,
    /// When and by whom it was registered.
    pub added: u64,
    /// Who registered it.
    pub added_by: String,
}

/// `POST /v1/attestations`: attach a signed statement to a version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestRequest {
    /// The version (`ns/name:7`, a digest, an alias or `latest`).
    #[serde(rename = "ref")]
    pub reference: String,
    /// The DSSE envelope, JSON text.
    pub envelope: String,
}

/// A kept attestation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttestationInfo {
    /// `name:version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// `sha256:` of the envelope text.
    pub digest: String,
    /// The statement's predicate type.
    pub predicate_type: String,
    /// The attestor that signed it.
    pub attestor: String,
    /// For test results: PASSED, WARNED or FAILED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When it was attached.
    pub added: u64,
    /// Who attached it.
    pub added_by: String,
    /// The envelope, as signed.
    pub envelope: String,
}

/// `POST /v1/approvals`: the caller approves a version's exact bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApproveRequest {
    /// The version.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Why (recorded with the approval).
    #[serde(default)]
    pub reason: String,
}
