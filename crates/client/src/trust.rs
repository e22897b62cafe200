//! What the client trusts: publisher keys for manifests, the server's key
//! for alias records (pinned on first use unless given), and, per server
//! and alias, the highest record sequence and version seen (rollback and
//! downgrade protection).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vault_manifest::{AliasRecord, PublicKey, SignedAlias};

use crate::{Error, Result};

/// Read a public key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read public key `{}`", path.display()), e))?;
    PublicKey::from_file_text(&text).map_err(|e| Error::Usage(format!("`{}`: {e}", path.display())))
}

/// Where per-server state lives: `$MLVAULT_STATE_DIR`, else
/// `$XDG_STATE_HOME/mlvault`, else `~/.local/state/mlvault`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MLVAULT_STATE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("mlvault");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/state/mlvault")
}

/// Highest alias record seen.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Seen {
    /// Record sequence.
    pub sequence: u64,
    /// Version it pointed at.
    pub version: u64,
}

/// What this client remembers about one server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerState {
    /// Server URL.
    pub addr: String,
    /// Pinned alias-signing key (public key file text).
    pub server_key: Option<String>,
    /// `name:alias` → highest record seen.
    pub aliases: BTreeMap<String, Seen>,
}

impl ServerState {
    fn path(dir: &Path, addr: &str) -> PathBuf {
        let h = ring::digest::digest(&ring::digest::SHA256, addr.as_bytes());
        dir.join("servers")
            .join(format!("{}.json", &hex::encode(h.as_ref())[..24]))
    }

    /// Load (or start) the state of `addr`.
    pub fn load(dir: &Path, addr: &str) -> Result<Self> {
        let p = Self::path(dir, addr);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Usage(format!("corrupt client state `{}`: {e}", p.display()))),
            Err(_) => Ok(ServerState {
                addr: addr.to_owned(),
                ..Default::default()
            }),
        }
    }

    /// Save atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = Self::path(dir, &self.addr);
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io(format!("cannot create `{}`", parent.display()), e))?;
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| Error::io(format!("cannot write `{}`", p.display()), e))
    }
}

/// Check a signed alias record: signature by a trusted server key, the
/// expected name/alias/version/digest, expiry, and no rollback or downgrade
/// against `seen`. Returns the record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_alias(
    signed_text: &str,
    keys: &[PublicKey],
    name: &str,
    alias: &str,
    version: u64,
    digest: &str,
    seen: Option<&Seen>,
    allow_downgrade: bool,
    allow_expired: bool,
) -> Result<AliasRecord> {
    let signed: SignedAlias = serde_json::from_str(signed_text)
        .map_err(|e| Error::Integrity(format!("malformed alias record: {e}")))?;
    let rec = signed
        .verify(keys)
        .map_err(|e| Error::Integrity(e.to_string()))?;
    if rec.name != name || rec.alias != alias || rec.version != version || rec.digest != digest {
        return Err(Error::Integrity(format!(
            "alias record says {}:{} → version {} ({}), the server resolved version {version} ({digest})",
            rec.name, rec.alias, rec.version, rec.digest
        )));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if now > rec.expires && !allow_expired {
        return Err(Error::Integrity(format!(
            "alias record for {name}:{alias} expired {}s ago (a frozen or stale server?); pass --allow-expired to accept it",
            now - rec.expires
        )));
    }
    if let Some(seen) = seen {
        if rec.sequence == seen.sequence && rec.version != seen.version {
            return Err(Error::Integrity(format!(
                "alias record {name}:{alias} sequence {} names version {}, but the same sequence named version {} before",
                rec.sequence, rec.version, seen.version
            )));
        }
        if !allow_downgrade {
            if rec.sequence < seen.sequence {
                return Err(Error::Integrity(format!(
                    "rollback: alias record {name}:{alias} has sequence {}, older than {} seen before; pass --allow-downgrade to accept it",
                    rec.sequence, seen.sequence
                )));
            }
            if rec.version < seen.version {
                return Err(Error::Integrity(format!(
                    "downgrade: {name}:{alias} now points at version {}, older than version {} seen before; pass --allow-downgrade to accept it",
                    rec.version, seen.version
                )));
            }
        }
    }
    Ok(rec)
}
