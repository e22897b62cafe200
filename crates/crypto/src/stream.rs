//! Segment encryption and decryption for blob formats v1 and v2 (sans I/O).
//!
//! Keys: `prk = HKDF-Extract(salt, DEK)`;
//! payload key = `HKDF-Expand(prk, "mlvault/vN payload" ‖ SHA-256(header body))`;
//! commitment key = `HKDF-Expand(prk, "mlvault/vN commit")`;
//! commitment tag = `HMAC-SHA256(commitment key, header body)`,
//! where `N` is the header's format version.
//! Segment `i` uses nonce `prefix(7) ‖ BE32(i) ‖ last(1)` under the payload key.
//! Associated data is empty, except for the final segment of a v2 blob, whose
//! associated data is the plaintext SHA-256 (the header does not carry it).

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::{hkdf, hmac};

use crate::format::{
    EncryptionContext, Header, FORMAT_V1, FORMAT_V2, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};
use crate::keyring::KeyringId;
use crate::keys::{random_bytes, sha256, Dek};
use crate::{Error, Result, TAG_LEN};

/// HKDF info labels. On-disk format constants.
const PAYLOAD_LABEL_V1: &[u8] = b"mlvault/v1 payload";
const COMMIT_LABEL_V1: &[u8] = b"mlvault/v1 commit";
const PAYLOAD_LABEL_V2: &[u8] = b"mlvault/v2 payload";
const COMMIT_LABEL_V2: &[u8] = b"mlvault/v2 commit";

fn derive(dek: &Dek, header: &Header) -> Result<(LessSafeKey, hmac::Key)> {
    let (payload_label, commit_label) = match header.version {
        FORMAT_V1 => (PAYLOAD_LABEL_V1, COMMIT_LABEL_V1),
        _ => (PAYLOAD_LABEL_V2, COMMIT_LABEL_V2),
    };
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &header.salt).extract(dek.expose());
    let header_hash = sha256(&header.body);
    let info = [payload_label, &header_hash[..]];
    let payload = prk
        .expand(&info, &AES_256_GCM)
        .map_err(|_| Error::MalformedHeader("key derivation failed"))?;
    let commit_info = [commit_label];
    let commit = prk
        .expand(&commit_info, hmac::HMAC_SHA256)
        .map_err(|_| Error::MalformedHeader("key derivation failed"))?;
    Ok((
        LessSafeKey::new(UnboundKey::from(payload)),
        hmac::Key::from(commit),
    ))
}

fn nonce(prefix: &[u8; 7], index: u64, last: bool) -> Result<Nonce> {
    let index = u32::try_from(index).map_err(|_| Error::SegmentOutOfRange {
        index,
        count: u64::from(u32::MAX),
    })?;
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Ok(Nonce::assume_unique_for_key(n))
}

/// Associated data of a segment: the digest for a v2 blob's final segment,
/// nothing otherwise.
fn aad(header: &Header, last: bool) -> Aad<&[u8]> {
    if last && header.version == FORMAT_V2 {
        Aad::from(&header.context.plaintext_sha256[..])
    } else {
        Aad::from(&[][..])
    }
}

/// Encrypts one blob, segment by segment. A fresh salt and nonce prefix are
/// drawn for every encryptor, so a (DEK, salt) pair never encrypts twice.
pub struct BlobEncryptor {
    header: Header,
    header_bytes: Vec<u8>,
    key: LessSafeKey,
    next: u64,
    seen: u64,
    finished: bool,
    /// v2: whether the digest for the final segment is known yet.
    digest_set: bool,
}

impl BlobEncryptor {
    /// Start a v1 blob for `context`, sealed under `dek`, whose DEK is
    /// wrapped by version `kek_version` of key ring `keyring`. The context's
    /// digest is written in the header, so it must be known now.
    pub fn new(
        dek: &Dek,
        keyring: &KeyringId,
        kek_version: u32,
        context: EncryptionContext,
        segment_size: u32,
    ) -> Result<Self> {
        Self::with_randomness(
            FORMAT_V1,
            dek,
            keyring,
            kek_version,
            context,
            segment_size,
            random_bytes()?,
            random_bytes()?,
        )
    }

    /// Start a v2 blob: like [`BlobEncryptor::new`], but the context's
    /// digest is ignored and not written in the header. Give the digest with
    /// [`BlobEncryptor::set_digest`] before sealing the final segment,
    /// which binds it; until then the plaintext may still be being hashed.
    pub fn digest_last(
        dek: &Dek,
        keyring: &KeyringId,
        kek_version: u32,
        context: EncryptionContext,
        segment_size: u32,
    ) -> Result<Self> {
        Self::with_randomness(
            FORMAT_V2,
            dek,
            keyring,
            kek_version,
            context,
            segment_size,
            random_bytes()?,
            random_bytes()?,
        )
    }

