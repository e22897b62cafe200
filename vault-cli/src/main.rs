//! `vault-cli`: push and pull mlvault artifacts, verified. `main` turns the
//! result of `run` into the exit codes documented in CLI.md.
#![forbid(unsafe_code)]

mod cli;
mod command;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Two malloc arenas, as in the server: a pull of eight 256 MiB files,
    // four at a time, peaked at 52-59 MiB of RSS with two and 62-77 MiB
    // with glibc's default (eight per core), in the same time.
    vault_directio::tune_allocator(Some(2));
    // Two rustls crypto providers can end up linked; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    let result = command::run(args);
    if std::env::var_os("MLVAULT_REPORT_PEAK_RSS").is_some() {
        report_peak_rss();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-cli: {e:#}");
            ExitCode::from(command::exit_code(&e))
        }
    }
}

/// Print this process's peak resident memory (`VmHWM`) on stderr, for the
/// memory tests and benchmarks.
fn report_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(v) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
        eprintln!("peak-rss-kib: {}", v.trim().trim_end_matches("kB").trim());
    }
}
