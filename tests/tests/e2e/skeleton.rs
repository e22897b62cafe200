//! Push and pull byte for byte, directory trees, versions, unsafe paths.

use super::*;

#[test]
fn push_and_pull_a_64_mib_file_byte_for_byte() {
    let s = Server::start();
    let src = s.tmp.path().join("src");
    random_file(&src.join("weights.dat"), 64 * MIB, 1);
    let out = json(&ok(s
        .cli()
        .args(["--json", "push", "fraud/detector"])
        .arg(src.join("weights.dat"))));
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
    random_file(&src.join("weights/part-0.dat"), 3 * MIB + 17, 2);
    random_file(&src.join("weights/deep/er/part-1.dat"), MIB, 3);
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
    // Given a full name, the listing shows each version in a row.
    let human = ok(s.cli().args(["ls", "team/model"]));
    let rows: Vec<&str> = human
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("VERSION"))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 3, "{human}");
    for (row, v) in rows.iter().zip(ls[0]["versions"].as_array().unwrap()) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], v["version"].to_string(), "{human}");
        assert_eq!(cols.last(), Some(&v["digest"].as_str().unwrap()), "{human}");
    }
    // A prefix lists artifacts only.
    let human = ok(s.cli().args(["ls", "team/"]));
    assert!(!human.contains("VERSION "), "{human}");
    let show = json(&ok(s.cli().args(["--json", "show", "team/model:2"])));
    assert_eq!(show["ref"], "team/model:2");
    let files = show["manifest"]["predicate"]["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "config.json",
            "empty.txt",
            "weights/deep/er/part-1.dat",
            "weights/part-0.dat"
        ]
    );
    let human = ok(s.cli().args(["show", "team/model"]));
    assert!(human.contains("team/model:3"), "{human}");
    // People read a UTC date; --json keeps the Unix seconds.
    let created = human
        .lines()
        .find_map(|l| l.strip_prefix("created  "))
        .unwrap_or_default();
    assert!(
        created.len() == 20 && created.starts_with("20") && created.ends_with('Z'),
        "{human}"
    );
    assert!(show["manifest"]["predicate"]["created"].is_u64(), "{show}");
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
    fs::write(src.join("weights.dat"), &data).unwrap();
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
    random_file(&src.join("w.dat"), 12 * MIB + 5, 9);
    ok(s.cli().args(["push", "t/m"]).arg(&src));
    let blobs = blob_files(&s.data_dir);
    assert_eq!(blobs.len(), 1);
    let blob = &blobs[0];
    let len = fs::metadata(blob).unwrap().len();
    // In the header, in the first segment (checked before the server
    // answers), and in later segments (found while streaming: the
    // response is cut, the client resumes and gets the error answer).
    for offset in [20, 400, len / 2, len - 100] {
        let original = fs::read(blob).unwrap();
        flip_byte(blob, offset);
        let dest = s.tmp.path().join(format!("dest-{offset}"));
        let err = fails_with(s.cli().args(["pull", "t/m", "--to"]).arg(&dest), 5);
        assert!(err.contains("integrity"), "{err}");
        assert!(
            !dest.join("w.dat").exists(),
            "unverified file reached the destination"
        );
        let left: Vec<String> = if dest.exists() { tree(&dest) } else { vec![] };
        assert!(left.is_empty(), "files left behind: {left:?}");
        fs::write(blob, original).unwrap();
    }
    // A blob gone from the store is the server's data loss, not a
    // missing version: exit 5, said without the server's file paths.
    let saved = blob.with_extension("saved");
    fs::rename(blob, &saved).unwrap();
    let dest = s.tmp.path().join("dest-missing");
    let err = fails_with(s.cli().args(["pull", "t/m", "--to"]).arg(&dest), 5);
    assert!(err.contains("missing from the blob store"), "{err}");
    assert!(!err.contains(s.data_dir.to_str().unwrap()), "{err}");
    assert!(!dest.join("w.dat").exists());
    fs::rename(&saved, blob).unwrap();
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
    random_file(&src.join("sub/w.dat"), 1000, 4);
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
    let f = s.tmp.path().join("w.dat");
    random_file(&f, 2 * MIB, 5);
    let body = fs::read(&f).unwrap();
    let open = serde_json::json!({
        "name": "t/m", "kind": "model",
        "files": [{"path": "w.dat", "size": body.len(), "sha256": "00".repeat(32)}]
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
    curl_as(s, &s.token, method, path, body)
}

/// [`curl`] with another principal's token.
pub fn curl_as(
    s: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> (u16, String) {
    let tmp = s.tmp.path().join("curl-body");
    let mut c = std::process::Command::new("curl");
    c.args([
        "-s",
        "--http1.1",
        "-o",
        "/dev/stdout",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
    ])
    .arg("--cacert")
    .arg(&test_tls().0)
    .arg("-H")
    .arg(format!("Authorization: Bearer {token}"))
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
#[test]
fn a_newer_version_pulled_over_an_older_one_leaves_none_of_its_files() {
    let s = Server::start();
    let (v1, v2) = (s.tmp.path().join("v1"), s.tmp.path().join("v2"));
    for (dir, files) in [
        (&v1, &["a.dat", "old-shard.dat", "sub/deep/gone.dat"][..]),
        (&v2, &["a.dat", "new-shard.dat"][..]),
    ] {
        for (i, f) in files.iter().enumerate() {
            fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
            random_file(
                &dir.join(f),
                3000 + i as u64,
                i as u64 + dir.as_os_str().len() as u64,
            );
        }
    }
    ok(s.cli().args(["push", "t/m"]).arg(&v1));
    ok(s.cli().args(["push", "t/m"]).arg(&v2));
    let dest = s.tmp.path().join("models");
    ok(s.cli().args(["pull", "t/m:1", "--to"]).arg(&dest));
    assert_same_tree(&v1, &dest);
    let pulled = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m:2", "--to"])
        .arg(&dest)));
    assert_eq!(pulled["version"], 2);
    assert_eq!(
        pulled["removed_files"],
        serde_json::json!(["old-shard.dat", "sub/deep/gone.dat"])
    );
    assert_same_tree(&v2, &dest);
    assert!(!dest.join("sub").exists(), "emptied folders are removed");
    ok(s.cli().arg("verify").arg(&dest));

    // Back to version 1 with a file of version 2 edited: the edited file
    // is not the vault's to delete; the pull keeps it and says so.
    fs::write(dest.join("new-shard.dat"), b"edited").unwrap();
    // `fails_with(_, 0)`: succeeds, and hands back what it said on stderr.
    let err = fails_with(s.cli().args(["pull", "t/m:1", "--to"]).arg(&dest), 0);
    assert!(
        err.contains("kept 1 file of t/m:2") && err.contains("new-shard.dat"),
        "{err}"
    );
    // `verify` reports what is not in the manifest, as it would a file
    // slipped in beside a model for a loader to run.
    let verify_problems = |code| {
        let mut c = s.cli();
        c.args(["--json", "verify"]).arg(&dest);
        let out = run(&mut c);
        assert_eq!(out.status.code(), Some(code), "{out:?}");
        json(&String::from_utf8_lossy(&out.stdout))["problems"].clone()
    };
    assert_eq!(
        verify_problems(5),
        serde_json::json!(["`new-shard.dat`: not in the manifest"])
    );
    fs::remove_file(dest.join("new-shard.dat")).unwrap();
    fs::write(dest.join("modeling_extra.py"), b"import os").unwrap();
    assert_eq!(
        verify_problems(5),
        serde_json::json!(["`modeling_extra.py`: not in the manifest"])
    );
    fs::remove_file(dest.join("modeling_extra.py")).unwrap();
    assert_eq!(verify_problems(0), serde_json::json!([]));
    assert_same_tree(&v1, &dest);

    // A first pull into a folder that holds other files says so (it
    // does not walk a folder no pull wrote) and leaves them alone.
    let mixed = s.tmp.path().join("mixed");
    fs::create_dir_all(&mixed).unwrap();
    fs::write(mixed.join("own.txt"), b"mine").unwrap();
    let err = fails_with(s.cli().args(["pull", "t/m:2", "--to"]).arg(&mixed), 0);
    assert!(err.contains("held other files before this pull"), "{err}");
    assert_eq!(fs::read(mixed.join("own.txt")).unwrap(), b"mine");
    let err = fails_with(s.cli().arg("verify").arg(&mixed), 5);
    assert!(err.contains("1 problem"), "{err}");

    // A folder of version 1 swapped for a symlink to elsewhere, holding
    // a file of the same name and size: the removal never follows it.
    let swapped = s.tmp.path().join("swapped");
    ok(s.cli().args(["pull", "t/m:1", "--to"]).arg(&swapped));
    let elsewhere = s.tmp.path().join("elsewhere");
    copy_tree(&swapped.join("sub"), &elsewhere);
    fs::remove_dir_all(swapped.join("sub")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, swapped.join("sub")).unwrap();
    let pulled = json(&ok(s
        .cli()
        .args(["--json", "pull", "t/m:2", "--to"])
        .arg(&swapped)));
    assert_eq!(
        pulled["removed_files"],
        serde_json::json!(["old-shard.dat"])
    );
    assert_eq!(
        sha256_file(&elsewhere.join("deep/gone.dat")),
        sha256_file(&v1.join("sub/deep/gone.dat"))
    );
    // The link itself is what `verify` reports.
    let mut c = s.cli();
    c.args(["--json", "verify"]).arg(&swapped);
    let out = run(&mut c);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(
        json(&String::from_utf8_lossy(&out.stdout))["problems"],
        serde_json::json!(["`sub`: not in the manifest"])
    );
}
