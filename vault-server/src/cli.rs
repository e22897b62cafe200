//! Command-line arguments (the contract in docs/cli.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// mlvault server: stores model weights and datasets encrypted at rest,
/// serves verified pushes and pulls over HTTP.
#[derive(Parser, Debug)]
#[command(name = "vault-server", version, propagate_version = true)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (stderr).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a new vault: sealed master key, first KEK, admin token.
    Init(InitArgs),
    /// Serve the API.
    Run(RunArgs),
    /// Try mlvault in one command: init ./vault-dev-data if needed and serve on
    /// loopback. Not a production setup.
    Dev(DevArgs),
    /// Check metadata against the blob store (run while the server is
    /// stopped): orphaned objects, dangling references, stale uploads.
    Fsck(FsckArgs),
    /// Copy a single-node vault (its metadata, audit log and sealed keys)
    /// into a PostgreSQL database for replicas, and verify the copy: every
    /// version resolves, every signature and the audit chain verify. Run
    /// it with the server stopped; the source is left as it was.
    Migrate(MigrateArgs),
    /// Work with a copy of the audit log, without a running server.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check a policy folder offline.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate DIR (schema.cedarschema + *.cedar, and gates.toml when
    /// present) as `run` and a reload would; prints file:line diagnostics,
    /// and each promotion gate with its digest. Exit 0 valid, 1 not.
    Check {
        /// Policy folder.
        dir: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify an audit log offline: every hash link, sequence number and
    /// server signature, that its last entry is sealed, and that it still
    /// reaches and agrees with every checkpoint given. Exit 0 intact, 5 not.
    Verify(AuditVerifyArgs),
}

#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    /// A data directory, or a copy holding `audit/audit.log`,
    /// `server-signing.pub` and, if exported, `audit/checkpoint`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The log file (default: DIR/audit/audit.log).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub log: Option<PathBuf>,
    /// Server configuration file: when its `[metadata]` is PostgreSQL, the
    /// chain the replicas share is read from that database instead of a file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's public signing key (default: DIR/server-signing.pub).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// A checkpoint note kept elsewhere (`vault-cli audit checkpoint`);
    /// repeatable. DIR/audit/checkpoint is used too when present.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct UnsealArgs {
    /// age X25519 identity file that seals the master key (created by `init`
    /// if missing, mode 0600). Default: DATA_DIR/unseal.identity — keep it
    /// elsewhere in production.
    #[arg(long, value_name = "FILE", conflicts_with = "passphrase_env")]
    pub unseal_identity: Option<PathBuf>,
    /// Seal the master key with a passphrase read from this environment variable.
    #[arg(long, value_name = "VAR")]
    pub passphrase_env: Option<String>,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory for the new vault (must be empty or absent).
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub unseal: UnsealArgs,
    /// Write the admin token to FILE (mode 0600) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Server configuration file: its `[metadata]` section says where the
    /// metadata goes (default: DATA_DIR/meta.redb). Give `run` the same.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Add a replica to the vault already in the PostgreSQL database that
    /// --config names: DIR gets its sealed master key (which must open with
    /// this replica's copy of the unseal identity or passphrase) and the
    /// server's public key; no new vault and no admin token are made.
    #[arg(long, requires = "config", conflicts_with = "admin_token_file")]
    pub join: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Vault directory made by `init`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port. The chosen address is
    /// printed as the first line of stdout: `listening on http://HOST:PORT`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub unseal: UnsealArgs,
    /// Allow plain HTTP on a non-loopback address (tokens would cross the
    /// network in clear).
    #[arg(long)]
    pub insecure_http: bool,
    /// Server configuration file (TOML): rate limits per role, exfiltration
    /// thresholds, request limits and timeouts (`[http]`), blob storage
    /// backend. See docs/deployment.md.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Policy folder (schema.cedarschema + *.cedar). Default: DATA_DIR/policies
    /// when present, else the defaults shipped with mlvault. Reloaded on SIGHUP.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long a signed alias record stays valid; the server renews records
    /// as they are read once half of this has passed. Like 90s, 15m, 1h, 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = vault_api::parse_duration)]
    pub alias_ttl: u64,
    /// Never renew alias records (they expire, as from a frozen mirror); for
    /// tests of client freeze protection.
    #[arg(long, hide = true)]
    pub no_alias_renewal: bool,
    /// Seconds a client has to send its request headers (slow-loris guard).
    /// Default: `[http] header_timeout_secs` of --config, else 15.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: Option<u64>,
    /// Seconds an upload body may stall between two chunks before it is
    /// aborted (nothing of it is kept). Default: `[http] body_timeout_secs`
    /// of --config, else 60.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_secs: Option<u64>,
    /// Plaintext bytes per encrypted segment (a blob header field).
    #[arg(long, value_name = "BYTES", default_value_t = vault_crypto::DEFAULT_SEGMENT_SIZE, hide = true)]
    pub segment_size: u32,
    /// Start although the audit log does not verify against its anchored
    /// checkpoint (cut, forked, edited or deleted): the log is moved aside
    /// as `audit.log.broken-TIME` and a new one starts with an
    /// `audit_reseal` entry recording REASON and what was found. Without
    /// this flag such a log stops the server (exit 2).
    #[arg(long, value_name = "REASON")]
    pub reseal_audit: Option<String>,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// Data directory of the vault to copy (its server stopped).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The PostgreSQL database to copy into (`postgres://USER@HOST:PORT/DB`),
    /// which must hold no vault. Default: MLVAULT_METADATA_URL (keeps a
    /// password out of the process list).
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// PEM CA certificate(s) to verify the database's TLS certificate with;
    /// TLS is required with it, and for any host not on this machine.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub unseal: UnsealArgs,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Vault directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Server configuration file (for the blob and metadata backends).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Remove orphaned objects and abandon stale upload sessions.
    #[arg(long)]
    pub repair: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Vault directory (created and initialized if needed).
    #[arg(long, value_name = "DIR", default_value = "vault-dev-data")]
    pub data_dir: PathBuf,
    /// Address to listen on (loopback only).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    pub listen: SocketAddr,
}
