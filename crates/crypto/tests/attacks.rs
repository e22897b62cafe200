//! Every attack on the blob format named in docs/formats.md §2 fails, with a
//! precise error.

mod common;

use common::*;
use vault_crypto::*;

const SEG: u32 = 64;
/// Four segments: 64 + 64 + 64 + 8 bytes.
fn plaintext() -> Vec<u8> {
    (0..200u8).collect()
}

fn seg_range(s: &Sealed, i: usize) -> std::ops::Range<usize> {
    let h = s.header_len();
    let full = SEG as usize + TAG_LEN;
    let start = h + i * full;
    start..(start + full).min(s.blob.len())
}

#[test]
fn round_trip_control() {
    let s = seal(&plaintext(), SEG);
    assert_eq!(s.open(&s.blob).unwrap(), plaintext());
}

#[test]
fn every_bit_flip_fails() {
    let s = seal(&plaintext(), SEG);
    let h = s.header_len();
    for pos in 0..s.blob.len() {
        for bit in [0x01u8, 0x80] {
            let mut b = s.blob.clone();
            b[pos] ^= bit;
            let err = s.open(&b).expect_err(&format!("flip at {pos} accepted"));
            if pos < h - 32 {
                assert!(
                    matches!(
                        err,
                        Error::MalformedHeader(_) | Error::Commitment | Error::Unwrap { .. }
                    ),
                    "header byte {pos}: {err:?}"
                );
            } else if pos < h {
                assert!(matches!(err, Error::Commitment), "tag byte {pos}: {err:?}");
            } else {
                let index = ((pos - h) / (SEG as usize + TAG_LEN)) as u64;
                assert!(
                    matches!(err, Error::SegmentAuth { index: i } if i == index),
                    "segment byte {pos}: {err:?}"
                );
            }
        }
    }
}

#[test]
fn truncation_at_and_between_every_boundary_fails() {
    let s = seal(&plaintext(), SEG);
    let h = s.header_len();
    for len in 0..s.blob.len() {
        let err = s
            .open(&s.blob[..len])
            .expect_err(&format!("truncated to {len} accepted"));
        if len < h {
            assert!(
                matches!(err, Error::MalformedHeader(_)),
                "len {len}: {err:?}"
            );
        } else {
            assert!(matches!(err, Error::Truncated { .. }), "len {len}: {err:?}");
        }
    }
}

#[test]
fn dropped_duplicated_and_reordered_segments_fail() {
    let s = seal(&plaintext(), SEG);
    let h = s.header_len();
    let segs: Vec<Vec<u8>> = (0..4).map(|i| s.blob[seg_range(&s, i)].to_vec()).collect();
    let build = |order: &[usize]| {
        let mut b = s.blob[..h].to_vec();
        for &i in order {
            b.extend_from_slice(&segs[i]);
        }
        b
    };
    // Dropped: any one of the full segments.
    for drop in 0..3 {
        let order: Vec<usize> = (0..4).filter(|&i| i != drop).collect();
        let err = s.open(&build(&order)).unwrap_err();
        assert!(
            matches!(err, Error::SegmentAuth { .. } | Error::Truncated { .. }),
            "{err:?}"
        );
    }
    // Dropping the final segment is truncation.
    assert!(matches!(
        s.open(&build(&[0, 1, 2])).unwrap_err(),
        Error::Truncated { .. }
    ));
    // Duplicated.
    let err = s.open(&build(&[0, 0, 1, 2, 3])).unwrap_err();
    assert!(matches!(err, Error::SegmentAuth { index: 1 }), "{err:?}");
    // Reordered.
    let err = s.open(&build(&[1, 0, 2, 3])).unwrap_err();
    assert!(matches!(err, Error::SegmentAuth { index: 0 }), "{err:?}");
    let err = s.open(&build(&[0, 2, 1, 3])).unwrap_err();
    assert!(matches!(err, Error::SegmentAuth { index: 1 }), "{err:?}");
}

