//! Blob formats v1 and v2: the header layout and the encryption context.
//!
//! The two share one header layout. v1 carries the plaintext SHA-256 in the
//! header, so a writer must know it before the first byte is encrypted. v2
//! leaves that field zero and binds the digest as the associated data of the
//! final segment instead, so a blob can be encrypted while its plaintext is
//! still being hashed (a push uploads and hashes in one pass).
//!
//! These constants fix an on-disk format. They never change silently: a change
//! bumps [`FORMAT_VERSION`] and keeps a reader for the old one.

use crate::{Error, Result};

/// Magic bytes that open every blob. On-disk format constant.
pub(crate) const MAGIC: &[u8; 4] = b"MLVB";
/// Format v1: the digest is in the header. On-disk format constant.
pub const FORMAT_V1: u8 = 1;
/// Format v2: the digest is bound by the final segment. On-disk format constant.
pub const FORMAT_V2: u8 = 2;
/// The newest blob format version this crate writes.
pub const FORMAT_VERSION: u8 = FORMAT_V2;
/// Algorithm id 1: AES-256-GCM segments, HKDF-SHA256 key derivation,
/// HMAC-SHA256 key commitment. On-disk format constant.
pub(crate) const ALG_AES256GCM_HKDF_SHA256: u8 = 1;
/// Plaintext bytes per segment unless configured otherwise (1 MiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 20;
/// Smallest and largest segment sizes a header may declare.
pub(crate) const MIN_SEGMENT_SIZE: u32 = 16;
pub(crate) const MAX_SEGMENT_SIZE: u32 = 64 << 20;
/// Longest namespace an encryption context may carry (a name is ≤ 200 bytes).
pub(crate) const MAX_NAMESPACE_LEN: usize = 200;
/// Length of the header's random salt, nonce prefix and commitment tag.
pub(crate) const SALT_LEN: usize = 32;
pub(crate) const NONCE_PREFIX_LEN: usize = 7;
pub(crate) const COMMIT_TAG_LEN: usize = 32;
/// Length of the fixed part of a header, before the namespace bytes.
const FIXED_PREFIX_LEN: usize = 4 + 1 + 1 + 4 + 16 + 4 + SALT_LEN + NONCE_PREFIX_LEN + 16 + 2;
/// Length of the fixed part after the namespace bytes (size, sha256, tag).
const FIXED_SUFFIX_LEN: usize = 8 + 32 + COMMIT_TAG_LEN;
/// The longest header this version can produce; reading this many bytes from
/// the start of a blob always yields a whole header.
pub const MAX_HEADER_LEN: usize = FIXED_PREFIX_LEN + MAX_NAMESPACE_LEN + FIXED_SUFFIX_LEN;

/// What a blob is: bound into the header (and so into the payload key) and
/// used as associated data when its DEK is wrapped. Names the blob, not a
/// version, because dedup lets one blob serve several versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionContext {
    blob_id: [u8; 16],
    namespace: String,
    plaintext_size: u64,
    pub(crate) plaintext_sha256: [u8; 32],
}

impl EncryptionContext {
    /// A context for blob `blob_id` of `namespace`, holding `plaintext_size`
    /// bytes whose SHA-256 is `plaintext_sha256`.
    pub fn new(
        blob_id: [u8; 16],
        namespace: &str,
        plaintext_size: u64,
        plaintext_sha256: [u8; 32],
    ) -> Result<Self> {
        if namespace.is_empty() || namespace.len() > MAX_NAMESPACE_LEN {
            return Err(Error::Context("namespace must be 1 to 200 bytes"));
        }
        Ok(Self {
            blob_id,
            namespace: namespace.to_owned(),
            plaintext_size,
            plaintext_sha256,
        })
    }

    /// The blob's random id.
    pub fn blob_id(&self) -> &[u8; 16] {
        &self.blob_id
    }
    /// The namespace the blob belongs to.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// Declared plaintext size in bytes.
    pub fn plaintext_size(&self) -> u64 {
        self.plaintext_size
    }
    /// Declared plaintext SHA-256.
    pub fn plaintext_sha256(&self) -> &[u8; 32] {
        &self.plaintext_sha256
    }

