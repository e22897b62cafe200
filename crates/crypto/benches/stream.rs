//! Streaming AEAD throughput beside the raw primitives, one core, one run.
//! `cargo bench -p vault-crypto --bench stream` (MLVAULT_BENCH_MIB sets the size).

use std::hint::black_box;
use std::time::Instant;

use aes_gcm::aead::{AeadInPlace, KeyInit};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use vault_crypto::*;

const SEG: usize = 1 << 20;

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn best_of<F: FnMut() -> f64>(runs: usize, mut f: F) -> f64 {
    (0..runs).map(|_| f()).fold(f64::MAX, f64::min)
}

fn main() {
    let mib: usize = std::env::var("MLVAULT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let segs = total / SEG;
    let pt: Vec<u8> = (0..SEG).map(|i| i as u8).collect();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    let runs = 3;

    // Raw ring AES-256-GCM, in place on 1 MiB buffers.
    let mut buf = Vec::with_capacity(SEG);
    let raw_seal = best_of(runs, || {
        let t = Instant::now();
        for i in 0..segs {
            // Data arrives in a buffer first, as it does from a socket.
            buf.clear();
            buf.extend_from_slice(&pt);
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut buf)
                .unwrap();
            let _ = black_box(tag);
        }
        t.elapsed().as_secs_f64()
    });
    // Distinct ciphertext for every segment, as a real blob has, so both
    // open loops read the same amount of memory.
    let mut raw_blob = Vec::with_capacity(segs * (SEG + 16));
    for i in 0..segs {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut b = pt.clone();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut b)
            .unwrap();
        raw_blob.extend_from_slice(&b);
    }
    let raw_open = best_of(runs, || {
        let t = Instant::now();
        for (i, c) in raw_blob.chunks(SEG + 16).enumerate() {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut b = c.to_vec();
            black_box(
                key.open_in_place(Nonce::assume_unique_for_key(n), Aad::empty(), &mut b)
                    .unwrap(),
            );
        }
        t.elapsed().as_secs_f64()
    });
    // The copy the open loop makes, measured alone.
    let copy = best_of(runs, || {
        let t = Instant::now();
        for c in raw_blob.chunks(SEG + 16) {
            black_box(c.to_vec());
        }
        t.elapsed().as_secs_f64()
    });

    // RustCrypto aes-gcm, for the choice of bulk cipher.
    let rc = aes_gcm::Aes256Gcm::new_from_slice(&[7; 32]).unwrap();
    let mut buf = pt.clone();
    let rc_seal = best_of(runs, || {
        let t = Instant::now();
        for i in 0..segs {
            let mut n = [0u8; 12];
            n[..8].copy_from_slice(&(i as u64).to_be_bytes());
            black_box(
                rc.encrypt_in_place_detached((&n).into(), b"", &mut buf)
                    .unwrap(),
            );
        }
        t.elapsed().as_secs_f64()
    });

    // The mlvault stream: BlobEncryptor / StreamOpener, format v1.
    let master = MasterKey::generate().unwrap();
    let (ring, _) = Keyring::create(&master).unwrap();
    let dek = Dek::generate().unwrap();
    let ctx = EncryptionContext::new([1; 16], "bench", total as u64, [0; 32]).unwrap();
    let stream_seal = best_of(runs, || {
        let t = Instant::now();
        let mut enc = BlobEncryptor::new(&dek, ring.id(), 1, ctx.clone(), SEG as u32).unwrap();
        black_box(enc.header());
        let mut seg = Vec::with_capacity(SEG + 16);
        for i in 0..segs {
            seg.clear();
            seg.extend_from_slice(&pt);
            enc.seal_segment(&mut seg, i + 1 == segs).unwrap();
            black_box(&seg);
        }
        t.elapsed().as_secs_f64()
    });
    // A whole blob to decrypt (built outside the timing).
    let mut blob = Vec::with_capacity(total + segs * 16 + 512);
    let mut enc = BlobEncryptor::new(&dek, ring.id(), 1, ctx.clone(), SEG as u32).unwrap();
    blob.extend_from_slice(enc.header());
    for i in 0..segs {
        let mut seg = pt.clone();
        enc.seal_segment(&mut seg, i + 1 == segs).unwrap();
        blob.extend_from_slice(&seg);
    }
    let stream_open = best_of(runs, || {
        let t = Instant::now();
        let (header, hlen) = Header::parse(&blob).unwrap();
        let dec = BlobDecryptor::new(&header, &dek).unwrap();
        let mut opener = StreamOpener::new(dec, 0);
        for chunk in blob[hlen..].chunks(SEG + 16) {
            // A fresh `out` per chunk: the server hands each one to the socket.
            let mut out = Vec::new();
            opener.feed(chunk, &mut out).unwrap();
            black_box(&out);
        }
        opener.finish().unwrap();
        t.elapsed().as_secs_f64()
    });
    let sha = best_of(runs, || {
        let t = Instant::now();
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        for _ in 0..segs {
            c.update(&pt);
        }
        black_box(c.finish());
        t.elapsed().as_secs_f64()
    });

    println!("mlvault blob format v1, {mib} MiB, 1 MiB segments, one core, best of {runs}");
    println!("  raw ring AES-256-GCM seal       {:6.2} GB/s  (1 MiB buffers, each filled by one copy first)", gbps(total, raw_seal));
    println!(
        "  raw ring AES-256-GCM open       {:6.2} GB/s  (same; the copy alone runs at {:.2} GB/s)",
        gbps(total, raw_open),
        gbps(total, copy)
    );
    println!(
        "  raw RustCrypto aes-gcm seal     {:6.2} GB/s",
        gbps(total, rc_seal)
    );
    println!(
        "  stream encrypt (BlobEncryptor)  {:6.2} GB/s  = {:5.1}% of raw ring seal",
        gbps(total, stream_seal),
        100.0 * raw_seal / stream_seal
    );
    println!(
        "  stream decrypt (StreamOpener)   {:6.2} GB/s  = {:5.1}% of raw ring open",
        gbps(total, stream_open),
        100.0 * raw_open / stream_open
    );
    println!(
        "  SHA-256 (ring), for reference  {:6.2} GB/s",
        gbps(total, sha)
    );
}
