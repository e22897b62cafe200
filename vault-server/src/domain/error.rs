//! What domain operations refuse or fail with. The HTTP layer maps each
//! variant to an error code (`api::error`); nothing here knows about HTTP.

use thiserror::Error;

/// A domain operation's failure.
#[derive(Debug, Error)]
pub enum Error {
    /// The request asks for something malformed or not allowed by a rule.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist (or may not be seen).
    #[error("{0}")]
    NotFound(String),
    /// Content, a manifest or a signature disagrees with what it must match.
    #[error("{0}")]
    Integrity(String),
    /// The state moved meanwhile (another writer, another upload).
    #[error("{0}")]
    Conflict(String),
    /// A per-principal quota is reached; retry once something finishes.
    #[error("{0}")]
    Quota(String),
    /// The metadata or blob store failed.
    #[error(transparent)]
    Store(#[from] vault_store::Error),
    /// A manifest or alias record could not be built or signed.
    #[error(transparent)]
    Manifest(#[from] vault_manifest::Error),
    /// A key operation or the system's random source failed.
    #[error("a key operation failed: {0}")]
    Crypto(#[from] vault_crypto::Error),
    /// The audit log cannot be written: the operation fails closed.
    #[error("the audit log cannot be written: {0}")]
    Audit(String),
    /// A background task died (a panic or a cancelled runtime).
    #[error("a server task failed: {0}")]
    Task(String),
}

/// A domain result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Task(e.to_string())
    }
}

/// Run blocking metadata work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(|| vault_store::may_block(f)).await?
}
