//! The admission scan's verdict on a version, as the server signed it: an
//! in-toto statement in a DSSE envelope whose subject must be exactly the
//! version resolved (its name, number and manifest digest) and whose
//! signature must verify with the server key the client trusts.

use serde::Serialize;
use vault_api::ResolvedVersion;
use vault_manifest::{Envelope, PublicKey};

use crate::{Error, Result};

/// The in-toto predicate type the server writes.
pub const SCAN_PREDICATE: &str = "https://mlvault.dev/admission-scan/v1";

/// A verified scan verdict.
#[derive(Clone, Debug, Serialize)]
pub struct ScanView {
    /// `pass`, `warn`, `unsupported`, `incomplete` or `fail`.
    pub verdict: String,
    /// The scanner and its version.
    pub scanner: String,
    /// `sha256:` of the import allowlist it used.
    pub allowlist: String,
    /// `path: message (code)`, one per finding.
    pub findings: Vec<String>,
    /// The key id of the server key that signed it (`None` when no key
    /// was given to check it with).
    pub signed_by: Option<String>,
}

fn integrity(m: impl Into<String>) -> Error {
    Error::Integrity(m.into())
}

/// Check and read `rv`'s scan verdict; `None` for a version pushed before
/// scans existed. With `keys`, its signature must verify with one of them.
pub fn check_scan(rv: &ResolvedVersion, keys: &[PublicKey]) -> Result<Option<ScanView>> {
    let Some(text) = &rv.scan else {
        return Ok(None);
    };
    let env = Envelope::from_json(text).map_err(|e| integrity(format!("scan verdict: {e}")))?;
    let signed_by = if keys.is_empty() {
        None
    } else {
        Some(
            env.verify_any(keys)
                .map_err(|e| integrity(format!("scan verdict: {e}")))?,
        )
    };
    let payload = env
        .payload_bytes()
        .map_err(|e| integrity(format!("scan verdict: {e}")))?;
    let st: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| integrity(format!("scan verdict: the statement does not parse: {e}")))?;
    if st["_type"] != "https://in-toto.io/Statement/v1" || st["predicateType"] != SCAN_PREDICATE {
        return Err(integrity("scan verdict: not an admission-scan statement"));
    }
    let hex = rv.digest.strip_prefix("sha256:").unwrap_or(&rv.digest);
    let subject = st["subject"].as_array().filter(|s| s.len() == 1);
    let names = format!("{}:{}", rv.name, rv.version);
    if !subject.is_some_and(|s| s[0]["name"] == names.as_str() && s[0]["digest"]["sha256"] == hex) {
        return Err(integrity(format!(
            "scan verdict: its subject is not {names} ({})",
            rv.digest
        )));
    }
    let p = &st["predicate"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut findings = Vec::new();
    for f in p["files"].as_array().into_iter().flatten() {
        for x in f["findings"].as_array().into_iter().flatten() {
            findings.push(format!(
                "{} {}: {} ({})",
                text(&x["severity"]),
                text(&f["path"]),
                text(&x["message"]),
                text(&x["code"])
            ));
        }
    }
    let verdict = text(&p["verdict"]);
    if !matches!(
        verdict.as_str(),
        "pass" | "warn" | "unsupported" | "incomplete" | "fail"
    ) {
        return Err(integrity(format!(
            "scan verdict: `{verdict}` is no verdict"
        )));
    }
    Ok(Some(ScanView {
        verdict,
        scanner: text(&p["scanner"]),
        allowlist: text(&p["allowlist"]),
        findings,
        signed_by,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_api::Kind;
    use vault_manifest::SecretKey;

    fn version(scan: Option<String>) -> ResolvedVersion {
        ResolvedVersion {
            name: "t/m".into(),
            version: 3,
            kind: Kind::Model,
            digest: format!("sha256:{}", "ab".repeat(32)),
            envelope: String::new(),
            created: 0,
            alias: None,
            report: None,
            review: None,
            scan,
            pull_denied: None,
            attestations: Vec::new(),
        }
    }

    fn signed(key: &SecretKey, name: &str, hex: &str, verdict: &str) -> String {
        let st = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": name, "digest": {"sha256": hex}}],
            "predicateType": SCAN_PREDICATE,
            "predicate": {"verdict": verdict, "scanner": "vault-scan/0", "allowlist": "sha256:00",
                "files": [{"path": "a.pkl", "findings": [{"severity": "fail", "code": "pickle.import", "message": "os.system"}]}]},
        });
        let mut env = Envelope::wrap(&serde_json::to_vec(&st).unwrap());
        env.sign(key).unwrap();
        env.to_json()
    }

    #[test]
    fn a_verdict_is_read_only_for_its_own_version_and_signer() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let hex = "ab".repeat(32);
        let ok = version(Some(signed(&key, "t/m:3", &hex, "fail")));
        let v = check_scan(&ok, &[key.public()]).unwrap().unwrap();
        assert_eq!(v.verdict, "fail");
        assert_eq!(v.findings, vec!["fail a.pkl: os.system (pickle.import)"]);
        assert_eq!(v.signed_by, Some(key.public().keyid()));
        assert!(check_scan(&version(None), &[key.public()])
            .unwrap()
            .is_none());
        // Signed by another key; about another version; another digest;
        // a verdict that is no verdict.
        for (rv, keys) in [
            (ok.clone(), vec![other.public()]),
            (
                version(Some(signed(&key, "t/m:2", &hex, "pass"))),
                vec![key.public()],
            ),
            (
                version(Some(signed(&key, "t/m:3", &"cd".repeat(32), "pass"))),
                vec![key.public()],
            ),
            (
                version(Some(signed(&key, "t/m:3", &hex, "fine"))),
                vec![key.public()],
            ),
        ] {
            assert!(
                matches!(check_scan(&rv, &keys), Err(Error::Integrity(_))),
                "{:?}",
                rv.scan
            );
        }
    }
}
