//! `vault-audit` keeps the vault's tamper-evident audit log: one JSON line
//! per authorization decision and per data transfer, each carrying the
//! SHA-256 of its predecessor, with periodic checkpoints signed by the
//! server's key. [`AuditLog`] appends (group commit: one fsync per batch);
//! [`verify`] walks a log and names the first entry that does not fit.
//!
//! ```
//! use vault_audit::{verify, AuditLog, Event};
//! use vault_manifest::SecretKey;
//! let dir = tempfile::tempdir().unwrap();
//! let key = SecretKey::generate().unwrap();
//! let log = AuditLog::open(dir.path().join("audit.log"), SecretKey::from_bytes(&key.to_bytes()), 64).unwrap();
//! log.record(Event::new("alice", "pull", "fraud/m:1", "allow")).unwrap();
//! log.checkpoint().unwrap();
//! let report = verify(&dir.path().join("audit.log"), &key.public()).unwrap();
//! assert!(report.intact());
//! assert_eq!(report.entries, 2);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chain;
mod checkpoint;
mod entry;
mod log;
mod verify;

pub use chain::{Build, Chain, FileChain};
pub use checkpoint::{origin, Checkpoint};
pub use entry::{Entry, Event, GENESIS};
pub use log::{AuditLog, OnCheckpoint, Opened};
pub use verify::{verify, verify_chain, verify_with, Report};

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log file could not be written or read.
    #[error("audit log `{path}`: {cause}")]
    Io {
        /// The file.
        path: String,
        /// The cause, part of the message (not a `source()`, so that a
        /// printed error chain does not say it twice).
        cause: std::io::Error,
    },
    /// The writer is gone (the server is stopping).
    #[error("audit writer stopped")]
    Stopped,
    /// The log does not verify: it was cut, forked, edited or deleted.
    #[error("audit log does not verify: {0}")]
    Tampered(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
