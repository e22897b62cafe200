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

/// What an alias record must say: the reference and the version the
/// server resolved it to.
pub(crate) struct Expect<'a> {
    pub name: &'a str,
    pub alias: &'a str,
    pub version: u64,
    pub digest: &'a str,
}

/// How strict to be, and when "now" is (injected, so the rules are
/// tested without waiting).
pub(crate) struct Rules {
    pub allow_downgrade: bool,
    pub allow_expired: bool,
    /// Refuse a record issued longer ago than this many seconds.
    pub max_record_age: Option<u64>,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

/// Check a signed alias record: signature by a trusted server key, the
/// expected name/alias/version/digest, expiry and age, and no rollback or
/// downgrade against `seen`. Returns the record.
pub(crate) fn check_alias(
    signed_text: &str,
    keys: &[PublicKey],
    want: &Expect<'_>,
    seen: Option<&Seen>,
    rules: &Rules,
) -> Result<AliasRecord> {
    let Expect {
        name,
        alias,
        version,
        digest,
    } = *want;
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
    let now = rules.now;
    if now > rec.expires && !rules.allow_expired {
        return Err(Error::Integrity(format!(
            "alias record for {name}:{alias} expired {}s ago (a frozen or stale server?); pass --allow-expired to accept it",
            now - rec.expires
        )));
    }
    if let Some(max) = rules.max_record_age {
        let age = now.saturating_sub(rec.issued);
        if age > max {
            return Err(Error::Integrity(format!(
                "the alias record for `{name}:{alias}` was issued {age}s ago, more than --max-record-age ({max}s): a replayed record, or a server that cannot renew it"
            )));
        }
    }
    if let Some(seen) = seen {
        if rec.sequence == seen.sequence && rec.version != seen.version {
            return Err(Error::Integrity(format!(
                "alias record {name}:{alias} sequence {} names version {}, but the same sequence named version {} before",
                rec.sequence, rec.version, seen.version
            )));
        }
        if !rules.allow_downgrade {
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

#[cfg(test)]
mod tests {
    use super::*;
    use vault_manifest::SecretKey;

    const NOW: u64 = 1_800_000_000;

    fn record(key: &SecretKey, version: u64, sequence: u64, issued: u64) -> String {
        let rec = AliasRecord {
            name: "t/m".into(),
            alias: "prod".into(),
            version,
            digest: format!("sha256:{version}"),
            sequence,
            issued,
            expires: issued + 86400,
            gate: None,
        };
        serde_json::to_string(&SignedAlias::sign(&rec, key).unwrap()).unwrap()
    }

    fn want(version: u64) -> (String, u64) {
        (format!("sha256:{version}"), version)
    }

    fn check(
        text: &str,
        keys: &[PublicKey],
        version: u64,
        seen: Option<&Seen>,
        rules: &Rules,
    ) -> Result<AliasRecord> {
        let (digest, version) = want(version);
        let e = Expect {
            name: "t/m",
            alias: "prod",
            version,
            digest: &digest,
        };
        check_alias(text, keys, &e, seen, rules)
    }

    fn strict(now: u64) -> Rules {
        Rules {
            allow_downgrade: false,
            allow_expired: false,
            max_record_age: None,
            now,
        }
    }

    fn refused(r: Result<AliasRecord>, says: &str) {
        match r {
            Err(Error::Integrity(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("expected an integrity error saying {says:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_fresh_record_from_a_trusted_key_is_taken() {
        let k = SecretKey::generate().unwrap();
        let text = record(&k, 7, 3, NOW - 10);
        let rec = check(&text, &[k.public()], 7, None, &strict(NOW)).unwrap();
        assert_eq!((rec.version, rec.sequence), (7, 3));
        let other = SecretKey::generate().unwrap();
        refused(
            check(&text, &[other.public()], 7, None, &strict(NOW)),
            "untrusted",
        );
        refused(
            check(&text, &[k.public()], 8, None, &strict(NOW)),
            "the server resolved version 8",
        );
    }

    #[test]
    fn expiry_and_age_follow_the_clock() {
        let k = SecretKey::generate().unwrap();
        let text = record(&k, 7, 3, NOW);
        assert!(check(&text, &[k.public()], 7, None, &strict(NOW + 86400)).is_ok());
        refused(
            check(&text, &[k.public()], 7, None, &strict(NOW + 86401)),
            "expired 1s ago",
        );
        let lenient = Rules {
            allow_expired: true,
            ..strict(NOW + 90_000)
        };
        assert!(check(&text, &[k.public()], 7, None, &lenient).is_ok());
        let young = Rules {
            max_record_age: Some(3600),
            ..strict(NOW + 3600)
        };
        assert!(check(&text, &[k.public()], 7, None, &young).is_ok());
        let old = Rules {
            max_record_age: Some(3600),
            ..strict(NOW + 3601)
        };
        refused(
            check(&text, &[k.public()], 7, None, &old),
            "issued 3601s ago",
        );
    }

    #[test]
    fn rollback_and_downgrade_are_refused_unless_allowed() {
        let k = SecretKey::generate().unwrap();
        let seen = Seen {
            sequence: 5,
            version: 7,
        };
        let older_seq = record(&k, 7, 4, NOW);
        refused(
            check(&older_seq, &[k.public()], 7, Some(&seen), &strict(NOW)),
            "rollback",
        );
        let older_version = record(&k, 6, 6, NOW);
        refused(
            check(&older_version, &[k.public()], 6, Some(&seen), &strict(NOW)),
            "downgrade",
        );
        let allow = Rules {
            allow_downgrade: true,
            ..strict(NOW)
        };
        assert!(check(&older_seq, &[k.public()], 7, Some(&seen), &allow).is_ok());
        assert!(check(&older_version, &[k.public()], 6, Some(&seen), &allow).is_ok());
        // One sequence never names two versions, whatever is allowed.
        let forked = record(&k, 8, 5, NOW);
        refused(
            check(&forked, &[k.public()], 8, Some(&seen), &allow),
            "the same sequence named version 7",
        );
        let newer = record(&k, 8, 6, NOW);
        assert!(check(&newer, &[k.public()], 8, Some(&seen), &strict(NOW)).is_ok());
    }
}
