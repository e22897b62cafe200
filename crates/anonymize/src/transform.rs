//! Value transforms. Every transform is deterministic (given the key), so a
//! job can be run again (hashing pass, writing pass) with identical output.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use ring::hmac;

use crate::detect::{IdMatcher, Scanner};
use crate::spec::{Generalize, Transform};

/// What a transform needs besides the value.
pub struct Ctx<'a> {
    /// HMAC key of the namespace.
    pub key: &'a hmac::Key,
    /// For `scrub`.
    pub scanner: &'a Scanner,
    /// Findings per detector, for the report.
    pub pii: &'a mut BTreeMap<String, u64>,
    /// Identifier values of the dataset, removed from `scrub` columns first.
    pub identifiers: Option<&'a IdMatcher>,
}

/// Short name of a transform, for reports.
pub fn name(t: &Transform) -> &'static str {
    match t {
        Transform::Drop => "drop",
        Transform::Redact => "redact",
        Transform::Replace { .. } => "replace",
        Transform::Mask { .. } => "mask",
        Transform::Pseudonymize { .. } => "pseudonymize",
        Transform::Generalize(_) => "generalize",
        Transform::DateShift { .. } => "date_shift",
        Transform::Scrub => "scrub",
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Parse the date at the start of `v` (YYYY-MM-DD, optionally followed by a
/// time); returns the date and the rest.
fn date_prefix(v: &str) -> Option<(NaiveDate, &str)> {
    let b = v.as_bytes().get(..10)?;
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = i32::try_from(num(0..4)?).ok()?;
    let d = NaiveDate::from_ymd_opt(y, num(5..7)?, num(8..10)?)?;
    Some((d, &v[10..]))
}

/// `YYYY-MM-DD` (years 0 to 9999; others in chrono's form).
fn ymd(d: NaiveDate) -> String {
    use chrono::Datelike;
    if (0..=9999).contains(&d.year()) {
        format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
    } else {
        d.format("%Y-%m-%d").to_string()
    }
}

/// Days in [-max, -1] ∪ [1, max] for a subject, from a keyed hash: never
/// zero, so no date is released unchanged.
fn shift_days(key: &hmac::Key, subject: &str, max: u32) -> i64 {
    let mut m = hmac::Context::with_key(key);
    m.update(b"date-shift\0");
    m.update(subject.as_bytes());
    let tag = m.sign();
    let mut b = [0u8; 8];
    b.copy_from_slice(&tag.as_ref()[..8]);
    let max = u64::from(max.max(1));
    let r = (u64::from_be_bytes(b) % (2 * max)) as i64;
    let max = max as i64;
    if r < max {
        r - max
    } else {
        r - max + 1
    }
}

/// Apply `t` to `value`. `None` removes the field; the flag says whether the
/// value changed.
pub fn apply(
    t: &Transform,
    value: &str,
    subject: Option<&str>,
    ctx: &mut Ctx<'_>,
) -> (Option<String>, bool) {
    let out = match t {
        Transform::Drop => return (None, true),
        Transform::Redact => "[REDACTED]".to_owned(),
        Transform::Replace { value: v } => v.clone(),
        Transform::Mask {
            keep_first,
            keep_last,
            mask_char,
        } => {
            let chars: Vec<char> = value.chars().collect();
            let n = chars.len();
            chars
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if i < *keep_first || i + keep_last >= n {
                        *c
                    } else {
                        *mask_char
                    }
                })
                .collect()
        }
        Transform::Pseudonymize { length } => {
            if value.is_empty() {
                return (Some(String::new()), false);
            }
            let mut m = hmac::Context::with_key(ctx.key);
            m.update(b"pseudonym\0");
            m.update(value.as_bytes());
            let tag = m.sign();
            let h = hex::encode(tag.as_ref());
            format!("p_{}", &h[..(*length).min(64)])
        }
        Transform::Generalize(g) => match g {
            Generalize::Bucket { width } => match value.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => {
                    let lo = (v / width).floor() * width;
                    format!("{}-{}", fmt_num(lo), fmt_num(lo + width))
                }
                _ if value.is_empty() => String::new(),
                _ => "[REDACTED]".to_owned(),
            },
            Generalize::Month => match date_prefix(value) {
                Some((d, _)) => ymd(d)[..7].to_owned(),
                None if value.is_empty() => String::new(),
                None => "[REDACTED]".to_owned(),
            },
            Generalize::Year => match date_prefix(value) {
                Some((d, _)) => ymd(d)[..4].to_owned(),
                None if value.is_empty() => String::new(),
                None => "[REDACTED]".to_owned(),
            },
            Generalize::Prefix { keep } => value
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i < *keep || !c.is_alphanumeric() {
                        c
                    } else {
                        '*'
                    }
                })
                .collect(),
            Generalize::Map { map, default } => match map.get(value) {
                Some(v) => v.clone(),
                None if default.is_empty() => value.to_owned(),
                None => default.clone(),
            },
        },
        Transform::DateShift { max_days, .. } => match date_prefix(value) {
            Some((d, rest)) => {
                let days = shift_days(ctx.key, subject.unwrap_or(""), *max_days);
                let shifted = d + Duration::days(days);
                format!("{}{rest}", ymd(shifted))
            }
            None if value.is_empty() => String::new(),
            None => "[REDACTED]".to_owned(),
        },
        Transform::Scrub => match ctx.scanner.scrub(value, ctx.identifiers, ctx.pii) {
            Some(s) => s,
            None => return (Some(value.to_owned()), false),
        },
    };
    let changed = out != value;
    (Some(out), changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ScrubSpec;

    fn run(t: Transform, v: &str, subject: Option<&str>, key: u8) -> Option<String> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[key; 32]);
        let scanner = Scanner::new(&ScrubSpec::default()).unwrap();
        let mut pii = BTreeMap::new();
        let mut ctx = Ctx {
            key: &key,
            scanner: &scanner,
            pii: &mut pii,
            identifiers: None,
        };
        apply(&t, v, subject, &mut ctx).0
    }

    #[test]
    fn transforms() {
        let p = |v, k| run(Transform::Pseudonymize { length: 16 }, v, None, k);
        assert_eq!(p("ann", 1), p("ann", 1));
        assert_ne!(p("ann", 1), p("bob", 1));
        assert_ne!(p("ann", 1), p("ann", 2), "namespaces must be unlinkable");
        let mask = Transform::Mask {
            keep_first: 0,
            keep_last: 4,
            mask_char: '*',
        };
        assert_eq!(
            run(mask, "4111111111111111", None, 0).unwrap(),
            "************1111"
        );
        let b = Transform::Generalize(Generalize::Bucket { width: 10.0 });
        assert_eq!(run(b, "37", None, 0).unwrap(), "30-40");
        assert_eq!(
            run(
                Transform::Generalize(Generalize::Month),
                "1984-07-19",
                None,
                0
            )
            .unwrap(),
            "1984-07"
        );
        assert_eq!(
            run(
                Transform::Generalize(Generalize::Prefix { keep: 3 }),
                "SW1A 1AA",
                None,
                0
            )
            .unwrap(),
            "SW1* ***"
        );
        let ds = Transform::DateShift {
            subject: "id".into(),
            max_days: 30,
        };
        let a = run(ds.clone(), "2024-03-01", Some("42"), 1).unwrap();
        let b2 = run(ds.clone(), "2024-03-11", Some("42"), 1).unwrap();
        let da = NaiveDate::parse_from_str(&a, "%Y-%m-%d").unwrap();
        let db = NaiveDate::parse_from_str(&b2, "%Y-%m-%d").unwrap();
        assert_eq!(
            (db - da).num_days(),
            10,
            "intervals of one subject are kept"
        );
        assert!(run(Transform::Drop, "x", None, 0).is_none());
    }

    #[test]
    fn date_shift_never_keeps_a_date() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[9; 32]);
        for max in [1u32, 2, 30] {
            let mut seen = std::collections::HashSet::new();
            for subject in 0..5000 {
                let d = shift_days(&key, &subject.to_string(), max);
                assert!(
                    d != 0 && d.unsigned_abs() <= u64::from(max),
                    "{d} for max {max}"
                );
                seen.insert(d);
            }
            assert_eq!(seen.len() as u32, 2 * max, "every offset is used");
        }
    }
}
