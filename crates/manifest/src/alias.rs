//! Signed alias records: `production` → version 7, with a sequence number
//! that only grows and an expiry, signed by the server's key.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::sign::{PublicKey, SecretKey};
use crate::{Error, Result};

/// Domain separation for alias signatures.
const ALIAS_CONTEXT: &[u8] = b"mlvault-alias-v1\n";

/// What an alias points at, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRecord {
    /// Artifact name.
    pub name: String,
    /// Alias.
    pub alias: String,
    /// Version it points at.
    pub version: u64,
    /// That version's manifest digest.
    pub digest: String,
    /// Grows with every change or renewal, never reused.
    pub sequence: u64,
    /// Signing time (epoch seconds).
    pub issued: u64,
    /// Clients refuse the record after this (epoch seconds).
    pub expires: u64,
    /// The promotion gate the move was granted on, when a gate guards the
    /// alias and it passed (renewals carry the grant of the move).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateGrant>,
}

/// A promotion gate's grant, inside a signed alias record: which gate
/// (its digest over the gate's canonical JSON) and the envelopes (their
/// `sha256:` digests) it was granted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateGrant {
    /// `sha256:` of the gate's canonical JSON.
    pub digest: String,
    /// `sha256:` digests of the DSSE envelopes the gate was granted on:
    /// the scan verdict, attestations and approvals.
    pub evidence: Vec<String>,
    /// When the gate was evaluated (epoch seconds).
    pub granted: u64,
}

/// An alias record as signed text plus signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAlias {
    /// The record's JSON text, exactly as signed.
    pub record: String,
    /// Signer key id.
    pub keyid: String,
    /// Standard base64 ed25519 signature over context ‖ record.
    pub sig: String,
}

impl SignedAlias {
    /// Sign `rec` with `key`.
    pub fn sign(rec: &AliasRecord, key: &SecretKey) -> Result<Self> {
        let record = serde_json::to_string(rec).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut msg = ALIAS_CONTEXT.to_vec();
        msg.extend_from_slice(record.as_bytes());
        Ok(Self {
            record,
            keyid: key.public().keyid(),
            sig: STANDARD.encode(key.sign_bytes(&msg)),
        })
    }

    /// The signed record as JSON text, as served and stored. (Three
    /// strings always serialize.)
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Verify against `trusted` and return the record.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<AliasRecord> {
        let key = trusted
            .iter()
            .find(|k| k.keyid() == self.keyid)
            .ok_or_else(|| {
                Error::Signature(format!(
                    "alias record signed by untrusted key `{}`",
                    self.keyid
                ))
            })?;
        let mut msg = ALIAS_CONTEXT.to_vec();
        msg.extend_from_slice(self.record.as_bytes());
        let sig = STANDARD.decode(&self.sig).unwrap_or_default();
        if !key.verify_bytes(&msg, &sig) {
            return Err(Error::Signature(
                "alias record signature does not verify".into(),
            ));
        }
        serde_json::from_str(&self.record)
            .map_err(|e| Error::Malformed(format!("alias record: {e}")))
    }
}
