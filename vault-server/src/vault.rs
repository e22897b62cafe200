//! A vault on disk: its layout, `init`, unsealing and the live state shared
//! by every request.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use vault_audit::AuditLog;
use vault_crypto::WrappedSecret;
use vault_crypto::{Keyring, MasterKey, Sealer, Unsealer};
use vault_manifest::SecretKey;
use vault_policy::PolicyEngine;

use crate::config::ServerConfig;
use crate::guard::{ExfilDetector, RateLimits};
use vault_store::{BlobStore, KeyringRecord, MetaStore, RedbMeta, TokenRecord};

use crate::cli::UnsealArgs;
use crate::exit::{fail, ExitStatus};
use crate::tokens;

/// Files inside a data directory.
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    pub fn marker(&self) -> PathBuf {
        self.root.join("mlvault.json")
    }
    pub fn sealed_master(&self) -> PathBuf {
        self.root.join("master.key.age")
    }
    pub fn meta(&self) -> PathBuf {
        self.root.join("meta.redb")
    }
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub fn default_identity(&self) -> PathBuf {
        self.root.join("unseal.identity")
    }
    /// The audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.root.join("audit").join("audit.log")
    }
    /// The server's public signing key, for clients to trust.
    pub fn server_pub(&self) -> PathBuf {
        self.root.join("server-signing.pub")
    }
}

/// Write a new file with mode 0600, fsync it. Refuses to overwrite.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Refuse a data directory holding anything group or others may read or
/// write: the metadata, the audit log, the sealed key and the policies
/// would be open to every local user. `blobs/` is checked as a folder and
/// not walked: a private folder keeps everyone else from what is inside
/// (ciphertext, in millions of files), so its contents cost no start-up
/// time.
pub fn check_tree_private(root: &Path) -> Result<()> {
    let blobs = root.join("blobs");
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        check_mode(&dir)?;
        if dir == blobs {
            continue;
        }
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list `{}`", dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("cannot list `{}`", dir.display()))?;
            let ft = e
                .file_type()
                .with_context(|| format!("cannot stat `{}`", e.path().display()))?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                check_mode(&e.path())?;
            }
        }
    }
    Ok(())
}

