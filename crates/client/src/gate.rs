//! Promotion records: a signed alias record that carries a promotion
//! gate's grant, and the envelopes it was granted on. A pull with
//! `--require-gate` checks them and keeps them beside the manifest
//! (`.mlvault/promotion.json`), where `verify --require-gate` checks them
//! again offline.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vault_manifest::{digest_of, AliasRecord, Envelope, PublicKey, SignedAlias};

use crate::{Error, Result};

/// The file in `DEST/.mlvault/` that keeps the promotion record.
pub(crate) const PROMOTION_FILE: &str = "promotion.json";

/// What a pull through an alias keeps: the signed record and the
/// envelopes its gate grant names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promotion {
    /// The server the record came from (whose pinned key signs it).
    pub server: String,
    /// The signed alias record (JSON of a `SignedAlias`), as served.
    pub record: String,
    /// The DSSE envelopes the gate was granted on, as signed.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// A gate grant, checked.
#[derive(Clone, Debug, Serialize)]
pub struct GateView {
    /// The alias (the gate's name).
    pub alias: String,
    /// `sha256:` of the gate's canonical JSON.
    pub gate: String,
    /// When it was granted (epoch seconds).
    pub granted: u64,
    /// The alias record's sequence.
    pub sequence: u64,
    /// Each envelope it was granted on.
    pub evidence: Vec<EvidenceView>,
}

/// One envelope a gate was granted on.
#[derive(Clone, Debug, Serialize)]
pub struct EvidenceView {
    /// `sha256:` of the envelope.
    pub digest: String,
    /// Its statement's predicate type.
    pub predicate_type: String,
    /// A test result's result, or an approval's approver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub says: Option<String>,
}

fn integrity(m: impl Into<String>) -> Error {
    Error::Integrity(m.into())
}

/// Check that `rec` (verified, for `name:alias` → `digest`) was granted on
/// the gate of `alias`, and that every envelope the grant names is among
/// `envelopes` and is a statement about `digest`.
pub fn check_grant(
    rec: &AliasRecord,
    alias: &str,
    digest: &str,
    envelopes: &[String],
) -> Result<GateView> {
    if rec.alias != alias {
        return Err(integrity(format!(
            "the alias record is for `{}:{}`, not for the gate `{alias}`",
            rec.name, rec.alias
        )));
    }
    if rec.digest != digest {
        return Err(integrity(format!(
            "the alias record names {}, the manifest is {digest}",
            rec.digest
        )));
    }
    let g = rec.gate.as_ref().ok_or_else(|| {
        integrity(format!(
            "`{}:{alias}` (sequence {}) was not moved through the promotion gate `{alias}`: its signed record carries no gate grant (no gate guarded the alias then, or a policy let it past a failed gate)",
            rec.name, rec.sequence
        ))
    })?;
    if g.evidence.is_empty() {
        return Err(integrity("the gate grant names no evidence"));
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let mut evidence = Vec::new();
    for want in &g.evidence {
        let text = envelopes
            .iter()
            .find(|e| digest_of(e.as_bytes()) == *want)
            .ok_or_else(|| {
                integrity(format!(
                    "the gate grant names evidence {want} that was not delivered with it"
                ))
            })?;
        let env =
            Envelope::from_json(text).map_err(|e| integrity(format!("evidence {want}: {e}")))?;
        let payload = env
            .payload_bytes()
            .map_err(|e| integrity(format!("evidence {want}: {e}")))?;
        let st: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| {
            integrity(format!(
                "evidence {want}: the statement does not parse: {e}"
            ))
        })?;
        let about = st["subject"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["digest"]["sha256"] == hex));
        if !about {
            return Err(integrity(format!("evidence {want} is not about {digest}")));
        }
        let p = &st["predicate"];
        let says = p["result"]
            .as_str()
            .or_else(|| p["verdict"].as_str())
            .or_else(|| p["approver"].as_str())
            .map(str::to_owned);
        evidence.push(EvidenceView {
            digest: want.clone(),
            predicate_type: st["predicateType"].as_str().unwrap_or_default().to_owned(),
            says,
        });
    }
    Ok(GateView {
        alias: alias.to_owned(),
        gate: g.digest.clone(),
        granted: g.granted,
        sequence: rec.sequence,
        evidence,
    })
}

