//! The job spec (TOML).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{Error, Result};

/// Input format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma (or other) separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// What to do with a malformed row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Count it, report its line, leave it out.
    #[default]
    Skip,
    /// Stop the job.
    Fail,
}

/// A transform of one column (CSV header name or JSONL dotted path).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "transform", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transform {
    /// Remove the column.
    Drop,
    /// Replace with `[REDACTED]`.
    Redact,
    /// Replace with a fixed value.
    Replace {
        /// The value.
        value: String,
    },
    /// Keep the first and last characters, mask the rest.
    Mask {
        /// Characters kept at the start.
        #[serde(default)]
        keep_first: usize,
        /// Characters kept at the end.
        #[serde(default)]
        keep_last: usize,
        /// Mask character.
        #[serde(default = "default_mask")]
        mask_char: char,
    },
    /// HMAC-SHA256 under the namespace key: same value → same pseudonym in
    /// the namespace, unlinkable across namespaces.
    Pseudonymize {
        /// Hex characters of the pseudonym (8–64).
        #[serde(default = "default_pseudo_len")]
        length: usize,
    },
    /// Coarsen the value.
    Generalize(Generalize),
    /// Shift a date by a per-subject offset from a keyed hash of `subject`.
    DateShift {
        /// Column whose value identifies the subject.
        subject: String,
        /// Offsets lie in [-max_days, max_days].
        #[serde(default = "default_max_days")]
        max_days: u32,
    },
    /// Replace PII found in free text.
    Scrub,
}

fn default_mask() -> char {
    '*'
}
fn default_pseudo_len() -> usize {
    16
}
fn default_max_days() -> u32 {
    30
}

/// Generalizations.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Generalize {
    /// Numbers into buckets `[lo-hi]` of `width`.
    Bucket {
        /// Bucket width.
        width: f64,
    },
    /// Dates (YYYY-MM-DD…) to YYYY-MM.
    Month,
    /// Dates to YYYY.
    Year,
    /// Keep a prefix (postcodes) and pad with `*`.
    Prefix {
        /// Characters kept.
        keep: usize,
    },
    /// Map values to categories; others become `default`.
    Map {
        /// value → category.
        map: BTreeMap<String, String>,
        /// For unmapped values ("" keeps them).
        #[serde(default)]
        default: String,
    },
}

/// One `[[columns]]` entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ColumnSpec {
    /// CSV header name or JSONL dotted path.
    pub name: String,
    /// The column identifies a person (a name, e-mail, phone, id, address):
    /// its values, collected over the whole dataset, are removed from every
    /// `scrub` column wherever they occur.
    #[serde(default)]
    pub identifier: bool,
    /// The transform.
    #[serde(flatten)]
    pub transform: Transform,
}

/// What happens to an input column (CSV header, JSON Lines field) that the
/// spec does not name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlisted {
    /// The job fails before it writes anything, naming the columns.
    #[default]
    Refuse,
    /// The column is left out of the output.
    Drop,
}

/// `[kanon]`: k-anonymity over quasi-identifiers.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KAnon {
    /// Quasi-identifier columns (their transformed values form the classes).
    pub quasi_identifiers: Vec<String>,
    /// Smallest class size kept.
    pub k_min: u64,
    /// Only `suppress` today: rows of smaller classes are removed.
    #[serde(default = "default_action")]
    pub action: String,
    /// Sensitive columns: their distinct values per class give l
    /// (distinct l-diversity); a string or a list.
    #[serde(default, deserialize_with = "one_or_many")]
    pub sensitive: Vec<String>,
    /// Smallest l kept: a job whose output has a class with fewer distinct
    /// values of any sensitive column fails.
    #[serde(default)]
    pub l_min: Option<u64>,
    /// Largest share of rows (0 to 1) that suppression may remove before the
    /// job fails instead (default 0.1).
    #[serde(default = "default_max_suppression")]
    pub max_suppression: f64,
}

fn default_max_suppression() -> f64 {
    0.1
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn default_action() -> String {
    "suppress".into()
}

/// A custom detector for `scrub`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// Label used in the replacement (`[NAME]`).
    pub name: String,
    /// Regular expression.
    pub pattern: String,
}

