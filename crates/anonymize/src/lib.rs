//! `vault-anonymize` removes or pseudonymizes personal data in datasets as
//! they stream: CSV (RFC 4180: quoted fields, embedded newlines, any
//! delimiter, header row) and JSON Lines (nested fields by dotted path), in
//! memory bounded by the row size and the number of k-anonymity classes.
//!
//! Start with [`Spec::parse`] (a TOML job spec, see `examples/anonymize.toml`),
//! then [`Job::new`] and [`Job::run`] over a reader and a writer. Nothing is
//! written to disk: the server feeds it decrypted bytes and encrypts what it
//! writes.
//!
//! ```
//! use vault_anonymize::{Job, Spec};
//! let spec = Spec::parse(r#"
//!     format = "csv"
//!     keep = ["id"]
//!     [[columns]]
//!     name = "email"
//!     transform = "pseudonymize"
//!     [[columns]]
//!     name = "notes"
//!     transform = "scrub"
//! "#).unwrap();
//! let input = "id,email,notes\n1,ann@example.com,call +44 20 7946 0958\n";
//! let job = Job::new(spec, [7u8; 32]).unwrap();
//! let prepared = job.prepare_one(input.as_bytes()).unwrap();
//! let mut out = Vec::new();
//! let report = job.run(input.as_bytes(), &mut out, &prepared).unwrap();
//! let text = String::from_utf8(out).unwrap();
//! assert!(!text.contains("ann@example.com") && !text.contains("7946"));
//! assert_eq!(report.rows_written, 1);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod detect;
mod input;
mod job;
mod kanon;
mod names;
mod spec;
#[doc(hidden)]
pub mod synth;
mod transform;

pub use detect::{luhn_valid, Detector, Finding, Scanner};
pub use job::{Job, Prepared, Report, Survey};
pub use kanon::Risk;
pub use spec::{ColumnSpec, Format, OnError, Spec, Transform, Unlisted, DETECTORS};

/// Errors of a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The spec is invalid (refused before the job starts).
    #[error("invalid job spec: {0}")]
    Spec(String),
    /// The input is malformed and the spec says to fail.
    #[error("malformed input at line {line}: {detail}")]
    Malformed {
        /// 1-based line (CSV record start, JSONL line).
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// A privacy model the spec asks for (k, l, suppression cap, scan
    /// findings) cannot be met: nothing is released.
    #[error("privacy requirement not met: {0}")]
    Privacy(String),
    /// Reading or writing failed.
    #[error("i/o: {0}")]
    Io(String),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
