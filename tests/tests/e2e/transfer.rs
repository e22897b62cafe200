//! Dedup, the client cache, resumed transfers, direct I/O, rate limiting.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn model(s: &Server, files: usize, size: u64) -> std::path::PathBuf {
    let src = s.tmp.path().join("model");
    for i in 0..files {
        random_file(&src.join(format!("shard-{i:02}.dat")), size, 100 + i as u64);
    }
    src
}

/// Bytes of `path` in the page cache, from util-linux `fincore`; `None`
/// where the tool is missing.
fn resident_bytes(path: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// The file system type of `path` (`stat -f`), and whether it is a
/// local disk file system that takes direct I/O.
fn direct_io_fs(path: &std::path::Path) -> (String, bool) {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(path)
        .output()
        .expect("stat -f");
    let fs = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let local = ["ext2/ext3", "xfs", "btrfs", "f2fs"].contains(&fs.as_str());
    (fs, local)
}

/// The server reads a blob with direct I/O the first time, and through
/// the page cache when it is read again within `hot_read_secs`, so a
/// model in demand stays in memory: the blob file is not resident after
/// one pull and is after the second. With `hot_read_secs = 0` it never
/// is. Checked with `fincore` on the server's blob file; every pull is
/// byte for byte the pushed file.
#[test]
fn a_blob_read_again_soon_is_served_from_the_page_cache() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(cfg.path(), "[storage]\nhot_read_secs = 0\n").unwrap();
    for (name, extra) in [
        ("hot", &[][..]),
        ("direct", &["--config", cfg.path().to_str().unwrap()][..]),
    ] {
        let s = Server::start_with(extra);
        let src = model(&s, 1, 8 * MIB);
        ok(s.cli().args(["push", "t/m"]).arg(&src));
        let blob = blob_files(&s.data_dir)
            .into_iter()
            .max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .expect("a blob file");
        let (fs_type, local_disk) = direct_io_fs(&blob);
        let mut resident = vec![];
        for i in 0..3 {
            let dest = s.tmp.path().join(format!("{name}-{i}"));
            ok(s.cli()
                .args(["pull", "t/m", "--no-cache", "--to"])
                .arg(&dest));
            assert_same_tree(&src, &dest);
            resident.push(resident_bytes(&blob));
        }
        if resident.contains(&None) || !local_disk {
            cannot_check(
                &format!("the page-cache check needs `fincore` and a file system that takes direct I/O ({fs_type} here)"),
                "MLVAULT_SKIP_PAGE_CACHE",
            );
            continue;
        }
        let r: Vec<u64> = resident.into_iter().flatten().collect();
        assert_eq!(r[0], 0, "{name}: the first read filled the page cache");
        if name == "hot" {
            assert!(r[1] >= 8 * MIB && r[2] >= 8 * MIB, "{name}: {r:?}");
        } else {
            assert_eq!(r, [0, 0, 0], "{name}");
        }
    }
}

/// `pull --direct-io` writes past the page cache (nothing of the pulled
/// file stays resident) and the default keeps the file cached for the
/// loader; both results are byte for byte the pushed file, through the
/// cache and without it.
#[test]
fn direct_io_pulls_leave_nothing_in_the_page_cache() {
    let s = Server::start();
    let src = model(&s, 1, 16 * MIB);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let file = "shard-00.dat";
    let (fs, local_disk) = direct_io_fs(s.tmp.path());
    // A cache of its own: the push's cache may already hold the file.
    let cache = s.tmp.path().join("pull-cache");
    let cache = cache.to_str().expect("UTF-8 path");
    for (name, extra) in [
        ("cached", vec!["--direct-io", "--cache-dir", cache]),
        ("direct", vec!["--direct-io", "--no-cache"]),
        ("buffered", vec!["--no-cache"]),
    ] {
        let dest = s.tmp.path().join(name);
        ok(s.cli()
            .env_remove("MLVAULT_DIRECT_IO")
            .args(["pull", "t/m", "--to"])
            .arg(&dest)
            .args(&extra));
        // Measured before anything here reads the file.
        let res = resident_bytes(&dest.join(file));
        assert_eq!(
            sha256_file(&src.join(file)),
            sha256_file(&dest.join(file)),
            "{name}"
        );
        let Some(res) = res else {
            cannot_check(
                "the page-cache check needs `fincore` (util-linux)",
                "MLVAULT_SKIP_PAGE_CACHE",
            );
            continue;
        };
        if !local_disk {
            cannot_check(
                &format!(
                    "the page-cache check needs a file system that takes direct I/O ({fs} here)"
                ),
                "MLVAULT_SKIP_PAGE_CACHE",
            );
            continue;
        }
        if extra.contains(&"--direct-io") {
            assert_eq!(res, 0, "{name}: {res} bytes of a direct-I/O pull cached");
        } else {
            assert!(res >= 8 * MIB, "{name}: only {res} bytes cached");
        }
    }
}