/// `[scrub]`: which detectors `scrub` uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubSpec {
    /// Built-in detectors (default: all of [`DETECTORS`]).
    #[serde(default = "all_detectors")]
    pub detectors: Vec<String>,
    /// Extra patterns.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
}

/// The built-in detectors, in the order they claim overlapping text.
pub const DETECTORS: [&str; 10] = [
    "email", "iban", "card", "ssn", "ipv6", "ipv4", "date", "phone", "address", "name",
];

fn all_detectors() -> Vec<String> {
    DETECTORS.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for ScrubSpec {
    fn default() -> Self {
        ScrubSpec {
            detectors: all_detectors(),
            custom: Vec::new(),
        }
    }
}

/// A whole job spec.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Input format.
    pub format: Format,
    /// CSV delimiter (one ASCII character).
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    /// Malformed rows.
    #[serde(default)]
    pub on_error: OnError,
    /// Per-column transforms.
    #[serde(default)]
    pub columns: Vec<ColumnSpec>,
    /// k-anonymity.
    #[serde(default)]
    pub kanon: Option<KAnon>,
    /// Detectors for `scrub`.
    #[serde(default)]
    pub scrub: ScrubSpec,
    /// Also scan every value released as it came (kept, quasi-identifier
    /// and sensitive columns without a transform, and `scrub` columns) with
    /// the detectors and report what is found per column, as a check that
    /// nothing personal is left. Columns the vault rewrote (pseudonyms,
    /// masks, generalizations, shifted dates) are not scanned.
    #[serde(default)]
    pub scan: bool,
    /// With `scan`: the job fails when the scan finds more than this many
    /// values in the output (0: any finding fails it). Setting it turns
    /// `scan` on.
    #[serde(default)]
    pub max_findings: Option<u64>,
    /// Input columns the spec does not name: `refuse` (default) or `drop`.
    #[serde(default)]
    pub unlisted: Unlisted,
    /// Columns released unchanged (they count as named).
    #[serde(default)]
    pub keep: Vec<String>,
    /// Longest record (CSV row, JSON line) in bytes; a longer one is
    /// malformed (default 1 MiB, at most 64 MiB).
    #[serde(default = "default_max_record")]
    pub max_record_bytes: usize,
    /// Most bytes of identifier values held for row-aware scrubbing (default
    /// 64 MiB); a dataset with more fails the job rather than scrub less.
    #[serde(default = "default_max_identifier_bytes")]
    pub max_identifier_bytes: usize,
    /// Most bytes the k-anonymity classes may hold (default 256 MiB): a
    /// dataset whose quasi-identifiers make more fails the job, so its
    /// memory is bounded whatever the input.
    #[serde(default = "default_max_class_bytes")]
    pub max_class_bytes: usize,
}

fn default_max_class_bytes() -> usize {
    256 << 20
}

fn default_max_record() -> usize {
    1 << 20
}

fn default_max_identifier_bytes() -> usize {
    64 << 20
}

/// Largest `max_record_bytes` a spec may set.
pub const MAX_RECORD_LIMIT: usize = 64 << 20;
/// Most custom detectors in one spec.
pub const MAX_CUSTOM: usize = 32;
/// Longest custom pattern, in bytes.
pub const MAX_PATTERN: usize = 1024;

fn default_delimiter() -> char {
    ','
}

