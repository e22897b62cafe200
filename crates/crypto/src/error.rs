use thiserror::Error;

/// Everything that can go wrong in `vault-crypto`. No variant ever carries key
/// bytes; messages name the check that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The blob header is malformed: bad magic, unknown version or algorithm,
    /// bad lengths.
    #[error("malformed blob header: {0}")]
    MalformedHeader(&'static str),
    /// The header's commitment tag does not match the data key: the header was
    /// altered, or belongs to another blob.
    #[error("blob header commitment check failed (tampered header or wrong key)")]
    Commitment,
    /// A segment's authentication tag did not verify.
    #[error("segment {index} failed authentication (tampered, reordered or spliced data)")]
    SegmentAuth {
        /// Index of the segment that failed.
        index: u64,
    },
    /// The ciphertext ended before the final segment.
    #[error("blob truncated: expected {expected} ciphertext bytes, got {got}")]
    Truncated {
        /// Ciphertext bytes that the header promises.
        expected: u64,
        /// Ciphertext bytes actually seen.
        got: u64,
    },
    /// Bytes follow the final segment.
    #[error("unexpected data after the final segment")]
    TrailingData,
    /// A segment has the wrong length for its position.
    #[error("segment {index} has length {len}, expected {expected}")]
    SegmentLength {
        /// Segment index.
        index: u64,
        /// Length seen.
        len: usize,
        /// Length expected at that index.
        expected: usize,
    },
    /// A segment index beyond the end of the blob was requested.
    #[error("segment {index} is out of range (blob has {count} segments)")]
    SegmentOutOfRange {
        /// Requested index.
        index: u64,
        /// Segments in the blob.
        count: u64,
    },
    /// The encryptor was fed more or less plaintext than the context declares.
    #[error("plaintext size mismatch: declared {declared} bytes, got {got}")]
    SizeMismatch {
        /// Declared size.
        declared: u64,
        /// Size seen so far.
        got: u64,
    },
    /// The encryptor was used after its final segment.
    #[error("stream already finished")]
    Finished,
    /// A wrapped key did not unwrap: wrong KEK, wrong context (swapped between
    /// blobs) or tampered.
    #[error("key unwrap failed for KEK version {version} (wrong key, wrong context or tampered)")]
    Unwrap {
        /// KEK version the wrapped key names.
        version: u32,
    },
    /// The KEK version is unknown to this key ring.
    #[error("KEK version {0} is not in the key ring")]
    UnknownKekVersion(u32),
    /// The KEK version is below the ring's minimum decryption version.
    #[error("KEK version {version} is retired (minimum decryption version is {min})")]
    RetiredKekVersion {
        /// Version asked for.
        version: u32,
        /// The ring's minimum decryption version.
        min: u32,
    },
    /// The wrapped key was made for another key ring.
    #[error("wrapped key belongs to another key ring")]
    WrongKeyring,
    /// The encryption context is invalid (namespace too long, ...).
    #[error("invalid encryption context: {0}")]
    Context(&'static str),
    /// Sealing or unsealing the master key with age failed.
    #[error("{0}")]
    Seal(String),
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