    /// Canonical encoding: blob id ‖ BE16(len) ‖ namespace ‖ BE64(size) ‖ sha256.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.blob_id);
        out.extend_from_slice(&(self.namespace.len() as u16).to_be_bytes());
        out.extend_from_slice(self.namespace.as_bytes());
        out.extend_from_slice(&self.plaintext_size.to_be_bytes());
        out.extend_from_slice(&self.plaintext_sha256);
    }
}

/// A parsed blob header. Parsing checks structure only; the commitment tag is
/// checked by [`crate::BlobDecryptor::new`], which needs the DEK.
///
/// Layout (big-endian):
/// `magic(4) ‖ version(1) ‖ alg(1) ‖ segment_size(4) ‖ keyring_id(16) ‖
/// kek_version(4) ‖ salt(32) ‖ nonce_prefix(7) ‖ blob_id(16) ‖ ns_len(2) ‖
/// namespace ‖ plaintext_size(8) ‖ plaintext_sha256(32) ‖ commitment_tag(32)`
#[derive(Clone, Debug)]
pub struct Header {
    pub(crate) version: u8,
    pub(crate) segment_size: u32,
    pub(crate) keyring_id: [u8; 16],
    pub(crate) kek_version: u32,
    pub(crate) salt: [u8; SALT_LEN],
    pub(crate) nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub(crate) context: EncryptionContext,
    pub(crate) commit_tag: [u8; COMMIT_TAG_LEN],
    /// The serialized header without its tag (what the tag authenticates).
    pub(crate) body: Vec<u8>,
}

impl Header {
    /// A header of format `version`. For v2 the context's digest is not
    /// serialized (the field is zero) and is left zero until bound.
    pub(crate) fn build(
        version: u8,
        segment_size: u32,
        keyring_id: [u8; 16],
        kek_version: u32,
        salt: [u8; SALT_LEN],
        nonce_prefix: [u8; NONCE_PREFIX_LEN],
        mut context: EncryptionContext,
    ) -> Self {
        if version == FORMAT_V2 {
            context.plaintext_sha256 = [0; 32];
        }
        let mut body = Vec::with_capacity(MAX_HEADER_LEN);
        body.extend_from_slice(MAGIC);
        body.push(version);
        body.push(ALG_AES256GCM_HKDF_SHA256);
        body.extend_from_slice(&segment_size.to_be_bytes());
        body.extend_from_slice(&keyring_id);
        body.extend_from_slice(&kek_version.to_be_bytes());
        body.extend_from_slice(&salt);
        body.extend_from_slice(&nonce_prefix);
        context.encode_into(&mut body);
        Header {
            version,
            segment_size,
            keyring_id,
            kek_version,
            salt,
            nonce_prefix,
            context,
            commit_tag: [0; COMMIT_TAG_LEN],
            body,
        }
    }