#[test]
fn data_after_the_final_segment_fails() {
    let s = seal(&plaintext(), SEG);
    for extra in [
        &[0u8][..],
        &[0; 16],
        &s.blob[s.header_len()..s.header_len() + 80],
    ] {
        let mut b = s.blob.clone();
        b.extend_from_slice(extra);
        assert!(matches!(s.open(&b).unwrap_err(), Error::TrailingData));
    }
}

#[test]
fn a_final_segment_cannot_be_made_empty_or_early() {
    // The encryptor refuses to close a non-empty stream with an empty final
    // segment, or to continue past the declared size.
    let pt = plaintext();
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let dek = Dek::generate().unwrap();
    let ctx = ctx_for(1, "ns", &pt[..128]);
    let mut enc = BlobEncryptor::new(&dek, ring.id(), 1, ctx, SEG).unwrap();
    let mut a = pt[..64].to_vec();
    enc.seal_segment(&mut a, false).unwrap();
    let mut b = pt[64..128].to_vec();
    assert!(matches!(
        enc.seal_segment(&mut b, false),
        Err(Error::SizeMismatch { .. })
    ));
    let mut empty = Vec::new();
    assert!(matches!(
        enc.seal_segment(&mut empty, true),
        Err(Error::SizeMismatch { .. })
    ));
    let mut b = pt[64..128].to_vec();
    enc.seal_segment(&mut b, true).unwrap();
    let mut more = vec![1];
    assert!(matches!(
        enc.seal_segment(&mut more, true),
        Err(Error::Finished)
    ));
}

#[test]
fn last_flag_is_bound_a_non_final_segment_cannot_end_the_stream() {
    // Re-declaring a shorter size is a header change: the commitment fails.
    let s = seal(&plaintext(), SEG);
    let (header, h) = Header::parse(&s.blob).unwrap();
    let short = EncryptionContext::new(
        *header.context().blob_id(),
        "ns",
        128,
        *header.context().plaintext_sha256(),
    )
    .unwrap();
    let mut b = s.blob[..h].to_vec();
    // Patch the declared size (8 bytes before sha256 ‖ tag).
    let size_at = h - 32 - 32 - 8;
    b[size_at..size_at + 8].copy_from_slice(&128u64.to_be_bytes());
    b.extend_from_slice(&s.blob[seg_range(&s, 0)]);
    b.extend_from_slice(&s.blob[seg_range(&s, 1)]);
    let err = open_blob(&b, &s.ring, &s.wrapped, &short, 64).unwrap_err();
    assert!(
        matches!(err, Error::Unwrap { .. } | Error::Commitment),
        "{err:?}"
    );
}

#[test]
fn segments_and_headers_spliced_between_blobs_fail() {
    let pt = plaintext();
    let a = seal(&pt, SEG);
    // A second blob with the same plaintext, same ring.
    let dek_b = Dek::generate().unwrap();
    let ctx_b = ctx_for(2, "ns", &pt);
    let wrapped_b = a.ring.wrap_dek(&dek_b, &ctx_b).unwrap();
    let blob_b = encrypt_with(&a.ring, &dek_b, ctx_b.clone(), &pt, SEG);
    let h = a.header_len();
    // Segment 1 of B inside A.
    let r = seg_range(&a, 1);
    let mut spliced = a.blob.clone();
    spliced[r.clone()].copy_from_slice(&blob_b[r]);
    assert!(matches!(
        a.open(&spliced).unwrap_err(),
        Error::SegmentAuth { index: 1 }
    ));
    // B's header on A's segments, opened as B: commitment holds (B's header),
    // but every segment fails under B's payload key.
    let mut hdr_swap = blob_b[..h].to_vec();
    hdr_swap.extend_from_slice(&a.blob[h..]);
    let err = open_blob(&hdr_swap, &a.ring, &wrapped_b, &ctx_b, 64).unwrap_err();
    assert!(matches!(err, Error::SegmentAuth { index: 0 }), "{err:?}");
    // B's header presented as blob A: the context check / commitment refuse.
    let err = open_blob(&hdr_swap, &a.ring, &a.wrapped, &a.ctx, 64).unwrap_err();
    assert!(matches!(err, Error::Commitment), "{err:?}");
    // A header with the same context as A but made under B's DEK.
    let forged = encrypt_with(&a.ring, &dek_b, a.ctx.clone(), &pt, SEG);
    let err = a.open(&forged).unwrap_err();
    assert!(matches!(err, Error::Commitment), "{err:?}");
}

