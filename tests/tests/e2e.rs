//! End-to-end: the real `vault-server` on loopback, driven by the real
//! `vault-cli`, checked through the files on disk.

use std::fs;

use vault_tests::*;

const MIB: u64 = 1 << 20;

mod skeleton {
    use super::*;

    #[test]
    fn push_and_pull_a_64_mib_file_byte_for_byte() {
        let s = Server::start();
        let src = s.tmp.path().join("src");
        random_file(&src.join("weights.bin"), 64 * MIB, 1);
        let out = json(&ok(s
            .cli()
            .args(["--json", "push", "fraud/detector"])
            .arg(src.join("weights.bin"))));
        assert_eq!(out["ref"], "fraud/detector:1");
        assert_eq!(out["name"], "fraud/detector");
        assert_eq!(out["version"], 1);
        assert_eq!(out["files"], 1);
        assert_eq!(out["bytes"], 64 * MIB);
        assert_eq!(out["uploaded_bytes"], 64 * MIB);
        let digest = out["digest"].as_str().unwrap().to_owned();
        assert!(digest.starts_with("sha256:") && digest.len() == 71);

        let dest = s.tmp.path().join("dest");
        let pulled = json(&ok(s
            .cli()
            .args(["--json", "pull", "fraud/detector", "--to"])
            .arg(&dest)));
        assert_eq!(pulled["ref"], "fraud/detector:1");
        assert_eq!(pulled["version"], 1);
        assert_eq!(pulled["digest"], digest.as_str());
        assert_eq!(pulled["files"], 1);
        assert_eq!(pulled["bytes"], 64 * MIB);
        assert_eq!(pulled["downloaded_bytes"], 64 * MIB);
        assert_same_tree(&src, &dest);
        ok(s.cli().arg("verify").arg(&dest));
    }

