//! `vault-cli`: push and pull mlvault artifacts, verified. `main` turns the
//! result of `run` into the exit codes documented in CLI.md.
#![forbid(unsafe_code)]

mod cli;
mod command;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Two rustls crypto providers can end up linked; pick ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    match command::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-cli: {e:#}");
            ExitCode::from(command::exit_code(&e))
        }
    }
}
