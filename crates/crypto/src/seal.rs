//! Sealing the master key with age: to an X25519 identity or a passphrase.

use std::str::FromStr;

use age::secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use crate::keys::MasterKey;
use crate::{Error, Result};

/// Who can open a sealed master key. Has no `Debug`: it may hold a passphrase.
pub enum Sealer {
    /// An age X25519 recipient (`age1…`).
    Recipient(age::x25519::Recipient),
    /// A passphrase (age's scrypt recipient).
    Passphrase(SecretString),
}

/// What opens a sealed master key. Has no `Debug`: it holds a secret.
pub enum Unsealer {
    /// An age X25519 identity (an `AGE-SECRET-KEY-…` line).
    Identity(age::x25519::Identity),
    /// A passphrase.
    Passphrase(SecretString),
}

/// Generate a new X25519 identity. Returns the identity file contents (keep
/// secret, mode 0600) and the public recipient string.
pub fn generate_identity() -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let secret = format!(
        "# mlvault unseal identity (age X25519); recipient: {public}\n{}\n",
        id.to_string().expose_secret()
    );
    (SecretString::from(secret), public)
}

impl Sealer {
    /// A sealer for a passphrase.
    pub fn passphrase(p: String) -> Self {
        Sealer::Passphrase(SecretString::from(p))
    }

    /// The sealer matching an unsealer (same identity or passphrase).
    pub fn for_unsealer(u: &Unsealer) -> Self {
        match u {
            Unsealer::Identity(id) => Sealer::Recipient(id.to_public()),
            Unsealer::Passphrase(p) => {
                Sealer::Passphrase(SecretString::from(p.expose_secret().to_owned()))
            }
        }
    }

    /// Seal `key` into an ASCII-armored age file.
    pub fn seal(&self, key: &MasterKey) -> Result<Vec<u8>> {
        let res = match self {
            Sealer::Recipient(r) => {
                age::encrypt_and_armor(r, key.expose()).map_err(|e| e.to_string())
            }
            Sealer::Passphrase(p) => {
                let r =
                    age::scrypt::Recipient::new(SecretString::from(p.expose_secret().to_owned()));
                age::encrypt_and_armor(&r, key.expose()).map_err(|e| e.to_string())
            }
        };
        res.map(String::into_bytes)
            .map_err(|e| Error::Seal(format!("sealing the master key failed: {e}")))
    }
}

impl Unsealer {
    /// Parse an age identity file: comment lines (`#`) and blank lines are
    /// skipped; the first identity line is used.
    pub fn from_identity_file(contents: &str) -> Result<Self> {
        let line = contents
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| Error::Seal("identity file holds no age identity".into()))?;
        let id = age::x25519::Identity::from_str(line).map_err(|_| {
            Error::Seal("identity file does not hold a valid age X25519 identity".into())
        })?;
        Ok(Unsealer::Identity(id))
    }

    /// An unsealer for a passphrase.
    pub fn passphrase(p: String) -> Self {
        Unsealer::Passphrase(SecretString::from(p))
    }

    /// Open a sealed master key.
    pub fn unseal(&self, sealed: &[u8]) -> Result<MasterKey> {
        let res = match self {
            Unsealer::Identity(id) => age::decrypt(id, sealed),
            Unsealer::Passphrase(p) => {
                let id =
                    age::scrypt::Identity::new(SecretString::from(p.expose_secret().to_owned()));
                age::decrypt(&id, sealed)
            }
        };
        let mut plain = res.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                Error::Seal("cannot unseal the master key: wrong identity or passphrase".into())
            }
            other => Error::Seal(format!("cannot unseal the master key: {other}")),
        })?;
        let key = <[u8; 32]>::try_from(&plain[..])
            .map(MasterKey::from_bytes)
            .map_err(|_| Error::Seal("sealed master key has the wrong length".into()));
        plain.zeroize();
        key
    }
}
