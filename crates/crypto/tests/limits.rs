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
