//! `vault-manifest` defines what a version of an artifact *is*: an in-toto
//! Statement v1 whose predicate lists every file (relative path, size,
//! SHA-256), a root digest, the artifact name, kind, version, creation time
//! and lineage, wrapped in a DSSE envelope. The SHA-256 of the envelope bytes
//! is the version's digest.
//!
//! Start with [`Manifest::new`] to build one and [`parse_envelope`] to read
//! one back; [`validate_path`] holds the path rules every client applies
//! before writing a file.
//!
//! ```
//! use vault_api::{FileEntry, Kind};
//! use vault_manifest::{parse_envelope, Manifest};
//! let files = vec![FileEntry { path: "weights.bin".into(), size: 3,
//!     sha256: "ab".repeat(32) }];
//! let m = Manifest::new("fraud/detector".parse().unwrap(), Kind::Model, 1, 0, files, vec![]).unwrap();
//! let text = m.to_envelope().to_json();
//! let (_env, back) = parse_envelope(&text).unwrap();
//! assert_eq!(back, m);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod alias;
mod envelope;
mod manifest;
mod path;
mod sign;

pub use alias::{AliasRecord, GateGrant, SignedAlias};
pub use envelope::{digest_of, Envelope, Signature, PAYLOAD_TYPE};
pub use manifest::{
    parse_envelope, report_digest, root_digest, Lineage, Manifest, Predicate, Statement, Subject,
};
pub use path::{is_deceptive, validate_path};
pub use sign::{PublicKey, SecretKey};

use thiserror::Error;

/// Why a manifest or envelope was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Not valid JSON of the expected shape.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A file path breaks the path rules.
    #[error("unsafe path `{path}` in manifest: {why}")]
    UnsafePath {
        /// The offending path (escaped for display).
        path: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// Two entries share a path.
    #[error("duplicate path `{0}` in manifest")]
    DuplicatePath(String),
    /// The statement's parts disagree (subjects, root digest, files).
    #[error("inconsistent manifest: {0}")]
    Inconsistent(String),
    /// A key file or key is invalid.
    #[error("{0}")]
    Key(String),
    /// A signature is missing, untrusted or invalid.
    #[error("{0}")]
    Signature(String),
    /// Too many files or too large.
    #[error("manifest too large: {0}")]
    TooLarge(String),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Most files one manifest may list.
pub const MAX_FILES: usize = 100_000;
