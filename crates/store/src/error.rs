use thiserror::Error;

/// Errors of the storage layer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The metadata database failed.
    #[error("metadata store: {0}")]
    Meta(String),
    /// A metadata record does not parse.
    #[error("corrupt metadata record in `{table}`: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// What failed.
        detail: String,
    },
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with stored state.
    #[error("{0}")]
    Conflict(String),
    /// The blob store failed or is unreachable.
    #[error("blob store: {0}")]
    Backend(String),
    /// A blob that metadata refers to is not in the blob store (data loss
    /// or a damaged store; `vault-server fsck` lists such references).
    #[error("blob missing from the store: {0}")]
    MissingBlob(String),
    /// The blob store has no space left (nothing was stored).
    #[error("blob store out of space: {0}")]
    Full(String),
    /// Stored data failed a cryptographic check.
    #[error("stored data failed verification: {0}")]
    Crypto(#[from] vault_crypto::Error),
    /// Uploaded bytes disagree with what was declared.
    #[error("{0}")]
    Mismatch(String),
    /// A journaled write could not append its log entries (the audit
    /// chain): the change they record was not made either.
    #[error("{0}")]
    Journal(String),
    /// Reading the request body failed.
    #[error("upload interrupted: {0}")]
    Body(String),
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Meta(e.to_string())
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error::Meta(e.to_string()) }
        }
    )*};
}
redb_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::MissingBlob(format!("`{path}`")),
            other => Error::Backend(other.to_string()),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
