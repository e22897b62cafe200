//! The DSSE envelope (https://github.com/secure-systems-lab/dsse).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// DSSE payload type of an in-toto statement.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A DSSE envelope: base64 payload, its type, and signatures over
/// `PAE(payloadType, payload)`. Read as DSSE requires of a verifier:
/// unknown fields are ignored, both base64 alphabets are accepted (with or
/// without padding), and a signature's `keyid` is only a hint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Standard base64 of the serialized statement.
    pub payload: String,
    /// Always [`PAYLOAD_TYPE`].
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// Signatures; empty for an unsigned manifest.
    pub signatures: Vec<Signature>,
}

/// One DSSE signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id: `ed25519:` and the hex SHA-256 of the public key (written
    /// always; optional, and any text, in envelopes made by other tools).
    #[serde(default)]
    pub keyid: String,
    /// Standard base64 of the signature.
    pub sig: String,
}

impl Envelope {
    /// Deterministic JSON text of the envelope (field order fixed, no spaces).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parse envelope JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let env: Envelope =
            serde_json::from_str(text).map_err(|e| Error::Malformed(format!("envelope: {e}")))?;
        if env.payload_type != PAYLOAD_TYPE {
            return Err(Error::Malformed(format!(
                "payload type `{}` is not `{PAYLOAD_TYPE}`",
                env.payload_type
            )));
        }
        Ok(env)
    }

    /// The decoded payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        decode_base64(&self.payload).ok_or_else(|| Error::Malformed("payload is not base64".into()))
    }

    /// DSSE pre-authentication encoding: what signatures sign.
    /// `"DSSEv1" SP len(type) SP type SP len(body) SP body`.
    pub fn pae(&self) -> Result<Vec<u8>> {
        let body = self.payload_bytes()?;
        let t = self.payload_type.as_bytes();
        let mut out = Vec::with_capacity(body.len() + t.len() + 32);
        out.extend_from_slice(format!("DSSEv1 {} ", t.len()).as_bytes());
        out.extend_from_slice(t);
        out.extend_from_slice(format!(" {} ", body.len()).as_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// An unsigned envelope around `payload`.
    pub fn wrap(payload: &[u8]) -> Self {
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: Vec::new(),
        }
    }
}

/// Base64 in either alphabet of RFC 4648 (standard or URL-safe), padded
/// or not, as DSSE allows.
pub(crate) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s.trim()).ok())
}

/// `sha256:<hex>` of some bytes: the digest of an envelope's exact text.
pub fn digest_of(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    format!("sha256:{}", hex::encode(d.as_ref()))
}
