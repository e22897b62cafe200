//! The manifest's rules at their edges: each test pins a bound or a check
//! whose removal or off-by-one a mutation test showed nothing else would
//! notice (`scripts/mutants.sh`).

use serde_json::{json, Value};
use vault_api::{FileEntry, Kind};
use vault_manifest::{
    digest_of, parse_envelope, report_digest, validate_path, AliasRecord, Envelope, Manifest,
    SecretKey, SignedAlias, MAX_FILES,
};

fn file(path: &str, size: u64) -> FileEntry {
    FileEntry {
        path: path.into(),
        size,
        sha256: "ab".repeat(32),
    }
}

fn manifest(files: Vec<FileEntry>) -> vault_manifest::Result<Manifest> {
    Manifest::new("ns/m".parse().unwrap(), Kind::Model, 1, 0, files, vec![])
}

#[test]
fn a_file_digest_must_be_64_lowercase_hex_digits() {
    for bad in [
        "AB".repeat(32),
        "ab".repeat(31),
        "ab".repeat(33),
        format!("{}zz", "ab".repeat(31)),
        String::new(),
    ] {
        let mut f = file("a.bin", 1);
        f.sha256 = bad.clone();
        assert!(manifest(vec![f]).is_err(), "digest `{bad}` was accepted");
    }
    // The same through a statement whose root digest and subjects agree
    // with the bad digest: the parser refuses it too.
    let good = manifest(vec![file("a.bin", 1)]).unwrap();
    let mut v: Value = serde_json::from_slice(&good.payload()).unwrap();
    let upper = "AB".repeat(32);
    v["predicate"]["files"][0]["sha256"] = json!(upper);
    v["subject"][0]["digest"]["sha256"] = json!(upper);
    let files = vec![FileEntry {
        sha256: upper.clone(),
        ..file("a.bin", 1)
    }];
    v["predicate"]["root_digest"] = json!(vault_manifest::root_digest(&files));
    assert!(reparse(&v).is_err());
}

fn reparse(statement: &Value) -> vault_manifest::Result<Manifest> {
    let env = Envelope::wrap(&serde_json::to_vec(statement).unwrap());
    parse_envelope(&env.to_json()).map(|(_, m)| m)
}

#[test]
fn subjects_must_name_every_file_with_exactly_its_sha256() {
    let good = manifest(vec![file("a.bin", 1), file("b.bin", 2)]).unwrap();
    let v: Value = serde_json::from_slice(&good.payload()).unwrap();
    assert!(reparse(&v).is_ok());
    let mut extra_digest = v.clone();
    extra_digest["subject"][0]["digest"]["sha512"] = json!("00");
    let mut extra_subject = v.clone();
    let first = v["subject"][0].clone();
    extra_subject["subject"].as_array_mut().unwrap().push(first);
    let mut renamed = v.clone();
    renamed["subject"][1]["name"] = json!("c.bin");
    let mut other_digest = v.clone();
    other_digest["subject"][1]["digest"]["sha256"] = json!("cd".repeat(32));
    for (what, bad) in [
        ("a subject with a second digest", extra_digest),
        ("one subject too many", extra_subject),
        ("a subject naming another path", renamed),
        ("a subject with another digest", other_digest),
    ] {
        assert!(reparse(&bad).is_err(), "{what} was accepted");
    }
}

#[test]
fn at_most_max_files_files() {
    let files =
        |n: usize| -> Vec<FileEntry> { (0..n).map(|i| file(&format!("f{i:06}"), 1)).collect() };
    let m = manifest(files(MAX_FILES)).expect("MAX_FILES files are allowed");
    assert_eq!(m.files().len(), MAX_FILES);
    assert!(manifest(files(MAX_FILES + 1)).is_err());
}

#[test]
fn total_bytes_is_the_sum_of_the_files() {
    let m = manifest(vec![file("a", 3), file("b", 1 << 40), file("c", 0)]).unwrap();
    assert_eq!(m.total_bytes(), 3 + (1 << 40));
}

#[test]
fn paths_and_segments_have_length_limits() {
    let seg = "s".repeat(255);
    assert!(validate_path(&seg).is_ok(), "a 255-byte segment");
    assert!(
        validate_path(&"s".repeat(256)).is_err(),
        "a 256-byte segment"
    );
    // 16 segments of 255 bytes and their separators: 4095 bytes.
    let mut p = vec![seg.as_str(); 16].join("/");
    assert_eq!(p.len(), 4095);
    p.push_str("/x");
    assert_eq!(p.len(), 4097);
    assert!(validate_path(&p).is_err(), "4097 bytes");
    p.remove(0);
    assert_eq!(p.len(), 4096);
    assert!(validate_path(&p).is_ok(), "4096 bytes");
}

#[test]
fn the_report_digest_is_over_sorted_compact_json() {
    let report = json!({"b": 1, "a": [1, {"d": "x", "c": [true, null]}], "e": {}});
    let canonical = r#"{"a":[1,{"c":[true,null],"d":"x"}],"b":1,"e":{}}"#;
    assert_eq!(report_digest(&report), digest_of(canonical.as_bytes()));
}

#[test]
fn a_secret_key_round_trips_through_its_bytes() {
    let k = SecretKey::generate().unwrap();
    let back = SecretKey::from_bytes(&k.to_bytes());
    assert_eq!(back.public().keyid(), k.public().keyid());
}

#[test]
fn a_signature_verifies_only_with_the_key_its_keyid_names() {
    let (signer, other) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    let m = manifest(vec![file("a.bin", 1)]).unwrap();
    let mut env = m.to_envelope();
    env.sign(&signer).unwrap();
    let trusted = [other.public(), signer.public()];
    assert_eq!(env.verify_any(&trusted).unwrap(), signer.public().keyid());
    assert!(env.verify_any(&[other.public()]).is_err());
}

#[test]
fn signed_alias_records_verify_round_trip_and_refuse_tampering() {
    let (server, other) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    let rec = AliasRecord {
        name: "ns/m".into(),
        alias: "production".into(),
        version: 7,
        digest: format!("sha256:{}", "ab".repeat(32)),
        sequence: 3,
        issued: 100,
        expires: 200,
        gate: None,
    };
    let signed = SignedAlias::sign(&rec, &server).unwrap();
    let text = signed.to_json();
    let back: SignedAlias = serde_json::from_str(&text).unwrap();
    assert_eq!(back, signed);
    let trusted = [other.public(), server.public()];
    assert_eq!(back.verify(&trusted).unwrap(), rec);
    assert!(back.verify(&[other.public()]).is_err(), "untrusted key");
    let mut tampered = back.clone();
    tampered.record = tampered.record.replace("\"version\":7", "\"version\":6");
    assert_ne!(tampered.record, back.record);
    assert!(tampered.verify(&trusted).is_err(), "edited record");
}
