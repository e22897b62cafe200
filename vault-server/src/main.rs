//! `vault-server`: the mlvault HTTP server. `main` only parses arguments and
//! turns the command's result into an exit code; the work is in `command/`.
#![forbid(unsafe_code)]

mod api;
mod cli;
mod command;
mod config;
mod exit;
mod guard;
mod jobs;
mod metrics_setup;
mod storage;
mod tokens;
mod vault;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Two rustls crypto providers can end up linked; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