#[test]
fn cache_prune_frees_what_no_pulled_directory_uses() {
    let s = Server::start();
    let (v1, v2) = (s.tmp.path().join("v1"), s.tmp.path().join("v2"));
    random_file(&v1.join("shared.dat"), MIB, 1);
    random_file(&v1.join("only-1.dat"), 2 * MIB, 2);
    random_file(&v2.join("shared.dat"), MIB, 1);
    random_file(&v2.join("only-2.dat"), 3 * MIB, 3);
    ok(s.cli().args(["push", "t/m"]).arg(&v1));
    ok(s.cli().args(["push", "t/m"]).arg(&v2));
    let (d1, d2) = (s.tmp.path().join("d1"), s.tmp.path().join("d2"));
    ok(s.cli().args(["pull", "t/m:1", "--to"]).arg(&d1));
    ok(s.cli().args(["pull", "t/m:2", "--to"]).arg(&d2));
    let status = || json(&ok(s.cli().args(["--json", "cache", "status"])));
    let st = status();
    assert_eq!(
        (st["objects"].as_u64(), st["linked"].as_u64()),
        (Some(3), Some(3)),
        "{st}"
    );
    // An abandoned partial download (idle two hours) and a fresh one.
    let partial = s.tmp.path().join("client-cache/partial");
    let (stale, fresh) = (partial.join("a".repeat(64)), partial.join("b".repeat(64)));
    fs::write(&stale, vec![0u8; 4096]).unwrap();
    fs::write(&fresh, vec![0u8; 4096]).unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    // Version 1's directory is gone: only its own file is unused now.
    fs::remove_dir_all(&d1).unwrap();
    let st = status();
    assert_eq!(st["unlinked"], 1, "{st}");
    assert_eq!(st["unlinked_bytes"], 2 * MIB, "{st}");
    assert_eq!(st["partial"], 2, "{st}");
    let r = json(&ok(s.cli().args(["--json", "cache", "prune"])));
    assert_eq!(r["removed_objects"], 1, "{r}");
    assert_eq!(r["removed_partial"], 1, "{r}");
    assert_eq!(r["freed_bytes"], 2 * MIB + 4096, "{r}");
    assert_eq!(r["kept_linked"], 2, "{r}");
    assert!(!stale.exists() && fresh.exists());
    // What is in use still verifies and re-pulls from the cache alone.
    ok(s.cli().arg("verify").arg(&d2));
    let again = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m:2", "--to"])
        .arg(&d2)));
    assert_eq!(again["downloaded_bytes"], 0);
    // Version 1 again: only the pruned file is downloaded.
    let back = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m:1", "--to"])
        .arg(&d1)));
    assert_eq!(back["downloaded_bytes"], 2 * MIB);
    assert_same_tree(&v1, &d1);

    // --all empties it; pulled directories keep their files.
    let r = json(&ok(s.cli().args(["--json", "cache", "prune", "--all"])));
    assert_eq!(r["removed_objects"], 3, "{r}");
    assert_eq!(r["removed_partial"], 1, "{r}");
    let st = status();
    assert_eq!(
        (st["objects"].as_u64(), st["partial"].as_u64()),
        (Some(0), Some(0)),
        "{st}"
    );
    assert_same_tree(&v1, &d1);
    assert_same_tree(&v2, &d2);
    let again = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m:2", "--to"])
        .arg(&d2)));
    assert_eq!(again["downloaded_bytes"], 4 * MIB);
    ok(s.cli().arg("verify").arg(&d2));
    let human = ok(s.cli().args(["cache", "status"]));
    assert!(
        human.contains("in use by pulled directories: 2 files (4.00 MiB)"),
        "{human}"
    );
}