fn check_mode(path: &Path) -> Result<()> {
    let mode = fs::symlink_metadata(path)
        .with_context(|| format!("cannot stat `{}`", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(ExitStatus::Usage,
            format!(
                "`{}` is readable or writable by group or others (mode {mode:o}): every local user could read or change the vault's metadata, audit log or keys. Run `chmod -R go-rwx {}`",
                path.display(),
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuse a secret file that group or others can read.
fn check_private(path: &Path, what: &str) -> Result<()> {
    let meta =
        fs::metadata(path).with_context(|| format!("cannot read {what} `{}`", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} `{}` is accessible by group or others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn passphrase(var: &str) -> Result<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(fail(
            ExitStatus::Usage,
            format!("environment variable `{var}` (--passphrase-env) is not set or empty"),
        )),
    }
}

/// The unsealer `args` name, creating the identity file if `create` and it
/// does not exist yet.
pub(crate) fn unsealer(layout: &Layout, args: &UnsealArgs, create: bool) -> Result<Unsealer> {
    if let Some(var) = &args.passphrase_env {
        return Ok(Unsealer::passphrase(passphrase(var)?));
    }
    let path = args
        .unseal_identity
        .clone()
        .unwrap_or_else(|| layout.default_identity());
    if create && !path.exists() {
        let (secret, _public) = vault_crypto::generate_identity();
        use vault_crypto::SecretExpose;
        write_secret_file(&path, secret.expose_secret().as_bytes())?;
        eprintln!("created unseal identity `{}` (keep it safe and apart from the data directory in production)", path.display());
    }
    check_private(&path, "unseal identity")?;
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read unseal identity `{}`", path.display()))?;
    Ok(Unsealer::from_identity_file(&text)?)
}

/// Live state of an open vault.
pub struct Vault {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: BlobStore,
    master: MasterKey,
    keyring: RwLock<Arc<Keyring>>,
    /// Signs alias records, job manifests and audit checkpoints.
    pub signing_key: SecretKey,
    pub segment_size: u32,
    pub alias_ttl: u64,
    pub alias_renewal: bool,
    policy: RwLock<Arc<PolicyEngine>>,
    /// Where policies come from: a folder, or the compiled-in defaults.
    pub policy_source: Option<PathBuf>,
    /// The tamper-evident audit log.
    pub audit: AuditLog,
    /// Per-token rate limits.
    pub limits: RateLimits,
    /// Per-principal exfiltration windows.
    pub exfil: ExfilDetector,
    /// Failed-authentication limits and floods held back from the log.
    pub floods: crate::guard::Floods,
    /// Blobs that failed verification while being streamed, with the
    /// plaintext offset of the failing segment: the next download of such a
    /// blob checks that segment before answering, so a client that resumes
    /// gets the integrity answer instead of another cut connection.
    pub damaged: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// Request limits and timeouts (`[http]` of the config, flags win).
    pub http: crate::config::HttpLimits,
    /// Token administration rules (`[tokens]`).
    pub tokens: crate::config::TokenPolicy,
    /// This server process among the replicas: claims jobs by this name.
    pub instance: String,
    /// Whether other servers may share the metadata (PostgreSQL): jobs
    /// are then claimed for a lease and taken over when it runs out.
    pub shared: bool,
    /// `[jobs]` of the config.
    pub jobs: crate::config::JobsConfig,
    /// `[scan]` of the config.
    pub scan: crate::config::ScanConfig,
    /// The last policy reload among replicas this server followed.
    policy_epoch: std::sync::atomic::AtomicU64,
    /// Tokens by hash, among replicas (see `cache`).
    pub token_cache: crate::cache::ReadCache<vault_store::TokenRecord>,
    /// Artifact records by name (for their kind and label), among replicas.
    pub artifact_cache: crate::cache::ReadCache<vault_store::ArtifactRecord>,
}

/// How long a replica trusts a token it read: a revocation on another
/// replica is refused here within this (and at once on the replica that
/// made it).
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_millis(250);

/// Config key counting policy reloads among replicas.
const POLICY_EPOCH: &str = "policy_epoch";

/// Where `run` loads policies from: `--policies DIR`, else `DATA_DIR/policies`
/// when present, else the defaults compiled in.
pub fn policy_source(layout: &Layout, flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = layout.root.join("policies");
            p.is_dir().then_some(p)
        }
    }
}

pub fn load_policy(source: Option<&Path>) -> Result<PolicyEngine, vault_policy::Error> {
    match source {
        Some(dir) => PolicyEngine::load_dir(dir),
        None => PolicyEngine::defaults(),
    }
}

const SERVER_KEY_CONFIG: &str = "server_signing_key";
const SERVER_KEY_LABEL: &str = "server signing key";

/// The server signing key, created (and its public half written to the data
/// directory) on first use.
pub(crate) fn server_key(
    meta: &dyn MetaStore,
    master: &MasterKey,
    layout: &Layout,
) -> Result<SecretKey> {
    if let Some(raw) = meta.config(SERVER_KEY_CONFIG)? {
        let w: WrappedSecret = serde_json::from_slice(&raw).context("corrupt server key record")?;
        let bytes = master
            .unwrap_secret(SERVER_KEY_LABEL, &w)
            .context("server signing key does not open with this master key")?;
        return Ok(SecretKey::from_bytes(&bytes));
    }
    let key = SecretKey::generate()?;
    let w = master.wrap_secret(SERVER_KEY_LABEL, &key.to_bytes())?;
    meta.put_config(SERVER_KEY_CONFIG, &serde_json::to_vec(&w)?)?;
    fs::write(layout.server_pub(), key.public().to_file_text())?;
    Ok(key)
}

/// The metadata a vault opened: a store, and the PostgreSQL database
/// behind it when replicas share one (which holds their audit chain too).
pub struct Metadata {
    pub store: Arc<dyn MetaStore>,
    pub shared: Option<Arc<vault_store::PgMeta>>,
}

/// Open the metadata `config` names: DATA_DIR/meta.redb, or a PostgreSQL
/// database that any number of replicas share.
pub fn open_meta(layout: &Layout, config: &crate::config::MetadataConfig) -> Result<Metadata> {
    use crate::config::MetaBackend;
    match config.backend {
        MetaBackend::Redb => {
            let m = RedbMeta::open(&layout.meta())
                .with_context(|| format!("cannot open metadata `{}`", layout.meta().display()))?;
            Ok(Metadata {
                store: Arc::new(m),
                shared: None,
            })
        }
        MetaBackend::Postgres => {
            let url = config.postgres_url().ok_or_else(|| {
                fail(
                    ExitStatus::Usage,
                    "[metadata] backend = \"postgres\" needs `url` or MLVAULT_METADATA_URL",
                )
            })?;
            let m =
                vault_store::PgMeta::connect(&url, config.connections, config.ca_file.as_deref())
                    .map_err(|e| fail(ExitStatus::Unavailable, format!("metadata database: {e}")))?;
            let tls = m.connection_encrypted()?;
            tracing::info!(
                connections = config.connections,
                tls,
                "metadata in PostgreSQL"
            );
            let m = Arc::new(m);
            Ok(Metadata {
                store: m.clone(),
                shared: Some(m),
            })
        }
    }
}

/// Config key of the sealed master key, kept in a shared database so that
/// replicas can join (it opens only with the unseal identity).
pub(crate) const SEALED_MASTER: &str = "sealed_master_key";

/// Refuse a data directory that holds anything; create it private.
fn new_data_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let non_empty = fs::read_dir(dir)
            .with_context(|| format!("cannot read `{}`", dir.display()))?
            .next()
            .is_some();
        if non_empty {
            return Err(fail(
                ExitStatus::Usage,
                format!(
                    "`{}` is not empty; init only creates new vaults",
                    dir.display()
                ),
            ));
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Write the files a data directory holds beside the sealed key.
fn finish_data_dir(layout: &Layout, dir: &Path) -> Result<()> {
    fs::create_dir_all(layout.blobs())?;
    let marker = serde_json::json!({"mlvault": 1, "created": vault_store::now()});
    fs::write(layout.marker(), marker.to_string())?;
    // Private whatever the process umask (a library caller's may be 022).
    close_to_others(dir)
}

/// Make `dir` the data directory of another replica of the vault in the
/// PostgreSQL database `config` names: its sealed master key (which must
/// open with `args`), the server's public key, the marker.
pub fn join(dir: &Path, args: &UnsealArgs, config: &crate::config::MetadataConfig) -> Result<()> {
    let layout = Layout::new(dir);
    if config.backend != crate::config::MetaBackend::Postgres {
        return Err(fail(
            ExitStatus::Usage,
            "--join adds a replica to a vault in PostgreSQL; the config's [metadata] backend is not \"postgres\"",
        ));
    }
    let meta = open_meta(&layout, config)?.store;
    let rec = meta.keyring()?.ok_or_else(|| {
        fail(
            ExitStatus::Usage,
            "the metadata database holds no vault yet; run `vault-server init` without --join first",
        )
    })?;
    let sealed = meta.config(SEALED_MASTER)?.ok_or_else(|| {
        fail(
            ExitStatus::Usage,
            "the metadata database holds no sealed master key; copy master.key.age from another replica's data directory instead",
        )
    })?;
    new_data_dir(dir)?;
    let unseal = unsealer(&layout, args, false)?;
    let master = unseal.unseal(&sealed).map_err(|e| {
        fail(
            ExitStatus::Usage,
            format!(
                "the vault's master key does not open with this unseal identity or passphrase: {e}"
            ),
        )
    })?;
    Keyring::open(&master, rec.id, &rec.keks, rec.min_decryption_version)
        .context("the key ring does not open with this master key")?;
    let key = server_key(meta.as_ref(), &master, &layout)?;
    write_secret_file(&layout.sealed_master(), &sealed)?;
    fs::write(layout.server_pub(), key.public().to_file_text())?;
    finish_data_dir(&layout, dir)
}

/// Create a vault in `dir`, its metadata where `config` says; returns the
/// admin token secret.
pub fn init(
    dir: &Path,
    args: &UnsealArgs,
    config: &crate::config::MetadataConfig,
) -> Result<String> {
    let layout = Layout::new(dir);
    new_data_dir(dir)?;
    let unseal = unsealer(&layout, args, true)?;
    let master = MasterKey::generate()?;
    let sealed = Sealer::for_unsealer(&unseal).seal(&master)?;
    write_secret_file(&layout.sealed_master(), &sealed)?;
    let opened = open_meta(&layout, config)?;
    let meta = opened.store;
    if meta.keyring()?.is_some() {
        return Err(fail(
            ExitStatus::Usage,
            "the metadata database already holds a vault; init only creates new vaults (add a replica with `init --join`)",
        ));
    }
    if opened.shared.is_some() {
        meta.put_config(SEALED_MASTER, &sealed)?;
    }
    let (ring, wrapped) = Keyring::create(&master)?;
    server_key(meta.as_ref(), &master, &layout)?;
    meta.put_keyring(&KeyringRecord {
        id: *ring.id(),
        keks: vec![wrapped],
        min_decryption_version: 1,
    })?;
    let (secret, id) = tokens::generate()?;
    meta.put_token(
        &tokens::hash(&secret),
        &TokenRecord {
            id,
            principal: "admin".into(),
            role: "admin".into(),
            created: vault_store::now(),
            expires: None,
            revoked: false,
            namespaces: Vec::new(),
            suspended: false,
            pending: false,
            created_by: String::new(),
            approved_by: String::new(),
        },
    )?;
    finish_data_dir(&layout, dir)?;
    Ok(secret)
}

/// Add a token to a vault that is not running (used by `dev`); returns the secret.
pub fn add_token(dir: &Path, principal: &str, role: &str, namespaces: &[String]) -> Result<String> {
    let meta = RedbMeta::open(&Layout::new(dir).meta())?;
    let (secret, id) = tokens::generate()?;
    meta.put_token(
        &tokens::hash(&secret),
        &TokenRecord {
            id,
            principal: principal.into(),
            role: role.into(),
            created: vault_store::now(),
            expires: None,
            revoked: false,
            namespaces: namespaces.to_vec(),
            suspended: false,
            pending: false,
            created_by: String::new(),
            approved_by: String::new(),
        },
    )?;
    Ok(secret)
}

/// Where the latest checkpoint note is anchored in the metadata.
pub const AUDIT_ANCHOR: &str = "audit_checkpoint";

impl Layout {
    /// The latest signed checkpoint note, exported beside the log.
    pub fn audit_checkpoint(&self) -> PathBuf {
        self.root.join("audit").join("checkpoint")
    }
}

/// Open the audit log, verified against the checkpoint anchored in the
/// metadata; every new checkpoint is anchored there and exported to
/// `audit/checkpoint`. A log that does not verify stops the server unless
/// `reseal` gives a reason to start a new one.
fn open_audit(
    layout: &Layout,
    meta: &Metadata,
    key: &SecretKey,
    reseal: Option<&str>,
) -> Result<AuditLog> {
    if let Some(pg) = &meta.shared {
        return open_shared_audit(layout, pg, key, reseal);
    }
    let meta = &meta.store;
    let public = key.public();
    let anchor = match meta.config(AUDIT_ANCHOR)? {
        Some(b) => {
            let note = String::from_utf8_lossy(&b).into_owned();
            Some(
                vault_audit::Checkpoint::verify(&note, &public).map_err(|e| {
                    fail(
                        ExitStatus::Usage,
                        format!("the anchored audit checkpoint does not verify: {e}"),
                    )
                })?,
            )
        }
        None => None,
    };
    let anchor_hook = || -> vault_audit::OnCheckpoint {
        let (meta, file) = (meta.clone(), layout.audit_checkpoint());
        Box::new(move |note: &str| {
            if let Err(e) = meta.put_config(AUDIT_ANCHOR, note.as_bytes()) {
                tracing::error!(error = %e, "cannot anchor the audit checkpoint in the metadata");
            }
            export_checkpoint(&file, note);
        })
    };
    let open = |anchor: Option<&vault_audit::Checkpoint>| {
        AuditLog::open_anchored(
            layout.audit_log(),
            SecretKey::from_bytes(&key.to_bytes()),
            256,
            anchor,
            Some(anchor_hook()),
        )
    };
    let (log, opened) = match open(anchor.as_ref()) {
        Ok(x) => x,
        Err(vault_audit::Error::Tampered(why)) => {
            let Some(reason) = reseal else {
                return Err(fail(ExitStatus::Usage,
                    format!(
                        "audit log `{}` does not verify: {why}. Refusing to serve. Inspect it with `vault-server audit verify --data-dir {}`; once the loss is understood, `vault-server run ... --reseal-audit REASON` moves it aside and starts a new log",
                        layout.audit_log().display(),
                        layout.root.display()
                    ),
                ));
            };
            let aside = layout
                .audit_log()
                .with_extension(format!("log.broken-{}", vault_store::now()));
            if layout.audit_log().exists() {
                fs::rename(layout.audit_log(), &aside)?;
            }
            tracing::warn!(%why, aside = %aside.display(), "audit log resealed");
            let (log, _) = open(None).context("cannot start a new audit log")?;
            let mut ev = vault_audit::Event::new("vault-server", "audit_reseal", "audit", "alert");
            ev.detail = format!(
                "reason: {reason}; the previous log did not verify ({why}); kept as {}; its anchored checkpoint covered {} entries",
                aside.display(),
                anchor.as_ref().map_or(0, |a| a.size)
            );
            log.record(ev).map_err(|e| anyhow::anyhow!(e))?;
            log.checkpoint().map_err(|e| anyhow::anyhow!(e))?;
            return Ok(log);
        }
        Err(e) => return Err(e).context("cannot open the audit log"),
    };
    if opened.cut_unsealed > 0 {
        tracing::warn!(
            entries = opened.cut_unsealed,
            "audit log: removed entries after the last sealed one (a write that never completed)"
        );
        let mut ev = vault_audit::Event::new("vault-server", "audit_recover", "audit", "alert");
        ev.detail = format!(
            "removed {} unsealed entries after entry {} (a write that never completed, never acknowledged)",
            opened.cut_unsealed, opened.entries
        );
        log.record(ev).map_err(|e| anyhow::anyhow!(e))?;
    }
    tracing::info!(entries = opened.entries, "audit log verified");
    Ok(log)
}

/// Export a checkpoint note to `audit/checkpoint` (replaced whole).
fn export_checkpoint(file: &Path, note: &str) {
    let tmp = file.with_extension("tmp");
    let written = fs::create_dir_all(file.parent().unwrap_or(Path::new(".")))
        .and_then(|()| fs::write(&tmp, note))
        .and_then(|()| fs::rename(&tmp, file));
    if let Err(e) = written {
        tracing::error!(error = %e, "cannot export the audit checkpoint");
    }
}

/// Open the audit chain the replicas on `pg` share, verified whole,
/// against the head the database records, and against the last
/// checkpoint this replica exported to its `audit/checkpoint` (outside the
/// database: a cut or rolled-back chain does not reach it). Every new
/// checkpoint note is exported there.
fn open_shared_audit(
    layout: &Layout,
    pg: &Arc<vault_store::PgMeta>,
    key: &SecretKey,
    reseal: Option<&str>,
) -> Result<AuditLog> {
    let chain = Arc::new(crate::audit_chain::PgChain::new(pg.clone()));
    let hook = || -> vault_audit::OnCheckpoint {
        let file = layout.audit_checkpoint();
        Box::new(move |note: &str| export_checkpoint(&file, note))
    };
    // The last checkpoint this replica exported, kept outside the
    // database: a chain there that no longer reaches it was cut or rolled
    // back (by someone with access to the database, or by a restore).
    let exported = layout.audit_checkpoint();
    let anchor = match fs::read_to_string(&exported) {
        Ok(note) => Some(
            vault_audit::Checkpoint::verify(&note, &key.public()).map_err(|e| {
                fail(
                    ExitStatus::Usage,
                    format!(
                        "the exported audit checkpoint `{}` does not verify: {e}",
                        exported.display()
                    ),
                )
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read `{}`", exported.display())),
    };
    let open = |anchor: Option<&vault_audit::Checkpoint>| {
        AuditLog::open_shared(
            chain.clone(),
            SecretKey::from_bytes(&key.to_bytes()),
            256,
            anchor,
            Some(hook()),
        )
    };
    let (log, opened) = match open(anchor.as_ref()) {
        Ok(x) => x,
        Err(vault_audit::Error::Tampered(why)) => {
            // Whole on its own, but short of this replica's checkpoint:
            // entries were cut or rolled back, and the chain goes on from
            // what is left once an operator says why.
            let rolled_back = anchor.is_some()
                && vault_audit::verify_chain(chain.as_ref(), &key.public(), &[])
                    .is_ok_and(|r| r.problem().is_none());
            let Some(reason) = reseal else {
                let what = if rolled_back {
                    format!(
                        "the shared audit chain in the metadata database no longer reaches this replica's checkpoint `{}`: {why}. Entries were cut or rolled back (a restore from backup, or a change made in the database). Refusing to serve. Once the loss is understood, `vault-server run ... --reseal-audit REASON` records it in the chain and goes on",
                        exported.display()
                    )
                } else {
                    format!(
                        "the shared audit chain in the metadata database does not verify: {why}. Refusing to serve. Once the loss is understood, `vault-server run ... --reseal-audit REASON` moves it aside and starts a new chain"
                    )
                };
                return Err(fail(ExitStatus::Usage, what));
            };
            if rolled_back {
                let (log, _) = open(None).context("cannot open the shared audit chain")?;
                tracing::warn!(%why, "shared audit chain accepted short of this replica's checkpoint");
                let mut ev =
                    vault_audit::Event::new("vault-server", "audit_rollback", "audit", "alert");
                ev.detail = format!(
                    "reason: {reason}; the chain does not reach this replica's last checkpoint ({why}); it goes on from what is left"
                );
                log.record(ev).map_err(|e| anyhow::anyhow!(e))?;
                log.checkpoint().map_err(|e| anyhow::anyhow!(e))?;
                return Ok(log);
            }
            let aside = pg
                .log_move_aside(vault_store::now())
                .context("cannot move the broken audit chain aside")?;
            tracing::warn!(%why, %aside, "shared audit chain resealed");
            let (log, _) = open(None).context("cannot start a new audit chain")?;
            let mut ev = vault_audit::Event::new("vault-server", "audit_reseal", "audit", "alert");
            ev.detail = format!(
                "reason: {reason}; the previous chain did not verify ({why}); kept as table {aside}"
            );
            log.record(ev).map_err(|e| anyhow::anyhow!(e))?;
            log.checkpoint().map_err(|e| anyhow::anyhow!(e))?;
            return Ok(log);
        }
        Err(e) => return Err(e).context("cannot open the shared audit chain"),
    };
    tracing::info!(entries = opened.entries, "shared audit chain verified");
    Ok(log)
}

/// A name for this server process, unique among replicas: the host name
/// and a random part (a restarted server is another instance).
fn instance_name() -> Result<String> {
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let rand = hex::encode(vault_crypto::random_bytes::<6>()?);
    Ok(if host.is_empty() {
        rand
    } else {
        format!("{host}-{rand}")
    })
}

impl Vault {
    /// Unseal and open the vault in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        dir: &Path,
        args: &UnsealArgs,
        segment_size: u32,
        alias_ttl: u64,
        alias_renewal: bool,
        policies: Option<&Path>,
        config: &ServerConfig,
        reseal_audit: Option<&str>,
    ) -> Result<Self> {
        let layout = Layout::new(dir);
        let policy_source = policy_source(&layout, policies);
        let policy = load_policy(policy_source.as_deref()).map_err(|e| {
            fail(
                ExitStatus::Usage,
                format!(
                    "policies in `{}` refused: {e}",
                    policy_source
                        .as_deref()
                        .map_or("(defaults)".into(), |p| p.display().to_string())
                ),
            )
        })?;
        tracing::info!(policies = policy.len(), source = ?policy_source, "policies loaded");
        if !layout.marker().exists() {
            return Err(fail(
                ExitStatus::Usage,
                format!(
                    "`{}` is not an mlvault data directory (run `vault-server init --data-dir {}`)",
                    dir.display(),
                    dir.display()
                ),
            ));
        }
        let unseal = unsealer(&layout, args, false)?;
        check_private(&layout.sealed_master(), "sealed master key")?;
        check_tree_private(dir)?;
        let sealed = fs::read(layout.sealed_master())?;
        let master = unseal.unseal(&sealed)?;
        let opened = open_meta(&layout, &config.metadata)?;
        let meta = opened.store.clone();
        let rec = meta
            .keyring()?
            .context("metadata has no key ring: the vault was not fully initialized")?;
        let ring = Keyring::open(&master, rec.id, &rec.keks, rec.min_decryption_version)
            .context("key ring does not open with this master key")?;
        let blobs = crate::storage::blob_store(&config.storage, &layout.blobs())?;
        tracing::info!(backend = ?config.storage.backend, "blob store ready");
        let signing_key = server_key(meta.as_ref(), &master, &layout)?;
        let audit = open_audit(&layout, &opened, &signing_key, reseal_audit)?;
        Ok(Self {
            meta,
            blobs,
            master,
            keyring: RwLock::new(Arc::new(ring)),
            signing_key,
            segment_size,
            alias_ttl,
            alias_renewal,
            policy: RwLock::new(Arc::new(policy)),
            policy_source,
            audit,
            limits: RateLimits::new(&config.limits, opened.shared.clone()),
            exfil: ExfilDetector::new(&config.exfiltration, opened.shared.clone()),
            floods: crate::guard::Floods::new(&config.http),
            damaged: Default::default(),
            http: config.http.clone(),
            tokens: config.tokens.clone(),
            instance: instance_name()?,
            shared: opened.shared.is_some(),
            jobs: config.jobs.clone(),
            scan: config.scan.clone(),
            policy_epoch: Default::default(),
            token_cache: crate::cache::ReadCache::new(if opened.shared.is_some() {
                TOKEN_CACHE_TTL
            } else {
                std::time::Duration::ZERO
            }),
            artifact_cache: crate::cache::ReadCache::new(if opened.shared.is_some() {
                std::time::Duration::from_secs(60)
            } else {
                std::time::Duration::ZERO
            }),
        })
    }

    /// The pseudonymization key of a namespace (same value → same pseudonym
    /// in the namespace, unlinkable across namespaces).
    pub fn namespace_key(&self, namespace: &str) -> [u8; 32] {
        *self.master.derive("pseudonymize", namespace)
    }

    fn damaged_map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u64>> {
        match self.damaged.lock() {
            Ok(d) => d,
            Err(p) => p.into_inner(),
        }
    }

    /// Remember that blob `id` failed verification at plaintext `offset`.
    pub fn mark_damaged(&self, id: &str, offset: u64) {
        self.damaged_map().insert(id.to_owned(), offset);
    }

    /// Where blob `id` failed verification earlier in this run, if it did.
    pub fn damaged_at(&self, id: &str) -> Option<u64> {
        self.damaged_map().get(id).copied()
    }

    /// Blob `id` verified again (repaired).
    pub fn clear_damaged(&self, id: &str) {
        self.damaged_map().remove(id);
    }

    /// The policy set in force.
    pub fn policy(&self) -> Arc<PolicyEngine> {
        match self.policy.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reload policies from their source; an invalid set is refused and the
    /// running one stays. Among replicas, the others are told to reload
    /// theirs (see [`Vault::follow_policy_reloads`]).
    pub fn reload_policy(&self) -> Result<usize, vault_policy::Error> {
        let n = self.reload_policy_here()?;
        if self.shared {
            let next = self.policy_epoch_stored().map_or(1, |e| e + 1);
            self.policy_epoch
                .store(next, std::sync::atomic::Ordering::SeqCst);
            if let Err(e) = self
                .meta
                .put_config(POLICY_EPOCH, next.to_string().as_bytes())
            {
                tracing::error!(error = %e, "cannot tell the other replicas to reload their policies");
            }
        }
        Ok(n)
    }

    fn policy_epoch_stored(&self) -> Option<u64> {
        let raw = self.meta.config(POLICY_EPOCH).ok()??;
        std::str::from_utf8(&raw).ok()?.parse().ok()
    }

    /// Among replicas: reload this server's policies when another replica
    /// reloaded its own (checked twice a second, so a reload reaches every
    /// replica within a second). Runs until the process ends.
    pub async fn follow_policy_reloads(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        let v = self.clone();
        let first = tokio::task::spawn_blocking(move || v.policy_epoch_stored())
            .await
            .ok()
            .flatten();
        self.policy_epoch
            .store(first.unwrap_or(0), Ordering::SeqCst);
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let v = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                let stored = v.policy_epoch_stored()?;
                if stored == v.policy_epoch.swap(stored, Ordering::SeqCst) {
                    return None;
                }
                Some(v.reload_policy_here())
            })
            .await;
            match done {
                Ok(Some(Ok(n))) => {
                    tracing::info!(
                        policies = n,
                        "policies reloaded: another replica reloaded its own"
                    )
                }
                Ok(Some(Err(e))) => tracing::error!(
                    error = %e,
                    "another replica reloaded its policies, but this replica's set is refused; the running set stays in force"
                ),
                _ => {}
            }
        }
    }

    fn reload_policy_here(&self) -> Result<usize, vault_policy::Error> {
        let engine = load_policy(self.policy_source.as_deref())?;
        let n = engine.len();
        let mut g = match self.policy.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(engine);
        Ok(n)
    }

    /// The current key ring (cheap clone of an `Arc`).
    pub fn keyring(&self) -> Arc<Keyring> {
        match self.keyring.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn reload_keyring(&self, rec: &KeyringRecord) -> Result<()> {
        let ring = Keyring::open(&self.master, rec.id, &rec.keks, rec.min_decryption_version)?;
        let mut g = match self.keyring.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(ring);
        Ok(())
    }

    /// Change the stored key ring with `change`, recorded by `record` (its
    /// detail set to what `change` returns) in the same transaction; then
    /// use the stored result. Within this process updates run one at a
    /// time, so the ring in memory is never replaced by an older one;
    /// among replicas the database serializes them.
    fn update_keyring<T: Send + std::fmt::Display>(
        &self,
        mut change: impl FnMut(&mut KeyringRecord) -> Result<T> + Send,
        record: vault_audit::Event,
    ) -> Result<T> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (out, rec) = self.change(
            |m| {
                let old = m
                    .keyring()?
                    .ok_or_else(|| vault_store::Error::NotFound("the key ring".into()))?;
                let mut rec = old.clone();
                let out =
                    change(&mut rec).map_err(|e| vault_store::Error::Conflict(format!("{e:#}")))?;
                if !m.swap_keyring(&old, &rec)? {
                    return Err(vault_store::Error::Conflict(
                        "the key ring changed under this request; try again".into(),
                    ));
                }
                Ok((out, rec))
            },
            |(out, _)| {
                let mut ev = record.clone();
                ev.detail = out.to_string();
                vec![ev]
            },
        )?;
        self.reload_keyring(&rec)?;
        Ok(out)
    }

    /// Add a KEK version; new blobs use it from now on. `record` is the
    /// audit event, made with the change.
    pub fn rotate(&self, record: vault_audit::Event) -> Result<u32> {
        self.update_keyring(
            |rec| {
                let mut ring =
                    Keyring::open(&self.master, rec.id, &rec.keks, rec.min_decryption_version)?;
                let wrapped = ring.rotate(&self.master)?;
                let v = wrapped.version;
                rec.keks.push(wrapped);
                Ok(v)
            },
            record,
        )
    }

    /// Refuse KEK versions below `min` from now on. `record` is the audit
    /// event, made with the change.
    pub fn retire(&self, min: u32, record: vault_audit::Event) -> Result<u32> {
        self.update_keyring(
            |rec| {
                let mut ring =
                    Keyring::open(&self.master, rec.id, &rec.keks, rec.min_decryption_version)?;
                ring.set_min_decryption_version(min)?;
                rec.min_decryption_version = min;
                Ok(min)
            },
            record,
        )
    }
}

/// `chmod -R go-rwx DIR`: what `init` (and `dev`, for a vault an earlier
/// release made) does to the data directory it made.
pub fn close_to_others(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m =
            fs::symlink_metadata(&p).with_context(|| format!("cannot stat `{}`", p.display()))?;
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = m.permissions().mode() & 0o7700;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot chmod `{}`", p.display()))?;
        if m.is_dir() {
            for e in fs::read_dir(&p).with_context(|| format!("cannot list `{}`", p.display()))? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}
