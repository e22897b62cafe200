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

    /// Parse a signing key file: mlvault's own text ([`SecretKey::to_file_text`]),
    /// PKCS#8 PEM (`BEGIN PRIVATE KEY`, as `openssl genpkey -algorithm
    /// ed25519` writes) or an unencrypted OpenSSH key (`BEGIN OPENSSH
    /// PRIVATE KEY`, as `ssh-keygen -t ed25519 -N ''` writes).
    pub fn from_file_text(text: &str) -> Result<Self> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let k = ssh_key::PrivateKey::from_openssh(text.trim())
                .map_err(|e| Error::Key(format!("OpenSSH private key: {e}")))?;
            if k.is_encrypted() {
                return Err(Error::Key(
                    "the OpenSSH key is encrypted; give a copy without a passphrase (`ssh-keygen -p -N '' -f COPY`)".into(),
                ));
            }
            let pair = k
                .key_data()
                .ed25519()
                .ok_or_else(|| Error::Key("the OpenSSH key is not an ed25519 key".into()))?;
            let key = Self(SigningKey::from_bytes(&pair.private.to_bytes()));
            if key.public().to_bytes() != pair.public.0 {
                return Err(Error::Key(
                    "the OpenSSH key's public half does not match its private half".into(),
                ));
            }
            return Ok(key);
        }
        if text.contains("-----BEGIN PRIVATE KEY-----") {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            return SigningKey::from_pkcs8_pem(text.trim())
                .map(Self)
                .map_err(|e| Error::Key(format!("PKCS#8 ed25519 private key: {e}")));
        }
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

    /// The key as PKCS#8 v1 PEM (the seed alone, as `openssl genpkey`
    /// writes it; OpenSSL 3 does not read the v2 form with the public key).
    /// Keep it mode 0600.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, KeypairBytes};
        KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        }
        .to_pkcs8_pem(LineEnding::LF)
        .map(|s| Zeroizing::new(s.to_string()))
        .map_err(|e| Error::Key(format!("cannot encode the key as PEM: {e}")))
    }

    /// The key as an unencrypted OpenSSH private key (keep it mode 0600).
    pub fn to_openssh(&self) -> Result<Zeroizing<String>> {
        let pair = ssh_key::private::Ed25519Keypair {
            public: ssh_key::public::Ed25519PublicKey(self.public().to_bytes()),
            private: ssh_key::private::Ed25519PrivateKey::from_bytes(&self.0.to_bytes()),
        };
        ssh_key::PrivateKey::new(pair.into(), self.public().keyid())
            .and_then(|k| k.to_openssh(ssh_key::LineEnding::LF))
            .map_err(|e| Error::Key(format!("cannot encode the key for OpenSSH: {e}")))
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

    /// The key as SPKI PEM (`BEGIN PUBLIC KEY`).
    pub fn to_pem(&self) -> Result<String> {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePublicKey};
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(format!("cannot encode the key as PEM: {e}")))
    }

    /// The key as an OpenSSH public key line (`ssh-ed25519 AAAA… keyid`).
    pub fn to_openssh(&self) -> Result<String> {
        let data =
            ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(self.to_bytes()));
        ssh_key::PublicKey::new(data, self.keyid())
            .to_openssh()
            .map(|l| l + "\n")
            .map_err(|e| Error::Key(format!("cannot encode the key for OpenSSH: {e}")))
    }

    /// Parse a public key file: mlvault's own text (`mlvault-ed25519
    /// <base64> [comment]`), SPKI PEM (`BEGIN PUBLIC KEY`) or an OpenSSH
    /// line (`ssh-ed25519 AAAA… [comment]`). Small-order and non-canonical
    /// keys are refused.
    pub fn from_file_text(text: &str) -> Result<Self> {
        if text.contains("-----BEGIN PUBLIC KEY-----") {
            use ed25519_dalek::pkcs8::DecodePublicKey;
            let vk = VerifyingKey::from_public_key_pem(text.trim())
                .map_err(|e| Error::Key(format!("SPKI ed25519 public key: {e}")))?;
            return Self::checked(vk.to_bytes());
        }
        if let Some(line) = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("ssh-ed25519 "))
        {
            let k = ssh_key::PublicKey::from_openssh(line)
                .map_err(|e| Error::Key(format!("OpenSSH public key: {e}")))?;
            let raw = k
                .key_data()
                .ed25519()
                .ok_or_else(|| Error::Key("the OpenSSH key is not an ed25519 key".into()))?;
            return Self::checked(raw.0);
        }
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
        Self::checked(bytes)
    }

    /// A public key from its 32 bytes; small-order and non-canonical
    /// points are refused.
    fn checked(bytes: [u8; 32]) -> Result<Self> {
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
    /// `trusted` keys. Returns that key's id (`ed25519:<hex>`).
    ///
    /// A signature whose `keyid` names a trusted key must verify with it; a
    /// signature without a `keyid`, or with one of another tool's scheme,
    /// is tried against every trusted key, as DSSE says a keyid is only a
    /// hint.
    pub fn verify_any(&self, trusted: &[PublicKey]) -> Result<String> {
        if self.signatures.is_empty() {
            return Err(Error::Signature("manifest is not signed".into()));
        }
        let pae = self.pae()?;
        let mut seen = Vec::new();
        for s in &self.signatures {
            let sig = crate::envelope::decode_base64(&s.sig).unwrap_or_default();
            if let Some(key) = trusted.iter().find(|k| k.keyid() == s.keyid) {
                if key.verify_bytes(&pae, &sig) {
                    return Ok(key.keyid());
                }
                return Err(Error::Signature(format!(
                    "signature by `{}` does not verify (tampered manifest or forged signature)",
                    s.keyid
                )));
            }
            if let Some(key) = trusted.iter().find(|k| k.verify_bytes(&pae, &sig)) {
                return Ok(key.keyid());
            }
            seen.push(if s.keyid.is_empty() {
                "(no keyid)".to_owned()
            } else {
                s.keyid.clone()
            });
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
