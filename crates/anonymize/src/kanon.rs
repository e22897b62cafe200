//! k-anonymity and distinct l-diversity over transformed quasi-identifiers,
//! counted over the whole dataset (every file of a version).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// Distinct sensitive values kept per class and column: enough to report l
/// up to this number, in memory bounded by classes × columns × this.
const L_CAP: usize = 256;

/// Equivalence classes: QI tuple → rows and distinct values of each
/// sensitive column.
#[derive(Debug, Default)]
pub struct Classes {
    map: HashMap<String, Class>,
    sensitive: usize,
    /// Approximate bytes the classes hold, and the most they may.
    bytes: usize,
    max_bytes: usize,
}

/// What one class costs besides its key and values (map entry, sets).
const CLASS_OVERHEAD: usize = 96;
/// What one kept sensitive value costs besides its bytes.
const VALUE_OVERHEAD: usize = 48;

#[derive(Debug, Default)]
struct Class {
    rows: u64,
    distinct: Vec<HashSet<String>>,
}

impl Class {
    fn l(&self, columns: usize) -> u64 {
        if columns == 0 {
            return u64::MAX;
        }
        (0..columns)
            .map(|i| self.distinct.get(i).map_or(0, |s| s.len() as u64))
            .min()
            .unwrap_or(0)
    }
}

/// Re-identification risk under the prosecutor model: every record's risk
/// is 1 / the size of its class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Risk {
    /// Share of records (0 to 1) in classes smaller than k.
    pub records_below_k: f64,
    /// Highest per-record risk: 1 / the smallest class.
    pub highest: f64,
    /// Average per-record risk: classes / records.
    pub average: f64,
}

/// What the classes say, for the report.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub k: u64,
    pub l: Option<u64>,
    pub classes: u64,
    pub rows: u64,
    pub risk: Risk,
}

impl Classes {
    /// Classes over `sensitive` columns holding at most about `max_bytes`.
    pub(crate) fn new(sensitive: usize, max_bytes: usize) -> Self {
        Classes {
            map: HashMap::new(),
            sensitive,
            bytes: 0,
            max_bytes,
        }
    }

    /// Count one row; `Err` (with the bytes the classes would need) once
    /// they outgrow their memory bound, whatever the input.
    pub(crate) fn add(
        &mut self,
        key: String,
        sensitive: &[Option<String>],
    ) -> std::result::Result<(), usize> {
        let n = self.sensitive;
        let mut added = 0;
        let e = match self.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                added += v.key().len() + CLASS_OVERHEAD;
                v.insert(Class {
                    rows: 0,
                    distinct: vec![HashSet::new(); n],
                })
            }
        };
        e.rows += 1;
        for (set, v) in e.distinct.iter_mut().zip(sensitive) {
            let v = v.as_deref().unwrap_or_default();
            if set.len() < L_CAP && !set.contains(v) {
                added += v.len() + VALUE_OVERHEAD;
                set.insert(v.to_owned());
            }
        }
        self.bytes += added;
        if self.bytes > self.max_bytes {
            return Err(self.bytes);
        }
        Ok(())
    }

    /// Whether a class is released: at least `k` rows and, with `l_min`,
    /// at least that many distinct values of every sensitive column.
    pub(crate) fn keeps(&self, key: &str, k: u64, l_min: Option<u64>) -> bool {
        self.map
            .get(key)
            .is_some_and(|c| c.rows >= k && l_min.is_none_or(|l| c.l(self.sensitive) >= l))
    }

    /// Statistics over the classes `keep` accepts, with `k` for the
    /// below-k share.
    pub(crate) fn stats(&self, k: u64, keep: impl Fn(&str) -> bool) -> Stats {
        let mut s = Stats {
            k: u64::MAX,
            l: (self.sensitive > 0).then_some(u64::MAX),
            ..Stats::default()
        };
        let mut below = 0u64;
        for (key, c) in &self.map {
            if !keep(key) {
                continue;
            }
            s.classes += 1;
            s.rows += c.rows;
            s.k = s.k.min(c.rows);
            if let Some(l) = s.l.as_mut() {
                *l = (*l).min(c.l(self.sensitive));
            }
            if c.rows < k {
                below += c.rows;
            }
        }
        if s.classes == 0 {
            s.k = 0;
            s.l = s.l.map(|_| 0);
            return s;
        }
        s.risk = Risk {
            records_below_k: below as f64 / s.rows as f64,
            highest: 1.0 / s.k as f64,
            average: s.classes as f64 / s.rows as f64,
        };
        s
    }
}

/// The class key of a row: the QI values joined by a unit separator.
pub(crate) fn key(values: &[&str]) -> String {
    values.join("\u{1f}")
}