#[test]
fn wrapped_deks_swapped_between_blobs_fail_to_unwrap() {
    let pt = plaintext();
    let a = seal(&pt, SEG);
    let dek_b = Dek::generate().unwrap();
    let ctx_b = ctx_for(2, "ns", &pt);
    let wrapped_b = a.ring.wrap_dek(&dek_b, &ctx_b).unwrap();
    // A's record given B's wrapped DEK: the AAD (A's context) does not match.
    let err = open_blob(&a.blob, &a.ring, &wrapped_b, &a.ctx, 64).unwrap_err();
    assert!(matches!(err, Error::Unwrap { version: 1 }), "{err:?}");
    // Same blob id, other namespace: also refused.
    let other_ns = ctx_for(1, "other", &pt);
    assert!(matches!(
        a.ring.unwrap_dek(&a.wrapped, &other_ns),
        Err(Error::Unwrap { .. })
    ));
}

#[test]
fn wrong_kek_version_and_retired_versions_fail() {
    let mut s = seal(&plaintext(), SEG);
    // Unknown version.
    let mut w = s.wrapped.clone();
    w.kek_version = 9;
    assert!(matches!(
        s.ring.unwrap_dek(&w, &s.ctx),
        Err(Error::UnknownKekVersion(9))
    ));
    // After a rotation, claiming the DEK was wrapped by v2 fails to unwrap.
    let wrapped_v2 = s.ring.rotate(&s.master).unwrap();
    assert_eq!(wrapped_v2.version, 2);
    let mut w = s.wrapped.clone();
    w.kek_version = 2;
    assert!(matches!(
        s.ring.unwrap_dek(&w, &s.ctx),
        Err(Error::Unwrap { version: 2 })
    ));
    // Rewrap moves it to v2; retiring v1 refuses the old wrapping only.
    let rewrapped = s.ring.rewrap(&s.wrapped, &s.ctx).unwrap();
    assert_eq!(rewrapped.kek_version, 2);
    s.ring.set_min_decryption_version(2).unwrap();
    assert!(matches!(
        s.ring.unwrap_dek(&s.wrapped, &s.ctx),
        Err(Error::RetiredKekVersion { version: 1, min: 2 })
    ));
    let out = open_blob(&s.blob, &s.ring, &rewrapped, &s.ctx, 64).unwrap();
    assert_eq!(out, plaintext());
    assert!(s.ring.set_min_decryption_version(3).is_err());
}

#[test]
fn keys_of_another_vault_fail() {
    let s = seal(&plaintext(), SEG);
    let other = seal(&plaintext(), SEG);
    assert!(matches!(
        other.ring.unwrap_dek(&s.wrapped, &s.ctx),
        Err(Error::WrongKeyring)
    ));
    // A key ring reopened with the wrong master key does not open.
    let rec = s.ring.id();
    let (_, wrapped_kek) = Keyring::create(&s.master).unwrap();
    let err = Keyring::open(&other.master, *rec, &[wrapped_kek], 1)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Unwrap { .. }));
}

