//! The vault's domain operations, under the HTTP layer: handlers parse,
//! authorize, call one function here and answer. Nothing here knows about
//! HTTP; what a caller may do is decided above (the policy question dedup
//! needs arrives as a closure, see [`ingest::Dedup`]).
//!
//! - [`ingest`]: the one write path (sessions, blobs with their envelopes,
//!   digest binding, dedup, commit), used by pushes and jobs alike;
//! - [`resolve`]: references to versions, and signed alias records;
//! - [`anonymize`]: the job runner;
//! - [`versions`]: deleting (crypto-shredding) versions, rewrapping DEKs;
//! - [`attest`]: attestations about versions, verified against attestors;
//! - [`admission`]: the admission scan of a push and its signed verdict;
//! - [`promote`]: promotion gates judged at alias moves;
//! - [`change`]: every recorded change, made in one transaction with its
//!   audit entries (`Vault::change`).

pub mod admission;
pub mod anonymize;
pub mod attest;
pub mod change;
pub mod error;
pub mod ingest;
pub mod promote;
pub mod resolve;
pub mod versions;

pub use error::{Error, Result};
