//! The in-toto statement and the mlvault manifest predicate.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use vault_api::{ArtifactName, FileEntry, Kind};

use crate::envelope::Envelope;
use crate::path::validate_path;
use crate::{Error, Result, MAX_FILES};

/// in-toto Statement v1 type URI.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Predicate type of an mlvault manifest (format version 1).
pub const PREDICATE_TYPE: &str = "https://mlvault.dev/manifest/v1";

/// An in-toto Statement v1 whose predicate is a [`Predicate`]. Fields
/// in-toto may add (a subject's `annotations`, `uri`, …) are ignored, as
/// the specification asks of consumers; they are signed all the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// One subject per file: path and SHA-256.
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The manifest proper.
    pub predicate: Predicate,
}

/// An in-toto subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// File path.
    pub name: String,
    /// `{"sha256": "<hex>"}`.
    pub digest: BTreeMap<String, String>,
}

/// Where a version came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lineage {
    /// Manifest digests this version was derived from.
    pub parents: Vec<String>,
    /// For anonymization outputs, the digest of the job spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_spec: Option<String>,
    /// For anonymization outputs, `sha256:` of the job report as compact
    /// JSON with sorted keys ([`report_digest`]): the report is signed with
    /// the output it describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_report: Option<String>,
}

/// `sha256:` of a job report as compact JSON with object keys sorted by
/// their bytes, at every depth, for [`Lineage::job_report`].
pub fn report_digest(report: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(report, &mut out);
    crate::digest_of(out.as_bytes())
}

/// The mlvault manifest predicate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// Artifact name.
    pub name: ArtifactName,
    /// Artifact kind.
    pub kind: Kind,
    /// Version number (reserved by the server when the upload opened).
    pub version: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Every file, sorted by path.
    pub files: Vec<FileEntry>,
    /// `sha256:` over the sorted file entries, see [`root_digest`].
    pub root_digest: String,
    /// Parents and job spec.
    pub lineage: Lineage,
    /// Key id of the intended signer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    statement: Statement,
}

