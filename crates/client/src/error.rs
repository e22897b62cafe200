use thiserror::Error;
use vault_api::ErrorCode;

/// Client errors. Each maps to one of the exit codes of docs/cli.md through
/// [`Error::exit_code`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments or reference (exit 2).
    #[error("{0}")]
    Usage(String),
    /// 401/403, expired or revoked token (exit 3).
    #[error("{0}")]
    Auth(String),
    /// 404 (exit 4).
    #[error("{0}")]
    NotFound(String),
    /// Digest, size or signature mismatch, tampered data (exit 5).
    #[error("integrity failure: {0}")]
    Integrity(String),
    /// 429 after retries (exit 6).
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// Connection refused, timeouts, 503 (exit 7).
    #[error("server unreachable or unavailable: {0}")]
    Unavailable(String),
    /// Any other server answer (exit 1).
    #[error("server error: {0}")]
    Server(String),
    /// A failure on this machine that is not I/O (a worker task that
    /// failed, a file that vanished under the pull) (exit 1).
    #[error("local failure: {0}")]
    Local(String),
    /// The connection broke during a request (reset, stream error); worth
    /// retrying where the request can resume (exit 1).
    #[error("connection failed: {0}")]
    Transport(String),
    /// Local I/O (exit 1).
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause, part of the message (not a `source()`, so that a
        /// printed error chain does not say it twice).
        cause: std::io::Error,
    },
}

impl Error {
    /// The documented exit status.
    pub fn exit_status(&self) -> vault_api::ExitStatus {
        use vault_api::ExitStatus as X;
        match self {
            Error::Usage(_) => X::Usage,
            Error::Auth(_) => X::Auth,
            Error::NotFound(_) => X::NotFound,
            Error::Integrity(_) => X::Integrity,
            Error::RateLimited(_) => X::RateLimited,
            Error::Unavailable(_) => X::Unavailable,
            Error::Server(_) | Error::Local(_) | Error::Transport(_) | Error::Io { .. } => {
                X::Failure
            }
        }
    }

    /// The documented exit code.
    pub fn exit_code(&self) -> u8 {
        self.exit_status().code()
    }

    pub(crate) fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause,
        }
    }

    pub(crate) fn from_api(status: u16, code: Option<ErrorCode>, message: String) -> Self {
        match (code, status) {
            (Some(ErrorCode::Integrity), _) => Error::Integrity(message),
            (Some(ErrorCode::Unauthenticated), _) | (_, 401) => {
                Error::Auth(format!("not authenticated: {message}"))
            }
            (Some(ErrorCode::Forbidden), _) | (_, 403) => {
                Error::Auth(format!("not authorized: {message}"))
            }
            (Some(ErrorCode::NotFound), _) | (_, 404) => Error::NotFound(message),
            (Some(ErrorCode::RateLimited), _) | (_, 429) => Error::RateLimited(message),
            (Some(ErrorCode::Unavailable), _) | (_, 502..=504 | 507) => Error::Unavailable(message),
            _ => Error::Server(message),
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        // The whole chain, and its innermost cause (refused, no such host,
        // an untrusted certificate) on its own.
        let mut msg = e.to_string();
        let mut cause = msg.clone();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            cause = s.to_string();
            msg.push_str(": ");
            msg.push_str(&cause);
            src = s.source();
        }
        if e.is_connect() {
            // Say where, why and what to check.
            let origin = e.url().map_or_else(String::new, |u| {
                let mut o = u.clone();
                o.set_path("");
                o.set_query(None);
                format!(" {}", o.as_str().trim_end_matches('/'))
            });
            let hint = if cause.to_lowercase().contains("certificate") {
                "for a private CA pass --ca-cert FILE (MLVAULT_CA_CERT)"
            } else {
                "check --addr (MLVAULT_ADDR) and that vault-server runs there"
            };
            Error::Unavailable(format!("cannot connect to{origin}: {cause}; {hint}"))
        } else if e.is_timeout() {
            Error::Unavailable(msg)
        } else if e.is_request() || e.is_body() {
            Error::Transport(msg)
        } else {
            Error::Server(msg)
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
