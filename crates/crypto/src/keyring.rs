//! The envelope key hierarchy: master key → versioned KEKs → wrapped DEKs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::format::EncryptionContext;
use crate::keys::{open_key, random_bytes, seal_small, Dek, Kek, MasterKey};
use crate::{Error, Result};

/// Associated-data labels for key wrapping. On-disk format constants.
const KEK_LABEL: &[u8] = b"mlvault/v1 kek";
const DEK_LABEL: &[u8] = b"mlvault/v1 dek";

/// Random identifier of a key ring, written into every blob header and every
/// wrapped key so that keys of one vault are never tried in another.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct KeyringId(#[serde(with = "hex::serde")] [u8; 16]);

impl KeyringId {
    /// The id's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// An id from its bytes.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        Self(b)
    }
}

/// A KEK sealed under the master key. Safe to store anywhere.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrappedKek {
    /// KEK version (1, 2, …).
    pub version: u32,
    /// AES-GCM nonce.
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    #[serde(with = "hex::serde")]
    pub ciphertext: Vec<u8>,
}

/// A DEK sealed under one KEK version, bound to its blob's encryption context.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrappedDek {
    /// Key ring that wrapped it.
    pub keyring: KeyringId,
    /// KEK version that wrapped it.
    pub kek_version: u32,
    /// AES-GCM nonce.
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    #[serde(with = "hex::serde")]
    pub ciphertext: Vec<u8>,
}

/// The unsealed key ring of one vault: every KEK version it knows, the
/// current one used for new blobs, and the minimum version still accepted for
/// decryption. Has no `Debug`: it holds keys.
pub struct Keyring {
    id: KeyringId,
    keks: BTreeMap<u32, Kek>,
    min_decryption_version: u32,
}

fn kek_aad(id: &KeyringId, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(KEK_LABEL.len() + 20);
    aad.extend_from_slice(KEK_LABEL);
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

fn dek_aad(id: &KeyringId, version: u32, ctx: &EncryptionContext) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_LABEL.len() + 300);
    aad.extend_from_slice(DEK_LABEL);
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    ctx.encode_into(&mut aad);
    aad
}

fn wrap_kek(master: &MasterKey, id: &KeyringId, version: u32, kek: &Kek) -> Result<WrappedKek> {
    let (nonce, ciphertext) = seal_small(&master.aead(), &kek_aad(id, version), kek.expose())?;
    Ok(WrappedKek {
        version,
        nonce,
        ciphertext,
    })
}

impl Keyring {
    /// A new key ring with a random id and KEK version 1. Store the returned
    /// wrapped KEK; the ring can be reopened from it with [`Keyring::open`].
    pub fn create(master: &MasterKey) -> Result<(Self, WrappedKek)> {
        let id = KeyringId(random_bytes()?);
        let kek = Kek::generate()?;
        let wrapped = wrap_kek(master, &id, 1, &kek)?;
        let mut keks = BTreeMap::new();
        keks.insert(1, kek);
        Ok((
            Self {
                id,
                keks,
                min_decryption_version: 1,
            },
            wrapped,
        ))
    }

    /// Reopen a key ring from its wrapped KEKs. Fails if any of them does not
    /// unwrap under `master` (wrong master key or tampered metadata).
    pub fn open(
        master: &MasterKey,
        id: KeyringId,
        wrapped: &[WrappedKek],
        min_decryption_version: u32,
    ) -> Result<Self> {
        let master_key = master.aead();
        let mut keks = BTreeMap::new();
        for w in wrapped {
            let mut raw = open_key(
                &master_key,
                &kek_aad(&id, w.version),
                &w.nonce,
                &w.ciphertext,
                w.version,
            )?;
            keks.insert(w.version, Kek::from_bytes(raw));
            raw.zeroize();
        }
        if keks.is_empty() {
            return Err(Error::Context("key ring has no KEK"));
        }
        Ok(Self {
            id,
            keks,
            min_decryption_version,
        })
    }

    /// This ring's id.
    pub fn id(&self) -> &KeyringId {
        &self.id
    }

    /// The KEK version new blobs are wrapped with (the highest).
    pub fn current_version(&self) -> u32 {
        self.keks.keys().next_back().copied().unwrap_or(1)
    }

    /// Every KEK version in the ring, oldest first.
    pub fn versions(&self) -> Vec<u32> {
        self.keks.keys().copied().collect()
    }

    /// Versions below this one are refused for decryption.
    pub fn min_decryption_version(&self) -> u32 {
        self.min_decryption_version
    }

