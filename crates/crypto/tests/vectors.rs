//! Known-answer vectors that freeze blob formats v1 and v2, checked two ways:
//! our encryptor must reproduce them byte for byte, and an independent
//! decoder written here with RustCrypto (`aes-gcm`, `hkdf`, `hmac`, `sha2`) —
//! not `ring` — must decrypt them. `fail_*` vectors must be refused by both.
//!
//! Regenerate (only when a new format version is added) with
//! `cargo test -p vault-crypto --test vectors -- --ignored`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vault_crypto::*;

/// Relative to the package root, where cargo runs tests (a path compiled in
/// would go stale when a cached build is reused from another checkout).
fn path(version: u8) -> String {
    format!("tests/testdata/blob_v{version}.json")
}

struct Case {
    name: &'static str,
    plaintext: Vec<u8>,
    segment_size: u32,
    namespace: &'static str,
}

fn cases() -> Vec<Case> {
    let pattern = |n: usize| (0..n).map(|i| (i * 13 + 7) as u8).collect::<Vec<u8>>();
    vec![
        Case {
            name: "empty",
            plaintext: vec![],
            segment_size: 64,
            namespace: "fraud",
        },
        Case {
            name: "one_byte",
            plaintext: vec![0x42],
            segment_size: 64,
            namespace: "fraud",
        },
        Case {
            name: "exact_segment",
            plaintext: pattern(64),
            segment_size: 64,
            namespace: "fraud",
        },
        Case {
            name: "three_segments",
            plaintext: pattern(150),
            segment_size: 64,
            namespace: "team.a-b_c",
        },
        Case {
            name: "smallest_segments",
            plaintext: pattern(40),
            segment_size: 16,
            namespace: "t",
        },
        Case {
            name: "segment_4096",
            plaintext: pattern(10_000),
            segment_size: 4096,
            namespace: "big",
        },
    ]
}

