//! The `vault-cli` binary's argument contract and offline behaviour.

use std::process::Command;

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vault-cli"));
    c.env_remove("MLVAULT_TOKEN").env_remove("MLVAULT_ADDR");
    c
}

/// The CLI pointed at loopback port 9, where nothing listens.
fn cli_without_server() -> Command {
    let mut c = cli();
    c.args(["--addr", "http://127.0.0.1:9"])
        .env("MLVAULT_TOKEN", "x");
    c
}

#[test]
fn invalid_reference_is_a_usage_error() {
    for bad in ["NoNamespace", "a/b:0", "a/../b", "a/b@sha256:zz"] {
        let out = cli().args(["pull", bad, "--to", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
    }
}

#[test]
fn unreachable_server_exits_7() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli_without_server()
        .args(["pull", "a/b", "--to"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:9") && err.contains("--addr"),
        "{err}"
    );
}

#[test]
fn verify_of_a_directory_without_manifest_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli().arg("verify").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no mlvault manifest"));
}

#[test]
fn a_local_io_failure_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-model");
    let out = cli_without_server()
        .args(["push", "a/b"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no-such-model"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn push_refuses_a_tree_with_a_symlink_or_a_name_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("model");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/w.bin"), b"weights").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("sub/link")).unwrap();
    let push = || {
        cli_without_server()
            .args(["push", "a/b"])
            .arg(&tree)
            .output()
            .unwrap()
    };
    // Refused before any request: exit 2, not 7 (nothing listens there).
    let out = push();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(tree.join("sub/link")).unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"w\xff.bin");
    std::fs::write(tree.join("sub").join(bad), b"x").unwrap();
    let out = push();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not UTF-8"));
}

/// The commands a `--help` lists, without `help`.
fn commands(bin: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect()
}

/// docs/cli.md is the command contract: every command and subcommand of
/// both binaries is on it.
#[test]
fn docs_cli_names_every_command() {
    // Where cargo runs the test from (a cached build may have been compiled
    // in another checkout).
    let here = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let doc = std::fs::read_to_string(std::path::Path::new(&here).join("../docs/cli.md"))
        .expect("docs/cli.md");
    let cli = env!("CARGO_BIN_EXE_vault-cli");
    let top = commands(cli, &[]);
    assert!(top.len() > 10, "{top:?}");
    for c in &top {
        let subs = commands(cli, &[c]);
        if subs.is_empty() {
            assert!(
                doc.contains(&format!("vault-cli {c}")),
                "docs/cli.md lacks `vault-cli {c}`"
            );
        }
        for s in subs {
            assert!(
                doc.contains(&format!("{c} {s}")),
                "docs/cli.md lacks `vault-cli {c} {s}`"
            );
        }
    }
    // vault-server is another package, not built by `cargo test -p
    // vault-cli`: its commands are listed here (`vault-server --help`).
    for c in ["init", "run", "dev", "fsck"] {
        assert!(
            doc.contains(&format!("vault-server {c}")),
            "docs/cli.md lacks `vault-server {c}`"
        );
    }
}

/// A safetensors file holding one F32 tensor of `n` elements.
fn safetensors(n: u64) -> Vec<u8> {
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        n * 4
    );
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend(std::iter::repeat_n(0u8, (n * 4) as usize));
    f
}

#[test]
fn scan_passes_a_model_folder_and_refuses_a_renamed_pickle_and_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("model.safetensors"), safetensors(16)).unwrap();
    std::fs::write(model.join("config.json"), br#"{"hidden_size": 4}"#).unwrap();
    let out = cli().args(["--json", "scan"]).arg(&model).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "pass", "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 2, "{v}");

    // A pickle (protocol 4) named as safetensors.
    let evil = dir.path().join("evil");
    std::fs::create_dir(&evil).unwrap();
    std::fs::write(
        evil.join("model.safetensors"),
        b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00N.",
    )
    .unwrap();
    let out = cli().arg("scan").arg(&evil).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("extension.mismatch") && text.contains("(pickle)"),
        "{text}"
    );
    // A link is not followed.
    std::fs::remove_file(evil.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        model.join("model.safetensors"),
        evil.join("link.safetensors"),
    )
    .unwrap();
    let out = cli().arg("scan").arg(&evil).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("symlink"));
    // Nor is a FIFO read (or skipped): it is refused.
    std::fs::remove_file(evil.join("link.safetensors")).unwrap();
    let fifo = evil.join("pipe.safetensors");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = cli().arg("scan").arg(&evil).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not a regular file"));
}
