//! `vault-client` is the Rust client of mlvault, used by `vault-cli` and by
//! deploy code that fetches a model at start-up. Start with [`Client::new`],
//! then [`Client::push`] and [`Client::pull`]; [`verify_dir`] re-checks a
//! pulled directory. Nothing unverified reaches a pull destination: files are
//! written beside their destination under a temporary name and renamed only
//! after their size and SHA-256 match the manifest.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod beneath;
mod cache;
mod destination;
mod download;
mod error;
mod gate;
mod http;
mod local;
mod pull;
mod push;
mod report;
mod scan;
mod sink;
mod throttle;
mod trust;

pub use cache::{default_cache_dir, Cache, CacheStatus, PruneReport, PARTIAL_STALE_SECS};
pub use destination::{verify_dir, VerifyReport, MANIFEST_DIR};
pub use download::{Progress, ProgressSink};
pub use error::{Error, Result};
pub use gate::{check_grant, verify_promotion, EvidenceView, GateView, Promotion};
pub use http::Client;
pub use local::hash_file;
pub use pull::{AttestationView, PullOptions, PullResult};
pub use push::PushOptions;
pub use report::{check_report, ReportCheck};
pub use scan::{check_scan, ScanView, SCAN_PREDICATE};
pub use throttle::{parse_rate, RateLimit};
pub use trust::{default_state_dir, load_public_key, Seen, ServerState};
