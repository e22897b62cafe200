//! Memory stays bounded while large artifacts move.

use super::*;

/// Neither the server nor the CLI holds a whole file in memory: a 1 GiB
/// push and pull stay far below the file size.
#[test]
fn a_1_gib_file_moves_with_flat_memory() {
    let s = Server::start();
    let src = s.tmp.path().join("big");
    random_file(&src.join("w.dat"), 1024 * MIB, 11);
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
    // The report's CPU line (the benchmark reads it): hashing 1 GiB
    // takes well over 0.1 s of user time at any SHA-256 speed here.
    let (user, sys) = reported_cpu(&out.stderr);
    assert!(user >= 0.1, "pull CPU user {user} sys {sys}");
    assert_eq!(
        sha256_file(&src.join("w.dat")),
        sha256_file(&dest.join("w.dat"))
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

fn reported_cpu(stderr: &[u8]) -> (f64, f64) {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("cpu-seconds: "))
        .unwrap_or_else(|| panic!("no CPU report in: {text}"));
    let secs = |key: &str| -> f64 {
        let mut words = line.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == key)
            .and_then(|_| words.next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{key}` in CPU report `{line}`"))
    };
    (secs("user"), secs("sys"))
}

fn reported_rss(stderr: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS report in: {text}"))
}
