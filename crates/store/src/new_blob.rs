//! Creating a blob: the envelope (a fresh DEK wrapped under the current KEK,
//! bound to the blob's context) and the pending record, in one place. The
//! server's ingest path uses this and never touches DEKs or encryptors.

use bytes::Bytes;
use futures_util::stream::Stream;
use vault_crypto::{BlobEncryptor, Dek, EncryptionContext, Keyring, WrappedDek};

use crate::blobs::BlobStore;
use crate::records::BlobRecord;
use crate::Result;

/// The digest a pending blob's record carries until its upload has found
/// the real one (content sent without a declared digest).
pub const UNKNOWN_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A blob about to be written: its record (pending in an upload session)
/// and the encryptor that holds its DEK. Written with
/// [`BlobStore::write_new`].
pub struct NewBlob {
    record: BlobRecord,
    id: [u8; 16],
    dek: Dek,
    enc: BlobEncryptor,
    streamed: bool,
}

/// Where a new blob belongs and what it will hold.
pub struct BlobPlan<'a> {
    /// The upload session that owns the blob until commit.
    pub session: &'a str,
    /// The namespace the blob is bound to.
    pub namespace: &'a str,
    /// Plaintext size, exact.
    pub size: u64,
    /// Plaintext SHA-256 if known before the bytes arrive; `None` binds the
    /// digest found at the end (format v2).
    pub sha256: Option<[u8; 32]>,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
}

impl NewBlob {
    /// A random id, a fresh DEK wrapped under `ring`'s current KEK for the
    /// blob's context, and the record that says so.
    pub fn new(ring: &Keyring, plan: &BlobPlan<'_>) -> Result<Self> {
        let id: [u8; 16] = vault_crypto::random_bytes()?;
        let streamed = plan.sha256.is_none();
        let sha = plan.sha256.unwrap_or([0; 32]);
        let ctx = EncryptionContext::new(id, plan.namespace, plan.size, sha)?;
        let dek = Dek::generate()?;
        let wrapped = ring.wrap_dek(&dek, &ctx)?;
        let mut enc = BlobEncryptor::digest_last(
            &dek,
            ring.id(),
            wrapped.kek_version,
            ctx,
            plan.segment_size,
        )?;
        if let Some(sha) = plan.sha256 {
            enc.set_digest(sha)?;
        }
        let record = BlobRecord {
            id: hex::encode(id),
            namespace: plan.namespace.to_owned(),
            size: plan.size,
            sha256: match plan.sha256 {
                Some(s) => hex::encode(s),
                None => UNKNOWN_DIGEST.to_owned(),
            },
            wrapped_dek: wrapped,
            refs: 0,
            pending_session: Some(plan.session.to_owned()),
            created: crate::now(),
            sensitivity: String::new(),
            kind: String::new(),
            artifact: String::new(),
        };
        Ok(Self {
            record,
            id,
            dek,
            enc,
            streamed,
        })
    }

    /// The pending record, to attach to the session before any byte is
    /// written (a crash then leaves a record cleanup finds, never an
    /// unknown object).
    pub fn record(&self) -> &BlobRecord {
        &self.record
    }
}

/// A blob written by [`BlobStore::write_new`].
pub struct WrittenBlob {
    /// The plaintext SHA-256 found while writing.
    pub sha256: [u8; 32],
    /// For content sent without a declared digest: its DEK wrapped anew
    /// for the context with the digest found, to record in place of the
    /// pending one. `None` when the digest was declared.
    pub rewrapped: Option<WrappedDek>,
}

impl BlobStore {
    /// Encrypt `body` into the new blob's object (see [`BlobStore::write`]).
    /// When the digest was not declared, the DEK is wrapped again under
    /// `ring` for the context that names the digest found, and the DEK is
    /// then dropped.
    pub async fn write_new<S, E>(
        &self,
        blob: NewBlob,
        ring: &Keyring,
        body: S,
    ) -> Result<WrittenBlob>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let NewBlob {
            record,
            id,
            dek,
            enc,
            streamed,
        } = blob;
        let sha256 = self.write(&record.id, enc, body).await?;
        let rewrapped = if streamed {
            let ctx = EncryptionContext::new(id, &record.namespace, record.size, sha256)?;
            Some(ring.wrap_dek(&dek, &ctx)?)
        } else {
            None
        };
        Ok(WrittenBlob { sha256, rewrapped })
    }
}