/// SIGKILL `child` as soon as `ready` holds (within 60 s), failing the
/// test if it finishes first.
fn kill_when(child: &mut std::process::Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "pull made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "pull finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_pull_resumes_without_downloading_finished_files_again() {
    let s = Server::start();
    let src = model(&s, 8, 48 * MIB);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let dest = s.tmp.path().join("dest");
    let objects = s.tmp.path().join("client-cache/objects");
    let mut child = s
        .cli()
        .args(["pull", "t/m", "--parallel", "1", "--to"])
        .arg(&dest)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A file is finished in the cache when its `.state` record is there:
    // an object whose record is not yet written (or a record's temporary
    // `.state.PID` file) is checked again and may be downloaded again.
    let done = |d: &std::path::Path| {
        fs::read_dir(d).map_or(0, |r| {
            r.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
                .count()
        })
    };
    kill_when(&mut child, || done(&objects) >= 3);
    let finished = done(&objects) as u64;
    assert!(finished < 8, "everything finished before the kill");
    // Nothing unverified is at the destination.
    for rel in tree(&dest).iter().filter(|p| !p.starts_with(".mlvault/")) {
        assert_eq!(
            sha256_file(&dest.join(rel)),
            sha256_file(&src.join(rel)),
            "{rel}"
        );
    }
    let out = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&dest)));
    let total = 8 * 48 * MIB;
    let downloaded = out["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded <= total - finished * 48 * MIB,
        "finished files downloaded again: {downloaded}"
    );
    assert_same_tree(&src, &dest);
    ok(s.cli().arg("verify").arg(&dest));
}

/// Two versions of one model for the tests of a pull that stops: v1
/// small, v2 with a changed config, a new file and a `big` weights file.
pub(super) fn two_versions(
    s: &Server,
    name: &str,
    big: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let v1 = s.tmp.path().join(format!("{}-v1", name.replace('/', "-")));
    let v2 = s.tmp.path().join(format!("{}-v2", name.replace('/', "-")));
    fs::create_dir_all(&v1).unwrap();
    fs::create_dir_all(&v2).unwrap();
    fs::write(v1.join("config.json"), br#"{"layers": 2}"#).unwrap();
    random_file(&v1.join("weights.dat"), MIB, 1);
    fs::write(v2.join("config.json"), br#"{"layers": 4}"#).unwrap();
    fs::write(v2.join("tokenizer.json"), br#"{"vocab": []}"#).unwrap();
    random_file(&v2.join("weights.dat"), big, 2);
    ok(s.cli().args(["push", name]).arg(&v1));
    ok(s.cli().args(["push", name]).arg(&v2));
    (v1, v2)
}

/// A pull of a new version over an earlier one, killed while its large
/// file downloads (its small files long verified), leaves the
/// destination exactly as it was: the earlier version whole, `verify`
/// passing, none of the new files beside it. With the cache and without;
/// pulling again completes it and leaves nothing staged behind.
#[test]
fn a_pull_killed_partway_leaves_the_earlier_version_whole() {
    let s = Server::start();
    for cache in [true, false] {
        let name = if cache { "t/cached" } else { "t/uncached" };
        let (v1, v2) = two_versions(&s, name, 24 * MIB);
        let mode: &[&str] = if cache { &[] } else { &["--no-cache"] };
        let dest = s.tmp.path().join(format!("dest-{cache}"));
        ok(s.cli()
            .args(["pull", &format!("{name}:1"), "--to"])
            .arg(&dest)
            .args(mode));
        let mut child = s
            .cli()
            .args(["pull", &format!("{name}:2"), "--limit-rate", "4M", "--to"])
            .arg(&dest)
            .args(mode)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for 2 MiB of the weights (in the cache's or the
        // destination's partial folder): the two small files are done.
        let sha = sha256_file(&v2.join("weights.dat"));
        let partials = [
            s.tmp.path().join("client-cache/partial"),
            dest.join(".mlvault/partial"),
        ];
        let received = || {
            partials
                .iter()
                .filter_map(|d| fs::read_dir(d).ok())
                .flatten()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&sha))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        };
        kill_when(&mut child, || received() >= 2 * MIB);
        assert_same_tree(&v1, &dest);
        ok(s.cli().arg("verify").arg(&dest));

        ok(s.cli()
            .args(["pull", &format!("{name}:2"), "--to"])
            .arg(&dest)
            .args(mode));
        assert_same_tree(&v2, &dest);
        ok(s.cli().arg("verify").arg(&dest));
        assert!(
            !dest.join(".mlvault/partial").exists(),
            "left behind: {:?}",
            tree(&dest.join(".mlvault"))
        );
    }
}

#[test]
fn a_warm_repull_downloads_nothing_and_a_corrupted_cache_file_is_fetched_again() {
    use std::os::unix::fs::PermissionsExt;
    let s = Server::start();
    let src = model(&s, 4, 4 * MIB);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let dest = s.tmp.path().join("dest");
    let first = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&dest)));
    assert_eq!(first["downloaded_bytes"], 16 * MIB);
    let warm = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&dest)));
    assert_eq!(warm["downloaded_bytes"], 0);
    // Another destination is filled from the cache, not the network.
    let other = s.tmp.path().join("other");
    let linked = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&other)));
    assert_eq!(linked["downloaded_bytes"], 0);
    assert_same_tree(&src, &other);

    // Corrupt one cached object on disk: detected by its changed state.
    let sha = sha256_file(&src.join("shard-01.dat"));
    let obj = s.tmp.path().join("client-cache/objects").join(&sha);
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
    flip_byte(&obj, 12345);
    let fresh = s.tmp.path().join("fresh");
    let out = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&fresh)));
    assert_eq!(out["downloaded_bytes"], 4 * MIB);
    assert_same_tree(&src, &fresh);

    // Corruption that keeps size and mtime: caught by --verify-cache.
    let obj = s
        .tmp
        .path()
        .join("client-cache/objects")
        .join(sha256_file(&src.join("shard-02.dat")));
    let meta = fs::metadata(&obj).unwrap();
    fs::set_permissions(&obj, fs::Permissions::from_mode(0o644)).unwrap();
    let mut data = fs::read(&obj).unwrap();
    data[7] ^= 1;
    fs::write(&obj, data).unwrap();
    let mtime = meta.modified().unwrap();
    fs::File::options()
        .write(true)
        .open(&obj)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let checked = s.tmp.path().join("checked");
    let out = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--verify-cache", "--to"])
        .arg(&checked)));
    assert_eq!(out["downloaded_bytes"], 4 * MIB);
    assert_same_tree(&src, &checked);
}

