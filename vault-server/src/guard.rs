//! Abuse resistance: per-token rate limits (GCRA, `governor`) and
//! per-principal exfiltration windows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::{Exfiltration, Limit, Limits};

struct RoleLimiter {
    requests: DefaultKeyedRateLimiter<String>,
    /// In KiB, so a minute of bytes fits a `u32` of cells.
    bytes: Option<(DefaultKeyedRateLimiter<String>, NonZeroU32)>,
}

fn nz(v: u64) -> NonZeroU32 {
    NonZeroU32::new(v.clamp(1, u64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN)
}

impl RoleLimiter {
    fn new(l: &Limit) -> Self {
        let requests = RateLimiter::keyed(
            Quota::per_minute(nz(u64::from(l.requests_per_minute)))
                .allow_burst(nz(u64::from(l.burst))),
        );
        let bytes = (l.bytes_per_minute > 0).then(|| {
            let kib = nz(l.bytes_per_minute / 1024);
            (
                RateLimiter::keyed(Quota::per_minute(kib).allow_burst(kib)),
                kib,
            )
        });
        Self { requests, bytes }
    }
}

/// Rate limits per role, keyed by token: one token's flood never touches
/// another token's budget.
pub struct RateLimits {
    default: RoleLimiter,
    roles: HashMap<String, RoleLimiter>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(l: &Limits) -> Self {
        Self {
            default: RoleLimiter::new(&l.default),
            roles: l
                .roles
                .iter()
                .map(|(r, l)| (r.clone(), RoleLimiter::new(l)))
                .collect(),
            clock: DefaultClock::default(),
        }
    }

    fn of(&self, role: &str) -> &RoleLimiter {
        self.roles.get(role).unwrap_or(&self.default)
    }

    /// One request by `token` of `role`; `Err(seconds)` to wait.
    pub fn request(&self, role: &str, token: &str) -> Result<(), u64> {
        self.of(role)
            .requests
            .check_key(&token.to_owned())
            .map_err(|n| n.wait_time_from(self.clock.now()).as_secs().max(1))
    }

    /// Charge `bytes` moved by `token` to its role's bytes-per-minute
    /// budget, every byte of them: `Err(wait)` when the budget is spent
    /// (nothing charged; try again after `wait`). A charge larger than a
    /// minute's budget is taken a minute's budget at a time by the caller
    /// (see [`RateLimits::byte_chunk`]).
    pub fn take_bytes(&self, role: &str, token: &str, bytes: u64) -> Result<(), Duration> {
        let Some((lim, cap)) = &self.of(role).bytes else {
            return Ok(());
        };
        let cells = nz(bytes.div_ceil(1024)).min(*cap);
        match lim.check_key_n(&token.to_owned(), cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(n)) => Err(n.wait_time_from(self.clock.now())),
            Err(_) => Err(Duration::from_secs(1)),
        }
    }

    /// The most bytes one [`RateLimits::take_bytes`] can charge for `role`.
    pub fn byte_chunk(&self, role: &str) -> u64 {
        self.of(role)
            .bytes
            .as_ref()
            .map_or(u64::MAX, |(_, cap)| u64::from(cap.get()) * 1024)
    }
}

/// One principal's recent pulls: (when, bytes, artifact).
type Window = VecDeque<(Instant, u64, String)>;

/// Per-principal sliding windows of pulls.
pub struct ExfilDetector {
    cfg: Exfiltration,
    windows: Mutex<HashMap<String, Window>>,
}

