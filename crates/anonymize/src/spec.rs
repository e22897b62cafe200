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
    /// The transform.
    #[serde(flatten)]
    pub transform: Transform,
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
    /// Sensitive column for the l-diversity report.
    #[serde(default)]
    pub sensitive: Option<String>,
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
    /// Built-in detectors: email, phone, card, iban, ssn, ipv4, ipv6 (default: all).
    #[serde(default = "all_detectors")]
    pub detectors: Vec<String>,
    /// Extra patterns.
    #[serde(default)]
    pub custom: Vec<CustomDetector>,
}

fn all_detectors() -> Vec<String> {
    ["email", "card", "iban", "ssn", "ipv4", "ipv6", "phone"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
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
    /// Also scan every output value (not only `scrub` columns) with the
    /// detectors and report what is found per column, as a check that
    /// nothing personal is left.
    #[serde(default)]
    pub scan: bool,
}

fn default_delimiter() -> char {
    ','
}

impl Spec {
    /// Parse and check a TOML spec (unknown transforms, bad parameters).
    pub fn parse(text: &str) -> Result<Self> {
        let s: Spec = toml::from_str(text).map_err(|e| Error::Spec(e.to_string()))?;
        if !s.delimiter.is_ascii() {
            return Err(Error::Spec("delimiter must be one ASCII character".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &s.columns {
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
            if let Some(s) = &k.sensitive {
                v.push(s);
            }
        }
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
        crate::Job::new(s, [0; 32]).unwrap();
    }
}
