//! Arbitrary bytes as a stored blob: header parser, key commitment and the
//! streaming segment decoder. Must never panic; a header that parses must
//! serialize back to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vault_crypto::{BlobDecryptor, Header, StreamOpener};

fuzz_target!(|data: &[u8]| {
    let Ok((header, len)) = Header::parse(data) else {
        return;
    };
    assert_eq!(
        header.to_bytes(),
        &data[..len],
        "header does not round-trip"
    );
    let Ok(dec) = BlobDecryptor::new(&header, &mlvault_fuzz::fuzz_dek()) else {
        return;
    };
    let mut opener = StreamOpener::new(dec, 0);
    let mut out = Vec::new();
    let mut total = 0u64;
    for chunk in data[len..].chunks(1000) {
        out.clear();
        if opener.feed(chunk, &mut out).is_err() {
            return;
        }
        total += out.len() as u64;
    }
    if opener.finish().is_ok() {
        assert_eq!(total, header.context().plaintext_size());
    }
});