#[test]
fn two_pulls_at_once_into_one_cache_both_succeed() {
    let s = Server::start();
    let src = model(&s, 6, 8 * MIB);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let spawn = |name: &str| {
        s.cli()
            .args(["--json", "pull", "t/m", "--to"])
            .arg(s.tmp.path().join(name))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success() && b.status.success(), "{a:?}\n{b:?}");
    assert_same_tree(&src, &s.tmp.path().join("a"));
    assert_same_tree(&src, &s.tmp.path().join("b"));
    let dl = |o: &std::process::Output| {
        json(&String::from_utf8_lossy(&o.stdout))["downloaded_bytes"]
            .as_u64()
            .unwrap()
    };
    // Each object was downloaded once between them.
    assert_eq!(dl(&a) + dl(&b), 48 * MIB);
}

#[test]
fn push_skips_files_the_namespace_already_holds_but_not_across_namespaces() {
    let s = Server::start();
    let src = model(&s, 3, MIB);
    let first = json(&ok(s.cli().args(["--json", "push", "t/m"]).arg(&src)));
    assert_eq!(first["uploaded_bytes"], 3 * MIB);
    fs::write(src.join("new.txt"), b"only this is new").unwrap();
    let second = json(&ok(s.cli().args(["--json", "push", "t/other"]).arg(&src)));
    assert_eq!(second["uploaded_bytes"], 16);
    let third = json(&ok(s.cli().args(["--json", "push", "k/m"]).arg(&src)));
    assert_eq!(third["uploaded_bytes"], 3 * MIB + 16);
    // Shared blobs stay readable when one of their versions is deleted.
    ok(s.admin().args(["delete", "t/m:1"]));
    let dest = s.tmp.path().join("d");
    ok(s.cli()
        .args(["pull", "t/other", "--no-cache", "--to"])
        .arg(&dest));
    assert_same_tree(&src, &dest);
}