impl ExfilDetector {
    pub fn new(cfg: &Exfiltration) -> Self {
        Self {
            cfg: cfg.clone(),
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn suspend(&self) -> bool {
        self.cfg.suspend
    }

    /// Record a pull; returns an alert text when a threshold is crossed.
    pub fn observe(&self, principal: &str, bytes: u64, artifact: &str) -> Option<String> {
        if self.cfg.max_bytes == 0 && self.cfg.max_artifacts == 0 {
            return None;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.cfg.window_secs);
        let mut all = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let w = all.entry(principal.to_owned()).or_default();
        while w
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > window)
        {
            w.pop_front();
        }
        w.push_back((now, bytes, artifact.to_owned()));
        let total: u64 = w.iter().map(|(_, b, _)| b).sum();
        let distinct = w
            .iter()
            .map(|(_, _, a)| a.as_str())
            .collect::<HashSet<_>>()
            .len() as u64;
        if self.cfg.max_bytes > 0 && total > self.cfg.max_bytes {
            return Some(format!(
                "{total} bytes pulled in {}s (threshold {})",
                self.cfg.window_secs, self.cfg.max_bytes
            ));
        }
        if self.cfg.max_artifacts > 0 && distinct > self.cfg.max_artifacts {
            return Some(format!(
                "{distinct} distinct artifacts pulled in {}s (threshold {})",
                self.cfg.window_secs, self.cfg.max_artifacts
            ));
        }
        None
    }
}

/// Distinct sources a [`Floods`] counts on their own; the rest share one
/// counter, so a spread-out flood cannot grow the map without bound.
const MAX_FLOOD_SOURCES: usize = 10_000;

/// Who a held event came from: (action, principal, client address or
/// token id).
pub type Source = (&'static str, String, String);

/// What to do with one failed authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Write its own audit entry.
    Audit,
    /// Count it into the next summary entry; answer as usual.
    Hold,
    /// Count it and answer 429: the address is over its budget.
    Limited(u64),
}

/// Failed authentications limited per client address, and floods (failed
/// authentications and rate-limited requests) counted in memory and
/// written as one summary entry per source and interval instead of one
/// synced entry each.
pub struct Floods {
    failed_auth: DefaultKeyedRateLimiter<IpAddr>,
    audited: DefaultDirectRateLimiter,
    held: Mutex<HashMap<Source, u64>>,
    clock: DefaultClock,
}

impl Floods {
    pub fn new(h: &crate::config::HttpLimits) -> Self {
        let per_client = nz(u64::from(h.failed_auth_per_minute));
        let audited = nz(u64::from(h.failed_auth_audit_per_minute));
        Floods {
            failed_auth: RateLimiter::keyed(Quota::per_minute(per_client)),
            audited: RateLimiter::direct(Quota::per_minute(audited)),
            held: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// One failed authentication from `client`.
    pub fn failed_auth(&self, client: Option<IpAddr>) -> AuthFailure {
        let key = client.map(crate::conn::client_key);
        let who = key.map_or_else(|| "-".to_owned(), |k| k.to_string());
        if let Some(k) = key {
            if let Err(n) = self.failed_auth.check_key(&k) {
                self.hold(("authenticate", "-".into(), who));
                return AuthFailure::Limited(n.wait_time_from(self.clock.now()).as_secs().max(1));
            }
        }
        if self.audited.check().is_err() {
            self.hold(("authenticate", "-".into(), who));
            return AuthFailure::Hold;
        }
        AuthFailure::Audit
    }

    /// Count one event for the next summary.
    pub fn hold(&self, source: Source) {
        metrics::counter!("mlvault_audit_held_total", "action" => source.0).increment(1);
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = if m.len() >= MAX_FLOOD_SOURCES && !m.contains_key(&source) {
            (source.0, "-".to_owned(), "(other sources)".to_owned())
        } else {
            source
        };
        *m.entry(key).or_insert(0) += 1;
    }

    /// The counts held since the last call, by source.
    pub fn drain(&self) -> Vec<(Source, u64)> {
        let mut m = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = m.drain().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_auth_is_limited_per_address_and_counted() {
        let h = crate::config::HttpLimits {
            failed_auth_per_minute: 3,
            failed_auth_audit_per_minute: 1000,
            ..Default::default()
        };
        let f = Floods::new(&h);
        let a: IpAddr = "10.1.1.1".parse().unwrap();
        let b: IpAddr = "10.1.1.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(f.failed_auth(Some(a)), AuthFailure::Audit);
        }
        assert!(matches!(f.failed_auth(Some(a)), AuthFailure::Limited(_)));
        assert!(matches!(f.failed_auth(Some(a)), AuthFailure::Limited(_)));
        assert_eq!(f.failed_auth(Some(b)), AuthFailure::Audit);
        assert_eq!(
            f.drain(),
            vec![(("authenticate", "-".to_owned(), "10.1.1.1".to_owned()), 2)]
        );
        assert!(f.drain().is_empty());
    }

    #[test]
    fn the_audited_share_of_failures_is_capped_across_addresses() {
        let h = crate::config::HttpLimits {
            failed_auth_per_minute: 1000,
            failed_auth_audit_per_minute: 2,
            ..Default::default()
        };
        let f = Floods::new(&h);
        let mut verdicts = Vec::new();
        for i in 0..5u8 {
            verdicts.push(f.failed_auth(Some(IpAddr::from([10, 0, 0, i]))));
        }
        let audited = verdicts
            .iter()
            .filter(|v| **v == AuthFailure::Audit)
            .count();
        assert_eq!(audited, 2, "{verdicts:?}");
        let held: u64 = f.drain().iter().map(|(_, n)| n).sum();
        assert_eq!(held, 3);
    }
}
