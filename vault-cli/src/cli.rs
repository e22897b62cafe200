//! Arguments: the contract of CLI.md.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mlvault client: push model weights and datasets into the vault and pull
/// them back, verified byte for byte.
///
/// Exit codes: 0 ok, 1 other failure, 2 usage, 3 not authenticated or not
/// authorized, 4 not found, 5 integrity failure, 6 rate limited,
/// 7 server unreachable or unavailable.
#[derive(Parser, Debug)]
#[command(name = "vault-cli", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Server URL.
    #[arg(
        long,
        global = true,
        env = "MLVAULT_ADDR",
        default_value = "http://127.0.0.1:7450"
    )]
    pub addr: String,
    /// Bearer token.
    #[arg(
        long,
        global = true,
        env = "MLVAULT_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// Read the bearer token from FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Print one machine-readable JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing on success.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// PEM file of a private CA to trust for https:// servers.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push a file or directory tree as a new version of REF (`ns/name`).
    Push(PushArgs),
    /// Pull REF into a directory; every file is verified before it appears.
    Pull(PullArgs),
    /// Re-check a pulled directory against the manifest stored in it.
    Verify(VerifyArgs),
    /// List artifacts and their versions.
    Ls(LsArgs),
    /// Show a version's manifest summary.
    Show(RefArgs),
    /// Delete a version; its blobs' keys are destroyed (crypto-shredding).
    Delete(RefArgs),
    /// Key ring administration.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Artifact name, `namespace/name`.
    pub reference: String,
    /// File or directory to push.
    pub path: PathBuf,
    /// Artifact kind.
    #[arg(long, default_value = "model", value_parser = ["model", "dataset"])]
    pub kind: String,
    /// Record a parent manifest digest (`sha256:…`) as lineage; repeatable.
    #[arg(long = "parent", value_name = "DIGEST")]
    pub parents: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// `ns/name`, `ns/name:VERSION`, `ns/name:ALIAS` or `ns/name@sha256:HEX`.
    pub reference: String,
    /// Destination directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Accept an alias that moved back to an older version.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A directory written by `vault-cli pull`.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names starting with PREFIX.
    #[arg(default_value = "")]
    pub prefix: String,
}

#[derive(Args, Debug)]
pub struct RefArgs {
    /// `ns/name:VERSION`, `ns/name@sha256:HEX` (show also takes a bare name or alias).
    pub reference: String,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Show KEK versions and how many blobs each wraps.
    Status,
    /// Add a KEK version; new blobs use it.
    Rotate,
    /// Rewrap every DEK under the newest KEK (blob bytes untouched; resumable).
    Rewrap,
    /// Refuse KEK versions below VERSION from now on (after a rewrap).
    Retire {
        /// New minimum decryption version.
        #[arg(value_name = "VERSION")]
        min_version: u32,
    },
}