    /// A blob of format `version` ([`crate::FORMAT_V1`] as
    /// [`BlobEncryptor::new`], [`crate::FORMAT_V2`] as
    /// [`BlobEncryptor::digest_last`]) with caller-chosen salt and nonce
    /// prefix. Only for known-answer test vectors: reusing a (DEK, salt)
    /// pair breaks confidentiality.
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub fn with_randomness(
        version: u8,
        dek: &Dek,
        keyring: &KeyringId,
        kek_version: u32,
        context: EncryptionContext,
        segment_size: u32,
        salt: [u8; 32],
        nonce_prefix: [u8; 7],
    ) -> Result<Self> {
        if version != FORMAT_V1 && version != FORMAT_V2 {
            return Err(Error::Context("unknown blob format version"));
        }
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(Error::Context("segment size out of range"));
        }
        let mut header = Header::build(
            version,
            segment_size,
            *keyring.as_bytes(),
            kek_version,
            salt,
            nonce_prefix,
            context,
        );
        if header.segment_count() > u64::from(u32::MAX) {
            return Err(Error::Context("blob too large for the segment size"));
        }
        let (key, commit_key) = derive(dek, &header)?;
        let tag = hmac::sign(&commit_key, &header.body);
        header.commit_tag.copy_from_slice(tag.as_ref());
        let header_bytes = header.to_bytes();
        Ok(Self {
            header,
            header_bytes,
            key,
            next: 0,
            seen: 0,
            finished: false,
            digest_set: version == FORMAT_V1,
        })
    }

    /// The plaintext SHA-256 this blob is committed to so far: a v1 blob's
    /// (from its header), or a v2 blob's once [`BlobEncryptor::set_digest`]
    /// gave it; `None` for a v2 blob whose digest is still to come.
    pub fn declared_digest(&self) -> Option<[u8; 32]> {
        self.digest_set
            .then_some(self.header.context.plaintext_sha256)
    }

    /// Give the plaintext SHA-256, bound by the final segment of a v2 blob.
    /// A v1 blob (or a v2 blob whose digest was already given) accepts only
    /// the digest it already has.
    pub fn set_digest(&mut self, sha256: [u8; 32]) -> Result<()> {
        if self.digest_set {
            return if self.header.context.plaintext_sha256 == sha256 {
                Ok(())
            } else {
                Err(Error::Context(
                    "the blob is already bound to another digest",
                ))
            };
        }
        self.header.context.plaintext_sha256 = sha256;
        self.digest_set = true;
        Ok(())
    }

    /// The serialized header: write it before the first segment.
    pub fn header(&self) -> &[u8] {
        &self.header_bytes
    }

    /// The parsed header.
    pub fn header_info(&self) -> &Header {
        &self.header
    }

    /// Plaintext bytes per segment.
    pub fn segment_size(&self) -> usize {
        self.header.segment_size as usize
    }

    /// Encrypt the next segment in place and append its tag. Every segment but
    /// the last must hold exactly `segment_size` bytes; the last one closes the
    /// stream and must bring the total to the declared plaintext size.
    pub fn seal_segment(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<()> {
        if self.finished {
            return Err(Error::Finished);
        }
        let seg = self.segment_size();
        let declared = self.header.context.plaintext_size();
        let ok_len = if last {
            buf.len() <= seg
        } else {
            buf.len() == seg
        };
        if !ok_len {
            return Err(Error::SegmentLength {
                index: self.next,
                len: buf.len(),
                expected: seg,
            });
        }
        let seen = self.seen + buf.len() as u64;
        // A non-final segment must leave data for a non-empty final segment.
        let size_ok = if last {
            seen == declared
        } else {
            seen < declared
        };
        if !size_ok {
            return Err(Error::SizeMismatch {
                declared,
                got: seen,
            });
        }
        if last && !self.digest_set {
            return Err(Error::Context(
                "a v2 blob's final segment needs the plaintext digest (set_digest)",
            ));
        }
        let n = nonce(&self.header.nonce_prefix, self.next, last)?;
        self.key
            .seal_in_place_append_tag(n, aad(&self.header, last), buf)
            .map_err(|_| Error::Random)?;
        self.seen = seen;
        self.next += 1;
        self.finished = last;
        Ok(())
    }
}

/// Decrypts segments of one blob, in any order (ranged reads). Creating it
/// checks the header's key commitment in constant time; a segment's plaintext
/// is returned only after its tag verified.
pub struct BlobDecryptor {
    header: Header,
    key: LessSafeKey,
}

