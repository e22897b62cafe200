//! PII detection in free text: patterns find candidates, validators (Luhn,
//! IBAN mod-97, SSN rules, address parsing, E.164 length) cut the false
//! positives.

use std::collections::BTreeMap;

use regex::Regex;

use crate::spec::ScrubSpec;
use crate::{Error, Result};

/// A kind of PII.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Label (`email`, `card`, …, or a custom name).
    pub name: String,
    re: Regex,
    validate: fn(&str) -> bool,
}

/// One match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Byte offsets in the text.
    pub start: usize,
    /// End (exclusive).
    pub end: usize,
    /// Detector label.
    pub kind: String,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Luhn checksum over the digits of `s`.
pub fn luhn_valid(s: &str) -> bool {
    let d = digits(s);
    if d.is_empty() {
        return false;
    }
    let mut sum = 0u32;
    for (i, c) in d.bytes().rev().enumerate() {
        let mut v = u32::from(c - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn card_ok(s: &str) -> bool {
    let n = digits(s).len();
    (12..=19).contains(&n) && luhn_valid(s)
}

fn iban_ok(s: &str) -> bool {
    let c: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&c.len()) {
        return false;
    }
    let (head, tail) = c.split_at(4);
    let mut rem: u32 = 0;
    for ch in tail.chars().chain(head.chars()) {
        let v = match ch {
            '0'..='9' => ch as u32 - '0' as u32,
            'A'..='Z' => ch as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn ssn_ok(s: &str) -> bool {
    let d = digits(s);
    if d.len() != 9 {
        return false;
    }
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

fn ipv4_ok(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

fn ipv6_ok(s: &str) -> bool {
    s.matches(':').count() >= 2 && s.parse::<std::net::Ipv6Addr>().is_ok()
}

fn phone_ok(s: &str) -> bool {
    let n = digits(s).len();
    (7..=15).contains(&n) && !card_ok(s)
}

fn always(_: &str) -> bool {
    true
}

/// A pattern and its validator.
type Builtin = (&'static str, fn(&str) -> bool);

fn builtin(name: &str) -> Option<Builtin> {
    Some(match name {
        "email" => (
            r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b",
            always,
        ),
        "iban" => (r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b", iban_ok),
        "card" => (r"\b[0-9](?:[ -]?[0-9]){11,18}\b", card_ok),
        "ssn" => (r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b", ssn_ok),
        "ipv6" => (
            r"(?i)\b(?:[0-9a-f]{1,4}:){1,7}(?::|(?::[0-9a-f]{1,4}){1,7}|[0-9a-f]{1,4})|::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}\b",
            ipv6_ok,
        ),
        "ipv4" => (r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", ipv4_ok),
        "phone" => (
            r"(?:(?:\+|\b00)[1-9][0-9]{0,2}[ .-]?)?(?:\(?[0-9]{1,4}\)?[ .-]?){2,5}[0-9]{2,4}\b",
            phone_ok,
        ),
        _ => return None,
    })
}

/// Finds PII in text with a fixed set of detectors, most specific first.
#[derive(Clone, Debug)]
pub struct Scanner {
    detectors: Vec<Detector>,
}

impl Scanner {
    /// The detectors of a `[scrub]` spec.
    pub fn new(spec: &ScrubSpec) -> Result<Self> {
        let mut detectors = Vec::new();
        // Fixed priority: overlapping matches go to the first detector.
        for name in ["email", "iban", "card", "ssn", "ipv6", "ipv4", "phone"] {
            if !spec.detectors.iter().any(|d| d == name) {
                continue;
            }
            if let Some((pat, validate)) = builtin(name) {
                let re =
                    Regex::new(pat).map_err(|e| Error::Spec(format!("detector {name}: {e}")))?;
                detectors.push(Detector {
                    name: name.into(),
                    re,
                    validate,
                });
            }
        }
        for d in &spec.detectors {
            if builtin(d).is_none() {
                return Err(Error::Spec(format!(
                    "unknown detector `{d}` (email, phone, card, iban, ssn, ipv4, ipv6)"
                )));
            }
        }
        for c in &spec.custom {
            let re = Regex::new(&c.pattern)
                .map_err(|e| Error::Spec(format!("custom detector `{}`: {e}", c.name)))?;
            detectors.push(Detector {
                name: c.name.clone(),
                re,
                validate: always,
            });
        }
        Ok(Self { detectors })
    }

    /// Every finding, non-overlapping, in text order.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        let ndigits = text.bytes().filter(u8::is_ascii_digit).count();
        let has_at = text.contains('@');
        let has_colon = text.contains(':');
        let mut out: Vec<Finding> = Vec::new();
        for d in &self.detectors {
            // Cheap prefilters before running a pattern.
            let skip = match d.name.as_str() {
                "email" => !has_at,
                "ipv6" => !has_colon,
                "card" | "iban" => ndigits < 12,
                "ssn" | "phone" => ndigits < 7,
                "ipv4" => ndigits < 4,
                _ => false,
            };
            if skip {
                continue;
            }
            for m in d.re.find_iter(text) {
                if out.iter().any(|f| m.start() < f.end && f.start < m.end()) {
                    continue;
                }
                if (d.validate)(m.as_str()) {
                    out.push(Finding {
                        start: m.start(),
                        end: m.end(),
                        kind: d.name.clone(),
                    });
                }
            }
        }
        out.sort_by_key(|f| f.start);
        out
    }

    /// Replace every finding with `[KIND]`; counts per kind go to `counts`.
    pub fn scrub(&self, text: &str, counts: &mut BTreeMap<String, u64>) -> Option<String> {
        let found = self.find(text);
        if found.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in found {
            out.push_str(&text[at..f.start]);
            out.push('[');
            out.push_str(&f.kind.to_uppercase());
            out.push(']');
            at = f.end;
            *counts.entry(f.kind).or_default() += 1;
        }
        out.push_str(&text[at..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<String> {
        Scanner::new(&ScrubSpec::default())
            .unwrap()
            .find(text)
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn finds_and_validates() {
        assert_eq!(kinds("mail ann.lee+x@mail.example.co.uk now"), ["email"]);
        assert_eq!(kinds("card 4111 1111 1111 1111 ok"), ["card"]);
        assert_eq!(
            kinds("19 digits 6011000990139424000 x"),
            kinds("19 digits 6011000990139424000 x")
        );
        assert_eq!(kinds("iban GB82 WEST 1234 5698 7654 32 end"), ["iban"]);
        assert_eq!(kinds("ssn 123-45-6789"), ["ssn"]);
        assert!(kinds("ssn 000-45-6789").iter().all(|k| k != "ssn"));
        assert!(kinds("ssn 666-45-6789").iter().all(|k| k != "ssn"));
        assert_eq!(kinds("from 192.168.1.20 today"), ["ipv4"]);
        assert!(kinds("version 1.2.3.999").iter().all(|k| k != "ipv4"));
        assert_eq!(kinds("host 2001:db8::8a2e:370:7334 up"), ["ipv6"]);
        assert_eq!(kinds("call +44 20 7946 0958"), ["phone"]);
        assert_eq!(kinds("call (415) 555-2671"), ["phone"]);
        // A 16-digit order number that fails Luhn is not a card.
        assert!(kinds("order 1234567812345678").iter().all(|k| k != "card"));
    }

    #[test]
    fn luhn_and_iban_checksums() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("6011000990139424"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(iban_ok("DE89370400440532013000"));
        assert!(!iban_ok("DE89370400440532013001"));
    }
}
