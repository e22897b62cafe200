//! Shared fixtures for the fuzz targets: a fixed key so that seeds made by
//! `examples/make_seeds.rs` decrypt, and the example anonymization spec.

use vault_crypto::{BlobEncryptor, Dek, EncryptionContext, KeyringId};

/// The data key every fuzz blob is sealed under.
pub fn fuzz_dek() -> Dek {
    Dek::from_bytes([7u8; 32])
}

/// Encrypt `plaintext` into a complete blob under [`fuzz_dek`]: format v2
/// (digest bound by the final segment, what the server writes) or v1.
pub fn seal_blob(
    plaintext: &[u8],
    namespace: &str,
    segment_size: u32,
    v2: bool,
) -> Option<Vec<u8>> {
    let sha = vault_crypto::sha256(plaintext);
    let ctx = EncryptionContext::new([9u8; 16], namespace, plaintext.len() as u64, sha).ok()?;
    let (dek, ring) = (fuzz_dek(), KeyringId::from_bytes([1u8; 16]));
    let version = if v2 {
        vault_crypto::FORMAT_V2
    } else {
        vault_crypto::FORMAT_V1
    };
    let mut enc =
        BlobEncryptor::with_randomness(version, &dek, &ring, 1, ctx, segment_size, [2; 32], [3; 7])
            .ok()?;
    enc.set_digest(sha).ok()?;
    let mut blob = enc.header().to_vec();
    let seg = segment_size as usize;
    let mut chunks: Vec<&[u8]> = plaintext.chunks(seg).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let mut buf = c.to_vec();
        enc.seal_segment(&mut buf, i + 1 == n).ok()?;
        blob.extend_from_slice(&buf);
    }
    Some(blob)
}

/// The CSV job spec the anonymizer targets run (every transform, scrub with
/// all detectors, k-anonymity with l-diversity).
pub const CSV_SPEC: &str = include_str!("../../examples/anonymize.toml");
