//! The format's sizes and bounds (docs/formats.md), pinned at their edges:
//! each check here is one a mutation test showed nothing else would
//! notice (`scripts/mutants.sh`).

use vault_crypto::*;

fn encryptor(ns: &str, seg: u32) -> Result<BlobEncryptor> {
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let ctx = EncryptionContext::new([7; 16], ns, 0, [0; 32]).unwrap();
    let dek = Dek::generate().unwrap();
    BlobEncryptor::digest_last(&dek, ring.id(), ring.current_version(), ctx, seg)
}

#[test]
fn the_default_segment_is_one_mebibyte() {
    assert_eq!(DEFAULT_SEGMENT_SIZE, 1 << 20);
    let enc = encryptor("ns", DEFAULT_SEGMENT_SIZE).unwrap();
    assert_eq!(enc.header_info().segment_size(), 1 << 20);
}

#[test]
fn segments_are_16_bytes_to_64_mebibytes() {
    for ok in [16, 17, 64 << 20] {
        let enc = encryptor("ns", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        let (h, _) = Header::parse(enc.header()).unwrap();
        assert_eq!(h.segment_size(), ok);
    }
    for bad in [0, 15, (64 << 20) + 1, u32::MAX] {
        assert!(encryptor("ns", bad).is_err(), "segment size {bad}");
    }
}

#[test]
fn header_lengths_are_what_their_fields_add_up_to() {
    // magic 4, version 1, algorithm 1, segment size 4, keyring id 16, KEK
    // version 4, salt 32, nonce prefix 7, blob id 16, namespace length 2,
    // namespace, plaintext size 8, digest 32, commitment tag 32.
    let fixed = 4 + 1 + 1 + 4 + 16 + 4 + 32 + 7 + 16 + 2 + 8 + 32 + 32;
    for ns in ["n".to_owned(), "x".repeat(57), "m".repeat(200)] {
        let enc = encryptor(&ns, 1 << 20).unwrap();
        let bytes = enc.header();
        assert_eq!(bytes.len(), fixed + ns.len(), "namespace of {}", ns.len());
        assert_eq!(Header::len_for_namespace(&ns), bytes.len());
        let (h, used) = Header::parse(bytes).unwrap();
        assert_eq!((used, h.len()), (bytes.len(), bytes.len()));
    }
    assert_eq!(MAX_HEADER_LEN, fixed + 200);
    assert!(EncryptionContext::new([7; 16], &"m".repeat(201), 0, [0; 32]).is_err());
}

#[test]
fn a_blob_has_at_most_u32_max_segments() {
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let dek = Dek::generate().unwrap();
    let at = |size: u64| {
        let ctx = EncryptionContext::new([7; 16], "ns", size, [0; 32]).unwrap();
        BlobEncryptor::digest_last(&dek, ring.id(), ring.current_version(), ctx, 16)
    };
    let max = 16 * u64::from(u32::MAX);
    let enc = at(max).expect("u32::MAX segments of 16 bytes");
    assert_eq!(enc.header_info().segment_count(), u64::from(u32::MAX));
    assert!(at(max + 1).is_err(), "one segment more");
}

#[test]
fn contexts_headers_and_encryptors_report_what_they_were_given() {
    let master = MasterKey::generate().unwrap();
    let (mut ring, _) = Keyring::create(&master).unwrap();
    ring.rotate(&master).unwrap();
    ring.rotate(&master).unwrap();
    let sha = sha256(b"hello");
    let ctx = EncryptionContext::new([9; 16], "team-a", 5, sha).unwrap();
    assert_eq!(ctx.blob_id(), &[9; 16]);
    assert_eq!(ctx.namespace(), "team-a");
    assert_eq!(ctx.plaintext_size(), 5);
    let dek = Dek::generate().unwrap();

    let mut v2 =
        BlobEncryptor::digest_last(&dek, ring.id(), ring.current_version(), ctx.clone(), 64)
            .unwrap();
    assert_eq!(v2.declared_digest(), None, "a v2 digest is still to come");
    v2.set_digest(sha).unwrap();
    assert_eq!(v2.declared_digest(), Some(sha));
    let (h2, _) = Header::parse(v2.header()).unwrap();
    assert_eq!((h2.version(), h2.kek_version()), (FORMAT_V2, 3));
    assert_eq!(h2.keyring_id(), ring.id().as_bytes());
    assert!(!h2.is_empty());

    let v1 = BlobEncryptor::new(&dek, ring.id(), 2, ctx, 64).unwrap();
    assert_eq!(v1.declared_digest(), Some(sha));
    let (mut h1, _) = Header::parse(v1.header()).unwrap();
    assert_eq!((h1.version(), h1.kek_version()), (FORMAT_V1, 2));
    assert!(
        h1.expect_digest(&sha256(b"other")).is_err(),
        "a v1 header names its digest"
    );
    assert!(h1.expect_digest(&sha).is_ok());
}

#[test]
fn a_key_ring_reports_its_versions_and_minimum() {
    let master = MasterKey::generate().unwrap();
    let (mut ring, _) = Keyring::create(&master).unwrap();
    assert_eq!(ring.versions(), [1]);
    ring.rotate(&master).unwrap();
    ring.rotate(&master).unwrap();
    assert_eq!(ring.versions(), [1, 2, 3]);
    assert_eq!(ring.min_decryption_version(), 1);
    ring.set_min_decryption_version(3).unwrap();
    assert_eq!(ring.min_decryption_version(), 3);
}

#[test]
fn derived_keys_are_32_bytes_stable_and_separate() {
    let master = MasterKey::generate().unwrap();
    let a = master.derive("pseudonymize", "hr");
    assert_ne!(*a, [0; 32], "a derived key is not left empty");
    assert_eq!(*a, *master.derive("pseudonymize", "hr"));
    assert_ne!(*a, *master.derive("pseudonymize", "fraud"));
    assert_ne!(*a, *master.derive("other", "hr"));
}

#[test]
fn a_stream_opener_counts_the_segments_it_verified() {
    let pt = vec![5u8; 100];
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let ctx = EncryptionContext::new([3; 16], "ns", pt.len() as u64, sha256(&pt)).unwrap();
    let dek = Dek::generate().unwrap();
    let mut enc =
        BlobEncryptor::digest_last(&dek, ring.id(), ring.current_version(), ctx, 16).unwrap();
    enc.set_digest(sha256(&pt)).unwrap();
    let mut blob = enc.header().to_vec();
    let chunks: Vec<&[u8]> = pt.chunks(16).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = c.to_vec();
        enc.seal_segment(&mut buf, i + 1 == chunks.len()).unwrap();
        blob.extend_from_slice(&buf);
    }
    let (mut header, hlen) = Header::parse(&blob).unwrap();
    header.expect_digest(&sha256(&pt)).unwrap();
    let dec = BlobDecryptor::new(&header, &dek).unwrap();
    let mut opener = StreamOpener::new(dec, 0);
    assert_eq!(opener.next_segment(), 0);
    let body = &blob[hlen..];
    let first = 16 + 16; // one segment and its tag
    let mut out = Vec::new();
    opener.feed(&body[..first], &mut out).unwrap();
    assert_eq!(opener.next_segment(), 1);
    // Cut off here, the opener says how much it got of how much.
    opener.feed(&body[first..first + 5], &mut out).unwrap();
    match opener.finish() {
        Err(Error::Truncated { expected, got }) => {
            assert_eq!((expected, got), (body.len() as u64, first as u64 + 5));
        }
        other => panic!("a cut stream finished with {other:?}"),
    }
    opener.feed(&body[first + 5..], &mut out).unwrap();
    opener.finish().unwrap();
    assert_eq!(opener.next_segment(), 7);
    assert_eq!(out, pt);
}

