//! `vault-api` holds the wire contract between `vault-server` and its
//! clients: artifact names and references ([`Reference`]), the JSON request
//! and response bodies of the HTTP API, and the error body
//! ([`ErrorBody`]) with its stable [`ErrorCode`]s.
//!
//! ```
//! use vault_api::{Reference, Selector};
//! let r: Reference = "fraud/detector:production".parse().unwrap();
//! assert_eq!(r.name.as_str(), "fraud/detector");
//! assert_eq!(r.selector, Selector::Alias("production".into()));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod names;
mod types;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use names::{is_valid_alias, valid_digest, ArtifactName, NameError, Reference, Selector};
pub use types::*;

/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
