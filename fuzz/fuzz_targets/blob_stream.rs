//! Encrypt fuzzer-chosen plaintext, tamper with the blob as the fuzzer says
//! (byte flips, truncation, appended bytes), decrypt in fuzzer-chosen chunks.
//! Either through the copying decoder (`feed`) only, or the way the server
//! streams: whole segments opened in place in the read buffer, the rest fed.
//! Oracle: an untouched blob decrypts to the plaintext; any change at all is
//! an error, never wrong plaintext. Blobs are format v2 (the server's) or v1
//! (still read), read against the plaintext's digest.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vault_crypto::{BlobDecryptor, Header, StreamOpener};

#[derive(Arbitrary, Debug)]
struct Case {
    plaintext: Vec<u8>,
    segment_size: u16,
    chunk: u16,
    start_segment: u8,
    flips: Vec<(u32, u8)>,
    truncate: Option<u32>,
    append: Vec<u8>,
    in_place: bool,
    v1: bool,
}

/// The server's read path: segments opened in place where a whole one is
/// at hand and nothing is buffered, the copying decoder for the rest.
fn decode_mixed(
    opener: &mut StreamOpener,
    body: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, vault_crypto::Error> {
    let mut plain = Vec::new();
    for piece in body.chunks(chunk) {
        let mut pending = piece.to_vec();
        let mut at = 0;
        while let Some(want) = opener.next_len() {
            if !opener.is_aligned() || pending.len() - at < want {
                break;
            }
            let seg = &mut pending[at..at + want];
            let n = opener.open_next_in_place(seg)?;
            plain.extend_from_slice(&seg[..n]);
            at += want;
        }
        if at < pending.len() {
            let mut out = Vec::new();
            opener.feed(&pending[at..], &mut out)?;
            plain.extend_from_slice(&out);
        }
    }
    opener.finish()?;
    Ok(plain)
}

fuzz_target!(|c: Case| {
    let seg = u32::from(c.segment_size % 4096).max(16);
    let Some(orig) = mlvault_fuzz::seal_blob(&c.plaintext, "fuzz", seg, !c.v1) else {
        return;
    };
    let mut blob = orig.clone();
    for (pos, x) in &c.flips {
        let i = *pos as usize % blob.len();
        blob[i] ^= x;
    }
    if let Some(t) = c.truncate {
        blob.truncate(t as usize % (blob.len() + 1));
    }
    blob.extend_from_slice(&c.append);
    let tampered = blob != orig;

    let result = (|| -> Result<Vec<u8>, vault_crypto::Error> {
        let (mut header, len) = Header::parse(&blob)?;
        header.expect_digest(&vault_crypto::sha256(&c.plaintext))?;
        let dec = BlobDecryptor::new(&header, &mlvault_fuzz::fuzz_dek())?;
        let count = header.segment_count();
        let first = u64::from(c.start_segment) % count;
        let from = header.ciphertext_offset(first) as usize;
        let body = blob.get(from..).unwrap_or(&[]);
        debug_assert!(from >= len);
        let mut opener = StreamOpener::new(dec, first);
        if c.in_place {
            return decode_mixed(&mut opener, body, usize::from(c.chunk).max(1));
        }
        let mut plain = Vec::new();
        let mut out = Vec::new();
        for piece in body.chunks(usize::from(c.chunk).max(1)) {
            out.clear();
            opener.feed(piece, &mut out)?;
            plain.extend_from_slice(&out);
        }
        opener.finish()?;
        Ok(plain)
    })();

    let first = {
        let count = c.plaintext.len().div_ceil(seg as usize).max(1) as u64;
        (u64::from(c.start_segment) % count) as usize * seg as usize
    };
    match result {
        Ok(plain) => {
            // Flips in the skipped segments are not read, so only the read
            // range has to be intact; the header always is.
            let (_, len) = Header::parse(&orig).expect("own header parses");
            let read_from = len + first / seg as usize * (seg as usize + 16);
            assert!(
                blob.len() == orig.len()
                    && blob[..len] == orig[..len]
                    && blob[read_from..] == orig[read_from..],
                "tampered blob decrypted"
            );
            assert_eq!(plain, c.plaintext[first..], "wrong plaintext");
        }
        Err(e) => assert!(tampered, "intact blob failed: {e}"),
    }
});
