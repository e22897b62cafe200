//! `vault-crypto` owns every cryptographic decision of mlvault: the streaming
//! blob format (v1, and v2 which binds the digest at the end), the envelope key hierarchy and the sealing of the master
//! key with age.
//!
//! Start with [`Keyring`] (master key → versioned KEKs → wrapped DEKs), then
//! [`BlobEncryptor`] / [`BlobDecryptor`] for the segment format. The
//! [`design`] module explains the threat model, key hierarchy and nonce scheme.
//!
//! ```
//! use vault_crypto::{BlobDecryptor, BlobEncryptor, Dek, EncryptionContext, Header, Keyring, MasterKey};
//!
//! let master = MasterKey::generate().unwrap();
//! let (ring, _wrapped_kek) = Keyring::create(&master).unwrap();
//! let plaintext = b"model weights";
//! let ctx = EncryptionContext::new([7; 16], "fraud", plaintext.len() as u64,
//!     vault_crypto::sha256(plaintext)).unwrap();
//! let dek = Dek::generate().unwrap();
//! let wrapped = ring.wrap_dek(&dek, &ctx).unwrap();
//!
//! let mut enc = BlobEncryptor::new(&dek, ring.id(), ring.current_version(), ctx.clone(), 4096).unwrap();
//! let mut blob = enc.header().to_vec();
//! let mut seg = plaintext.to_vec();
//! enc.seal_segment(&mut seg, true).unwrap();
//! blob.extend_from_slice(&seg);
//!
//! let (header, header_len) = Header::parse(&blob).unwrap();
//! let dek = ring.unwrap_dek(&wrapped, header.context()).unwrap();
//! let dec = BlobDecryptor::new(&header, &dek).unwrap();
//! let mut seg = blob[header_len..].to_vec();
//! let out = dec.open_segment(0, &mut seg).unwrap();
//! assert_eq!(out, plaintext);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod design;
mod error;
mod format;
mod keyring;
mod keys;
mod seal;
mod stream;

/// Secret wrappers used in this API (from `age`'s `secrecy`).
pub use age::secrecy::{ExposeSecret as SecretExpose, SecretString};
pub use error::{Error, Result};
pub use format::{
    EncryptionContext, Header, DEFAULT_SEGMENT_SIZE, FORMAT_V1, FORMAT_V2, FORMAT_VERSION,
    MAX_HEADER_LEN,
};
pub use keyring::{Keyring, KeyringId, WrappedDek, WrappedKek, WrappedSecret};
pub use keys::{random_bytes, sha256, Dek, MasterKey};
pub use seal::{generate_identity, Sealer, Unsealer};
pub use stream::{BlobDecryptor, BlobEncryptor, StreamOpener};

/// Length of the AES-256-GCM tag that ends every ciphertext segment.
pub const TAG_LEN: usize = 16;
