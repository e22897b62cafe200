//! Committed vectors freeze the manifest serialization, the DSSE envelope
//! and the signature (ed25519 is deterministic). Regenerate only with a new
//! predicate type: `cargo test -p vault-manifest --test vectors -- --ignored`.

use serde_json::{json, Value};
use vault_api::{FileEntry, Kind};
use vault_manifest::{digest_of, parse_envelope, Envelope, Manifest, PublicKey, SecretKey};

/// Relative to the package root, where cargo runs tests (a path compiled in
/// would go stale when a cached build is reused from another checkout).
const PATH: &str = "tests/testdata/manifest_v1.json";

fn key() -> SecretKey {
    SecretKey::from_bytes(&[0x11; 32])
}

fn generate() -> Value {
    let files = vec![
        FileEntry {
            path: "weights/model-00002.safetensors".into(),
            size: 1 << 30,
            sha256: "a1".repeat(32),
        },
        FileEntry {
            path: "config.json".into(),
            size: 412,
            sha256: "0f".repeat(32),
        },
        FileEntry {
            path: "tokenizer/vocab.txt".into(),
            size: 0,
            sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        },
    ];
    let parent = format!("sha256:{}", "cd".repeat(32));
    let m = Manifest::new(
        "fraud/detector".parse().unwrap(),
        Kind::Model,
        7,
        1_790_000_000,
        files,
        vec![parent],
    )
    .unwrap()
    .with_signer(key().public().keyid());
    let mut env = m.to_envelope();
    env.sign(&key()).unwrap();
    let text = env.to_json();
    let mut tampered: Value = serde_json::from_str(&text).unwrap();
    let payload = String::from_utf8(m.payload())
        .unwrap()
        .replace("\"version\":7", "\"version\":8");
    tampered["payload"] = Value::String(base64_encode(payload.as_bytes()));
    json!({
        "public_key": key().public().to_file_text(),
        "payload": String::from_utf8(m.payload()).unwrap(),
        "envelope": text,
        "digest": digest_of(text.as_bytes()),
        "fail_tampered_payload": tampered.to_string(),
    })
}

fn base64_encode(b: &[u8]) -> String {
    Envelope::wrap(b).payload
}

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(PATH).expect("committed vectors")).unwrap()
}

/// A generator, not a test: it never runs in a test run, so it never
/// touches the fixture the tests check. Run it on purpose with
/// `cargo test -p vault-manifest --test vectors -- --ignored`.
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
fn serialization_and_signature_are_frozen() {
    assert_eq!(
        generate(),
        load(),
        "manifest format changed: bump the predicate type instead"
    );
}

#[test]
fn the_vector_verifies_and_its_negatives_do_not() {
    let v = load();
    let pk = PublicKey::from_file_text(v["public_key"].as_str().unwrap()).unwrap();
    let (env, m) = parse_envelope(v["envelope"].as_str().unwrap()).unwrap();
    assert_eq!(
        env.verify_any(std::slice::from_ref(&pk)).unwrap(),
        pk.keyid()
    );
    assert_eq!(m.predicate().version, 7);
    assert_eq!(m.files()[0].path, "config.json");
    assert_eq!(
        digest_of(v["envelope"].as_str().unwrap().as_bytes()),
        v["digest"].as_str().unwrap()
    );
    // The payload was edited after signing: the parse succeeds, the signature fails.
    let (bad, _) = parse_envelope(v["fail_tampered_payload"].as_str().unwrap()).unwrap();
    assert!(bad.verify_any(&[pk]).is_err());
    // Another key does not verify.
    let other = SecretKey::from_bytes(&[0x22; 32]).public();
    assert!(env.verify_any(&[other]).is_err());
}
