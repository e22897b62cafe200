//! End-to-end: the real `vault-server` on loopback, driven by the real
//! `vault-cli`, checked through the files on disk.

use std::fs;

use vault_tests::*;

const MIB: u64 = 1 << 20;

// One module per topic; each file says what it covers.
mod access;
mod admission;
mod connections;
mod gates;
mod insider;
mod jobs;
mod keys;
mod memory;
mod observe;
mod postgres;
mod reliability;
mod s3;
mod signing;
mod skeleton;
mod tamper;
mod terminal;
mod transfer;

/// GET `path` over HTTPS/1.1 with curl: (status, head, body).
fn observe_https(s: &Server, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "--http1.1", "-D", "-", "--cacert"])
        .arg(&test_tls().0);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = c.arg(format!("{}{path}", s.addr)).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}