#[test]
fn segments_open_in_place_one_at_a_time() {
    let pt: Vec<u8> = (0..40u8).collect();
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let ctx = EncryptionContext::new([4; 16], "ns", pt.len() as u64, sha256(&pt)).unwrap();
    let dek = Dek::generate().unwrap();
    let mut enc =
        BlobEncryptor::digest_last(&dek, ring.id(), ring.current_version(), ctx, 16).unwrap();
    enc.set_digest(sha256(&pt)).unwrap();
    let mut segments = Vec::new();
    let chunks: Vec<&[u8]> = pt.chunks(16).collect();
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = c.to_vec();
        enc.seal_segment(&mut buf, i + 1 == chunks.len()).unwrap();
        segments.push(buf);
    }
    let (mut header, _) = Header::parse(enc.header()).unwrap();
    header.expect_digest(&sha256(&pt)).unwrap();
    let opener = || StreamOpener::new(BlobDecryptor::new(&header, &dek).unwrap(), 0);

    let mut o = opener();
    let mut out = Vec::new();
    for seg in &segments {
        assert!(o.is_aligned());
        assert_eq!(o.next_len(), Some(seg.len()));
        let mut buf = seg.clone();
        let n = o.open_next_in_place(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, pt);
    assert_eq!((o.next_len(), o.next_segment()), (None, 3));
    o.finish().unwrap();
    assert!(matches!(
        o.open_next_in_place(&mut segments[0].clone()),
        Err(Error::TrailingData)
    ));

    // Part of a segment fed: no longer aligned, and the in-place path refuses.
    let mut o = opener();
    o.feed(&segments[0][..3], &mut Vec::new()).unwrap();
    assert!(!o.is_aligned());
    assert!(o.open_next_in_place(&mut segments[0].clone()).is_err());
}
