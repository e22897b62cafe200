//! The same vault on a real S3 server (Garage).

use super::*;
use std::io::{Seek, SeekFrom, Write};

#[test]
fn a_multi_gib_artifact_through_garage_leaves_only_ciphertext_in_the_bucket() {
    let Some(g) = Garage::start("s3 multi-GiB") else {
        return;
    };
    let cfg = g.dir.path().join("vault.toml");
    g.server_config(&cfg);
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let marker = b"MLVAULT-S3-PLAINTEXT-MARKER-51c0";
    let src = s.tmp.path().join("big");
    let big = src.join("model.dat");
    random_file(&big, 2 << 30, 42);
    {
        let mut f = fs::OpenOptions::new().write(true).open(&big).unwrap();
        for off in [0u64, 1 << 20, 700 << 20, (2 << 30) - 64] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(marker).unwrap();
        }
    }
    fs::write(src.join("config.json"), marker).unwrap();
    let out = json(&ok(s.cli().args(["--json", "push", "big/m"]).arg(&src)));
    assert_eq!(out["bytes"], (2u64 << 30) + marker.len() as u64);
    let dest = s.tmp.path().join("dest");
    ok(s.cli().args(["pull", "big/m", "--to"]).arg(&dest));
    assert_eq!(sha256_file(&big), sha256_file(&dest.join("model.dat")));
    // Nothing local: the data directory has no blobs.
    assert!(!s.data_dir.join("blobs").exists() || tree(&s.data_dir.join("blobs")).is_empty());
    // The bucket: random names only, ciphertext only.
    let keys = g.list_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in &keys {
        let name = k.rsplit('/').next().unwrap();
        assert!(
            k.starts_with("blobs/")
                && name.len() == 32
                && name.bytes().all(|c| c.is_ascii_hexdigit()),
            "{k}"
        );
        assert!(!k.contains("big") && !k.contains("model"), "{k}");
        let obj = s.tmp.path().join("object");
        g.get_to(k, &obj);
        assert!(
            !file_contains(&obj, marker),
            "plaintext marker found in `{k}`"
        );
        fs::remove_file(&obj).unwrap();
    }
}

#[test]
fn an_s3_outage_fails_cleanly_and_the_server_recovers_by_itself() {
    let Some(g) = Garage::start("s3 outage") else {
        return;
    };
    let cfg = g.dir.path().join("vault.toml");
    g.server_config(&cfg);
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 3 << 20, 1);
    ok(s.cli().args(["push", "t/m"]).arg(&f));
    g.stop();
    let f2 = s.tmp.path().join("w2/w.dat");
    random_file(&f2, 3 << 20, 2);
    let err = fails_with(s.cli().args(["push", "t/m"]).arg(&f2), 7);
    assert!(err.contains("blob store"), "{err}");
    // The backend's own words (its address) stay in the server log.
    assert!(!err.contains("http://"), "{err}");
    let err = fails_with(
        s.cli()
            .args(["pull", "t/m", "--to"])
            .arg(s.tmp.path().join("o")),
        7,
    );
    assert!(err.contains("blob store"), "{err}");
    assert!(!s.tmp.path().join("o/w.dat").exists());
    // Metadata still answers, and no half-pushed version is visible.
    let ls = json(&ok(s.cli().args(["--json", "ls"])));
    assert_eq!(ls[0]["versions"].as_array().unwrap().len(), 1);
    let ready = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&test_tls().0)
        .arg(format!("{}/readyz", s.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ready.stdout), "503");
    g.resume();
    let out = json(&ok(s.cli().args(["--json", "push", "t/m"]).arg(&f2)));
    assert_eq!(out["version"], 3, "the failed push burned version 2");
    assert_eq!(out["uploaded_bytes"], 3 << 20);
    for (v, want) in [("t/m:1", &f), ("t/m:3", &f2)] {
        let dest = s.tmp.path().join(v.replace(':', "-"));
        ok(s.cli().args(["pull", v, "--no-cache", "--to"]).arg(&dest));
        assert_eq!(sha256_file(want), sha256_file(&dest.join("w.dat")));
    }
    fails_with(
        s.cli()
            .args(["pull", "t/m:2", "--to"])
            .arg(s.tmp.path().join("x")),
        4,
    );
}
