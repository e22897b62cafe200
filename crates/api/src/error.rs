//! The error body every non-2xx response carries.

use serde::{Deserialize, Serialize};

/// Stable, machine-readable error codes. Clients branch on these, never on
/// message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed request (400).
    BadRequest,
    /// No, bad, expired or revoked token (401).
    Unauthenticated,
    /// Authenticated but not allowed (403).
    Forbidden,
    /// No such artifact, version, session or token (404).
    NotFound,
    /// State conflict, e.g. a name already used with another kind (409).
    Conflict,
    /// Uploaded bytes or a manifest disagree with what was declared, a
    /// signature does not verify, or stored data failed authentication.
    Integrity,
    /// Body too large (413).
    TooLarge,
    /// Rate limited (429).
    RateLimited,
    /// Server not ready: sealed, shutting down, storage unreachable (503).
    Unavailable,
    /// Anything else (500). The message carries only a request id.
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Integrity => 422,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and human-readable message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: ErrorCode,
    /// One line for a person.
    pub message: String,
}