fn fixed(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn generate(version: u8) -> Value {
    let mut vectors = Vec::new();
    for (i, c) in cases().into_iter().enumerate() {
        let i = i as u8;
        let dek = Dek::from_bytes(fixed(0x10 + i));
        let keyring = KeyringId::from_bytes([0x20 + i; 16]);
        let ctx = EncryptionContext::new(
            [0x30 + i; 16],
            c.namespace,
            c.plaintext.len() as u64,
            sha256(&c.plaintext),
        )
        .unwrap();
        let salt = fixed(0x40 + i);
        let prefix = [0x50 + i; 7];
        let mut enc = BlobEncryptor::with_randomness(
            version,
            &dek,
            &keyring,
            3,
            ctx,
            c.segment_size,
            salt,
            prefix,
        )
        .unwrap();
        if version == 2 {
            enc.set_digest(sha256(&c.plaintext)).unwrap();
        }
        let mut blob = enc.header().to_vec();
        let seg = c.segment_size as usize;
        let chunks: Vec<&[u8]> = if c.plaintext.is_empty() {
            vec![&[][..]]
        } else {
            c.plaintext.chunks(seg).collect()
        };
        let n = chunks.len();
        for (k, ch) in chunks.into_iter().enumerate() {
            let mut b = ch.to_vec();
            enc.seal_segment(&mut b, k + 1 == n).unwrap();
            blob.extend_from_slice(&b);
        }
        vectors.push(json!({
            "name": c.name,
            "dek": hex::encode(dek.expose()),
            "keyring_id": hex::encode(keyring.as_bytes()),
            "kek_version": 3,
            "blob_id": hex::encode([0x30 + i; 16]),
            "namespace": c.namespace,
            "segment_size": c.segment_size,
            "salt": hex::encode(salt),
            "nonce_prefix": hex::encode(prefix),
            "plaintext": hex::encode(&c.plaintext),
            "blob": hex::encode(&blob),
        }));
    }
    let fail = fail_cases(version, &vectors);
    json!({ "format": format!("mlvault blob v{version}"), "vectors": vectors, "fail": fail })
}

/// Negative vectors derived from the three-segment blob.
fn fail_cases(version: u8, vectors: &[Value]) -> Value {
    let v = &vectors[3];
    let blob = hex::decode(v["blob"].as_str().unwrap()).unwrap();
    let (h, hlen) = Header::parse(&blob).unwrap();
    let seg = 64 + TAG_LEN;
    let s = |i: usize| hlen + i * seg;
    let mut out = Vec::new();
    let mut add = |name: &str, b: Vec<u8>, error: &str| {
        out.push(
            json!({"name": name, "of": "three_segments", "blob": hex::encode(b), "error": error}),
        );
    };
    let mut b = blob.clone();
    b[hlen - 1] ^= 1;
    add("fail_commitment_tag_flip", b, "commitment");
    let mut b = blob.clone();
    b[12] ^= 1;
    add("fail_header_flip", b, "commitment");
    let mut b = blob.clone();
    b[s(1) + 5] ^= 0x80;
    add("fail_segment_flip", b, "segment_auth");
    add(
        "fail_truncated_at_boundary",
        blob[..s(2)].to_vec(),
        "truncated",
    );
    add(
        "fail_truncated_mid_segment",
        blob[..s(1) + 10].to_vec(),
        "truncated",
    );
    let mut b = blob.clone();
    b.extend_from_slice(&[0u8; 17]);
    add("fail_trailing_data", b, "trailing_data");
    let mut b = blob[..s(0)].to_vec();
    b.extend_from_slice(&blob[s(1)..s(2)]);
    b.extend_from_slice(&blob[s(0)..s(1)]);
    b.extend_from_slice(&blob[s(2)..]);
    add("fail_reordered", b, "segment_auth");
    let mut b = blob[..s(2)].to_vec();
    b.extend_from_slice(&blob[s(1)..]);
    add("fail_duplicated", b, "segment_auth");
    assert_eq!(h.segment_count(), 3);
    let mut b = blob.clone();
    b[0] = b'X';
    add("fail_bad_magic", b, "header");
    let mut b = blob.clone();
    b[4] = 3;
    add("fail_unknown_version", b, "header");
    // The right blob opened with another DEK: the commitment refuses it.
    out.push(json!({"name": "fail_wrong_dek", "of": "three_segments",
        "blob": v["blob"], "dek": hex::encode([0x7f; 32]), "error": "commitment"}));
    if version == 2 {
        // The right bytes read against another digest: the final segment
        // (whose associated data is the digest) must not open.
        out.push(json!({"name": "fail_other_digest", "of": "three_segments",
            "blob": v["blob"], "sha256": hex::encode(sha256(b"other")), "error": "segment_auth"}));
        // A digest written into the v2 header's (zero) digest field, with
        // the commitment tag recomputed over the changed header: only the
        // rule that the field is zero refuses it.
        let mut b = blob.clone();
        b[hlen - 33] ^= 1;
        let dek = hex::decode(v["dek"].as_str().unwrap()).unwrap();
        let tag = commitment_tag(version, &b[..hlen - 32], &b[30..62], &dek);
        b[hlen - 32..hlen].copy_from_slice(&tag);
        out.push(
            json!({"name": "fail_header_digest_field", "of": "three_segments",
            "blob": hex::encode(b), "error": "header"}),
        );
    }
    Value::Array(out)
}

/// The commitment tag of docs/formats.md §2.2, computed independently.
fn commitment_tag(version: u8, body: &[u8], salt: &[u8], dek: &[u8]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(salt), dek);
    let mut key = [0u8; 32];
    hk.expand(format!("mlvault/v{version} commit").as_bytes(), &mut key)
        .unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().into()
}

const VERSIONS: [u8; 2] = [FORMAT_V1, FORMAT_V2];

fn load(version: u8) -> Value {
    let text = std::fs::read_to_string(path(version)).expect("committed test vectors");
    serde_json::from_str(&text).unwrap()
}

/// A generator, not a test: never runs in a test run, so it never touches
/// the fixtures the tests check. Run it on purpose (only when a format is
/// added) with `cargo test -p vault-crypto --test vectors -- --ignored`.
#[test]
#[ignore = "generator: rewrites the committed vectors"]
fn write_vectors() {
    for v in VERSIONS {
        let text = serde_json::to_string_pretty(&generate(v)).unwrap() + "\n";
        std::fs::write(path(v), text).unwrap();
    }
}

#[test]
fn our_encryptor_reproduces_the_committed_vectors() {
    for v in VERSIONS {
        assert_eq!(
            generate(v),
            load(v),
            "format v{v} changed: add a new FORMAT_VERSION instead"
        );
    }
}

fn hx(v: &Value, k: &str) -> Vec<u8> {
    hex::decode(v[k].as_str().unwrap()).unwrap()
}

