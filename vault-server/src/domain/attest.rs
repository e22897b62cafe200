//! Attestations about versions: in-toto statements whose subject is a
//! version's manifest digest, in DSSE envelopes signed by a registered
//! attestor, which is trusted only for its predicate types and
//! namespaces. A verified attestation is kept as it was signed, once.

use vault_manifest::{Envelope, PublicKey};
use vault_store::{AttestationRecord, AttestorRecord, VersionRecord};

use super::{Error, Result};

pub use vault_policy::gates::{APPROVAL, TEST_RESULT};

/// An approval of `rec` by `approver` (role, token), as a statement signed
/// by the server key: who approved which digest, and why.
pub fn approval(
    key: &vault_manifest::SecretKey,
    rec: &VersionRecord,
    approver: (&str, &str, &str),
    reason: &str,
) -> Result<AttestationRecord> {
    let (name, role, token) = approver;
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{}:{}", rec.name, rec.version),
            "digest": {"sha256": rec.digest.trim_start_matches("sha256:")}}],
        "predicateType": APPROVAL,
        "predicate": {"approver": name, "role": role, "token": token,
            "reason": reason, "pushed_by": rec.pushed_by, "at": vault_store::now()},
    });
    let payload = serde_json::to_vec(&statement)
        .map_err(|e| Error::Invalid(format!("the approval cannot be written: {e}")))?;
    let mut env = Envelope::wrap(&payload);
    env.sign(key)?;
    let text = env.to_json();
    Ok(record(
        rec,
        &text,
        Verified {
            predicate_type: APPROVAL.into(),
            attestor: format!("approval:{name}"),
            result: None,
        },
        name,
    ))
}

/// What a verified envelope says.
pub struct Verified {
    pub predicate_type: String,
    pub attestor: String,
    pub result: Option<String>,
}

/// Verify `text` as an attestation about `rec` by one of `attestors`.
pub fn verify(rec: &VersionRecord, text: &str, attestors: &[AttestorRecord]) -> Result<Verified> {
    let env = Envelope::from_json(text)
        .map_err(|e| Error::Invalid(format!("not a DSSE envelope of an in-toto statement: {e}")))?;
    let payload = env
        .payload_bytes()
        .map_err(|e| Error::Invalid(format!("attestation: {e}")))?;
    let st: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| Error::Invalid(format!("the statement does not parse: {e}")))?;
    let ty = st["_type"].as_str().unwrap_or_default();
    if ty != "https://in-toto.io/Statement/v1" && ty != "https://in-toto.io/Statement/v0.1" {
        return Err(Error::Invalid(format!(
            "statement type `{}` is not in-toto v1 or v0.1",
            ty.escape_debug()
        )));
    }
    let hex = rec.digest.strip_prefix("sha256:").unwrap_or(&rec.digest);
    let about = st["subject"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x["digest"]["sha256"] == hex));
    if !about {
        return Err(Error::Integrity(format!(
            "the attestation is not about `{}:{}`: no subject has its manifest digest {}",
            rec.name, rec.version, rec.digest
        )));
    }
    let pt = st["predicateType"].as_str().unwrap_or_default().to_owned();
    if pt.is_empty() || pt.len() > 512 || pt.chars().any(char::is_whitespace) {
        return Err(Error::Invalid(
            "a statement needs a predicateType URI".into(),
        ));
    }
    let namespace = rec.name.split('/').next().unwrap_or_default();
    let trusted: Vec<&AttestorRecord> = attestors
        .iter()
        .filter(|a| a.predicate_types.contains(&pt) && a.namespaces.iter().any(|n| n == namespace))
        .collect();
    if trusted.is_empty() {
        return Err(Error::Integrity(format!(
            "no attestor is trusted for predicate type `{pt}` in namespace `{namespace}` (`vault-cli attestor add`)"
        )));
    }
    let keys: Vec<PublicKey> = trusted
        .iter()
        .filter_map(|a| PublicKey::from_file_text(&a.public_key).ok())
        .collect();
    let keyid = env.verify_any(&keys).map_err(|e| {
        let names: Vec<&str> = trusted.iter().map(|a| a.name.as_str()).collect();
        Error::Integrity(format!(
            "not signed by an attestor trusted for `{pt}` in `{namespace}` ({}): {e}",
            names.join(", ")
        ))
    })?;
    let attestor = trusted
        .iter()
        .find(|a| a.keyid == keyid)
        .map(|a| a.name.clone())
        .unwrap_or_default();
    let result = if pt == TEST_RESULT {
        match st["predicate"]["result"].as_str() {
            Some(r @ ("PASSED" | "WARNED" | "FAILED")) => Some(r.to_owned()),
            _ => {
                return Err(Error::Invalid(
                    "a test-result predicate needs `result`: PASSED, WARNED or FAILED".into(),
                ))
            }
        }
    } else {
        None
    };
    Ok(Verified {
        predicate_type: pt,
        attestor,
        result,
    })
}

/// The record to keep for a verified envelope.
pub fn record(rec: &VersionRecord, text: &str, v: Verified, by: &str) -> AttestationRecord {
    AttestationRecord {
        name: rec.name.clone(),
        version: rec.version,
        digest: vault_manifest::digest_of(text.as_bytes()),
        envelope: text.to_owned(),
        predicate_type: v.predicate_type,
        attestor: v.attestor,
        result: v.result,
        added: vault_store::now(),
        added_by: by.to_owned(),
    }
}
