//! `vault-server`: the mlvault HTTP server. `main` only parses arguments and
//! turns the command's result into an exit code; the work is in the
//! `vault_server` library.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use vault_server::{cli, command, exit};

fn main() -> ExitCode {
    // Two malloc arenas instead of glibc's default of eight per core: pulls
    // move 1 MiB segment buffers between the async workers and the blocking
    // file readers, and spread over many arenas freed buffers stay
    // resident (measurements: docs/performance.md, "Allocator arenas").
    // `MALLOC_ARENA_MAX` still overrides it.
    vault_malloc::tune(Some(2));
    // Two rustls crypto providers can end up linked; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Everything the server creates (data directory, metadata, audit log,
    // blobs) is private to its user; `run` refuses a data directory that
    // is not.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let args = cli::Cli::parse();
    command::init_logging(args.log_json);
    match command::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-server: {e:#}");
            ExitCode::from(exit::code_for(&e))
        }
    }
}