    #[test]
    fn push_and_pull_a_directory_tree_with_versions() {
        let s = Server::start();
        let src = s.tmp.path().join("model");
        random_file(&src.join("weights/part-0.bin"), 3 * MIB + 17, 2);
        random_file(&src.join("weights/deep/er/part-1.bin"), MIB, 3);
        fs::write(src.join("config.json"), br#"{"layers": 12}"#).unwrap();
        fs::write(src.join("empty.txt"), b"").unwrap();
        for expected in 1..=3 {
            let out = json(&ok(s
                .cli()
                .args(["--json", "push", "team/model"])
                .arg(&src)));
            assert_eq!(out["version"], expected);
            assert_eq!(out["files"], 4);
        }
        // The latest is pulled when no tag is given.
        let dest = s.tmp.path().join("latest");
        let pulled = json(&ok(s
            .cli()
            .args(["--json", "pull", "team/model", "--to"])
            .arg(&dest)));
        assert_eq!(pulled["version"], 3);
        assert_same_tree(&src, &dest);
        // An older version by number, and by digest.
        let v2 = s.tmp.path().join("v2");
        let p2 = json(&ok(s
            .cli()
            .args(["--json", "pull", "team/model:2", "--to"])
            .arg(&v2)));
        assert_same_tree(&src, &v2);
        let by_digest = s.tmp.path().join("bydigest");
        let r = format!("team/model@{}", p2["digest"].as_str().unwrap());
        let pd = json(&ok(s
            .cli()
            .args(["--json", "pull", &r, "--to"])
            .arg(&by_digest)));
        assert_eq!(pd["version"], 2);

        let ls = json(&ok(s.cli().args(["--json", "ls"])));
        assert_eq!(ls[0]["name"], "team/model");
        assert_eq!(ls[0]["kind"], "model");
        assert_eq!(ls[0]["versions"].as_array().unwrap().len(), 3);
        let show = json(&ok(s.cli().args(["--json", "show", "team/model:2"])));
        assert_eq!(show["ref"], "team/model:2");
        let files = show["manifest"]["predicate"]["files"].as_array().unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "config.json",
                "empty.txt",
                "weights/deep/er/part-1.bin",
                "weights/part-0.bin"
            ]
        );
        let human = ok(s.cli().args(["show", "team/model"]));
        assert!(human.contains("team/model:3"), "{human}");
    }

    #[test]
    fn missing_version_is_not_found() {
        let s = Server::start();
        fails_with(
            s.cli()
                .args(["pull", "no/such", "--to"])
                .arg(s.tmp.path().join("x")),
            4,
        );
        fails_with(s.cli().args(["show", "no/such:3"]), 4);
    }

    #[test]
    fn the_data_directory_holds_no_plaintext_and_no_names() {
        let s = Server::start();
        let src = s.tmp.path().join("secret-model");
        let marker = b"MLVAULT-PLAINTEXT-MARKER-7f3a9c";
        let mut data = Vec::new();
        for i in 0..200_000u32 {
            data.extend_from_slice(marker);
            data.extend_from_slice(&i.to_le_bytes());
        }
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("weights.bin"), &data).unwrap();
        fs::write(src.join("small.txt"), marker).unwrap();
        ok(s.cli().args(["push", "acme/topsecret-model"]).arg(&src));
        assert!(
            files_containing(&s.data_dir, marker).is_empty(),
            "plaintext found at rest"
        );
        // Blob objects carry random names and no artifact name inside.
        for b in blob_files(&s.data_dir) {
            let name = b.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name.len() == 32 && name.bytes().all(|c| c.is_ascii_hexdigit()),
                "{name}"
            );
        }
        assert!(files_containing(&s.data_dir.join("blobs"), b"topsecret-model").is_empty());
        // And the pull still returns the plaintext.
        let dest = s.tmp.path().join("dest");
        ok(s.cli()
            .args(["pull", "acme/topsecret-model", "--to"])
            .arg(&dest));
        assert_same_tree(&src, &dest);
    }

    #[test]
    fn a_flipped_byte_at_rest_fails_the_pull_with_exit_5_and_leaves_no_file() {
        let s = Server::start();
        let src = s.tmp.path().join("src");
        random_file(&src.join("w.bin"), 3 * MIB + 5, 9);
        ok(s.cli().args(["push", "t/m"]).arg(&src));
        let blobs = blob_files(&s.data_dir);
        assert_eq!(blobs.len(), 1);
        let blob = &blobs[0];
        let len = fs::metadata(blob).unwrap().len();
        // In the header, in the first segment, and in a later segment (after
        // the server has already streamed verified segments).
        for offset in [20, 400, len - 100] {
            let original = fs::read(blob).unwrap();
            flip_byte(blob, offset);
            let dest = s.tmp.path().join(format!("dest-{offset}"));
            let err = fails_with(s.cli().args(["pull", "t/m", "--to"]).arg(&dest), 5);
            assert!(err.contains("integrity"), "{err}");
            assert!(
                !dest.join("w.bin").exists(),
                "unverified file reached the destination"
            );
            let left: Vec<String> = if dest.exists() { tree(&dest) } else { vec![] };
            assert!(left.is_empty(), "files left behind: {left:?}");
            fs::write(blob, original).unwrap();
        }
        // Restored, it pulls again.
        let dest = s.tmp.path().join("dest-ok");
        ok(s.cli().args(["pull", "t/m", "--to"]).arg(&dest));
        assert_same_tree(&src, &dest);
    }

    #[test]
    fn missing_or_wrong_token_exits_3() {
        let s = Server::start();
        let mut no_token = s.cli();
        no_token.env_remove("MLVAULT_TOKEN").arg("ls");
        let err = fails_with(&mut no_token, 3);
        assert!(err.contains("token"), "{err}");
        fails_with(s.cli_with_token("mlv_0000").arg("ls"), 3);
        let f = s.tmp.path().join("f");
        fs::write(&f, b"x").unwrap();
        fails_with(s.cli_with_token("wrong").args(["push", "a/b"]).arg(&f), 3);
        // The real token still works.
        ok(s.cli().arg("ls"));
    }

    #[test]
    fn a_pull_never_writes_through_a_symlink_in_the_destination() {
        let s = Server::start();
        let src = s.tmp.path().join("src");
        random_file(&src.join("sub/w.bin"), 1000, 4);
        ok(s.cli().args(["push", "t/m"]).arg(&src));
        let dest = s.tmp.path().join("dest");
        let outside = s.tmp.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        fails_with(s.cli().args(["pull", "t/m", "--to"]).arg(&dest), 5);
        assert!(tree(&outside).is_empty());
    }

    #[test]
    fn a_file_that_changes_during_push_is_refused_and_nothing_is_committed() {
        // The server hashes what it receives; a body that disagrees with the
        // declared digest is refused (422) and the version never appears.
        let s = Server::start();
        let f = s.tmp.path().join("w.bin");
        random_file(&f, 2 * MIB, 5);
        let body = fs::read(&f).unwrap();
        let open = serde_json::json!({
            "name": "t/m", "kind": "model",
            "files": [{"path": "w.bin", "size": body.len(), "sha256": "00".repeat(32)}]
        });
        let status = curl(&s, "POST", "/v1/uploads", Some(open.to_string().as_bytes()));
        let sess: serde_json::Value = serde_json::from_str(&status.1).unwrap();
        let id = sess["session_id"].as_str().unwrap();
        let (code, _) = curl(&s, "PUT", &format!("/v1/uploads/{id}/files/0"), Some(&body));
        assert_eq!(code, 422);
        assert!(
            blob_files(&s.data_dir).is_empty(),
            "rejected upload left a blob"
        );
        fails_with(
            s.cli()
                .args(["pull", "t/m", "--to"])
                .arg(s.tmp.path().join("d")),
            4,
        );
        // The server keeps serving.
        ok(s.cli().args(["push", "t/m"]).arg(&f));
    }

    /// Minimal HTTP via curl, for requests the CLI would never send.
    pub fn curl(s: &Server, method: &str, path: &str, body: Option<&[u8]>) -> (u16, String) {
        let tmp = s.tmp.path().join("curl-body");
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", s.token))
        .arg(format!("{}{path}", s.addr));
        if let Some(b) = body {
            fs::write(&tmp, b).unwrap();
            c.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", tmp.display()));
        }
        let out = c.output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

mod memory {
    use super::*;

    /// Neither the server nor the CLI holds a whole file in memory: a 1 GiB
    /// push and pull stay far below the file size.
    #[test]
    fn a_1_gib_file_moves_with_flat_memory() {
        let s = Server::start();
        let src = s.tmp.path().join("big");
        random_file(&src.join("w.bin"), 1024 * MIB, 11);
        let out = run(s
            .cli()
            .env("MLVAULT_REPORT_PEAK_RSS", "1")
            .args(["push", "big/m"])
            .arg(&src));
        assert!(out.status.success(), "{out:?}");
        let cli_push = reported_rss(&out.stderr);
        let dest = s.tmp.path().join("dest");
        let out = run(s
            .cli()
            .env("MLVAULT_REPORT_PEAK_RSS", "1")
            .args(["pull", "big/m", "--to"])
            .arg(&dest));
        assert!(out.status.success(), "{out:?}");
        let cli_pull = reported_rss(&out.stderr);
        assert_eq!(
            sha256_file(&src.join("w.bin")),
            sha256_file(&dest.join("w.bin"))
        );
        let server = s.peak_rss_kib();
        eprintln!("peak RSS KiB: server {server}, cli push {cli_push}, cli pull {cli_pull}");
        for (who, kib) in [
            ("server", server),
            ("cli push", cli_push),
            ("cli pull", cli_pull),
        ] {
            assert!(
                kib > 0 && kib < 100 * 1024,
                "{who} peak RSS {kib} KiB for a 1 GiB file"
            );
        }
    }

    fn reported_rss(stderr: &[u8]) -> u64 {
        let text = String::from_utf8_lossy(stderr);
        text.lines()
            .find_map(|l| l.strip_prefix("peak-rss-kib: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS report in: {text}"))
    }
}

mod keys {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use vault_store::MetaStore;

    fn blob_digests(s: &Server) -> Vec<(String, String)> {
        blob_files(&s.data_dir)
            .into_iter()
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    sha256_file(&p),
                )
            })
            .collect()
    }

    #[test]
    fn rotate_rewrap_retire_keep_every_version_pullable_without_rewriting_blobs() {
        let mut s = Server::start();
        let src = s.tmp.path().join("src");
        random_file(&src.join("a.bin"), 2 * MIB + 3, 21);
        random_file(&src.join("b/c.bin"), 1000, 22);
        ok(s.cli().args(["push", "k/m"]).arg(&src));
        let st = json(&ok(s.cli().args(["--json", "key", "rotate"])));
        assert_eq!(st["current_version"], 2);
        assert_eq!(st["versions"], serde_json::json!([1, 2]));
        ok(s.cli().args(["push", "k/m"]).arg(&src));
        let st = json(&ok(s.cli().args(["--json", "key", "status"])));
        assert_eq!(st["blobs_by_version"], serde_json::json!([[1, 2], [2, 2]]));

        // Retiring v1 while blobs still use it is refused, and changes nothing.
        let err = fails_with(s.cli().args(["key", "retire", "2"]), 1);
        assert!(err.contains("rewrap"), "{err}");

        let before = blob_digests(&s);
        let r = json(&ok(s.cli().args(["--json", "key", "rewrap"])));
        assert_eq!(r["rewrapped"], 2);
        assert_eq!(r["already_current"], 2);
        assert_eq!(blob_digests(&s), before, "rewrap must not touch blob bytes");
        // A second run (as after an interruption) finds nothing left to do.
        let r = json(&ok(s.cli().args(["--json", "key", "rewrap"])));
        assert_eq!(r["rewrapped"], 0);

        let st = json(&ok(s.cli().args(["--json", "key", "retire", "2"])));
        assert_eq!(st["min_decryption_version"], 2);
        s.restart();
        for v in ["k/m:1", "k/m:2"] {
            let dest = s.tmp.path().join(v.replace(':', "-"));
            ok(s.cli().args(["pull", v, "--to"]).arg(&dest));
            assert_same_tree(&src, &dest);
        }
        let st = json(&ok(s.cli().args(["--json", "key", "status"])));
        assert_eq!(st["blobs_by_version"], serde_json::json!([[2, 4]]));
        assert_eq!(st["min_decryption_version"], 2);
    }

    #[test]
    fn delete_destroys_the_keys_so_a_copy_of_the_blob_store_is_unreadable() {
        let mut s = Server::start();
        let src = s.tmp.path().join("src");
        random_file(&src.join("w.bin"), MIB + 1, 31);
        ok(s.cli().args(["push", "d/m"]).arg(&src));
        let v1_blobs: Vec<_> = blob_files(&s.data_dir);
        assert_eq!(v1_blobs.len(), 1);
        let v1_id = v1_blobs[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        ok(s.cli().args(["push", "d/m"]).arg(&src));
        // A backup of the blob store taken before the delete.
        let backup = s.tmp.path().join("backup");
        copy_tree(&s.data_dir.join("blobs"), &backup);

        s.terminate();
        let wrapped_hex = {
            let meta = vault_store::RedbMeta::open(&s.data_dir.join("meta.redb")).unwrap();
            let rec = meta.blob(&v1_id).unwrap().expect("v1 blob record");
            hex::encode(&rec.wrapped_dek.ciphertext)
        };
        s.restart();
        let del = json(&ok(s.cli().args(["--json", "delete", "d/m:1"])));
        assert_eq!(del["shredded_blobs"], 1);
        fails_with(
            s.cli()
                .args(["pull", "d/m:1", "--to"])
                .arg(s.tmp.path().join("x")),
            4,
        );
        assert!(
            !v1_blobs[0].exists(),
            "ciphertext object of a deleted version remains"
        );
        // Put the old ciphertext back: still nothing can read it.
        copy_tree(&backup, &s.data_dir.join("blobs"));
        fails_with(
            s.cli()
                .args(["pull", "d/m:1", "--to"])
                .arg(s.tmp.path().join("y")),
            4,
        );
        // Version 2 is untouched.
        let dest = s.tmp.path().join("v2");
        ok(s.cli().args(["pull", "d/m:2", "--to"]).arg(&dest));
        assert_same_tree(&src, &dest);

        s.terminate();
        // The wrapped DEK is gone from the metadata, and no key left in the
        // vault opens the restored blob.
        let meta = vault_store::RedbMeta::open(&s.data_dir.join("meta.redb")).unwrap();
        assert!(meta.blob(&v1_id).unwrap().is_none());
        let ident = fs::read_to_string(&s.identity).unwrap();
        let unsealer = vault_crypto::Unsealer::from_identity_file(&ident).unwrap();
        let master = unsealer
            .unseal(&fs::read(s.data_dir.join("master.key.age")).unwrap())
            .unwrap();
        let krec = meta.keyring().unwrap().unwrap();
        let ring =
            vault_crypto::Keyring::open(&master, krec.id, &krec.keks, krec.min_decryption_version)
                .unwrap();
        let copy = fs::read(&v1_blobs[0]).unwrap();
        let (header, _) = vault_crypto::Header::parse(&copy).unwrap();
        for b in meta.list_blobs().unwrap() {
            let ctx = b.context().unwrap();
            let dek = ring.unwrap_dek(&b.wrapped_dek, &ctx).unwrap();
            assert!(vault_crypto::BlobDecryptor::new(&header, &dek).is_err());
        }
        drop(meta);
        let raw = fs::read(s.data_dir.join("meta.redb")).unwrap();
        let needle = wrapped_hex.as_bytes();
        let lingering = raw.windows(needle.len()).any(|w| w == needle);
        assert!(
            !lingering,
            "the destroyed wrapped DEK is still in meta.redb"
        );
    }

    #[test]
    fn start_is_refused_for_key_files_readable_by_others_and_for_a_wrong_identity() {
        let mut s = Server::start();
        s.terminate();
        let data = s.data_dir.clone();
        let id = s.identity.clone();
        let args = |ident: &Path| -> Vec<std::ffi::OsString> {
            vec![
                "--data-dir".into(),
                data.clone().into(),
                "--unseal-identity".into(),
                ident.into(),
            ]
        };
        let run = |ident: &Path| {
            let a = args(ident);
            let refs: Vec<&OsStr> = a.iter().map(|x| x.as_os_str()).collect();
            failed_start(&refs)
        };
        fs::set_permissions(&id, fs::Permissions::from_mode(0o644)).unwrap();
        let (code, err) = run(&id);
        assert_eq!(code, Some(1));
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&id, fs::Permissions::from_mode(0o600)).unwrap();

        let sealed = data.join("master.key.age");
        fs::set_permissions(&sealed, fs::Permissions::from_mode(0o640)).unwrap();
        let (code, err) = run(&id);
        assert_eq!(code, Some(1));
        assert!(
            err.contains("sealed master key") && err.contains("chmod 600"),
            "{err}"
        );
        fs::set_permissions(&sealed, fs::Permissions::from_mode(0o600)).unwrap();

        // Another identity cannot unseal the vault.
        let other = s.tmp.path().join("other.identity");
        let (secret, _) = vault_crypto::generate_identity();
        use vault_crypto::SecretExpose;
        fs::write(&other, secret.expose_secret()).unwrap();
        fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
        let (code, err) = run(&other);
        assert_eq!(code, Some(1));
        assert!(err.contains("wrong identity or passphrase"), "{err}");
        // The right one still works.
        s.restart();
        ok(s.cli().arg("ls"));
    }

    #[test]
    fn a_passphrase_sealed_vault_opens_only_with_its_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let out = std::process::Command::new(bin("vault-server"))
            .args(["init", "--passphrase-env", "MLV_TEST_PASS", "--data-dir"])
            .arg(&data)
            .env("MLV_TEST_PASS", "correct horse battery")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("admin token (shown once"), "{stdout}");
        let mut c = std::process::Command::new(bin("vault-server"));
        c.args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--passphrase-env",
            "MLV_TEST_PASS",
            "--data-dir",
        ])
        .arg(&data)
        .env("MLV_TEST_PASS", "wrong horse")
        .stderr(std::process::Stdio::piped());
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrong identity or passphrase"));
        let out = std::process::Command::new(bin("vault-server"))
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--passphrase-env",
                "MLV_UNSET_VAR",
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn the_server_log_never_shows_the_token() {
        let s = Server::start_with(&[]);
        let f = s.tmp.path().join("f.bin");
        random_file(&f, 1000, 1);
        ok(s.cli().args(["push", "l/m"]).arg(&f));
        ok(s.cli()
            .args(["pull", "l/m", "--to"])
            .arg(s.tmp.path().join("o")));
        fails_with(
            s.cli_with_token("mlv_not_a_real_token_but_secret")
                .arg("ls"),
            3,
        );
        let log = s.log_text();
        assert!(log.contains("version committed"), "{log}");
        assert!(!log.contains(&s.token));
        assert!(!log.contains(&s.token[4..]));
        assert!(!log.contains("mlv_not_a_real_token_but_secret"));
    }
}
