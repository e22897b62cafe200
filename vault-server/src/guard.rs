//! Abuse resistance: per-token rate limits (GCRA, `governor`) and
//! per-principal exfiltration windows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_store::PgMeta;

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
    limits: Limits,
    clock: DefaultClock,
    /// Among replicas: the minute's counts every replica adds to.
    shared: Option<SharedUsage>,
}

/// Requests and bytes per token and minute, counted by every replica in
/// the metadata database: each replica adds what it let through since its
/// last sync and learns the totals (every quarter second), and refuses a
/// token whose minute's total reached its role's budget. So one token's
/// limits hold across replicas, overshot at most by what the replicas let
/// through between two syncs.
pub struct SharedUsage {
    pg: Arc<PgMeta>,
    counts: Mutex<Usage>,
}

#[derive(Default)]
struct Usage {
    /// The minute (Unix time / 60) the totals are for.
    minute: u64,
    /// Totals of the minute, every replica's, as of the last sync.
    totals: HashMap<String, u64>,
    /// What this replica let through since the last sync.
    pending: HashMap<String, u64>,
}

fn minute_now() -> (u64, u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (now / 60, 60 - now % 60)
}

impl SharedUsage {
    pub fn new(pg: Arc<PgMeta>) -> Self {
        Self {
            pg,
            counts: Mutex::new(Usage::default()),
        }
    }

    /// Take `n` of `budget` for `key` this minute: `Err(seconds)` until the
    /// next minute when the replicas together spent it.
    fn take(&self, key: String, n: u64, budget: u64) -> Result<(), u64> {
        let (minute, left) = minute_now();
        let mut u = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if u.minute != minute {
            u.minute = minute;
            u.totals.clear();
        }
        let spent =
            u.totals.get(&key).copied().unwrap_or(0) + u.pending.get(&key).copied().unwrap_or(0);
        if spent.saturating_add(n) > budget {
            return Err(left.max(1));
        }
        *u.pending.entry(key).or_insert(0) += n;
        Ok(())
    }

    /// Add what this replica let through to the shared counts and learn
    /// the totals. Blocking: one round trip to the database.
    pub fn sync(&self) -> vault_store::Result<()> {
        let (minute, pending) = {
            let mut u = self.counts.lock().unwrap_or_else(|p| p.into_inner());
            (u.minute, std::mem::take(&mut u.pending))
        };
        if pending.is_empty() {
            return Ok(());
        }
        let adds: Vec<(String, u64)> = pending.into_iter().collect();
        let totals = self.pg.usage_add(minute, &adds)?;
        let mut u = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if u.minute == minute {
            u.totals.extend(totals);
        }
        Ok(())
    }
}

impl RateLimits {
    pub fn new(l: &Limits, shared: Option<Arc<PgMeta>>) -> Self {
        Self {
            default: RoleLimiter::new(&l.default),
            roles: l
                .roles
                .iter()
                .map(|(r, l)| (r.clone(), RoleLimiter::new(l)))
                .collect(),
            limits: l.clone(),
            clock: DefaultClock::default(),
            shared: shared.map(SharedUsage::new),
        }
    }

    fn of(&self, role: &str) -> &RoleLimiter {
        self.roles.get(role).unwrap_or(&self.default)
    }

    fn limit_of(&self, role: &str) -> &Limit {
        self.limits.roles.get(role).unwrap_or(&self.limits.default)
    }

    /// The counts shared with other replicas, if there are any.
    pub fn shared(&self) -> Option<&SharedUsage> {
        self.shared.as_ref()
    }

    /// One request by `token` of `role`; `Err(seconds)` to wait. Among
    /// replicas the minute's budget (requests per minute and the burst)
    /// holds for all of them together.
    pub fn request(&self, role: &str, token: &str) -> Result<(), u64> {
        self.of(role)
            .requests
            .check_key(&token.to_owned())
            .map_err(|n| n.wait_time_from(self.clock.now()).as_secs().max(1))?;
        if let Some(s) = &self.shared {
            let l = self.limit_of(role);
            let budget = u64::from(l.requests_per_minute) + u64::from(l.burst);
            s.take(format!("r:{token}"), 1, budget)?;
        }
        Ok(())
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
            Ok(Ok(())) => {}
            Ok(Err(n)) => return Err(n.wait_time_from(self.clock.now())),
            Err(_) => return Err(Duration::from_secs(1)),
        }
        if let Some(s) = &self.shared {
            let budget = self.limit_of(role).bytes_per_minute / 1024;
            s.take(format!("b:{token}"), u64::from(cells.get()), budget)
                .map_err(Duration::from_secs)?;
        }
        Ok(())
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

/// Per-principal sliding windows of pulls: in memory, or among replicas
/// in the metadata database (every replica's pulls in one window).
pub struct ExfilDetector {
    cfg: Exfiltration,
    windows: Mutex<HashMap<String, Window>>,
    shared: Option<Arc<PgMeta>>,
}

impl ExfilDetector {
    pub fn new(cfg: &Exfiltration, shared: Option<Arc<PgMeta>>) -> Self {
        Self {
            cfg: cfg.clone(),
            windows: Mutex::new(HashMap::new()),
            shared,
        }
    }

    pub fn suspend(&self) -> bool {
        self.cfg.suspend
    }

    /// Record a pull; returns an alert text when a threshold is crossed.
    /// Blocking among replicas (one round trip to the database); an error
    /// when the shared window cannot be read.
    pub fn observe(
        &self,
        principal: &str,
        bytes: u64,
        artifact: &str,
    ) -> vault_store::Result<Option<String>> {
        if self.cfg.max_bytes == 0 && self.cfg.max_artifacts == 0 {
            return Ok(None);
        }
        let Some(pg) = &self.shared else {
            return Ok(self.observe_here(principal, bytes, artifact));
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let since = now_ms.saturating_sub(self.cfg.window_secs.saturating_mul(1000));
        let (total, distinct) = pg.observe_pull(principal, now_ms, since, bytes, artifact)?;
        Ok(self.judge(total, distinct))
    }

    fn observe_here(&self, principal: &str, bytes: u64, artifact: &str) -> Option<String> {
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
        self.judge(total, distinct)
    }

    /// The alert for a window holding `total` bytes of `distinct` artifacts.
    fn judge(&self, total: u64, distinct: u64) -> Option<String> {
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
