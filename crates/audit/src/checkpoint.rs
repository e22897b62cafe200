//! Checkpoints outside the log: a signed note in the C2SP
//! `tlog-checkpoint` / `signed-note` format, so an auditor can keep one
//! anywhere and later prove the log was not cut or forked since.
//!
//! ```text
//! mlvault-audit/ed25519:<hex key id>      origin
//! 1234                                    entries covered (the sealed entry's seq)
//! <base64 of the 32-byte entry hash>      that entry's hash
//!                                         (blank line)
//! — mlvault-audit/ed25519:<hex> <base64(key hash ‖ signature)>
//! ```
//!
//! The signature is Ed25519 over the three body lines (each ending in
//! `\n`). The key hash is the first 4 bytes of
//! SHA-256(key name ‖ `\n` ‖ 0x01 ‖ the 32 public key bytes), as signed
//! notes define it for Ed25519.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use vault_manifest::{PublicKey, SecretKey};

/// A checkpoint: the log had `size` entries and entry `size` had `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Entries covered (the sequence number of the sealed entry).
    pub size: u64,
    /// Hex SHA-256 hash of entry `size`.
    pub hash: String,
}

/// The origin line (also the signature's key name) for a server key.
pub fn origin(key: &PublicKey) -> String {
    format!("mlvault-audit/{}", key.keyid())
}

fn key_hash(name: &str, key: &PublicKey) -> [u8; 4] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n\x01");
    ctx.update(&key.to_bytes());
    let d = ctx.finish();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

impl Checkpoint {
    fn body(&self, origin: &str) -> Result<String, String> {
        let raw = hex::decode(&self.hash).map_err(|_| "checkpoint hash is not hex".to_owned())?;
        Ok(format!(
            "{origin}\n{}\n{}\n",
            self.size,
            STANDARD.encode(raw)
        ))
    }

    /// The signed note text.
    pub fn sign(&self, key: &SecretKey) -> Result<String, String> {
        let public = key.public();
        let name = origin(&public);
        let body = self.body(&name)?;
        let sig = key.sign_bytes(body.as_bytes());
        let mut blob = key_hash(&name, &public).to_vec();
        blob.extend_from_slice(&sig);
        Ok(format!(
            "{body}\n\u{2014} {name} {}\n",
            STANDARD.encode(blob)
        ))
    }

    /// Parse a signed note and check it is signed by `key` for its log.
    pub fn verify(note: &str, key: &PublicKey) -> Result<Checkpoint, String> {
        let name = origin(key);
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or("not a signed note: no blank line before the signatures")?;
        let body = format!("{body}\n");
        let mut lines = body.lines();
        let (Some(o), Some(size), Some(hash)) = (lines.next(), lines.next(), lines.next()) else {
            return Err("checkpoint body needs origin, size and hash lines".into());
        };
        if o != name {
            return Err(format!(
                "checkpoint is for `{o}`, not for this server's log (`{name}`)"
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| format!("checkpoint size `{size}` is not a number"))?;
        let hash = STANDARD
            .decode(hash)
            .ok()
            .filter(|h| h.len() == 32)
            .map(hex::encode)
            .ok_or("checkpoint hash is not 32 bytes of base64")?;
        let want = key_hash(&name, key);
        let signed = sigs.lines().any(|l| {
            let Some(rest) = l.strip_prefix("\u{2014} ") else {
                return false;
            };
            let Some((n, b64)) = rest.split_once(' ') else {
                return false;
            };
            let Ok(blob) = STANDARD.decode(b64.trim()) else {
                return false;
            };
            n == name
                && blob.len() == 68
                && blob[..4] == want
                && key.verify_bytes(body.as_bytes(), &blob[4..])
        });
        if !signed {
            return Err("checkpoint signature does not verify with the server key".into());
        }
        Ok(Checkpoint { size, hash })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_round_trips_and_any_change_breaks_it() {
        let key = SecretKey::generate().unwrap();
        let cp = Checkpoint {
            size: 42,
            hash: "ab".repeat(32),
        };
        let note = cp.sign(&key).unwrap();
        assert_eq!(Checkpoint::verify(&note, &key.public()).unwrap(), cp);
        let other = SecretKey::generate().unwrap();
        assert!(Checkpoint::verify(&note, &other.public()).is_err());
        let bumped = note.replacen("\n42\n", "\n43\n", 1);
        assert!(Checkpoint::verify(&bumped, &key.public()).is_err());
        assert!(note.starts_with("mlvault-audit/ed25519:"));
        assert!(note.contains("\n\n\u{2014} mlvault-audit/ed25519:"));
    }
}
