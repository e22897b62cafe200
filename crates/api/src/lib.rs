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

/// Parse a duration like `90s`, `15m`, `1h`, `7d` into seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| {
        format!("duration `{s}` must be a number and a unit (s, m, h, d), e.g. 15m")
    })?;
    let mult = match unit {
        "s" | "" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "duration `{s}`: unknown unit `{unit}` (use s, m, h or d)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("duration `{s}` is out of range"))
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90s"), Ok(90));
        assert_eq!(super::parse_duration("15m"), Ok(900));
        assert_eq!(super::parse_duration("1h"), Ok(3600));
        assert_eq!(super::parse_duration("7d"), Ok(604800));
        for bad in ["", "h", "1w", "-1h", "0s", "99999999999999999999d"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}

/// The exit codes of both binaries (docs/cli.md), in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitStatus {
    /// Success.
    Ok = 0,
    /// Any other failure (a refused job spec, a failed job, a local error).
    Failure = 1,
    /// Bad flags or arguments, an invalid reference, an unsafe data
    /// directory or configuration.
    Usage = 2,
    /// Not authenticated or not authorized; an expired, revoked or
    /// suspended token.
    Auth = 3,
    /// Not found (also what a caller sees of what it may not read).
    NotFound = 4,
    /// Integrity failure: a digest, size or signature mismatch, tampering.
    Integrity = 5,
    /// Rate limited, after the client's own retries.
    RateLimited = 6,
    /// Server unreachable or unavailable.
    Unavailable = 7,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}
