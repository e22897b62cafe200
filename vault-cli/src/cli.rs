//! Arguments: the contract of docs/cli.md.

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
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// PEM file of a private CA to trust for https:// servers (besides the
    /// system roots).
    #[arg(long, global = true, env = "MLVAULT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client configuration file (TOML: `trust = [FILE…]`, `server_key = FILE`,
    /// `sign_key = FILE`). Default: $XDG_CONFIG_HOME/mlvault/config.toml or
    /// ~/.config/mlvault/config.toml, when it exists.
    #[arg(long, global = true, env = "MLVAULT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Retries after a 429 (rate limited), with jittered backoff, before
    /// giving up with exit code 6.
    #[arg(long, global = true, env = "MLVAULT_RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// Where the client remembers pinned server keys and alias sequences.
    #[arg(long, global = true, env = "MLVAULT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push a file or directory tree as a new version of REF (`ns/name`).
    Push(PushArgs),
    /// Pull REF into a directory; its files appear only once all are verified.
    Pull(PullArgs),
    /// Re-check a pulled directory against the manifest stored in it: each
    /// file's size and SHA-256, and that nothing else is there.
    Verify(VerifyArgs),
    /// List artifacts and their versions.
    Ls(LsArgs),
    /// Show a version's manifest summary.
    Show(RefArgs),
    /// Delete a version; its blobs' keys are destroyed (crypto-shredding).
    Delete(RefArgs),
    /// Point ALIAS at the version REF names (e.g. `fraud/m:7 production`);
    /// with --delete, remove ALIAS of the artifact REF (e.g. `fraud/m production --delete`).
    Alias(AliasArgs),
    /// Write a new ed25519 signing key: FILE (mode 0600) and FILE.pub.
    Keygen(KeygenArgs),
    /// Manage the keys allowed to sign manifests for a namespace.
    #[command(subcommand)]
    Publisher(PublisherCommand),
    /// Key ring administration.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Create, list and revoke bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make the server reload its policy folder (`vault-server policy check`
    /// validates one offline).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Start an anonymization job on a dataset; prints the job id.
    Anonymize(AnonymizeArgs),
    /// Follow anonymization jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect or prune the local cache of pulled files (offline).
    Cache(CacheArgs),
    /// Judge model files offline as the vault's admission scan does: each
    /// file's format from its bytes (an extension that disagrees fails),
    /// then its structure. Exit 0 when every file passes (or only warns),
    /// 5 when one fails or cannot be judged (`unsupported`, `incomplete`).
    Scan(ScanArgs),
    /// Show or change a namespace's extension of the admission scan's
    /// pickle import allowlist (admins): `scan-allow NS` shows it,
    /// `scan-allow NS IMPORT... --reason TEXT` replaces it, `--clear`
    /// removes it. The change is audited, every later verdict names it,
    /// and the versions aliases point at in NS are rescanned.
    ScanAllow(ScanAllowArgs),
    /// Registered attestors: keys trusted to sign attestations of some
    /// predicate types about versions in some namespaces (admins).
    #[command(subcommand)]
    Attestor(AttestorCommand),
    /// Attach a signed in-toto statement about REF's exact bytes (its
    /// manifest digest): built here from --predicate-type, --predicate and
    /// --sign-key, or an --envelope another tool made. The server keeps it
    /// only when a registered attestor trusted for its predicate type and
    /// namespace signed it (exit 5 otherwise).
    Attest(AttestArgs),
    /// List the attestations kept about REF.
    Attestations(RefArgs),
    /// Approve REF's exact bytes as this token's principal (who may
    /// `review` the artifact; never the principal that pushed it). Kept as
    /// an attestation signed by the server, audited.
    Approve(ApproveArgs),
}

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The version.
    pub reference: String,
    /// Why.
    #[arg(long, default_value = "")]
    pub reason: String,
}