    /// Parse a header from the start of `bytes` (which may hold more). Returns
    /// the header and its length in bytes.
    pub fn parse(bytes: &[u8]) -> Result<(Header, usize)> {
        let mut r = Reader { buf: bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(Error::MalformedHeader("bad magic"));
        }
        let version = r.u8()?;
        if version != FORMAT_V1 && version != FORMAT_V2 {
            return Err(Error::MalformedHeader("unsupported format version"));
        }
        if r.u8()? != ALG_AES256GCM_HKDF_SHA256 {
            return Err(Error::MalformedHeader("unsupported algorithm"));
        }
        let segment_size = r.u32()?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(Error::MalformedHeader("segment size out of range"));
        }
        let keyring_id = r.array::<16>()?;
        let kek_version = r.u32()?;
        let salt = r.array::<SALT_LEN>()?;
        let nonce_prefix = r.array::<NONCE_PREFIX_LEN>()?;
        let blob_id = r.array::<16>()?;
        let ns_len = r.u16()? as usize;
        let ns = r.take(ns_len)?;
        let namespace = std::str::from_utf8(ns)
            .map_err(|_| Error::MalformedHeader("namespace is not UTF-8"))?;
        let plaintext_size = r.u64()?;
        let plaintext_sha256 = r.array::<32>()?;
        if version == FORMAT_V2 && plaintext_sha256 != [0; 32] {
            return Err(Error::MalformedHeader(
                "a v2 header's digest field must be zero",
            ));
        }
        let context = EncryptionContext::new(blob_id, namespace, plaintext_size, plaintext_sha256)
            .map_err(|_| Error::MalformedHeader("bad namespace length"))?;
        let body_len = r.pos;
        let commit_tag = r.array::<COMMIT_TAG_LEN>()?;
        Ok((
            Header {
                version,
                segment_size,
                keyring_id,
                kek_version,
                salt,
                nonce_prefix,
                context,
                commit_tag,
                body: bytes[..body_len].to_vec(),
            },
            r.pos,
        ))
    }

    /// The full serialized header, tag included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body.clone();
        out.extend_from_slice(&self.commit_tag);
        out
    }

    /// Serialized length of the header of a blob of `namespace` (the only
    /// variable-length field).
    pub fn len_for_namespace(namespace: &str) -> usize {
        FIXED_PREFIX_LEN + namespace.len() + FIXED_SUFFIX_LEN
    }

    /// Serialized length of this header.
    pub fn len(&self) -> usize {
        self.body.len() + COMMIT_TAG_LEN
    }

    /// Headers are never empty; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The encryption context the header carries. For a v2 header the
    /// digest is zero until [`Header::expect_digest`] binds one.
    pub fn context(&self) -> &EncryptionContext {
        &self.context
    }

    /// The blob format version ([`FORMAT_V1`] or [`FORMAT_V2`]).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Bind the plaintext SHA-256 the reader expects. A v1 header carries
    /// its digest, which must be this one. A v2 header does not: the digest
    /// becomes the associated data its final segment is opened with, so a
    /// blob read against the wrong digest fails at that segment.
    pub fn expect_digest(&mut self, sha256: &[u8; 32]) -> Result<()> {
        match self.version {
            FORMAT_V2 => {
                self.context.plaintext_sha256 = *sha256;
                Ok(())
            }
            _ if &self.context.plaintext_sha256 == sha256 => Ok(()),
            _ => Err(Error::Commitment),
        }
    }
    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> u32 {
        self.segment_size
    }
    /// The key ring that wrapped this blob's DEK.
    pub fn keyring_id(&self) -> &[u8; 16] {
        &self.keyring_id
    }
    /// KEK version that wrapped the DEK when the blob was written.
    pub fn kek_version(&self) -> u32 {
        self.kek_version
    }

    /// Number of segments: at least one (an empty blob has one empty final segment).
    pub fn segment_count(&self) -> u64 {
        let size = self.context.plaintext_size;
        let seg = u64::from(self.segment_size);
        if size == 0 {
            1
        } else {
            size.div_ceil(seg)
        }
    }

    /// Plaintext length of segment `index`.
    pub fn plaintext_len_of(&self, index: u64) -> usize {
        let seg = u64::from(self.segment_size);
        let start = index * seg;
        (self.context.plaintext_size.saturating_sub(start)).min(seg) as usize
    }

    /// Byte offset of segment `index` in the blob (header included).
    pub fn ciphertext_offset(&self, index: u64) -> u64 {
        self.len() as u64 + index * (u64::from(self.segment_size) + crate::TAG_LEN as u64)
    }

    /// Total blob length in bytes, header included.
    pub fn blob_len(&self) -> u64 {
        let n = self.segment_count();
        self.ciphertext_offset(n - 1) + self.plaintext_len_of(n - 1) as u64 + crate::TAG_LEN as u64
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::MalformedHeader("header truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}