/// Check the promotion record kept in `dir` offline: signed by one of
/// `keys` (or the key this client pinned for its server, from
/// `state_dir`), for the version whose manifest digest is `digest`, and
/// granted on the gate of `alias` with every envelope it names.
pub fn verify_promotion(
    dir: &Path,
    alias: &str,
    digest: &str,
    keys: &[PublicKey],
    state_dir: &Path,
) -> Result<GateView> {
    let path = dir.join(crate::MANIFEST_DIR).join(PROMOTION_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        integrity(format!(
            "`{}` holds no promotion record ({e}): pull it through its alias with --require-gate",
            dir.display()
        ))
    })?;
    let p: Promotion = serde_json::from_slice(&text)
        .map_err(|e| integrity(format!("`{}`: {e}", path.display())))?;
    let mut keys = keys.to_vec();
    if keys.is_empty() {
        let st = crate::ServerState::load(state_dir, &p.server)?;
        let pinned = st.server_key.ok_or_else(|| {
            Error::Usage(format!(
                "no server key is pinned for `{}`; give --server-key FILE.pub",
                p.server
            ))
        })?;
        keys.push(
            PublicKey::from_file_text(&pinned)
                .map_err(|e| Error::Usage(format!("pinned server key: {e}")))?,
        );
    }
    let signed: SignedAlias = serde_json::from_str(&p.record)
        .map_err(|e| integrity(format!("malformed alias record: {e}")))?;
    let rec = signed.verify(&keys).map_err(|e| integrity(e.to_string()))?;
    check_grant(&rec, alias, digest, &p.evidence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_manifest::GateGrant;

    fn envelope(hex: &str, predicate_type: &str) -> String {
        let st = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "t/m:1", "digest": {"sha256": hex}}],
            "predicateType": predicate_type,
            "predicate": {"result": "PASSED"},
        });
        let key = vault_manifest::SecretKey::generate().unwrap();
        let mut env = Envelope::wrap(&serde_json::to_vec(&st).unwrap());
        env.sign(&key).unwrap();
        env.to_json()
    }

    fn record(gate: Option<GateGrant>) -> AliasRecord {
        AliasRecord {
            name: "t/m".into(),
            alias: "production".into(),
            version: 1,
            digest: format!("sha256:{}", "ab".repeat(32)),
            sequence: 3,
            issued: 1,
            expires: 2,
            gate,
        }
    }

    #[test]
    fn a_grant_needs_every_envelope_it_names_about_these_bytes() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let good = envelope(&"ab".repeat(32), "https://example.com/t/v1");
        let other = envelope(&"cd".repeat(32), "https://example.com/t/v1");
        let grant = |evidence: Vec<String>| {
            record(Some(GateGrant {
                digest: "sha256:gate".into(),
                evidence,
                granted: 1,
            }))
        };
        let of = |e: &str| digest_of(e.as_bytes());
        let ok = check_grant(
            &grant(vec![of(&good)]),
            "production",
            &digest,
            std::slice::from_ref(&good),
        )
        .unwrap();
        assert_eq!(ok.evidence[0].says.as_deref(), Some("PASSED"));
        let fails = |rec: AliasRecord, alias: &str, envs: &[String], says: &str| {
            let e = check_grant(&rec, alias, &digest, envs)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{says}: {e}");
        };
        fails(record(None), "production", &[], "carries no gate grant");
        fails(grant(vec![]), "production", &[], "names no evidence");
        fails(
            grant(vec![of(&good)]),
            "staging",
            std::slice::from_ref(&good),
            "not for the gate",
        );
        fails(grant(vec![of(&good)]), "production", &[], "not delivered");
        fails(
            grant(vec![of(&other)]),
            "production",
            std::slice::from_ref(&other),
            "is not about",
        );
    }
}
