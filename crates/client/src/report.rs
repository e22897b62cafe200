//! The anonymization report of a dataset version, checked against the
//! digest the server signed into its manifest.

use vault_api::ResolvedVersion;
use vault_manifest::{report_digest, Manifest};

use crate::{Error, Result};

/// What a version's report is worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportCheck {
    /// No report (an ordinary push).
    None,
    /// The report matches the digest in the signed manifest.
    Signed,
    /// A report the manifest does not cover (written by an older server).
    Unsigned,
}

/// Check the report the server sent beside a manifest: when the manifest
/// names a report digest, the report must be there and match it.
pub fn check_report(rv: &ResolvedVersion, m: &Manifest) -> Result<ReportCheck> {
    match (&m.predicate().lineage.job_report, &rv.report) {
        (None, None) => Ok(ReportCheck::None),
        (None, Some(_)) => Ok(ReportCheck::Unsigned),
        (Some(_), None) => Err(Error::Integrity(
            "the signed manifest names a job report the server did not send".into(),
        )),
        (Some(want), Some(r)) => {
            if report_digest(r) == *want {
                Ok(ReportCheck::Signed)
            } else {
                Err(Error::Integrity(
                    "the job report does not match the digest in the signed manifest".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_api::Kind;

    fn resolved(
        report: Option<serde_json::Value>,
        signed: Option<&serde_json::Value>,
    ) -> (ResolvedVersion, Manifest) {
        let mut m = Manifest::new(
            "hr/out".parse().unwrap(),
            Kind::Dataset,
            1,
            0,
            vec![vault_api::FileEntry {
                path: "a.csv".into(),
                size: 1,
                sha256: "ab".repeat(32),
            }],
            vec![],
        )
        .unwrap();
        if let Some(r) = signed {
            m = m.with_job_report(report_digest(r));
        }
        let rv = ResolvedVersion {
            name: "hr/out".into(),
            version: 1,
            kind: Kind::Dataset,
            digest: String::new(),
            envelope: String::new(),
            created: 0,
            alias: None,
            report,
            review: None,
            scan: None,
            pull_denied: None,
            attestations: Vec::new(),
        };
        (rv, m)
    }

    #[test]
    fn a_report_must_match_what_the_manifest_signed() {
        let r = serde_json::json!({"k_after": 5, "rows_written": 10, "warnings": ["a"]});
        let (rv, m) = resolved(Some(r.clone()), Some(&r));
        assert_eq!(check_report(&rv, &m).unwrap(), ReportCheck::Signed);
        // Key order does not matter; values do.
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"warnings":["a"],"rows_written":10,"k_after":5}"#).unwrap();
        let (rv, m) = resolved(Some(reordered), Some(&r));
        assert_eq!(check_report(&rv, &m).unwrap(), ReportCheck::Signed);
        let forged = serde_json::json!({"k_after": 50, "rows_written": 10, "warnings": ["a"]});
        let (rv, m) = resolved(Some(forged), Some(&r));
        assert!(matches!(check_report(&rv, &m), Err(Error::Integrity(_))));
        let (rv, m) = resolved(None, Some(&r));
        assert!(matches!(check_report(&rv, &m), Err(Error::Integrity(_))));
        let (rv, m) = resolved(Some(r.clone()), None);
        assert_eq!(check_report(&rv, &m).unwrap(), ReportCheck::Unsigned);
        let (rv, m) = resolved(None, None);
        assert_eq!(check_report(&rv, &m).unwrap(), ReportCheck::None);
    }
}