#[derive(Subcommand, Debug)]
pub enum AttestorCommand {
    /// Trust the key in PUBFILE, as NAME, for the given predicate types
    /// in the given namespaces.
    Add {
        /// Its name (`adversarial-eval`).
        name: String,
        /// Public key file (`vault-cli keygen`'s FILE.pub, PEM or OpenSSH).
        pubfile: PathBuf,
        /// A predicate type URI it may attest (repeat for more).
        #[arg(long = "predicate-type", required = true)]
        predicate_types: Vec<String>,
        /// A namespace it may attest about (repeat for more).
        #[arg(long = "namespace", required = true)]
        namespaces: Vec<String>,
    },
    /// List attestors.
    List,
    /// Stop trusting an attestor; what it attested stays kept.
    Remove {
        /// Its name.
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct AttestArgs {
    /// The version (`ns/name:7`, `ns/name@sha256:…`, an alias).
    pub reference: String,
    /// The predicate type URI of the statement to build
    /// (e.g. https://in-toto.io/attestation/test-result/v0.1).
    #[arg(long = "predicate-type", requires_all = ["predicate", "sign_key"], conflicts_with = "envelope")]
    pub predicate_type: Option<String>,
    /// A JSON file: the statement's predicate.
    #[arg(long, requires = "predicate_type")]
    pub predicate: Option<PathBuf>,
    /// The attestor's signing key.
    #[arg(long = "sign-key", requires = "predicate_type")]
    pub sign_key: Option<PathBuf>,
    /// A DSSE envelope made by another tool, sent as it is.
    #[arg(long, required_unless_present = "predicate_type")]
    pub envelope: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ScanAllowArgs {
    /// The namespace.
    pub namespace: String,
    /// Imports to allow beside the defaults, each `module name` as the
    /// scan reports it (e.g. `sklearn.ensemble._forest RandomForestClassifier`).
    pub imports: Vec<String>,
    /// Why (required to change it; recorded in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Remove the namespace's extension.
    #[arg(long, conflicts_with = "imports")]
    pub clear: bool,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    /// Files, or directories scanned whole (symbolic links are not followed).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
    /// The cache ($MLVAULT_CACHE_DIR, else $XDG_CACHE_HOME/mlvault/files or
    /// ~/.cache/mlvault/files).
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Objects and bytes held: in use by pulled directories (hard links),
    /// only in the cache (what prune frees), partial downloads.
    Status,
    /// Remove the cached files no pulled directory links, and partial
    /// downloads untouched for an hour. Pulled directories are not touched;
    /// a later pull of a removed file downloads it again.
    Prune {
        /// Remove everything: linked objects too (their pulled copies stay,
        /// and still take their space), every partial download, and the
        /// recorded digests of pushed files (the next push hashes again).
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token and print it (once; the server keeps only a hash).
    Create {
        /// Principal name (who holds the token), e.g. `ci-fraud`.
        #[arg(long)]
        principal: String,
        /// Role: admin, trainer, deployer, steward (or any role your policies grant).
        #[arg(long)]
        role: String,
        /// Lifetime, like 90s, 15m, 1h, 7d (default: no expiry).
        #[arg(long, value_name = "DURATION", value_parser = vault_api::parse_duration)]
        ttl: Option<u64>,
        /// Namespace the token may act on; repeatable.
        #[arg(long = "namespace", value_name = "NS")]
        namespaces: Vec<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id; effective on its next request.
    Revoke {
        /// Token id (`tok_…`).
        id: String,
    },
    /// Lift a suspension put on a token by exfiltration detection.
    Unsuspend {
        /// Token id (`tok_…`).
        id: String,
    },
    /// Approve a token another admin created, when the server requires a
    /// second admin for its role (`[tokens] second_admin_for`).
    Approve {
        /// Token id (`tok_…`).
        id: String,
    },
}

#[derive(Args, Debug)]
pub struct AnonymizeArgs {
    /// Source dataset (`ns/name:VERSION`, …).
    pub reference: String,
    /// Job spec (TOML; see examples/anonymize.toml).
    #[arg(long, value_name = "FILE")]
    pub spec: PathBuf,
    /// Target dataset name: the job commits a new version there.
    #[arg(long, value_name = "NAME")]
    pub to: String,
    /// Wait for the job to end and print its report.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// State, progress and report of a job.
    Status {
        /// Job id.
        id: String,
    },
    /// Every job.
    List,
    /// Wait for a job to end; exit 1 if it failed.
    Wait {
        /// Job id.
        id: String,
    },
    /// Release a job's output: until a reviewer (a steward of its
    /// namespace) approves it, only reviewers can read it.
    Approve {
        /// Job id.
        id: String,
        /// Why (recorded in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Refuse to release a job's output; it stays readable only by
    /// reviewers.
    Reject {
        /// Job id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Withdraw a released job output: nobody but reviewers can read it
    /// from now on.
    Withdraw {
        /// Job id.
        id: String,
        /// Why (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the hash chain and the signed checkpoints; exit 5 and name the
    /// first bad entry if anything was edited, deleted or reordered.
    Verify,
    /// Show the last N entries.
    Tail {
        /// Entries to show.
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
    },
    /// Print the latest signed checkpoint (C2SP signed note) to keep
    /// elsewhere; `vault-server audit verify --checkpoint FILE` later proves
    /// the log was not cut, deleted or forked since.
    Checkpoint,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Make the server reload its policy folder (an invalid set is refused
    /// and the running one stays).
    Reload,
}

#[derive(Args, Debug)]
pub struct AliasArgs {
    /// `ns/name:VERSION` or `ns/name@sha256:HEX` (with --delete: `ns/name`).
    pub reference: String,
    /// Alias name, e.g. `production`.
    pub alias: String,
    /// Delete the alias instead (admins by default): the version it named
    /// can then be deleted. Audited.
    #[arg(long)]
    pub delete: bool,
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Secret key file to create (refuses to overwrite); FILE.pub gets the public key.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// File format: mlvault's own text, PEM (PKCS#8 and SPKI, as openssl
    /// writes) or OpenSSH (as ssh-keygen writes). Every command reads all
    /// three, whatever this says.
    #[arg(long, value_enum, default_value_t = KeyFormat::Mlvault)]
    pub format: KeyFormat,
}

/// Key file formats of `keygen --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `MLVAULT-ED25519-SECRET-KEY-1` / `mlvault-ed25519` lines.
    Mlvault,
    /// `BEGIN PRIVATE KEY` (PKCS#8) / `BEGIN PUBLIC KEY` (SPKI).
    Pem,
    /// `BEGIN OPENSSH PRIVATE KEY` / `ssh-ed25519 AAAA…`.
    Openssh,
}

#[derive(Subcommand, Debug)]
pub enum PublisherCommand {
    /// Allow the key in PUBFILE to sign manifests for NAMESPACE.
    Add {
        /// Namespace.
        namespace: String,
        /// Public key file from `vault-cli keygen` (FILE.pub).
        pubfile: PathBuf,
    },
    /// List publisher keys (of NAMESPACE, or all).
    List {
        /// Namespace.
        namespace: Option<String>,
    },
    /// Remove a publisher key, named by key id or public key file.
    Remove {
        /// Namespace.
        namespace: String,
        /// Key id (`ed25519:…`) or public key file.
        key: String,
    },
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
    /// Sign the manifest with this ed25519 key (from `vault-cli keygen`).
    #[arg(long, env = "MLVAULT_SIGN_KEY", value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
    /// Point this alias at the new version; repeatable.
    #[arg(long = "alias", value_name = "NAME")]
    pub aliases: Vec<String>,
    /// Sensitivity label of a new artifact (e.g. `raw-pii`; fixed at first push).
    #[arg(long, value_name = "LABEL")]
    pub sensitivity: Option<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Hash every file before uploading any. By default a file of 32 MiB or
    /// more that the digest cache does not know starts uploading at once
    /// and is hashed beside the upload; if the hash ends first and the
    /// namespace holds that content, the upload stops there, and if the
    /// upload ends first the server keeps one copy. With this flag a held
    /// file sends no bytes at all.
    #[arg(long)]
    pub hash_first: bool,
}

/// The flags push and pull share.
#[derive(Args, Debug)]
pub struct TransferArgs {
    /// Files moved at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// The local cache. A pull links files already verified there into the
    /// destination instead of downloading them, and a destination unchanged
    /// since it was verified costs one `stat` per file; a push does not
    /// hash again a file whose device, inode, size, mtime and ctime are
    /// unchanged since an earlier push. Default: $MLVAULT_CACHE_DIR, else
    /// $XDG_CACHE_HOME/mlvault/files or ~/.cache/mlvault/files.
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Bypass the cache: a pull downloads straight into the destination, a
    /// push hashes every file (and records no digest).
    #[arg(long)]
    pub no_cache: bool,
    /// Move at most RATE bytes per second, all files together: `500K`,
    /// `20M`, `1.5G` (K, M, G are powers of 1024).
    #[arg(long, value_name = "RATE", value_parser = vault_client::parse_rate)]
    pub limit_rate: Option<u64>,
}

impl TransferArgs {
    /// The cache to use, if any.
    pub fn cache(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| {
            self.cache_dir
                .clone()
                .unwrap_or_else(vault_client::default_cache_dir)
        })
    }
    /// The shared rate limit, if any.
    pub fn limit(&self) -> Option<std::sync::Arc<vault_client::RateLimit>> {
        self.limit_rate
            .map(|r| std::sync::Arc::new(vault_client::RateLimit::new(r)))
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// `ns/name`, `ns/name:VERSION`, `ns/name:ALIAS` or `ns/name@sha256:HEX`.
    pub reference: String,
    /// Destination directory (created if missing). Nothing in it changes
    /// until every file of the version is verified (staged in
    /// DIR/.mlvault/partial), so a pull that fails leaves what was there.
    /// Where another version was pulled before, its files that this version
    /// does not have are then removed (unless changed since; those are kept
    /// and named).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Accept an alias that moved back to an older version (or an older record).
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Accept an expired alias record.
    #[arg(long)]
    pub allow_expired: bool,
    /// Refuse an alias record issued longer ago than DURATION (like 12h):
    /// a deploy job with no saved state then cannot be handed a replayed
    /// old record. The server renews a record once half its lifetime
    /// (`--alias-ttl`, default 24h) has passed, so use at least half of it.
    #[arg(long, value_name = "DURATION", value_parser = vault_api::parse_duration)]
    pub max_record_age: Option<u64>,
    /// Require the manifest to be signed by this publisher key; repeatable
    /// (any one suffices). Also read from the config file.
    #[arg(long = "trust", value_name = "FILE.pub")]
    pub trust: Vec<PathBuf>,
    /// The server's alias-signing key (DATA_DIR/server-signing.pub); without
    /// it the key is pinned on first use.
    #[arg(long, value_name = "FILE.pub")]
    pub server_key: Option<PathBuf>,
    #[command(flatten)]
    pub transfer: TransferArgs,
    /// Re-hash cached files instead of trusting their recorded state.
    #[arg(long)]
    pub verify_cache: bool,
    /// Write the files with direct I/O, past the page cache, on local disk
    /// file systems (as MLVAULT_DIRECT_IO=on). Faster where new page-cache
    /// memory is expensive (some VMs) and evicts nothing, but whoever reads
    /// the files next reads them from disk: leave it off when a loader
    /// opens the model right after the pull.
    #[arg(long)]
    pub direct_io: bool,
    /// Place nothing unless the alias was moved through the promotion
    /// gate GATE (policies/gates.toml): the reference must name that alias
    /// (`ns/name:production`), its signed record must carry the gate's
    /// grant, and every attestation, approval and scan verdict the grant
    /// names must be delivered, about this version. The record and that
    /// evidence are kept in DIR/.mlvault/promotion.json for `verify`.
    #[arg(long, value_name = "GATE")]
    pub require_gate: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A directory written by `vault-cli pull`.
    pub dir: PathBuf,
    /// Also require a valid signature by one of these publisher keys.
    #[arg(long = "trust", value_name = "FILE.pub")]
    pub trust: Vec<PathBuf>,
    /// Also require, offline, the promotion record kept by
    /// `pull --require-gate GATE`: signed by the server, for this manifest,
    /// granted on the gate GATE with every piece of evidence it names.
    #[arg(long, value_name = "GATE")]
    pub require_gate: Option<String>,
    /// The server's alias-signing key for --require-gate; without it, the
    /// key this client pinned for the record's server.
    #[arg(long, value_name = "FILE.pub", requires = "require_gate")]
    pub server_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only names starting with PREFIX. Given an artifact's full name, each
    /// of its versions is listed too (number, files, size, created, digest).
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
