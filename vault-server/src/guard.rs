//! Abuse resistance: per-token rate limits (GCRA, `governor`) and
//! per-principal exfiltration windows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

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

    /// `bytes` moved by `token`; `Err(seconds)` to wait. A transfer larger
    /// than a minute's budget needs the whole budget.
    pub fn bytes(&self, role: &str, token: &str, bytes: u64) -> Result<(), u64> {
        let Some((lim, cap)) = &self.of(role).bytes else {
            return Ok(());
        };
        let cells = nz(bytes.div_ceil(1024)).min(*cap);
        match lim.check_key_n(&token.to_owned(), cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(n)) => Err(n.wait_time_from(self.clock.now()).as_secs().max(1)),
            Err(_) => Err(60),
        }
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