/// An independent decoder of formats v1 and v2 from docs/formats.md §2, using
/// RustCrypto. `sha` is the digest the reader expects (v2 binds it as the
/// final segment's associated data).
fn independent_decrypt(blob: &[u8], dek: &[u8], sha: &[u8]) -> Result<Vec<u8>, &'static str> {
    let take = |pos: &mut usize, n: usize| -> Result<Vec<u8>, &'static str> {
        let s = blob.get(*pos..*pos + n).ok_or("truncated")?.to_vec();
        *pos += n;
        Ok(s)
    };
    let mut p = 0;
    if take(&mut p, 4)? != b"MLVB" {
        return Err("header");
    }
    let version = take(&mut p, 1)?[0];
    if !(version == 1 || version == 2) || take(&mut p, 1)? != [1] {
        return Err("header");
    }
    let seg = u32::from_be_bytes(take(&mut p, 4)?.try_into().unwrap()) as usize;
    let _ring = take(&mut p, 16)?;
    let _ver = take(&mut p, 4)?;
    let salt = take(&mut p, 32)?;
    let prefix = take(&mut p, 7)?;
    let _id = take(&mut p, 16)?;
    let ns_len = u16::from_be_bytes(take(&mut p, 2)?.try_into().unwrap()) as usize;
    let _ns = take(&mut p, ns_len)?;
    let size = u64::from_be_bytes(take(&mut p, 8)?.try_into().unwrap()) as usize;
    let header_sha = take(&mut p, 32)?;
    if version == 2 && header_sha != [0; 32] {
        return Err("header");
    }
    let body = blob[..p].to_vec();
    let tag = take(&mut p, 32)?;
    let hk = hkdf::Hkdf::<Sha256>::new(Some(&salt), dek);
    let mut commit_key = [0u8; 32];
    let label = |what: &str| format!("mlvault/v{version} {what}").into_bytes();
    hk.expand(&label("commit"), &mut commit_key).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&commit_key).unwrap();
    mac.update(&body);
    mac.verify_slice(&tag).map_err(|_| "commitment")?;
    let mut info = label("payload");
    info.extend_from_slice(&Sha256::digest(&body));
    let mut key = [0u8; 32];
    hk.expand(&info, &mut key).unwrap();
    let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
    let n = if size == 0 { 1 } else { size.div_ceil(seg) };
    let mut out = Vec::new();
    for i in 0..n {
        let len = (size - i * seg).min(seg) + 16;
        let ct = take(&mut p, len)?;
        let mut nonce = prefix.clone();
        nonce.extend_from_slice(&(i as u32).to_be_bytes());
        nonce.push(u8::from(i + 1 == n));
        let aad = if version == 2 && i + 1 == n { sha } else { b"" };
        let pt = cipher
            .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ct, aad })
            .map_err(|_| "segment_auth")?;
        out.extend_from_slice(&pt);
    }
    if p != blob.len() {
        return Err("trailing_data");
    }
    Ok(out)
}

fn ours(blob: &[u8], dek: &[u8], sha: &[u8]) -> Result<Vec<u8>, Error> {
    let (mut header, hlen) = Header::parse(blob)?;
    header.expect_digest(sha.try_into().unwrap())?;
    let dek = Dek::from_bytes(dek.try_into().unwrap());
    let dec = BlobDecryptor::new(&header, &dek)?;
    let mut opener = StreamOpener::new(dec, 0);
    let mut out = Vec::new();
    opener.feed(&blob[hlen..], &mut out)?;
    opener.finish()?;
    Ok(out)
}

#[test]
fn an_independent_implementation_decrypts_every_vector() {
    for version in VERSIONS {
        let all = load(version);
        for v in all["vectors"].as_array().unwrap() {
            let (blob, dek) = (hx(v, "blob"), hx(v, "dek"));
            let sha = sha256(&hx(v, "plaintext"));
            assert_eq!(
                independent_decrypt(&blob, &dek, &sha).unwrap(),
                hx(v, "plaintext"),
                "v{version} {}",
                v["name"]
            );
            assert_eq!(
                ours(&blob, &dek, &sha).unwrap(),
                hx(v, "plaintext"),
                "v{version} {}",
                v["name"]
            );
        }
    }
}

#[test]
fn every_fail_vector_is_refused_by_both_implementations() {
    for version in VERSIONS {
        let all = load(version);
        let base = &all["vectors"][3];
        for f in all["fail"].as_array().unwrap() {
            let blob = hx(f, "blob");
            let dek = match f.get("dek") {
                Some(_) => hx(f, "dek"),
                None => hx(base, "dek"),
            };
            let sha = match f.get("sha256") {
                Some(_) => hx(f, "sha256"),
                None => sha256(&hx(base, "plaintext")).to_vec(),
            };
            let want = f["error"].as_str().unwrap();
            let name = format!("v{version} {}", f["name"]);
            assert_eq!(
                independent_decrypt(&blob, &dek, &sha).unwrap_err(),
                want,
                "{name}"
            );
            let got = match ours(&blob, &dek, &sha).unwrap_err() {
                Error::Commitment => "commitment",
                Error::SegmentAuth { .. } => "segment_auth",
                Error::Truncated { .. } => "truncated",
                Error::TrailingData => "trailing_data",
                Error::MalformedHeader(_) => "header",
                other => panic!("{name}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "{name}");
        }
    }
}
