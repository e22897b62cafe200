//! Shared helpers for the crypto integration tests.
#![allow(dead_code)]

use vault_crypto::*;

pub struct Sealed {
    pub blob: Vec<u8>,
    pub ring: Keyring,
    pub master: MasterKey,
    pub wrapped: WrappedDek,
    pub ctx: EncryptionContext,
}

pub fn ctx_for(id: u8, ns: &str, pt: &[u8]) -> EncryptionContext {
    EncryptionContext::new([id; 16], ns, pt.len() as u64, sha256(pt)).unwrap()
}

/// Encrypt `pt` whole into a blob (header ‖ segments) of the format the
/// server writes (v2: digest bound by the final segment).
pub fn encrypt_with(
    ring: &Keyring,
    dek: &Dek,
    ctx: EncryptionContext,
    pt: &[u8],
    seg: u32,
) -> Vec<u8> {
    let sha = *ctx.plaintext_sha256();
    let mut enc =
        BlobEncryptor::digest_last(dek, ring.id(), ring.current_version(), ctx, seg).unwrap();
    enc.set_digest(sha).unwrap();
    encrypt_segments(enc, pt, seg)
}

/// Encrypt `pt` into a format v1 blob (digest in the header).
pub fn encrypt_v1(
    ring: &Keyring,
    dek: &Dek,
    ctx: EncryptionContext,
    pt: &[u8],
    seg: u32,
) -> Vec<u8> {
    let enc = BlobEncryptor::new(dek, ring.id(), ring.current_version(), ctx, seg).unwrap();
    encrypt_segments(enc, pt, seg)
}

fn encrypt_segments(mut enc: BlobEncryptor, pt: &[u8], seg: u32) -> Vec<u8> {
    let mut out = enc.header().to_vec();
    let chunks: Vec<&[u8]> = if pt.is_empty() {
        vec![&[][..]]
    } else {
        pt.chunks(seg as usize).collect()
    };
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let mut buf = c.to_vec();
        enc.seal_segment(&mut buf, i + 1 == n).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

pub fn seal(pt: &[u8], seg: u32) -> Sealed {
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let ctx = ctx_for(1, "ns", pt);
    let dek = Dek::generate().unwrap();
    let wrapped = ring.wrap_dek(&dek, &ctx).unwrap();
    let blob = encrypt_with(&ring, &dek, ctx.clone(), pt, seg);
    Sealed {
        blob,
        ring,
        master,
        wrapped,
        ctx,
    }
}

/// The server's read path: parse the header, check it names the expected
/// blob, unwrap the DEK for the expected context, check the commitment,
/// stream-decrypt (fed in `chunk`-byte pieces).
pub fn open_blob(
    blob: &[u8],
    ring: &Keyring,
    wrapped: &WrappedDek,
    ctx: &EncryptionContext,
    chunk: usize,
) -> Result<Vec<u8>> {
    let (mut header, hlen) = Header::parse(blob)?;
    header.expect_digest(ctx.plaintext_sha256())?;
    if header.context() != ctx {
        return Err(Error::Commitment);
    }
    let dek = ring.unwrap_dek(wrapped, ctx)?;
    let dec = BlobDecryptor::new(&header, &dek)?;
    let mut opener = StreamOpener::new(dec, 0);
    let mut out = Vec::new();
    for c in blob[hlen..].chunks(chunk.max(1)) {
        opener.feed(c, &mut out)?;
    }
    opener.finish()?;
    Ok(out)
}

impl Sealed {
    pub fn open(&self, blob: &[u8]) -> Result<Vec<u8>> {
        open_blob(blob, &self.ring, &self.wrapped, &self.ctx, 97)
    }
    pub fn header_len(&self) -> usize {
        Header::parse(&self.blob).unwrap().1
    }
}