impl Spec {
    /// Parse and check a TOML spec (unknown transforms, bad parameters).
    pub fn parse(text: &str) -> Result<Self> {
        let mut s: Spec = toml::from_str(text).map_err(|e| Error::Spec(e.to_string()))?;
        if s.max_findings.is_some() {
            s.scan = true;
        }
        if s.max_record_bytes == 0 || s.max_record_bytes > MAX_RECORD_LIMIT {
            return Err(Error::Spec(format!(
                "max_record_bytes must be 1 to {MAX_RECORD_LIMIT}"
            )));
        }
        if s.scrub.custom.len() > MAX_CUSTOM {
            return Err(Error::Spec(format!(
                "at most {MAX_CUSTOM} custom detectors"
            )));
        }
        if let Some(c) = s
            .scrub
            .custom
            .iter()
            .find(|c| c.pattern.len() > MAX_PATTERN)
        {
            return Err(Error::Spec(format!(
                "custom detector `{}`: pattern longer than {MAX_PATTERN} bytes",
                c.name
            )));
        }
        if !s.delimiter.is_ascii() {
            return Err(Error::Spec("delimiter must be one ASCII character".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &s.columns {
            if c.name.is_empty()
                || (s.format == Format::Jsonl && c.name.split('.').any(str::is_empty))
            {
                return Err(Error::Spec(format!(
                    "column name `{}` is empty or has an empty path segment",
                    c.name
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(Error::Spec(format!(
                    "column `{}` has two transforms",
                    c.name
                )));
            }
            match &c.transform {
                Transform::Pseudonymize { length } if !(8..=64).contains(length) => {
                    return Err(Error::Spec(format!(
                        "`{}`: pseudonym length must be 8 to 64",
                        c.name
                    )))
                }
                Transform::DateShift { max_days, .. } if *max_days == 0 => {
                    return Err(Error::Spec(format!(
                        "`{}`: date_shift max_days must be at least 1",
                        c.name
                    )))
                }
                Transform::Generalize(Generalize::Bucket { width })
                    if !width.is_finite() || *width <= 0.0 =>
                {
                    return Err(Error::Spec(format!(
                        "`{}`: bucket width must be positive",
                        c.name
                    )))
                }
                _ => {}
            }
        }
        if let Some(k) = &s.kanon {
            if k.k_min < 2 {
                return Err(Error::Spec("kanon.k_min must be at least 2".into()));
            }
            if k.action != "suppress" {
                return Err(Error::Spec(format!(
                    "kanon.action `{}` is not supported (use `suppress`)",
                    k.action
                )));
            }
            if k.quasi_identifiers.is_empty() {
                return Err(Error::Spec("kanon.quasi_identifiers is empty".into()));
            }
            if !(0.0..=1.0).contains(&k.max_suppression) {
                return Err(Error::Spec(
                    "kanon.max_suppression is a share from 0 to 1".into(),
                ));
            }
            if let Some(l) = k.l_min {
                if l < 2 {
                    return Err(Error::Spec("kanon.l_min must be at least 2".into()));
                }
                if k.sensitive.is_empty() {
                    return Err(Error::Spec(
                        "kanon.l_min needs kanon.sensitive columns".into(),
                    ));
                }
            }
        }
        for k in &s.keep {
            if seen.contains(k.as_str()) {
                return Err(Error::Spec(format!(
                    "column `{k}` is both kept and transformed"
                )));
            }
        }
        Ok(s)
    }

    /// Every column the spec names (transforms, subjects, quasi-identifiers).
    pub fn referenced_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        for c in &self.columns {
            if let Transform::DateShift { subject, .. } = &c.transform {
                v.push(subject);
            }
        }
        if let Some(k) = &self.kanon {
            v.extend(k.quasi_identifiers.iter().map(String::as_str));
            v.extend(k.sensitive.iter().map(String::as_str));
        }
        v.extend(self.keep.iter().map(String::as_str));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every column the spec classifies: transformed, kept, or named as a
    /// quasi-identifier or sensitive column (a `date_shift` subject alone
    /// does not classify its column).
    pub fn listed_columns(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        v.extend(self.keep.iter().map(String::as_str));
        if let Some(k) = &self.kanon {
            v.extend(k.quasi_identifiers.iter().map(String::as_str));
            v.extend(k.sensitive.iter().map(String::as_str));
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_spec_is_valid() {
        let text = include_str!("../../../examples/anonymize.toml");
        let s = Spec::parse(text).unwrap();
        assert!(s.scan);
        assert_eq!(s.kanon.as_ref().map(|k| k.k_min), Some(5));
        let job = crate::Job::new(s, [0; 32]).unwrap();
        // It fits the shape of the generated customer data, scan included.
        let data = crate::synth::generate(3000, 1);
        let p = job.prepare_one(data.as_bytes()).unwrap();
        let r = job.run(data.as_bytes(), Vec::new(), &p).unwrap();
        let r = job.finish(&p, vec![r]).unwrap();
        assert!(r.scanned && r.rows_written > 2500, "{r:?}");
    }
}