fn valid_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Root digest: SHA-256 over the files sorted by path, each encoded as
/// `path NUL size NUL sha256hex LF`.
pub fn root_digest(files: &[FileEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in sorted {
        ctx.update(f.path.as_bytes());
        ctx.update(b"\0");
        ctx.update(f.size.to_string().as_bytes());
        ctx.update(b"\0");
        ctx.update(f.sha256.as_bytes());
        ctx.update(b"\n");
    }
    format!("sha256:{}", hex::encode(ctx.finish().as_ref()))
}

/// Validate a file list: safe unique paths, hex digests, count limit.
pub(crate) fn check_files(files: &[FileEntry]) -> Result<()> {
    if files.len() > MAX_FILES {
        return Err(Error::TooLarge(format!(
            "{} files (at most {MAX_FILES})",
            files.len()
        )));
    }
    let mut seen = HashSet::with_capacity(files.len());
    for f in files {
        validate_path(&f.path)?;
        if !valid_hex_sha256(&f.sha256) {
            return Err(Error::Malformed(format!(
                "file `{}`: sha256 is not 64 lowercase hex digits",
                f.path.escape_debug()
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(Error::DuplicatePath(f.path.escape_debug().to_string()));
        }
    }
    // A path may not be both a file and a directory prefix of another file.
    for f in files {
        let mut prefix = f.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if seen.contains(parent) {
                return Err(Error::Inconsistent(format!(
                    "`{}` is both a file and a directory",
                    parent.escape_debug()
                )));
            }
            prefix = parent;
        }
    }
    Ok(())
}

impl Manifest {
    /// Build a manifest. Files are sorted by path; paths and digests are
    /// validated.
    pub fn new(
        name: ArtifactName,
        kind: Kind,
        version: u64,
        created: u64,
        mut files: Vec<FileEntry>,
        parents: Vec<String>,
    ) -> Result<Self> {
        check_files(&files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let subject = files
            .iter()
            .map(|f| Subject {
                name: f.path.clone(),
                digest: BTreeMap::from([("sha256".to_owned(), f.sha256.clone())]),
            })
            .collect();
        let root = root_digest(&files);
        Ok(Manifest {
            statement: Statement {
                statement_type: STATEMENT_TYPE.into(),
                subject,
                predicate_type: PREDICATE_TYPE.into(),
                predicate: Predicate {
                    name,
                    kind,
                    version,
                    created,
                    files,
                    root_digest: root,
                    lineage: Lineage {
                        parents,
                        job_spec: None,
                        job_report: None,
                    },
                    signer: None,
                },
            },
        })
    }

    /// Set the job-spec digest of the lineage (anonymization outputs).
    pub fn with_job_spec(mut self, digest: String) -> Self {
        self.statement.predicate.lineage.job_spec = Some(digest);
        self
    }

    /// Set the job-report digest of the lineage (anonymization outputs).
    pub fn with_job_report(mut self, digest: String) -> Self {
        self.statement.predicate.lineage.job_report = Some(digest);
        self
    }

    /// Record the intended signer's key id.
    pub fn with_signer(mut self, keyid: String) -> Self {
        self.statement.predicate.signer = Some(keyid);
        self
    }

    /// The predicate.
    pub fn predicate(&self) -> &Predicate {
        &self.statement.predicate
    }
    /// The whole statement.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }
    /// Files, sorted by path.
    pub fn files(&self) -> &[FileEntry] {
        &self.statement.predicate.files
    }
    /// Total plaintext bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files().iter().map(|f| f.size).sum()
    }

    /// Deterministic payload bytes (compact JSON, fixed field order).
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(&self.statement).unwrap_or_default()
    }

    /// An unsigned envelope around this manifest.
    pub fn to_envelope(&self) -> Envelope {
        Envelope::wrap(&self.payload())
    }

    fn from_statement(statement: Statement) -> Result<Self> {
        if statement.statement_type != STATEMENT_TYPE {
            return Err(Error::Malformed("not an in-toto Statement v1".into()));
        }
        if statement.predicate_type != PREDICATE_TYPE {
            return Err(Error::Malformed(format!(
                "predicate type `{}` is not `{PREDICATE_TYPE}`",
                statement.predicate_type
            )));
        }
        let p = &statement.predicate;
        check_files(&p.files)?;
        if p.version == 0 {
            return Err(Error::Malformed("version 0".into()));
        }
        if !p.files.windows(2).all(|w| w[0].path < w[1].path) {
            return Err(Error::Inconsistent("files are not sorted by path".into()));
        }
        if root_digest(&p.files) != p.root_digest {
            return Err(Error::Inconsistent(
                "root digest does not match the files".into(),
            ));
        }
        let subjects_match = statement.subject.len() == p.files.len()
            && statement.subject.iter().zip(&p.files).all(|(s, f)| {
                s.name == f.path && s.digest.len() == 1 && s.digest.get("sha256") == Some(&f.sha256)
            });
        if !subjects_match {
            return Err(Error::Inconsistent(
                "subjects do not match the file list".into(),
            ));
        }
        Ok(Manifest { statement })
    }
}

/// Parse and validate envelope text: envelope shape, payload type, statement
/// shape, path rules, sorting, root digest and subject consistency.
/// Signatures are not checked here.
pub fn parse_envelope(text: &str) -> Result<(Envelope, Manifest)> {
    let env = Envelope::from_json(text)?;
    let payload = env.payload_bytes()?;
    let statement: Statement = serde_json::from_slice(&payload)
        .map_err(|e| Error::Malformed(format!("statement: {e}")))?;
    let m = Manifest::from_statement(statement)?;
    Ok((env, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(p: &str) -> FileEntry {
        FileEntry {
            path: p.into(),
            size: 1,
            sha256: "00".repeat(32),
        }
    }

    fn name() -> ArtifactName {
        "a/b".parse().unwrap()
    }

    #[test]
    fn round_trip_is_deterministic() {
        let m = Manifest::new(
            name(),
            Kind::Model,
            3,
            9,
            vec![file("z"), file("a/b")],
            vec![],
        )
        .unwrap();
        assert_eq!(m.files()[0].path, "a/b");
        let t1 = m.to_envelope().to_json();
        let (_, back) = parse_envelope(&t1).unwrap();
        assert_eq!(back.to_envelope().to_json(), t1);
    }

    #[test]
    fn refuses_bad_file_sets() {
        assert!(Manifest::new(
            name(),
            Kind::Model,
            1,
            0,
            vec![file("a"), file("a")],
            vec![]
        )
        .is_err());
        assert!(Manifest::new(
            name(),
            Kind::Model,
            1,
            0,
            vec![file("a"), file("a/b")],
            vec![]
        )
        .is_err());
        assert!(Manifest::new(name(), Kind::Model, 1, 0, vec![file("../x")], vec![]).is_err());
    }

    #[test]
    fn refuses_tampered_root_digest() {
        let m = Manifest::new(name(), Kind::Model, 1, 0, vec![file("a")], vec![]).unwrap();
        let mut st = m.statement().clone();
        st.predicate.files[0].size = 2;
        let text = Envelope::wrap(&serde_json::to_vec(&st).unwrap()).to_json();
        assert!(matches!(parse_envelope(&text), Err(Error::Inconsistent(_))));
    }
}