    /// Refuse KEK versions below `version` from now on. Fails if that would
    /// retire the current version.
    pub fn set_min_decryption_version(&mut self, version: u32) -> Result<()> {
        if version > self.current_version() {
            return Err(Error::Context(
                "minimum decryption version above the current KEK",
            ));
        }
        self.min_decryption_version = version;
        Ok(())
    }

    /// Add KEK version current+1 and make it current. Store the returned
    /// wrapped KEK.
    pub fn rotate(&mut self, master: &MasterKey) -> Result<WrappedKek> {
        let version = self.current_version() + 1;
        let kek = Kek::generate()?;
        let wrapped = wrap_kek(master, &self.id, version, &kek)?;
        self.keks.insert(version, kek);
        Ok(wrapped)
    }

    /// Wrap `dek` under the current KEK, bound to `ctx`.
    pub fn wrap_dek(&self, dek: &Dek, ctx: &EncryptionContext) -> Result<WrappedDek> {
        let version = self.current_version();
        let kek = self
            .keks
            .get(&version)
            .ok_or(Error::UnknownKekVersion(version))?;
        let (nonce, ciphertext) =
            seal_small(&kek.aead(), &dek_aad(&self.id, version, ctx), dek.expose())?;
        Ok(WrappedDek {
            keyring: self.id,
            kek_version: version,
            nonce,
            ciphertext,
        })
    }

    /// Unwrap a DEK for the blob described by `ctx`. Fails for another ring,
    /// an unknown or retired KEK version, or a context that is not the one the
    /// DEK was wrapped for (a DEK swapped between blobs).
    pub fn unwrap_dek(&self, wrapped: &WrappedDek, ctx: &EncryptionContext) -> Result<Dek> {
        if wrapped.keyring != self.id {
            return Err(Error::WrongKeyring);
        }
        let v = wrapped.kek_version;
        if v < self.min_decryption_version {
            return Err(Error::RetiredKekVersion {
                version: v,
                min: self.min_decryption_version,
            });
        }
        let kek = self.keks.get(&v).ok_or(Error::UnknownKekVersion(v))?;
        let mut raw = open_key(
            &kek.aead(),
            &dek_aad(&self.id, v, ctx),
            &wrapped.nonce,
            &wrapped.ciphertext,
            v,
        )?;
        let dek = Dek::from_bytes(raw);
        raw.zeroize();
        Ok(dek)
    }

    /// Re-wrap a DEK under the current KEK without touching the blob.
    pub fn rewrap(&self, wrapped: &WrappedDek, ctx: &EncryptionContext) -> Result<WrappedDek> {
        let dek = self.unwrap_dek(wrapped, ctx)?;
        self.wrap_dek(&dek, ctx)
    }
}

/// Associated-data label for other secrets sealed under the master key.
const SECRET_LABEL: &[u8] = b"mlvault/v1 secret ";

/// A 32-byte secret (such as the server's signing key) sealed under the
/// master key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WrappedSecret {
    /// AES-GCM nonce.
    #[serde(with = "hex::serde")]
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    #[serde(with = "hex::serde")]
    pub ciphertext: Vec<u8>,
}

impl MasterKey {
    /// Seal a 32-byte secret under this key; `label` names its purpose and
    /// must be given again to open it.
    pub fn wrap_secret(&self, label: &str, secret: &[u8; 32]) -> Result<WrappedSecret> {
        let aad = [SECRET_LABEL, label.as_bytes()].concat();
        let (nonce, ciphertext) = seal_small(&self.aead(), &aad, secret)?;
        Ok(WrappedSecret { nonce, ciphertext })
    }

    /// Open a secret sealed by [`MasterKey::wrap_secret`].
    pub fn unwrap_secret(
        &self,
        label: &str,
        w: &WrappedSecret,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let aad = [SECRET_LABEL, label.as_bytes()].concat();
        let raw = open_key(&self.aead(), &aad, &w.nonce, &w.ciphertext, 0)?;
        Ok(zeroize::Zeroizing::new(raw))
    }
}

impl MasterKey {
    /// A 32-byte key for `purpose` and `context` (for example the
    /// pseudonymization key of one namespace), derived with HKDF-SHA256 from
    /// the master key: stable for the vault, independent across contexts.
    pub fn derive(&self, purpose: &str, context: &str) -> zeroize::Zeroizing<[u8; 32]> {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"mlvault/v1 derive")
            .extract(self.expose());
        let info = [purpose.as_bytes(), b"\0", context.as_bytes()];
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        // Expanding 32 bytes from SHA-256 cannot fail.
        if let Ok(okm) = prk.expand(&info, Len32) {
            let _ = okm.fill(&mut out[..]);
        }
        out
    }
}
