//! Writes the committed seed corpora under `corpus/<target>/`. Rerun after a
//! format change: `cargo +nightly run --example make_seeds` in `fuzz/`.
use std::fs;
use std::path::Path;

use vault_manifest::{AliasRecord, SecretKey, SignedAlias};

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).expect("corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |p: &str| fs::read(root.join(p)).expect("repository file");

    // Blobs under the fuzz key: empty, one segment, many small segments.
    let text: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
    for (name, pt, seg) in [
        ("empty", &text[..0], 16u32),
        ("one-segment", &text[..100], 4096),
        ("many-segments", &text[..], 1024),
        ("tiny-segments", &text[..200], 16),
    ] {
        let blob = mlvault_fuzz::seal_blob(pt, "fraud", seg, true).expect("seal");
        put("blob_header", name, &blob);
        let v1 = mlvault_fuzz::seal_blob(pt, "fraud", seg, false).expect("seal");
        put("blob_header", &format!("{name}-v1"), &v1);
    }
    // Structured stream cases: arbitrary bytes decode into a Case.
    put("blob_stream", "zeros", &[0u8; 64]);
    put("blob_stream", "text", &text[..600]);

    // Manifests: the committed test vectors and a signed alias record.
    let vectors: serde_json::Value =
        serde_json::from_slice(&read("crates/manifest/tests/testdata/manifest_v1.json"))
            .expect("vectors");
    if let Some(env) = vectors["envelope"].as_str() {
        put("manifest", "vector-envelope", env.as_bytes());
    }
    let key = SecretKey::from_bytes(&[5u8; 32]);
    let rec = AliasRecord {
        name: "fraud/detector".into(),
        alias: "production".into(),
        version: 7,
        digest: format!("sha256:{}", "ab".repeat(32)),
        sequence: 3,
        issued: 1_790_000_000,
        expires: 1_790_086_400,
        gate: None,
    };
    let signed = SignedAlias::sign(&rec, &key).expect("sign");
    put(
        "manifest",
        "signed-alias",
        serde_json::to_string(&signed).expect("json").as_bytes(),
    );

    // References, names, paths, durations.
    for (i, s) in [
        "fraud/detector",
        "fraud/detector:7",
        "fraud/detector:production",
        "team-a/sub.name_x@sha256:e6526454dde949f2f664286a3899701d9aa0a725b5de4d6932acb9b9b24c3949",
        "weights/model-00001-of-00002.safetensors",
        "tokenizer/vocab.txt",
        "30d",
        "12h",
    ]
    .iter()
    .enumerate()
    {
        put("refs", &format!("seed-{i}"), s.as_bytes());
    }

    // Policies: the shipped files, and the schema (first byte 0).
    put("policy", "roles", &read("policies/roles.cedar"));
    put("policy", "guards", &read("policies/guards.cedar"));
    let mut schema = vec![0u8];
    schema.extend_from_slice(&read("policies/schema.cedarschema"));
    put("policy", "schema", &schema);

    // Datasets: synthetic customers CSV, a small JSON Lines file, the spec.
    put(
        "anonymize_csv",
        "customers",
        vault_anonymize::synth::generate(40, 1).as_bytes(),
    );
    put(
        "anonymize_csv",
        "quoted",
        b"name,email,notes\n\"Ann, B\",ann@example.com,\"line1\nline2 4111 1111 1111 1111\"\nbob,,\n",
    );
    put(
        "anonymize_jsonl",
        "users",
        concat!(
            r#"{"user":{"email":"ann@example.com","name":"Ann","phone":"+44 20 7946 0958"},"age":34,"zip":"SW1A","ts":"2024-03-01","text":"mail me at a@b.io","ssn":"078-05-1120"}"#,
            "\n",
            r#"{"user":{"email":"bob@example.com"},"age":"n/a","ts":1700000000,"text":null}"#,
            "\n",
            "not json\n"
        )
        .as_bytes(),
    );
    put(
        "anonymize_spec",
        "example",
        &read("examples/anonymize.toml"),
    );
    println!("seeds written under fuzz/corpus/");
}
