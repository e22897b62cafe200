//! Key newtypes. Every key zeroizes on drop and has no `Debug` or `Display`.

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Fill a fresh array from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| Error::Random)?;
    Ok(out)
}

/// SHA-256 of a byte string.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; 32]);

        impl $name {
            /// A fresh random key.
            pub fn generate() -> Result<Self> {
                Ok(Self(random_bytes()?))
            }

            /// The raw key bytes. Keep the borrow short; never log them.
            pub fn expose(&self) -> &[u8; 32] {
                &self.0
            }

            /// Wrap raw bytes (from an unwrap or unseal). The caller's copy
            /// should be zeroized.
            pub fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
        }
    };
}

secret_key!(
    /// The vault's root key. Exists unsealed only in memory; on disk it is
    /// always sealed with age ([`crate::Sealer`]).
    MasterKey
);
secret_key!(
    /// A data-encryption key: one per blob, random, stored only wrapped by a
    /// KEK ([`crate::WrappedDek`]).
    Dek
);
secret_key!(
    /// A key-encryption key of one key ring version.
    Kek
);

impl Kek {
    pub(crate) fn aead(&self) -> ring::aead::LessSafeKey {
        aead_key(&self.0)
    }
}

impl MasterKey {
    pub(crate) fn aead(&self) -> ring::aead::LessSafeKey {
        aead_key(&self.0)
    }
}

pub(crate) fn aead_key(bytes: &[u8; 32]) -> ring::aead::LessSafeKey {
    // A 32-byte slice is always a valid AES-256 key: `new` cannot fail here.
    #[allow(clippy::expect_used)]
    let unbound =
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes).expect("32-byte AES-256 key");
    ring::aead::LessSafeKey::new(unbound)
}

/// Seal `plaintext` under `key` with a random 96-bit nonce; returns (nonce, ciphertext‖tag).
pub(crate) fn seal_small(
    key: &ring::aead::LessSafeKey,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; 12], Vec<u8>)> {
    let nonce: [u8; 12] = random_bytes()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        ring::aead::Nonce::assume_unique_for_key(nonce),
        ring::aead::Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| Error::Random)?;
    Ok((nonce, buf))
}

/// Open a 32-byte key sealed by [`seal_small`].
pub(crate) fn open_key(
    key: &ring::aead::LessSafeKey,
    aad: &[u8],
    nonce: &[u8; 12],
    ciphertext: &[u8],
    version: u32,
) -> Result<[u8; 32]> {
    let mut buf = ciphertext.to_vec();
    let res = key
        .open_in_place(
            ring::aead::Nonce::assume_unique_for_key(*nonce),
            ring::aead::Aad::from(aad),
            &mut buf,
        )
        .ok()
        .and_then(|pt| <[u8; 32]>::try_from(&pt[..]).ok());
    buf.zeroize();
    res.ok_or(Error::Unwrap { version })
}
