//! ed25519 signing keys, key files, and DSSE signatures (strict verification).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature as EdSignature, Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::envelope::{Envelope, Signature};
use crate::{Error, Result};

const SECRET_TAG: &str = "MLVAULT-ED25519-SECRET-KEY-1";
const PUBLIC_TAG: &str = "mlvault-ed25519";

/// An ed25519 signing key. No `Debug`, zeroized on drop (by `ed25519-dalek`).
pub struct SecretKey(SigningKey);

/// An ed25519 public key with its key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

fn random32() -> Result<Zeroizing<[u8; 32]>> {
    use ring::rand::SecureRandom;
    let mut b = Zeroizing::new([0u8; 32]);
    ring::rand::SystemRandom::new()
        .fill(&mut b[..])
        .map_err(|_| Error::Key("system random number generator failed".into()))?;
    Ok(b)
}

impl SecretKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let seed = random32()?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Sign raw bytes.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// The key file text (keep it mode 0600).
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# mlvault ed25519 signing key ({})\n{SECRET_TAG} {}\n",
            self.public().keyid(),
            STANDARD.encode(self.0.as_bytes())
        ))
    }

    /// Parse a key file written by [`SecretKey::to_file_text`].
    pub fn from_file_text(text: &str) -> Result<Self> {
        let b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(SECRET_TAG))
            .ok_or_else(|| Error::Key("not an mlvault ed25519 signing key file".into()))?;
        let raw = Zeroizing::new(
            STANDARD
                .decode(b64.trim())
                .map_err(|_| Error::Key("signing key is not valid base64".into()))?,
        );
        let bytes: &[u8; 32] = raw[..]
            .try_into()
            .map_err(|_| Error::Key("signing key must be 32 bytes".into()))?;
        Ok(Self(SigningKey::from_bytes(bytes)))
    }

    /// Raw secret bytes (for sealing under the master key).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// From raw secret bytes.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(b))
    }
}

impl PublicKey {
    /// `ed25519:` and the hex SHA-256 of the 32 public key bytes.
    pub fn keyid(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        format!("ed25519:{}", hex::encode(d.as_ref()))
    }

    /// The 32 raw public key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key file text.
    pub fn to_file_text(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}\n",
            STANDARD.encode(self.0.as_bytes()),
            self.keyid()
        )
    }

    /// Parse a public key file (`mlvault-ed25519 <base64> [comment]`).
    /// Small-order and non-canonical keys are refused.
    pub fn from_file_text(text: &str) -> Result<Self> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(PUBLIC_TAG))
            .ok_or_else(|| Error::Key("not an mlvault ed25519 public key file".into()))?;
        let b64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| Error::Key("public key file has no key".into()))?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| Error::Key("public key is not valid base64".into()))?;
        let bytes: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Key("public key must be 32 bytes".into()))?;
        let vk = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| Error::Key("public key is not a valid ed25519 point".into()))?;
        if vk.is_weak() {
            return Err(Error::Key("public key has small order".into()));
        }
        Ok(Self(vk))
    }

    /// Strictly verify `sig` over `msg`.
    pub fn verify_bytes(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        self.0
            .verify_strict(msg, &EdSignature::from_bytes(&sig))
            .is_ok()
    }
}

impl Envelope {
    /// Add a signature by `key` over the DSSE PAE.
    pub fn sign(&mut self, key: &SecretKey) -> Result<()> {
        let sig = key.sign_bytes(&self.pae()?);
        self.signatures.push(Signature {
            keyid: key.public().keyid(),
            sig: STANDARD.encode(sig),
        });
        Ok(())
    }

    /// Verify that at least one signature is a valid signature by one of the
    /// `trusted` keys. Returns that key's id.
    pub fn verify_any(&self, trusted: &[PublicKey]) -> Result<String> {
        if self.signatures.is_empty() {
            return Err(Error::Signature("manifest is not signed".into()));
        }
        let pae = self.pae()?;
        let mut seen = Vec::new();
        for s in &self.signatures {
            let Some(key) = trusted.iter().find(|k| k.keyid() == s.keyid) else {
                seen.push(s.keyid.clone());
                continue;
            };
            let sig = STANDARD.decode(&s.sig).unwrap_or_default();
            if key.verify_bytes(&pae, &sig) {
                return Ok(s.keyid.clone());
            }
            return Err(Error::Signature(format!(
                "signature by `{}` does not verify (tampered manifest or forged signature)",
                s.keyid
            )));
        }
        Err(Error::Signature(format!(
            "manifest is signed only by untrusted key(s): {}",
            seen.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    #[test]
    fn sign_verify_and_refuse() {
        let k = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let mut env = Envelope::wrap(b"{\"x\":1}");
        assert!(env.verify_any(&[k.public()]).is_err());
        env.sign(&k).unwrap();
        assert_eq!(env.verify_any(&[k.public()]).unwrap(), k.public().keyid());
        assert!(env.verify_any(&[other.public()]).is_err());
        let mut tampered = env.clone();
        tampered.payload = STANDARD.encode(b"{\"x\":2}");
        assert!(tampered.verify_any(&[k.public()]).is_err());
    }

    #[test]
    fn key_files_round_trip() {
        let k = SecretKey::generate().unwrap();
        let back = SecretKey::from_file_text(&k.to_file_text()).unwrap();
        assert_eq!(back.public(), k.public());
        let p = PublicKey::from_file_text(&k.public().to_file_text()).unwrap();
        assert_eq!(p, k.public());
        assert!(PublicKey::from_file_text("mlvault-ed25519 AAAA").is_err());
        // The identity point (small order) is refused.
        let mut id = [0u8; 32];
        id[0] = 1;
        let text = format!("mlvault-ed25519 {}", STANDARD.encode(id));
        assert!(PublicKey::from_file_text(&text).is_err());
    }
}
