//! Known-answer vectors for key wrapping (docs/formats.md §1.2), made by an
//! independent implementation written here from that page with RustCrypto
//! (`aes-gcm`), not `ring`: our key ring must unwrap them, refuse each
//! `fail` case, and what it wraps must unwrap independently.
//!
//! Regenerate (only when the format changes) with
//! `cargo test -p vault-crypto --test keywrap -- --ignored`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::{json, Value};
use vault_crypto::*;

const PATH: &str = "tests/testdata/keywrap.json";

fn seal(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .encrypt(Nonce::from_slice(nonce), Payload { msg: pt, aad })
        .unwrap()
}

fn open(key: &[u8; 32], nonce: &[u8; 12], aad: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    Aes256Gcm::new_from_slice(key)
        .unwrap()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

/// The context encoding of §2.1: blob id ‖ BE16(len) ‖ namespace ‖ BE64(size) ‖ sha256.
fn context_bytes(id: &[u8; 16], ns: &str, size: u64, sha: &[u8; 32]) -> Vec<u8> {
    let mut out = id.to_vec();
    out.extend_from_slice(&(ns.len() as u16).to_be_bytes());
    out.extend_from_slice(ns.as_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(sha);
    out
}

fn kek_aad(ring: &[u8; 16], version: u32) -> Vec<u8> {
    [b"mlvault/v1 kek".as_slice(), ring, &version.to_be_bytes()].concat()
}

fn dek_aad(ring: &[u8; 16], version: u32, ctx: &[u8]) -> Vec<u8> {
    [
        b"mlvault/v1 dek".as_slice(),
        ring,
        &version.to_be_bytes(),
        ctx,
    ]
    .concat()
}

const MASTER: [u8; 32] = [0x61; 32];
const KEK: [u8; 32] = [0x62; 32];
const DEK: [u8; 32] = [0x63; 32];
const RING: [u8; 16] = [0x64; 16];
const VERSION: u32 = 2;
const KEK_NONCE: [u8; 12] = [0x65; 12];
const DEK_NONCE: [u8; 12] = [0x66; 12];
const BLOB: [u8; 16] = [0x67; 16];
const NS: &str = "fraud";
const SIZE: u64 = 1234;

fn sha() -> [u8; 32] {
    sha256(b"the plaintext")
}

fn generate() -> Value {
    let ctx = context_bytes(&BLOB, NS, SIZE, &sha());
    let wrapped_kek = seal(&MASTER, &KEK_NONCE, &kek_aad(&RING, VERSION), &KEK);
    let wrapped_dek = seal(&KEK, &DEK_NONCE, &dek_aad(&RING, VERSION, &ctx), &DEK);
    json!({
        "format": "mlvault key wrapping v1",
        "master_key": hex::encode(MASTER),
        "keyring_id": hex::encode(RING),
        "kek_version": VERSION,
        "kek": hex::encode(KEK),
        "kek_nonce": hex::encode(KEK_NONCE),
        "wrapped_kek": hex::encode(&wrapped_kek),
        "dek": hex::encode(DEK),
        "dek_nonce": hex::encode(DEK_NONCE),
        "context": {"blob_id": hex::encode(BLOB), "namespace": NS, "size": SIZE, "sha256": hex::encode(sha())},
        "context_bytes": hex::encode(&ctx),
        "wrapped_dek": hex::encode(&wrapped_dek),
        "fail": [
            {"name": "fail_other_namespace", "namespace": "ads"},
            {"name": "fail_other_size", "size": SIZE + 1},
            {"name": "fail_other_digest", "sha256": hex::encode(sha256(b"other"))},
            {"name": "fail_other_blob_id", "blob_id": hex::encode([0x68u8; 16])},
            {"name": "fail_claims_other_kek_version", "kek_version": 1},
            {"name": "fail_wrong_master_key", "master_key": hex::encode([0x69u8; 32])},
        ],
    })
}

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(PATH).expect("committed vectors")).unwrap()
}

fn arr<const N: usize>(v: &Value, k: &str) -> [u8; N] {
    hex::decode(v[k].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// A generator, not a test: it never runs in a test run, so it never
/// touches the fixture the tests check. Run it on purpose with
/// `cargo test -p vault-crypto --test keywrap -- --ignored`.
#[test]
#[ignore = "generator: rewrites the committed vectors"]
fn write_vectors() {
    std::fs::write(
        PATH,
        serde_json::to_string_pretty(&generate()).unwrap() + "\n",
    )
    .unwrap();
}

#[test]
fn the_independent_wrapper_reproduces_the_committed_vectors() {
    assert_eq!(generate(), load(), "key wrapping changed");
}

/// Open our key ring from the vector's (or a fail case's) fields and
/// unwrap the DEK.
fn ours(base: &Value, over: &Value) -> Result<[u8; 32], Error> {
    let field = |k: &str| over.get(k).unwrap_or(&base[k]).clone();
    let c = &base["context"];
    let cfield = |k: &str| over.get(k).unwrap_or(&c[k]).clone();
    let master = MasterKey::from_bytes(
        hex::decode(field("master_key").as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let ring_id = KeyringId::from_bytes(arr(base, "keyring_id"));
    let kek = WrappedKek {
        version: VERSION,
        nonce: arr(base, "kek_nonce"),
        ciphertext: hex::decode(base["wrapped_kek"].as_str().unwrap()).unwrap(),
    };
    let ring = Keyring::open(&master, ring_id, &[kek], 1)?;
    let ctx = EncryptionContext::new(
        hex::decode(cfield("blob_id").as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
        cfield("namespace").as_str().unwrap(),
        cfield("size").as_u64().unwrap(),
        hex::decode(cfield("sha256").as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    )?;
    let wrapped = WrappedDek {
        keyring: ring_id,
        kek_version: field("kek_version").as_u64().unwrap() as u32,
        nonce: arr(base, "dek_nonce"),
        ciphertext: hex::decode(base["wrapped_dek"].as_str().unwrap()).unwrap(),
    };
    ring.unwrap_dek(&wrapped, &ctx).map(|d| *d.expose())
}

#[test]
fn our_key_ring_unwraps_the_vectors_and_refuses_each_fail_case() {
    let v = load();
    assert_eq!(ours(&v, &json!({})).unwrap(), DEK);
    for f in v["fail"].as_array().unwrap() {
        assert!(ours(&v, f).is_err(), "{} was accepted", f["name"]);
    }
}

#[test]
fn what_our_key_ring_wraps_unwraps_independently() {
    let master = MasterKey::from_bytes(MASTER);
    let (ring, wrapped_kek) = Keyring::create(&master).unwrap();
    let id = *ring.id().as_bytes();
    let kek: [u8; 32] = open(
        &MASTER,
        &wrapped_kek.nonce,
        &kek_aad(&id, wrapped_kek.version),
        &wrapped_kek.ciphertext,
    )
    .expect("the KEK unwraps independently")
    .try_into()
    .unwrap();
    let ctx = EncryptionContext::new(BLOB, NS, SIZE, sha()).unwrap();
    let wrapped = ring.wrap_dek(&Dek::from_bytes(DEK), &ctx).unwrap();
    let aad = dek_aad(
        &id,
        wrapped.kek_version,
        &context_bytes(&BLOB, NS, SIZE, &sha()),
    );
    assert_eq!(
        open(&kek, &wrapped.nonce, &aad, &wrapped.ciphertext).unwrap(),
        DEK
    );
    assert_eq!(wrapped.ciphertext.len(), 48);
}
