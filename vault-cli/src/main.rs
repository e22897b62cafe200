//! `vault-cli`: push and pull mlvault artifacts, verified. `main` turns the
//! result of `run` into the exit codes documented in docs/cli.md.
#![forbid(unsafe_code)]

/// `println!` that ends the process quietly when stdout is a closed pipe
/// (`vault-cli ls | head`), as Unix tools do, instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { $crate::stdout_write(format_args!($($t)*), true) };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($t:tt)*) => { $crate::stdout_write(format_args!($($t)*), false) };
}

mod cli;
mod command;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Two malloc arenas, as in the server (docs/performance.md,
    // "Allocator arenas").
    vault_malloc::tune(Some(2));
    // Two rustls crypto providers can end up linked; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let matches = <cli::Cli as clap::CommandFactory>::command().get_matches();
    if matches.value_source("token") == Some(clap::parser::ValueSource::CommandLine) {
        eprintln!(
            "vault-cli: warning: a token given with --token is visible to other users of this machine (ps, shell history); use --token-file FILE or MLVAULT_TOKEN"
        );
    }
    let args = match <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let result = command::run(args);
    if std::env::var_os("MLVAULT_REPORT_PEAK_RSS").is_some() {
        report_peak_rss();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-cli: {}", command::terminal_safe(&format!("{e:#}")));
            ExitCode::from(command::exit_code(&e))
        }
    }
}

/// Write to stdout; exit 0 at once if the reader has gone (a closed pipe),
/// exit 1 saying why for any other write error (a full disk).
pub fn stdout_write(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| o.flush());
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(i32::from(vault_api::ExitStatus::Ok.code()))
        }
        Err(e) => {
            eprintln!("vault-cli: cannot write to standard output: {e}");
            std::process::exit(i32::from(vault_api::ExitStatus::Failure.code()));
        }
    }
}

/// Print this process's peak resident memory (`VmHWM`) and its user and
/// system CPU seconds on stderr, for the memory tests and benchmarks (system
/// time is where a slow page cache shows).
fn report_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
        eprintln!("peak-rss-kib: {}", v.trim().trim_end_matches("kB").trim());
    }
    // Fields 14 and 15 of /proc/self/stat, after the parenthesised name, in
    // clock ticks of 1/100 s (USER_HZ on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let secs = |i: usize| fields.get(i).and_then(|t| t.parse::<u64>().ok());
    if let (Some(user), Some(sys)) = (secs(11), secs(12)) {
        eprintln!(
            "cpu-seconds: user {:.2} sys {:.2}",
            user as f64 / 100.0,
            sys as f64 / 100.0
        );
    }
}
