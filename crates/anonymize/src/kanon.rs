//! k-anonymity classes over transformed quasi-identifiers.

use std::collections::{HashMap, HashSet};

/// Equivalence classes: QI tuple → (rows, distinct sensitive values).
#[derive(Debug, Default)]
pub struct Classes {
    pub(crate) map: HashMap<String, (u64, HashSet<String>)>,
}

impl Classes {
    pub(crate) fn add(&mut self, key: String, sensitive: Option<&str>) {
        let e = self.map.entry(key).or_default();
        e.0 += 1;
        if let Some(s) = sensitive {
            if e.1.len() < 1024 {
                e.1.insert(s.to_owned());
            }
        }
    }

    /// (k, l, classes) over the classes `keep` accepts.
    pub(crate) fn stats(&self, keep: impl Fn(u64) -> bool) -> (u64, u64, u64) {
        let mut k = u64::MAX;
        let mut l = u64::MAX;
        let mut n = 0;
        for (count, sens) in self.map.values() {
            if !keep(*count) {
                continue;
            }
            n += 1;
            k = k.min(*count);
            l = l.min(sens.len() as u64);
        }
        if n == 0 {
            (0, 0, 0)
        } else {
            (k, l, n)
        }
    }

    pub(crate) fn count(&self, key: &str) -> u64 {
        self.map.get(key).map_or(0, |e| e.0)
    }
}

/// The class key of a row: the QI values joined by a unit separator.
pub(crate) fn key(values: &[&str]) -> String {
    values.join("\u{1f}")
}
