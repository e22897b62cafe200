//! Short-lived read caches for what every request reads, used among
//! replicas (PostgreSQL metadata), where each read is a round trip: the
//! token of a request (a change made elsewhere — a revocation — is seen
//! within the time to live; changes made here clear it at once) and the
//! kind and label of an artifact (fixed at its first push, so a cached
//! copy is never wrong). Only records found are kept: a token or an
//! artifact made on another replica is never refused as missing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; the cache starts over when full.
const MAX_ENTRIES: usize = 10_000;

pub struct ReadCache<V> {
    ttl: Duration,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> ReadCache<V> {
    /// A cache whose entries live `ttl`; zero caches nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value of `key`: cached if younger than the time to live, else
    /// loaded (and kept when found).
    pub fn get<E>(
        &self,
        key: &str,
        load: impl FnOnce() -> Result<Option<V>, E>,
    ) -> Result<Option<V>, E> {
        if self.ttl.is_zero() {
            return load();
        }
        {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, v)) = map.get(key) {
                if at.elapsed() < self.ttl {
                    return Ok(Some(v.clone()));
                }
            }
        }
        let found = load()?;
        if let Some(v) = &found {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key.to_owned(), (Instant::now(), v.clone()));
        }
        Ok(found)
    }

    /// Forget everything (after a change made here).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_values_live_their_ttl_and_missing_ones_are_not_kept() {
        let c = ReadCache::new(Duration::from_millis(200));
        let loads = std::cell::Cell::new(0);
        let load = |v: Option<u32>| {
            loads.set(loads.get() + 1);
            Ok::<_, ()>(v)
        };
        assert_eq!(c.get("a", || load(None)), Ok(None));
        assert_eq!(c.get("a", || load(Some(1))), Ok(Some(1)));
        assert_eq!(c.get("a", || load(Some(2))), Ok(Some(1)));
        assert_eq!(loads.get(), 2);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(c.get("a", || load(Some(3))), Ok(Some(3)));
        c.clear();
        assert_eq!(c.get("a", || load(Some(4))), Ok(Some(4)));
        let off = ReadCache::new(Duration::ZERO);
        assert_eq!(off.get("a", || load(Some(5))), Ok(Some(5)));
        assert_eq!(off.get("a", || load(Some(6))), Ok(Some(6)));
    }
}