#[test]
fn ranged_reads_decrypt_from_any_segment() {
    let pt: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let s = seal(&pt, SEG);
    let (mut header, _) = Header::parse(&s.blob).unwrap();
    header.expect_digest(s.ctx.plaintext_sha256()).unwrap();
    let dek = s.ring.unwrap_dek(&s.wrapped, &s.ctx).unwrap();
    for first in 0..header.segment_count() {
        let dec = BlobDecryptor::new(&header, &dek).unwrap();
        let mut opener = StreamOpener::new(dec, first);
        let mut out = Vec::new();
        opener
            .feed(
                &s.blob[header.ciphertext_offset(first) as usize..],
                &mut out,
            )
            .unwrap();
        opener.finish().unwrap();
        assert_eq!(out, pt[(first * SEG as u64) as usize..]);
    }
    // One segment alone, by offset.
    let dec = BlobDecryptor::new(&header, &dek).unwrap();
    let off = header.ciphertext_offset(5) as usize;
    let mut seg = s.blob[off..off + SEG as usize + TAG_LEN].to_vec();
    assert_eq!(dec.open_segment(5, &mut seg).unwrap(), &pt[320..384]);
    assert_eq!(header.blob_len(), s.blob.len() as u64);
}

#[test]
fn a_v2_blob_read_against_another_digest_fails_at_its_final_segment() {
    let pt = plaintext();
    let s = seal(&pt, SEG);
    let mut other = EncryptionContext::new(
        *s.ctx.blob_id(),
        s.ctx.namespace(),
        s.ctx.plaintext_size(),
        sha256(b"other content"),
    )
    .unwrap();
    // The DEK was wrapped for the true digest, so unwrapping under another
    // fails; and with the DEK in hand, the final segment still refuses.
    assert!(open_blob(&s.blob, &s.ring, &s.wrapped, &other, 97).is_err());
    let (mut header, hlen) = Header::parse(&s.blob).unwrap();
    header.expect_digest(other.plaintext_sha256()).unwrap();
    let dek = s.ring.unwrap_dek(&s.wrapped, &s.ctx).unwrap();
    let dec = BlobDecryptor::new(&header, &dek).unwrap();
    let mut opener = StreamOpener::new(dec, 0);
    let mut out = Vec::new();
    let err = opener.feed(&s.blob[hlen..], &mut out).unwrap_err();
    let last = header.segment_count() - 1;
    assert!(
        matches!(err, Error::SegmentAuth { index } if index == last),
        "{err:?}"
    );
    // Every segment before the last still opens (ranged reads need no digest).
    assert_eq!(out.len() as u64, last * u64::from(SEG));
    other = s.ctx.clone();
    assert_eq!(
        open_blob(&s.blob, &s.ring, &s.wrapped, &other, 97).unwrap(),
        pt
    );
}

#[test]
fn a_v2_encryptor_will_not_close_a_blob_without_its_digest() {
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let ctx = common::ctx_for(1, "ns", b"abc");
    let dek = Dek::generate().unwrap();
    let mut enc = BlobEncryptor::digest_last(&dek, ring.id(), 1, ctx, 64).unwrap();
    assert_eq!(enc.declared_digest(), None);
    let mut seg = b"abc".to_vec();
    assert!(enc.seal_segment(&mut seg, true).is_err());
    enc.set_digest(sha256(b"abc")).unwrap();
    assert!(
        enc.set_digest(sha256(b"abd")).is_err(),
        "a digest is bound once"
    );
    enc.seal_segment(&mut seg, true).unwrap();
}

#[test]
fn format_versions_cannot_be_swapped() {
    let pt = plaintext();
    let s = seal(&pt, SEG);
    let dek = s.ring.unwrap_dek(&s.wrapped, &s.ctx).unwrap();
    let v1 = common::encrypt_v1(&s.ring, &dek, s.ctx.clone(), &pt, SEG);
    assert_eq!(open_blob(&v1, &s.ring, &s.wrapped, &s.ctx, 97).unwrap(), pt);
    // v2 → v1: the zero digest field no longer matches the expected digest.
    let mut b = s.blob.clone();
    b[4] = 1;
    assert!(s.open(&b).is_err());
    // v1 → v2: a v2 header must leave the digest field zero.
    let mut b = v1.clone();
    b[4] = 2;
    assert!(matches!(s.open(&b), Err(Error::MalformedHeader(_))));
}
