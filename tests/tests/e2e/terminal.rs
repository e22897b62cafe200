//! What reaches a terminal, and names that could pass for others.

use super::*;

/// Text a user or a server chose never reaches the terminal raw: an
/// escape sequence in a job spec's column name comes back in the
/// server's error and is printed escaped.
#[test]
fn escape_codes_from_the_server_are_printed_escaped() {
    let s = Server::start();
    let steward = s.create_token("dpo", "steward", &["hr"], None);
    s.push_dataset(&steward, "hr/t", "a.csv", b"a\n1\n", &[]);
    let spec = s.tmp.path().join("spec.toml");
    fs::write(
        &spec,
        "format = \"csv\"\nkeep = [\"a\"]\n[[columns]]\nname = \"\\u001b]0;pwned\\u0007\\u202e\"\ntransform = \"drop\"\n",
    )
    .unwrap();
    let out = run(s
        .cli_with_token(&steward)
        .args(["anonymize", "hr/t:1", "--to", "hr/o", "--spec"])
        .arg(&spec));
    assert_eq!(out.status.code(), Some(1));
    let err = &out.stderr;
    assert!(
        !err.contains(&0x1b) && !err.contains(&0x07),
        "{}",
        String::from_utf8_lossy(err)
    );
    let text = String::from_utf8_lossy(err);
    assert!(
        text.contains("\\u{001b}]0;pwned\\u{0007}\\u{202e}"),
        "{text}"
    );
}

/// File paths that would display as something else (bidi overrides,
/// invisible and line-separator characters) are refused by the server
/// from a raw API call, and by the CLI before it sends anything.
#[test]
fn names_with_bidi_or_invisible_characters_are_refused() {
    let s = Server::start();
    for path in [
        "report-\u{202e}vsc.exe",
        "a\u{2028}b.dat",
        "zero\u{200b}w.dat",
    ] {
        let body = serde_json::json!({
            "name": "t/spoof",
            "kind": "model",
            "files": [{"path": path, "size": 1, "sha256": ""}],
        });
        let (code, text) = super::skeleton::curl_as(
            &s,
            &s.token,
            "POST",
            "/v1/uploads",
            Some(body.to_string().as_bytes()),
        );
        assert_eq!(code, 400, "{text}");
        assert!(
            text.contains("bidi control, invisible or line-separator"),
            "{text}"
        );
    }
    let dir = s.tmp.path().join("src");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("weights-\u{202e}nib.exe"), b"x").unwrap();
    let err = fails_with(s.cli().args(["push", "t/spoof"]).arg(&dir), 2);
    assert!(err.contains("\\u{202e}"), "{err}");
    let log = fs::read_to_string(s.data_dir.join("audit/audit.log")).unwrap();
    assert!(
        !log.contains('\u{202e}') && !log.contains("spoof:"),
        "{log}"
    );
}

/// `vault-cli … | head` ends quietly when the reader goes away, as
/// Unix tools do; `ns/name:latest` is the newest version, as docker
/// users expect, and no alias may take that name.
#[test]
fn a_closed_pipe_ends_the_cli_quietly_and_latest_means_the_newest() {
    let s = Server::start();
    for i in 0..2 {
        s.push_dataset(
            &s.token,
            "t/m",
            "a.csv",
            format!("a\n{i}\n").as_bytes(),
            &[],
        );
    }
    let shown = json(&ok(s.cli().args(["--json", "show", "t/m:latest"])));
    assert_eq!(shown["ref"], "t/m:2", "{shown}");
    let out = run(s.cli().args(["alias", "t/m:1", "latest"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`latest` is reserved"));

    let cli = s.cli();
    let mut sh = std::process::Command::new("bash");
    sh.arg("-c")
        .arg(r#"set -o pipefail; "$0" --json ls | head -c 0"#)
        .arg(bin("vault-cli"));
    for (k, v) in cli.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let out = run(&mut sh);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_token_on_the_command_line_is_warned_about() {
    let s = Server::start();
    let out = run(std::process::Command::new(bin("vault-cli"))
        .env("MLVAULT_ADDR", &s.addr)
        .env("MLVAULT_CA_CERT", &test_tls().0)
        .env_remove("MLVAULT_TOKEN")
        .args(["--token", &s.token, "ls"]));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: a token given with --token is visible"),
        "{err}"
    );
    let quiet = run(s.cli().arg("ls"));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("warning"));
}
