//! Bearer tokens: `mlv_` + 256 random bits (hex). Only SHA-256 hashes are stored.

use vault_crypto::random_bytes;

/// Prefix that makes a leaked token recognizable to secret scanners.
pub const TOKEN_PREFIX: &str = "mlv_";

/// A new token secret and its public id.
pub fn generate() -> anyhow::Result<(String, String)> {
    let secret: [u8; 32] = random_bytes()?;
    let id: [u8; 8] = random_bytes()?;
    Ok((
        format!("{TOKEN_PREFIX}{}", hex::encode(secret)),
        format!("tok_{}", hex::encode(id)),
    ))
}

/// The storage key of a token: hex SHA-256 of the secret. The secret has 256
/// bits of entropy, so a fast hash is enough.
pub fn hash(secret: &str) -> String {
    hex::encode(vault_crypto::sha256(secret.as_bytes()))
}