/// A large file the digest cache has not seen is hashed while it
/// uploads (one read; the server binds the digest it found into the
/// blob's final segment). Sent again without a cache, it goes over the
/// wire but the server keeps one copy; with `--hash-first` or a cache
/// that knows it, it is not sent at all.
#[test]
fn a_large_file_is_hashed_while_it_uploads_and_stored_once() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("big.dat"), 40 * MIB + 5, 70);
    fs::write(src.join("small.txt"), b"hashed before upload").unwrap();
    // Digests are recorded only for files last changed 2 s or more
    // before they were read (git's racily-clean rule).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let push = |name: &str, extra: &[&str]| {
        json(&ok(s
            .cli()
            .args(["--json", "push", name])
            .args(extra)
            .arg(&src)))
    };
    let first = push("t/m", &[]);
    assert_eq!(first["uploaded_bytes"], 40 * MIB + 5 + 20, "{first}");
    assert_eq!(first["hashed_bytes"], 40 * MIB + 5 + 20, "{first}");
    let dest = s.tmp.path().join("d");
    let pulled = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m", "--to"])
        .arg(&dest)));
    assert_same_tree(&src, &dest);
    assert_eq!(pulled["digest"], first["digest"]);
    // The manifest records the file's real SHA-256.
    let shown = ok(s.cli().args(["show", "t/m"]));
    let sha = vault_crypto::sha256(&fs::read(src.join("big.dat")).unwrap());
    assert!(shown.contains(&hex::encode(sha)[..16]), "{shown}");
    let objects = blob_files(&s.data_dir).len();
    assert_eq!(objects, 2);
    // The blob files once any upload the client dropped is cleaned up:
    // the server's writer removes its staging file when it sees the
    // body end, which can be just after the push returns. A second
    // stored copy would still be there after the deadline.
    let settled = || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let files = blob_files(&s.data_dir);
            if files.len() == objects || Instant::now() > deadline {
                return files;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // No cache: the file is hashed while it uploads. Whichever ends
    // first (on loopback, a race), it is stored once.
    let again = push("t/other", &["--no-cache"]);
    let sent = again["uploaded_bytes"].as_u64().unwrap();
    assert!(sent == 0 || sent == 40 * MIB + 5, "{again}");
    let files = settled();
    assert_eq!(files.len(), objects, "{files:?}");
    // On a slow link the hash ends first: the server, told the digest,
    // points the file at the blob it holds and the upload stops.
    let t0 = std::time::Instant::now();
    let slow = push("t/slow", &["--no-cache", "--limit-rate", "4M"]);
    assert_eq!(slow["uploaded_bytes"], 0, "{slow}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(6),
        "40 MiB at 4 MiB/s would take 10 s: {:?}",
        t0.elapsed()
    );
    let files = settled();
    assert_eq!(files.len(), objects, "{files:?}");
    // The upload that ends first: the server finds the digest itself and
    // keeps the blob it held (driven by hand to fix the order).
    let big = fs::read(src.join("big.dat")).unwrap();
    let open = serde_json::json!({"name": "t/by-hand", "kind": "model",
        "files": [{"path": "big.dat", "size": big.len(), "sha256": ""}]});
    let (code, text) = skeleton::curl(&s, "POST", "/v1/uploads", Some(open.to_string().as_bytes()));
    assert_eq!(code, 200, "{text}");
    let id = json(&text)["session_id"].as_str().unwrap().to_owned();
    // Bad declarations are refused and change nothing.
    for (path, body, want) in [
        ("0", r#"{"sha256": "not-hex"}"#.to_owned(), 400),
        ("0", format!(r#"{{"sha256": "{}"}}"#, "AB".repeat(32)), 400),
        ("0", "{}".to_owned(), 400),
        ("7", format!(r#"{{"sha256": "{}"}}"#, hex::encode(sha)), 404),
    ] {
        let (code, text) = skeleton::curl(
            &s,
            "POST",
            &format!("/v1/uploads/{id}/files/{path}/digest"),
            Some(body.as_bytes()),
        );
        assert_eq!(code, want, "{body}: {text}");
    }
    let stranger = s.create_token("eve", "trainer", &["t"], None);
    let declare = format!(r#"{{"sha256": "{}"}}"#, hex::encode(sha));
    let (code, _) = skeleton::curl_as(
        &s,
        &stranger,
        "POST",
        &format!("/v1/uploads/{id}/files/0/digest"),
        Some(declare.as_bytes()),
    );
    assert_eq!(code, 404, "another principal's session");
    let (code, text) = skeleton::curl(&s, "PUT", &format!("/v1/uploads/{id}/files/0"), Some(&big));
    assert_eq!(code, 200, "{text}");
    assert_eq!(json(&text)["sha256"], hex::encode(sha).as_str());
    assert_eq!(blob_files(&s.data_dir).len(), objects);
    // The digest is known now: declaring it again changes nothing.
    let declare = serde_json::json!({"sha256": hex::encode(sha)}).to_string();
    let (code, text) = skeleton::curl(
        &s,
        "POST",
        &format!("/v1/uploads/{id}/files/0/digest"),
        Some(declare.as_bytes()),
    );
    assert_eq!((code, json(&text)["held"].as_bool()), (200, Some(false)));
    // Hashed first: not sent.
    let first_hashed = push("t/third", &["--no-cache", "--hash-first"]);
    assert_eq!(first_hashed["uploaded_bytes"], 0, "{first_hashed}");
    // The cache recorded the digest found while uploading (the file was
    // written long enough before it was read): not read, not sent.
    let cached = push("t/fourth", &[]);
    assert_eq!(cached["hashed_bytes"], 0, "{cached}");
    assert_eq!(cached["uploaded_bytes"], 0, "{cached}");
    for r in ["t/other", "t/slow", "t/third", "t/fourth"] {
        let d = s.tmp.path().join(r.replace('/', "-"));
        ok(s.cli().args(["pull", r, "--no-cache", "--to"]).arg(&d));
        assert_same_tree(&src, &d);
    }
}

/// Dedup answers "the namespace holds this content", so it is offered
/// only to a principal that may pull what it pushes, and never across
/// sensitivity labels. A trainer may push a `raw-pii` dataset but not
/// read one, and may read unlabelled data of the same namespace: in
/// neither case are its files (the small one hashed first, the large one
/// declared while it uploads) taken from what a steward stored as
/// `raw-pii`; each is sent and stored anew.
#[test]
fn dedup_is_not_offered_to_a_principal_that_may_not_pull_there() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("records.dat"), 40 * MIB, 71);
    fs::write(src.join("schema.json"), b"{}").unwrap();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let trainer = s.create_token("ml", "trainer", &["hr"], None);
    let push = |token: &str, name: &str, label: &[&str]| {
        json(&ok(s
            .cli_with_token(token)
            .args(["--json", "push", "--no-cache", "--kind", "dataset"])
            .args(label)
            .args(["--limit-rate", "8M", name])
            .arg(&src)))
    };
    let pii = &["--sensitivity", "raw-pii"][..];
    let first = push(&steward, "hr/people", pii);
    assert_eq!(first["uploaded_bytes"], 40 * MIB + 2, "{first}");
    let objects = blob_files(&s.data_dir).len();
    let copy = push(&trainer, "hr/copy", pii);
    assert_eq!(copy["uploaded_bytes"], 40 * MIB + 2, "{copy}");
    assert_eq!(blob_files(&s.data_dir).len(), objects + 2);
    let plain = push(&trainer, "hr/plain", &[]);
    assert_eq!(plain["uploaded_bytes"], 40 * MIB + 2, "{plain}");
    assert_eq!(blob_files(&s.data_dir).len(), objects + 4);
    // Within a label, for a principal that may read it, dedup works:
    // the steward's re-push sends nothing (the large file's digest is
    // declared while the throttled upload runs), and so does the
    // trainer's re-push of its unlabelled copy.
    let again = push(&steward, "hr/people", pii);
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    let plain_again = push(&trainer, "hr/plain-2", &[]);
    assert_eq!(plain_again["uploaded_bytes"], 0, "{plain_again}");
    assert_eq!(blob_files(&s.data_dir).len(), objects + 4);
}

/// Dedup is no read oracle (issue #21): content is reused only for a
/// caller that may already read it, as the same kind under the same
/// label. A trainer that labels a *model* `raw-pii` and names the
/// content of a steward's raw-PII dataset must send the bytes and may
/// not read its own model back; a steward naming a model's weights in
/// a dataset must send them too.
#[test]
fn dedup_never_crosses_kinds_or_reads_the_caller_lacks() {
    let s = Server::start();
    let raw = s.tmp.path().join("raw");
    random_file(&raw.join("people.csv"), 3 * MIB, 81);
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let trainer = s.create_token("ml", "trainer", &["hr"], None);
    let push = |token: &str, name: &str, args: &[&str], dir: &std::path::Path| {
        json(&ok(s
            .cli_with_token(token)
            .args(["--json", "push", "--no-cache"])
            .args(args)
            .arg(name)
            .arg(dir)))
    };
    let first = push(
        &steward,
        "hr/people",
        &["--kind", "dataset", "--sensitivity", "raw-pii"],
        &raw,
    );
    assert_eq!(first["uploaded_bytes"], 3 * MIB, "{first}");
    let objects = blob_files(&s.data_dir).len();
    let model = push(
        &trainer,
        "hr/not-a-model",
        &["--kind", "model", "--sensitivity", "raw-pii"],
        &raw,
    );
    assert_eq!(model["uploaded_bytes"], 3 * MIB, "reused raw PII: {model}");
    assert_eq!(blob_files(&s.data_dir).len(), objects + 1);
    // The raw-PII guard holds for every kind.
    fails_with(
        s.cli_with_token(&trainer)
            .args(["pull", "hr/not-a-model", "--to"])
            .arg(s.tmp.path().join("stolen")),
        3,
    );
    // A steward may not read models: their weights are not reused either.
    let weights = s.tmp.path().join("weights");
    random_file(&weights.join("model.dat"), 2 * MIB, 82);
    push(&trainer, "hr/detector", &["--kind", "model"], &weights);
    let copy = push(
        &steward,
        "hr/weights-as-data",
        &["--kind", "dataset"],
        &weights,
    );
    assert_eq!(
        copy["uploaded_bytes"],
        2 * MIB,
        "reused a model it may not read: {copy}"
    );
    // The same kind, label and a readable artifact still deduplicate.
    let again = push(&trainer, "hr/detector-2", &["--kind", "model"], &weights);
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
}

/// A blob is bound to its namespace at read time (issue #21): a
/// metadata record edited (no key needed) to point a `fin` version at
/// an `hr` raw-PII blob of the same size is refused as an integrity
/// failure (exit 5) before a byte is sent, logged and audited.
#[test]
fn a_version_pointed_at_another_namespaces_blob_is_an_integrity_error() {
    let mut s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    let trainer = s.create_token("ml", "trainer", &["fin"], None);
    let hr = s.tmp.path().join("hr");
    random_file(&hr.join("people.csv"), MIB, 91);
    ok(s.cli_with_token(&steward)
        .args([
            "push",
            "hr/people",
            "--kind",
            "dataset",
            "--sensitivity",
            "raw-pii",
        ])
        .arg(&hr));
    let fin = s.tmp.path().join("fin");
    random_file(&fin.join("notes.csv"), MIB, 92);
    ok(s.cli_with_token(&trainer)
        .args(["push", "fin/notes", "--kind", "dataset"])
        .arg(&fin));
    s.terminate();
    {
        use redb::{ReadableDatabase, TableDefinition};
        const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");
        let db = redb::Database::open(s.data_dir.join("meta.redb")).unwrap();
        let key = |n: &str| format!("{n}\0{:020}", 1);
        let read = |n: &str| -> serde_json::Value {
            let tx = db.begin_read().unwrap();
            let t = tx.open_table(VERSIONS).unwrap();
            serde_json::from_slice(t.get(key(n).as_str()).unwrap().unwrap().value()).unwrap()
        };
        let hr_blob = read("hr/people")["files"][0]["blob"].clone();
        let mut forged = read("fin/notes");
        forged["files"][0]["blob"] = hr_blob;
        let tx = db.begin_write().unwrap();
        tx.open_table(VERSIONS)
            .unwrap()
            .insert(key("fin/notes").as_str(), forged.to_string().as_bytes())
            .unwrap();
        tx.commit().unwrap();
    }
    s.restart();
    let dest = s.tmp.path().join("stolen");
    let err = fails_with(
        s.cli_with_token(&trainer)
            .args(["pull", "fin/notes", "--no-cache", "--to"])
            .arg(&dest),
        5,
    );
    assert!(err.contains("not bound to its stored blob"), "{err}");
    assert!(!dest.join("notes.csv").exists());
    let audit = fs::read_to_string(s.data_dir.join("audit/audit.log")).unwrap();
    assert!(audit.contains("\"integrity\""), "not audited");
    assert!(s.log_text().contains("points at a blob of another context"));
}

/// `--limit-rate` paces push and pull: 4 MiB at 2 MiB/s cannot take
/// less than 1.5 s either way (the first chunk goes at once), and the
/// bytes arrive intact.
#[test]
fn limit_rate_paces_push_and_pull() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("w.dat"), 4 * MIB, 72);
    let t0 = std::time::Instant::now();
    ok(s.cli()
        .args(["push", "--no-cache", "--limit-rate", "2M", "t/paced"])
        .arg(&src));
    let push = t0.elapsed();
    let dest = s.tmp.path().join("d");
    let t0 = std::time::Instant::now();
    ok(s.cli()
        .args([
            "pull",
            "--no-cache",
            "--limit-rate",
            "2M",
            "t/paced",
            "--to",
        ])
        .arg(&dest));
    let pull = t0.elapsed();
    assert_same_tree(&src, &dest);
    let floor = std::time::Duration::from_millis(1500);
    assert!(
        push >= floor && pull >= floor,
        "push {push:?}, pull {pull:?}"
    );
    fails_with(
        s.cli()
            .args(["pull", "--limit-rate", "fast", "t/paced", "--to"])
            .arg(&dest),
        2,
    );
}

/// Blob data round-trips whichever I/O path moves it: the server reading
/// through the page cache (`page_cache_reads`) or directly, and the CLI
/// writing buffered (the default) or directly (`MLVAULT_DIRECT_IO=on`). Sizes
/// straddle the 4 KiB alignment and the write block sizes.
#[test]
fn every_io_path_round_trips_the_same_bytes() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    fs::write(cfg.path(), "[storage]\npage_cache_reads = true\n").unwrap();
    for extra in [&[][..], &["--config", cfg.path().to_str().unwrap()][..]] {
        let s = Server::start_with(extra);
        let src = s.tmp.path().join("src");
        for (i, size) in [0u64, 1, 4095, 4097, 2 * MIB + 1, 9 * MIB + 4096 + 3]
            .into_iter()
            .enumerate()
        {
            random_file(&src.join(format!("f{i}.dat")), size, 40 + i as u64);
        }
        ok(s.cli().args(["push", "t/io"]).arg(&src));
        for direct in ["on", "auto", "off"] {
            let dest = s.tmp.path().join(format!("dest-{direct}"));
            ok(s.cli()
                .env("MLVAULT_DIRECT_IO", direct)
                .args(["pull", "t/io", "--no-cache", "--to"])
                .arg(&dest));
            assert_same_tree(&src, &dest);
        }
    }
}

/// Push reads only files that changed since the last push: unchanged
/// ones reuse their recorded digest (device, inode, size, mtime and
/// ctime all match). New bytes written under the same size and a
/// restored mtime are still found (ctime moved), and a file changed
/// moments before hashing is never recorded, so the next push reads it
/// again.
#[test]
fn push_rehashes_only_changed_files() {
    let s = Server::start();
    let src = model(&s, 3, MIB);
    // Older than the racy window, so the first push records digests.
    std::thread::sleep(Duration::from_millis(2100));
    let push = |extra: &[&str]| {
        let mut c = s.cli();
        c.args(["--json", "push", "t/m"]).args(extra).arg(&src);
        json(&ok(&mut c))
    };
    let first = push(&[]);
    assert_eq!(first["hashed_bytes"], 3 * MIB);
    let again = push(&[]);
    assert_eq!(again["hashed_bytes"], 0, "{again}");
    assert_eq!(again["uploaded_bytes"], 0, "{again}");
    // Same size, mtime put back: only the ctime tells.
    let shard = src.join("shard-01.dat");
    let mtime = fs::metadata(&shard).unwrap().modified().unwrap();
    random_file(&shard, MIB, 777);
    fs::File::options()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = push(&[]);
    assert_eq!(changed["hashed_bytes"], MIB, "{changed}");
    assert_eq!(changed["uploaded_bytes"], MIB, "{changed}");
    let dest = s.tmp.path().join("d");
    ok(s.cli()
        .args(["pull", "t/m", "--no-cache", "--to"])
        .arg(&dest));
    assert_same_tree(&src, &dest);
    // Changed just now: hashed, but not recorded (racy), so hashed again.
    let racy = push(&[]);
    assert_eq!(racy["hashed_bytes"], MIB, "{racy}");
    // --no-cache hashes everything.
    let all = push(&["--no-cache"]);
    assert_eq!(all["hashed_bytes"], 3 * MIB, "{all}");
    // A cache others may write to could hold planted records: push
    // ignores it (and hashes), pull refuses it.
    let cache = s.tmp.path().join("client-cache");
    std::thread::sleep(Duration::from_millis(2100));
    push(&[]); // records shard-01, now out of the racy window
    let again = push(&[]);
    assert_eq!(again["hashed_bytes"], 0, "{again}");
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
    let open = push(&[]);
    assert_eq!(open["hashed_bytes"], 3 * MIB, "{open}");
    let out = run(s
        .cli()
        .args(["pull", "t/m", "--to"])
        .arg(s.tmp.path().join("d2")));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(!s.tmp.path().join("d2/shard-00.dat").exists());
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();
    let private = push(&[]);
    assert_eq!(private["hashed_bytes"], 0, "{private}");
}
