//! Promotion gates at alias moves: the gate of `policies/gates.toml` that
//! guards an alias is judged on what the vault holds about the version,
//! every piece verified again now (an attestor removed since, or a row
//! edited in the database, no longer counts), and a gate that passes is
//! granted into the signed alias record.

use vault_manifest::{digest_of, Envelope, GateGrant, PublicKey};
use vault_policy::gates::{Fact, Facts, Outcome, APPROVAL};
use vault_policy::Gate;
use vault_store::{AttestationRecord, VersionRecord};

use super::{attest, Result};
use crate::vault::Vault;

/// A gate and its judgement of one version.
pub struct Judged {
    /// The gate.
    pub gate: Gate,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Judged {
    /// `passed` or `failed`: the Cedar context's `gate`.
    pub fn as_str(&self) -> &'static str {
        if self.outcome.passed {
            "passed"
        } else {
            "failed"
        }
    }

    /// The grant a signed record carries, when the gate passed.
    pub fn grant(&self) -> Option<GateGrant> {
        self.outcome.passed.then(|| GateGrant {
            digest: self.gate.digest(),
            evidence: self.outcome.evidence.clone(),
            granted: vault_store::now(),
        })
    }

    /// Why a move was refused, for its caller.
    pub fn refusal(&self, rec: &VersionRecord, alias: &str) -> String {
        format!(
            "`{}:{}` may not become `{alias}`: the promotion gate `{alias}` ({}) is not met; missing: {}",
            rec.name,
            rec.version,
            self.gate.digest(),
            self.outcome.missing.join("; ")
        )
    }
}

/// Judge `rec` against the gate that guards `alias` in its namespace;
/// `None` when no gate guards it.
pub fn judge(v: &Vault, rec: &VersionRecord, alias: &str) -> Result<Option<Judged>> {
    let namespace = rec.name.split('/').next().unwrap_or_default();
    let Some(gate) = v.policy().gates().for_alias(namespace, alias).cloned() else {
        return Ok(None);
    };
    let server = [v.signing_key.public()];
    let attestors = v.meta.attestors()?;
    // An approval made with a token revoked or suspended since (a stolen
    // token, an approver let go) no longer counts.
    let withdrawn: Vec<String> = if gate.approvals > 0 {
        v.meta
            .list_tokens()?
            .into_iter()
            .filter(|t| t.revoked || t.suspended)
            .map(|t| t.id)
            .collect()
    } else {
        Vec::new()
    };
    let mut facts = Vec::new();
    for a in v.meta.attestations(&rec.name, rec.version)? {
        let fact = if a.predicate_type == APPROVAL {
            approval(rec, &a, &server, &withdrawn)
        } else {
            attest::verify(rec, &a.envelope, &attestors)
                .map(|ok| Fact {
                    digest: digest_of(a.envelope.as_bytes()),
                    predicate_type: ok.predicate_type,
                    attestor: ok.attestor,
                    result: ok.result,
                    added: a.added,
                    role: None,
                })
                .map_err(|e| e.to_string())
        };
        match fact {
            Ok(f) => facts.push(f),
            Err(why) => tracing::warn!(name = %rec.name, version = rec.version,
                attestation = %a.digest, reason = %why,
                "an attestation no longer verifies; the gate does not count it"),
        }
    }
    let (scan, scan_digest) = match scan_verdict(rec, &server) {
        Ok(Some((verdict, digest))) => (verdict, Some(digest)),
        Ok(None) => ("none".to_owned(), None),
        Err(why) => {
            tracing::warn!(name = %rec.name, version = rec.version, reason = %why,
                "the stored scan verdict does not verify; the gate sees none");
            ("none".to_owned(), None)
        }
    };
    let outcome = gate.evaluate(&Facts {
        pusher: &rec.pushed_by,
        scan: &scan,
        scan_digest: scan_digest.as_deref(),
        attestations: &facts,
        now: vault_store::now(),
    });
    Ok(Some(Judged { gate, outcome }))
}

/// The statement of a server-signed envelope about `rec`, verified.
fn statement(
    rec: &VersionRecord,
    text: &str,
    keys: &[PublicKey],
) -> Result<serde_json::Value, String> {
    let env = Envelope::from_json(text).map_err(|e| e.to_string())?;
    env.verify_any(keys).map_err(|e| e.to_string())?;
    let payload = env.payload_bytes().map_err(|e| e.to_string())?;
    let st: serde_json::Value = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    let hex = rec.digest.strip_prefix("sha256:").unwrap_or(&rec.digest);
    let about = st["subject"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x["digest"]["sha256"] == hex));
    if !about {
        return Err(format!("not about {}", rec.digest));
    }
    Ok(st)
}

/// An approval as the gate sees it: signed by this server, about these
/// bytes, naming its approver and role.
fn approval(
    rec: &VersionRecord,
    a: &AttestationRecord,
    server: &[PublicKey],
    withdrawn: &[String],
) -> Result<Fact, String> {
    let st = statement(rec, &a.envelope, server)?;
    if st["predicateType"] != APPROVAL {
        return Err("not an approval".into());
    }
    let p = &st["predicate"];
    let approver = p["approver"]
        .as_str()
        .ok_or("an approval without its approver")?;
    if p["token"]
        .as_str()
        .is_some_and(|t| withdrawn.iter().any(|w| w == t))
    {
        return Err(format!(
            "`{approver}` approved with a token revoked or suspended since"
        ));
    }
    Ok(Fact {
        digest: digest_of(a.envelope.as_bytes()),
        predicate_type: APPROVAL.to_owned(),
        attestor: approver.to_owned(),
        result: None,
        added: a.added,
        role: p["role"].as_str().map(str::to_owned),
    })
}

/// The version's scan verdict and its envelope's digest, the signature
/// verified and the verdict read from the signed statement.
fn scan_verdict(
    rec: &VersionRecord,
    server: &[PublicKey],
) -> Result<Option<(String, String)>, String> {
    let Some(s) = &rec.scan else {
        return Ok(None);
    };
    let st = statement(rec, &s.envelope, server)?;
    let verdict = st["predicate"]["verdict"]
        .as_str()
        .ok_or("a scan verdict without its verdict")?;
    if verdict != s.verdict {
        return Err(format!(
            "the record says `{}`, its signed statement `{verdict}`",
            s.verdict
        ));
    }
    Ok(Some((verdict.to_owned(), digest_of(s.envelope.as_bytes()))))
}