impl BlobDecryptor {
    /// Check `header`'s commitment under `dek` and derive the payload key.
    /// A v2 header must have had its expected digest bound
    /// ([`Header::expect_digest`]); otherwise its final segment will not
    /// open.
    pub fn new(header: &Header, dek: &Dek) -> Result<Self> {
        let (key, commit_key) = derive(dek, header)?;
        hmac::verify(&commit_key, &header.body, &header.commit_tag)
            .map_err(|_| Error::Commitment)?;
        Ok(Self {
            header: header.clone(),
            key,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Ciphertext length of segment `index` (tag included).
    pub fn ciphertext_len_of(&self, index: u64) -> usize {
        self.header.plaintext_len_of(index) + TAG_LEN
    }

    /// Decrypt segment `index` in place; on success `buf` is truncated to the
    /// plaintext and a view of it is returned.
    pub fn open_segment<'a>(&self, index: u64, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        let len = self.open_in_place(index, buf)?;
        buf.truncate(len);
        Ok(&buf[..])
    }

    /// Decrypt segment `index` in place in `buf` (exactly its ciphertext,
    /// tag included); returns the plaintext length: `buf[..len]` is the
    /// verified plaintext. On error `buf` holds garbage.
    pub fn open_in_place(&self, index: u64, buf: &mut [u8]) -> Result<usize> {
        let count = self.header.segment_count();
        if index >= count {
            return Err(Error::SegmentOutOfRange { index, count });
        }
        let expected = self.ciphertext_len_of(index);
        if buf.len() != expected {
            return Err(Error::SegmentLength {
                index,
                len: buf.len(),
                expected,
            });
        }
        let last = index + 1 == count;
        let n = nonce(&self.header.nonce_prefix, index, last)?;
        let len = self
            .key
            .open_in_place(n, aad(&self.header, last), buf)
            .map_err(|_| Error::SegmentAuth { index })?
            .len();
        Ok(len)
    }
}

/// Sequential decryption of a byte stream that starts at a segment boundary:
/// feed ciphertext in chunks of any size, get verified plaintext out. Detects
/// truncation ([`StreamOpener::finish`]) and trailing data.
pub struct StreamOpener {
    dec: BlobDecryptor,
    start: u64,
    next: u64,
    buf: Vec<u8>,
}

impl StreamOpener {
    /// Read the blob from segment `first_segment` onwards.
    pub fn new(dec: BlobDecryptor, first_segment: u64) -> Self {
        let cap = dec.ciphertext_len_of(first_segment);
        Self {
            dec,
            start: first_segment,
            next: first_segment,
            buf: Vec::with_capacity(cap),
        }
    }

    /// True once the final segment has been verified.
    pub fn is_done(&self) -> bool {
        self.next >= self.dec.header.segment_count()
    }

    /// Index of the next segment expected.
    pub fn next_segment(&self) -> u64 {
        self.next
    }

    /// Feed ciphertext; verified plaintext of every completed segment is
    /// appended to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !data.is_empty() {
            if self.is_done() {
                return Err(Error::TrailingData);
            }
            let want = self.dec.ciphertext_len_of(self.next);
            let take = (want - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == want {
                self.dec.open_segment(self.next, &mut self.buf)?;
                if out.is_empty() {
                    // Hand the decrypted buffer over instead of copying it.
                    std::mem::swap(out, &mut self.buf);
                } else {
                    out.extend_from_slice(&self.buf);
                }
                self.buf.clear();
                self.next += 1;
            }
        }
        Ok(())
    }

    /// True when no partial segment is buffered (the next input starts a
    /// segment), so [`StreamOpener::open_next_in_place`] may be used.
    pub fn is_aligned(&self) -> bool {
        self.buf.is_empty()
    }

    /// Ciphertext length of the next segment expected, or `None` once the
    /// final segment has been verified.
    pub fn next_len(&self) -> Option<usize> {
        (!self.is_done()).then(|| self.dec.ciphertext_len_of(self.next))
    }

    /// Zero-copy path: decrypt the next segment in place. `seg` must be
    /// exactly [`StreamOpener::next_len`] bytes and nothing may be buffered
    /// from [`StreamOpener::feed`]; returns the plaintext length.
    pub fn open_next_in_place(&mut self, seg: &mut [u8]) -> Result<usize> {
        if self.is_done() {
            return Err(Error::TrailingData);
        }
        if !self.buf.is_empty() {
            return Err(Error::Context(
                "open_next_in_place with ciphertext buffered by feed",
            ));
        }
        let len = self.dec.open_in_place(self.next, seg)?;
        self.next += 1;
        Ok(len)
    }

    /// Call at end of input: fails if the final segment was not reached.
    pub fn finish(&self) -> Result<()> {
        if self.is_done() {
            return Ok(());
        }
        let h = &self.dec.header;
        let start = h.ciphertext_offset(self.start);
        let got = h.ciphertext_offset(self.next) + self.buf.len() as u64 - start;
        Err(Error::Truncated {
            expected: h.blob_len() - start,
            got,
        })
    }
}
