//! PII detection in free text.
//!
//! Text is first normalized (Unicode decimal digits of any script and
//! full-width forms to ASCII, dash and space variants to `-` and ` `,
//! zero-width characters removed), so a phone written in full-width digits
//! or with en-dashes is the same phone. Patterns then find candidates and
//! validators cut false positives and find the part of a candidate that is
//! PII (Luhn for cards, ISO 13616 mod-97 for IBANs, SSN rules, the standard
//! library's IPv6 parser for every RFC 5952 form, calendar dates). Person
//! names come from a token pass over name lists and cues (see
//! `docs/anonymization.md` for what it does and does not catch); addresses
//! from street-suffix, postcode and PO-box patterns. Values of a dataset's
//! identifier columns ([`IdMatcher`]) are found before all of these.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

use crate::spec::{ScrubSpec, DETECTORS};
use crate::{Error, Result};

/// Finds candidates, then keeps the part of each that is PII.
#[derive(Clone, Debug)]
enum Matcher {
    Pattern(Regex, Span),
    Names,
}

/// A kind of PII.
#[derive(Clone, Debug)]
pub struct Detector {
    /// Label (`email`, `card`, …, or a custom name).
    pub name: String,
    matcher: Matcher,
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

fn whole(s: &str) -> Option<(usize, usize)> {
    Some((0, s.len()))
}

/// Byte offsets where digit groups start and end (groups are separated by
/// anything that is not a digit).
fn groups(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// The longest run of whole digit groups with 12–19 digits that passes
/// Luhn: a card followed by a CVV or another number is still found, and a
/// card written without separators must be the whole candidate.
fn card_span(s: &str) -> Option<(usize, usize)> {
    // `+44 20 …` is an international phone number.
    if s.starts_with('+') {
        return None;
    }
    let g = groups(s);
    let mut best: Option<(usize, usize, usize)> = None;
    for a in 0..g.len() {
        let mut n = 0;
        for b in a..g.len() {
            n += g[b].1 - g[b].0;
            if n > 19 {
                break;
            }
            let span = &s[g[a].0..g[b].1];
            if n >= 12 && luhn_valid(span) && best.is_none_or(|(_, _, m)| n > m) {
                best = Some((g[a].0, g[b].1, n));
            }
        }
    }
    best.map(|(a, b, _)| (a, b))
}

fn iban_valid(c: &str) -> bool {
    if !(15..=34).contains(&c.len()) {
        return false;
    }
    let b = c.as_bytes();
    if !b[..2].iter().all(u8::is_ascii_uppercase) || !b[2..4].iter().all(u8::is_ascii_digit) {
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

/// The longest prefix of the candidate (ending at a separator or the end)
/// that is a valid IBAN: one followed by a word or another code is found.
fn iban_span(s: &str) -> Option<(usize, usize)> {
    let mut compact = String::with_capacity(s.len());
    let mut ends = Vec::new();
    for (i, c) in s.char_indices() {
        if c == ' ' || c == '-' {
            ends.push((compact.len(), i));
        } else {
            compact.push(c.to_ascii_uppercase());
        }
    }
    ends.push((compact.len(), s.len()));
    let separated = ends.len() > 1;
    // Without separators any length may end it; with them, a group end.
    if separated {
        for &(n, at) in ends.iter().rev() {
            if iban_valid(&compact[..n]) {
                return Some((0, at));
            }
        }
        None
    } else {
        (15..=compact.len().min(34))
            .rev()
            .find(|&n| iban_valid(&compact[..n]))
            .map(|n| (0, n))
    }
}

fn ssn_span(s: &str) -> Option<(usize, usize)> {
    let d = digits(s);
    if d.len() != 9 {
        return None;
    }
    let (area, group, serial) = (&d[0..3], &d[3..5], &d[5..9]);
    (area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000")
        .then_some((0, s.len()))
}

fn ipv4_span(s: &str) -> Option<(usize, usize)> {
    s.parse::<std::net::Ipv4Addr>()
        .is_ok()
        .then_some((0, s.len()))
}

/// The longest prefix of the candidate that the standard library parses as
/// an IPv6 address (any RFC 4291 / 5952 form, embedded IPv4, a zone id),
/// with at least two non-empty groups (`::` and `::1` are not personal).
fn ipv6_span(s: &str) -> Option<(usize, usize)> {
    if s.len() > 64 {
        return None;
    }
    for end in (2..=s.len()).rev() {
        if !s.is_char_boundary(end) {
            continue;
        }
        let cand = &s[..end];
        let addr = cand.split('%').next().unwrap_or(cand);
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            let groups = addr.split(':').filter(|g| !g.is_empty()).count();
            return (groups >= 2).then_some((0, end));
        }
    }
    None
}

fn phone_span(s: &str) -> Option<(usize, usize)> {
    // Digits of the number itself, not of its extension.
    let main = s.find(['x', 'X', 'e', 'E', '#']).map_or(s, |i| &s[..i]);
    let n = digits(main).len();
    ((7..=15).contains(&n) && card_span(main).is_none_or(|(a, b)| b - a < main.trim().len()))
        .then_some((0, s.len()))
}

fn month(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    let i = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| n.starts_with(m))?;
    Some(i as u32 + 1)
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    chrono::NaiveDate::from_ymd_opt(y, m, d).is_some()
}

/// Calendar dates: Y-M-D, D/M/Y or M/D/Y (any of `-/.` as separator, two-
/// or four-digit years) and dates with month names.
fn date_span(s: &str) -> Option<(usize, usize)> {
    let nums: Vec<&str> = s
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|p| !p.is_empty())
        .collect();
    let num = |p: &str| -> Option<u32> {
        p.trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse()
            .ok()
    };
    let year = |p: &str| -> Option<i32> {
        let y: i32 = p.parse().ok()?;
        Some(if p.len() == 2 { 1900 + y } else { y })
    };
    let ok = if nums
        .iter()
        .any(|p| p.chars().any(|c| c.is_ascii_alphabetic()) && month(p).is_some())
    {
        let m = nums.iter().find_map(|p| {
            p.chars()
                .next()
                .filter(char::is_ascii_alphabetic)
                .and_then(|_| month(p))
        })?;
        let d = nums
            .iter()
            .find_map(|p| num(p).filter(|d| (1..=31).contains(d)))?;
        let y = nums
            .iter()
            .rev()
            .find_map(|p| year(p).filter(|_| p.len() == 4))?;
        valid_date(y, m, d)
    } else {
        if nums.len() != 3 {
            return None;
        }
        let (a, b, c) = (nums[0], nums[1], nums[2]);
        if a.len() == 4 {
            let (y, m, d) = (year(a)?, num(b)?, num(c)?);
            valid_date(y, m, d)
        } else {
            let (x, z, y) = (num(a)?, num(b)?, year(c)?);
            valid_date(y, z, x) || valid_date(y, x, z)
        }
    };
    ok.then_some((0, s.len()))
}

const MONTHS: &str = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)";

const STREET: &str = r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way|Terrace|Close|Crescent|Square|Sq|Highway|Hwy|Parkway|Pkwy|Gardens|Grove|Row|Walk|Mews|Circle|Cir|Trail|Hill|Park)";

/// Finds the part of a candidate match that is PII, if any.
type Span = fn(&str) -> Option<(usize, usize)>;

fn pattern(name: &str) -> Option<(String, Span)> {
    Some(match name {
        "email" => (
            r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}".into(),
            whole,
        ),
        "iban" => (r"(?i)(?-u:\b)[a-z]{2}[0-9]{2}(?:[ \-]?[a-z0-9]){11,32}".into(), iban_span),
        "card" => (r"\+?(?-u:\b)[0-9](?:[ .\-]?[0-9]){11,22}(?-u:\b)".into(), card_span),
        "ssn" => (r"(?-u:\b)[0-9]{3}[- .][0-9]{2}[- .][0-9]{4}(?-u:\b)".into(), ssn_span),
        "ipv6" => (
            r"(?i)(?:[0-9a-f]{1,4})?:[0-9a-f.:]*:[0-9a-f.:]*(?:%[0-9a-z]+)?".into(),
            ipv6_span,
        ),
        "ipv4" => (r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)".into(), ipv4_span),
        "date" => (
            format!(
                r"(?i)(?-u:\b)[0-9]{{4}}[-/.][0-9]{{1,2}}[-/.][0-9]{{1,2}}(?-u:\b)|(?-u:\b)[0-9]{{1,2}}[-/.][0-9]{{1,2}}[-/.][0-9]{{2}}(?:[0-9]{{2}})?(?-u:\b)|(?-u:\b)[0-9]{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?[\s\-]+{MONTHS}\.?[\s\-,]+[0-9]{{4}}(?-u:\b)|(?-u:\b){MONTHS}\.?\s+[0-9]{{1,2}}(?:st|nd|rd|th)?,?\s+[0-9]{{4}}(?-u:\b)"
            ),
            date_span,
        ),
        "phone" => (
            r"(?i)(?:(?:\+|(?-u:\b)00)[1-9][0-9]{0,2}[ .\-/_]?)?(?:\(?[0-9]{1,4}\)?[ .\-/_]?){2,5}[0-9]{2,4}(?:\s*(?:x|ext\.?|extension|#)\s*[0-9]{1,6})?(?-u:\b)".into(),
            phone_span,
        ),
        "address" => (
            format!(
                r"(?-u:\b)[0-9]{{1,5}}[A-Za-z]?(?:[-/][0-9]{{1,5}})?,?\s+(?:[A-Z][A-Za-z'’.\-]*\s+){{0,4}}{STREET}(?-u:\b)\.?(?:\s+(?:N|S|E|W|NE|NW|SE|SW)(?-u:\b))?(?:,?\s+(?:Apt|Apartment|Unit|Suite|Flat)\.?\s*#?\s*[0-9A-Za-z\-]+)?(?:,\s*[A-Z][A-Za-z'’.\-]*(?-u:\b)(?:\s+[A-Z][A-Za-z'’.\-]*(?-u:\b)){{0,3}}){{0,2}}(?:,?\s+(?:[A-Z]{{1,2}}[0-9][A-Z0-9]?\s*[0-9][A-Z]{{2}}|[0-9]{{5}}(?:-[0-9]{{4}})?))?|\p{{Lu}}[\p{{L}}\-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|ufer)\s+[0-9]{{1,4}}[a-z]?(?-u:\b)(?:,\s*[0-9]{{5}}\s+\p{{Lu}}\p{{L}}+)?|(?i:(?-u:\b)[0-9]{{1,4}}(?:\s*(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|calle|via|viale|piazza)\s+)(?:[\p{{L}}'’\-]+\s+){{0,3}}[\p{{L}}'’\-]+|(?i:(?-u:\b)P\.?\s?O\.?\s+Box\s+[0-9]+)|(?-u:\b)[A-Z]{{1,2}}[0-9][A-Z0-9]?\s[0-9][A-Z]{{2}}(?-u:\b)"
            ),
            whole,
        ),
        _ => return None,
    })
}

/// Finds PII in text with a fixed set of detectors, most specific first.
#[derive(Clone, Debug)]
pub struct Scanner {
    detectors: Vec<Detector>,
}

/// Text with ASCII stand-ins for look-alike characters, and where each
/// byte came from.
struct Normalized<'a> {
    text: std::borrow::Cow<'a, str>,
    /// Original byte offset of each normalized byte, and the end.
    map: Option<Vec<usize>>,
}

impl Normalized<'_> {
    fn original(&self, start: usize, end: usize, len: usize) -> (usize, usize) {
        match &self.map {
            None => (start, end),
            Some(m) => (m[start], if end < m.len() - 1 { m[end] } else { len }),
        }
    }
}

/// Zero code points of Unicode decimal digit blocks (0–9 in a row).
const DIGIT_ZEROS: [u32; 26] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
    0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0xFF10, 0x1D7CE, 0x1D7D8,
    0x1D7E2, 0x1D7EC, 0x1D7F6,
];

/// The ASCII stand-in for a character, `Some('\0')` to remove it.
fn stand_in(c: char) -> Option<char> {
    let u = c as u32;
    if u < 0x80 {
        return None;
    }
    if let Some(z) = DIGIT_ZEROS.iter().find(|&&z| (z..z + 10).contains(&u)) {
        return char::from_digit(u - z, 10);
    }
    match u {
        0xFF01..=0xFF5E => char::from_u32(u - 0xFEE0),
        0x2010..=0x2015 | 0x2212 | 0xFE58 | 0xFE63 => Some('-'),
        0x00A0 | 0x2000..=0x200A | 0x202F | 0x205F | 0x3000 => Some(' '),
        0x200B..=0x200D | 0x2060 | 0xFEFF | 0x00AD => Some('\0'),
        0x2024 | 0x3002 => Some('.'),
        _ => None,
    }
}

fn normalize(text: &str) -> Normalized<'_> {
    if text.is_ascii() {
        return Normalized {
            text: std::borrow::Cow::Borrowed(text),
            map: None,
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len() + 1);
    for (i, c) in text.char_indices() {
        let c = match stand_in(c) {
            Some('\0') => continue,
            Some(s) => s,
            None => c,
        };
        out.push(c);
        map.resize(out.len(), i);
    }
    map.push(text.len());
    Normalized {
        text: std::borrow::Cow::Owned(out),
        map: Some(map),
    }
}

impl Scanner {
    /// The detectors of a `[scrub]` spec.
    pub fn new(spec: &ScrubSpec) -> Result<Self> {
        for d in &spec.detectors {
            if !DETECTORS.contains(&d.as_str()) {
                return Err(Error::Spec(format!(
                    "unknown detector `{d}` ({})",
                    DETECTORS.join(", ")
                )));
            }
        }
        let mut detectors = Vec::new();
        // Fixed priority: overlapping matches go to the first detector.
        for name in DETECTORS {
            if !spec.detectors.iter().any(|d| d == name) {
                continue;
            }
            let matcher = match pattern(name) {
                Some((pat, span)) => Matcher::Pattern(
                    Regex::new(&pat).map_err(|e| Error::Spec(format!("detector {name}: {e}")))?,
                    span,
                ),
                None => Matcher::Names,
            };
            detectors.push(Detector {
                name: name.into(),
                matcher,
            });
        }
        for c in &spec.custom {
            let re = regex::RegexBuilder::new(&c.pattern)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .nest_limit(64)
                .build()
                .map_err(|e| Error::Spec(format!("custom detector `{}`: {e}", c.name)))?;
            detectors.push(Detector {
                name: c.name.clone(),
                matcher: Matcher::Pattern(re, whole),
            });
        }
        Ok(Self { detectors })
    }

    /// Every finding, non-overlapping, in text order.
    pub fn find(&self, text: &str) -> Vec<Finding> {
        self.find_with(text, None)
    }

    /// Findings of every detector (identifier values first); where two
    /// overlap, their union is one finding with the kind of the earlier
    /// detector, so no part of a value is left beside a redaction.
    fn find_with(&self, text: &str, ids: Option<&IdMatcher>) -> Vec<Finding> {
        // (start, end, priority, kind) in `text` offsets.
        let mut spans: Vec<(usize, usize, usize, &str)> = Vec::new();
        if let Some(ids) = ids {
            for (a, b) in ids.find(text) {
                spans.push((a, b, 0, "identifier"));
            }
        }
        let norm = normalize(text);
        let t: &str = &norm.text;
        let ndigits = t.bytes().filter(u8::is_ascii_digit).count();
        let has_at = t.contains('@');
        let has_colon = t.contains(':');
        let has_upper = t.chars().any(char::is_uppercase);
        for (p, d) in self.detectors.iter().enumerate() {
            // Cheap prefilters before running a pattern.
            let skip = match d.name.as_str() {
                "email" => !has_at,
                "ipv6" => !has_colon,
                "card" | "iban" => ndigits < 12,
                "ssn" | "phone" => ndigits < 7,
                "ipv4" | "date" => ndigits < 4,
                "name" => !has_upper,
                _ => false,
            };
            if skip {
                continue;
            }
            let mut add = |a: usize, b: usize| {
                let (a, b) = norm.original(a, b, text.len());
                spans.push((a, b, p + 1, &d.name));
            };
            match &d.matcher {
                Matcher::Pattern(re, span) => {
                    for m in re.find_iter(t) {
                        let Some((a, b)) = span(m.as_str()) else {
                            continue;
                        };
                        let (a, b) = (m.start() + a, m.start() + b);
                        if d.name == "ipv6" && !token_bounded(t, a, b) {
                            continue;
                        }
                        add(a, b);
                    }
                }
                Matcher::Names => {
                    for (a, b) in crate::names::find(t) {
                        add(a, b);
                    }
                }
            }
        }
        spans.retain(|s| s.0 < s.1);
        spans.sort_by_key(|s| (s.0, s.2));
        // Merged groups: (start, end, (longest member, its priority), kind).
        type Group<'k> = (usize, usize, (usize, std::cmp::Reverse<usize>), &'k str);
        let mut out: Vec<Group<'_>> = Vec::new();
        for (a, b, p, kind) in spans {
            let rank = (b - a, std::cmp::Reverse(p));
            match out.last_mut() {
                Some(last) if a < last.1 => {
                    last.1 = last.1.max(b);
                    if rank > last.2 {
                        last.2 = rank;
                        last.3 = kind;
                    }
                }
                _ => out.push((a, b, rank, kind)),
            }
        }
        out.into_iter()
            .map(|(start, end, _, kind)| Finding {
                start,
                end,
                kind: kind.to_owned(),
            })
            .collect()
    }

    /// Replace every finding (identifier values of the dataset first) with
    /// `[KIND]`; counts per kind go to `counts`.
    pub fn scrub(
        &self,
        text: &str,
        ids: Option<&IdMatcher>,
        counts: &mut BTreeMap<String, u64>,
    ) -> Option<String> {
        let found = self.find_with(text, ids);
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

/// Neither side of `a..b` touches a letter, digit or colon.
fn token_bounded(t: &str, a: usize, b: usize) -> bool {
    let before = t[..a].chars().next_back();
    let after = t[b..].chars().next();
    let free = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == ':' || c == '_'));
    free(before) && free(after)
}

/// Text folded for identifier matching (stand-ins, lower case, runs of
/// white space as one space) and where each byte came from.
fn fold(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len() + 1);
    let mut space = false;
    for (i, c) in text.char_indices() {
        let c = match stand_in(c) {
            Some('\0') => continue,
            Some(s) => s,
            None => c,
        };
        if c.is_whitespace() {
            if !space && !out.is_empty() {
                out.push(' ');
                map.push(i);
            }
            space = true;
            continue;
        }
        space = false;
        for l in c.to_lowercase() {
            out.push(l);
        }
        map.resize(out.len(), i);
    }
    map.push(text.len());
    (out, map)
}

/// The forms of an identifier value that are looked for in free text: the
/// whole folded value (3 characters or more) and, for a value shaped like
/// a person's name (two to four capitalized words), each word of 3 letters
/// or more.
pub(crate) fn identifier_forms(value: &str) -> Vec<String> {
    let (f, _) = fold(value);
    let f = f.trim().to_owned();
    let mut out = Vec::new();
    if f.chars().count() < 3 {
        return out;
    }
    let words: Vec<&str> = value.split_whitespace().collect();
    let namelike = (2..=4).contains(&words.len())
        && words.iter().all(|w| {
            w.chars().next().is_some_and(char::is_uppercase)
                && w.chars().all(|c| c.is_alphabetic() || "'’-.".contains(c))
        });
    if namelike {
        for w in words {
            let (fw, _) = fold(w.trim_end_matches('.'));
            if fw.chars().count() >= 3 {
                out.push(fw);
            }
        }
    }
    out.push(f);
    out
}

/// The identifier values of a dataset, found in free text in any letter
/// case and across white-space variations, on word boundaries.
#[derive(Debug)]
pub struct IdMatcher {
    ac: AhoCorasick,
}

impl IdMatcher {
    pub(crate) fn new(values: HashSet<String>) -> Result<Self> {
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(values)
            .map_err(|e| Error::Spec(format!("identifier values: {e}")))?;
        Ok(IdMatcher { ac })
    }

    /// Spans (byte offsets of `text`) of identifier values, longest first
    /// where they overlap.
    pub fn find(&self, text: &str) -> Vec<(usize, usize)> {
        // ASCII text with single spaces needs no folding: the automaton
        // ignores ASCII case.
        let b = text.as_bytes();
        let plain = b.iter().all(|&c| {
            c.is_ascii() && c != b'\t' && c != b'\n' && c != b'\r' && c != 0x0b && c != 0x0c
        }) && !b.windows(2).any(|w| w == b"  ");
        let (f, map) = if plain {
            (text.to_owned(), Vec::new())
        } else {
            fold(text)
        };
        let back = |i: usize| {
            if plain {
                i
            } else if i < map.len() - 1 {
                map[i]
            } else {
                text.len()
            }
        };
        let mut hits: Vec<(usize, usize)> = self
            .ac
            .find_overlapping_iter(&f)
            .map(|m| (m.start(), m.end()))
            .filter(|&(a, b)| {
                let before = f[..a].chars().next_back();
                let after = f[b..].chars().next();
                before.is_none_or(|c| !c.is_alphanumeric())
                    && after.is_none_or(|c| !c.is_alphanumeric())
            })
            .collect();
        hits.sort_by_key(|&(a, b)| (a, std::cmp::Reverse(b)));
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (a, b) in hits {
            if out.last().is_some_and(|&(_, e)| a < e) {
                continue;
            }
            out.push((a, b));
        }
        out.into_iter().map(|(a, b)| (back(a), back(b))).collect()
    }
}

/// Built once per process: the name lists.
pub(crate) fn lists() -> &'static crate::names::Lists {
    static L: OnceLock<crate::names::Lists> = OnceLock::new();
    L.get_or_init(crate::names::Lists::load)
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

    fn scrubbed(text: &str) -> String {
        Scanner::new(&ScrubSpec::default())
            .unwrap()
            .scrub(text, None, &mut BTreeMap::new())
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn finds_and_validates() {
        assert_eq!(kinds("mail ann.lee+x@mail.example.co.uk now"), ["email"]);
        assert_eq!(kinds("card 4111 1111 1111 1111 ok"), ["card"]);
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
    fn the_review_gaps_are_closed() {
        for (text, secret) in [
            ("call 415/555/2671 now", "2671"),
            ("call 415_555_2671 now", "2671"),
            ("call 415\u{2013}555\u{2013}2671 now", "2671"),
            ("call (415) 555-2671 x123 now", "x123"),
            ("call 415-555-2671 ext. 44 now", "2671"),
            ("call \u{ff14}\u{ff11}\u{ff15}-\u{ff15}\u{ff15}\u{ff15}-\u{ff12}\u{ff16}\u{ff17}\u{ff11}", "\u{ff11}"),
            ("card 4111 1111 1111 1111 123 thanks", "1111 1111"),
            ("card 4111.1111.1111.1111 thanks", "4111.1111"),
            ("card 4111111111111111, cvv 123", "4111111111111111"),
            ("iban DE89-3704-0044-0532-0130-00 ok", "0532"),
            ("iban DE89370400440532013000 please pay", "0532"),
            ("iban DE89 3704 0044 0532 0130 00 IBAN", "0532"),
            ("mail jürgen.müller@exämple.de ok", "müller"),
            ("mail 田中@example.jp ok", "田中"),
            ("ip ::ffff:192.0.2.1 ok", "192.0.2"),
            ("ip fe80::1ff:fe23:4567:890a%eth0 ok", "890a"),
            ("ip 2001:DB8:0:0:8:800:200C:417A ok", "417A"),
            ("ip 2001:db8::1. next", "db8"),
            ("born 19/07/1984 in", "1984"),
            ("born 07/19/1984 in", "1984"),
            ("born 19.07.1984 in", "1984"),
            ("born July 19, 1984 in", "1984"),
            ("born 19th of July 1984 in", "1984"),
            ("born 19-Jul-1984 in", "1984"),
            ("lives at 221B Baker Street, London NW1 6XE now", "Baker"),
            ("lives at 1600 Pennsylvania Avenue NW, Washington, DC 20500", "Pennsylvania"),
            ("wohnt in der Hauptstraße 5, 10115 Berlin", "Hauptstraße"),
            ("habite au 12 rue de la Paix", "Paix"),
            ("write to PO Box 1234", "1234"),
            ("spoke with Mr. Okonkwo today", "Okonkwo"),
            ("Dr Chidi Anagonye called", "Anagonye"),
            ("Patricia Gonzalez asked for a refund", "Gonzalez"),
            ("the patient Ivo Kovač was seen", "Kovač"),
        ] {
            let out = scrubbed(text);
            assert!(!out.contains(secret), "`{text}` → `{out}`");
        }
        // Things that are not PII stay.
        for text in [
            "std::vector and Foo::bar()",
            "version 1.2.3 at 12:30:45",
            "order 1234567812345678 shipped",
            "we will meet in May",
        ] {
            assert_eq!(scrubbed(text), text);
        }
    }

    #[test]
    fn luhn_and_iban_checksums() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("6011000990139424"));
        assert!(!luhn_valid("4111111111111112"));
        assert!(iban_valid("DE89370400440532013000"));
        assert!(!iban_valid("DE89370400440532013001"));
    }

    #[test]
    fn identifiers_are_found_in_any_case_and_spacing() {
        let mut v = HashSet::new();
        for f in identifier_forms("Ann  Lee")
            .into_iter()
            .chain(identifier_forms("ann@x.io"))
        {
            v.insert(f);
        }
        let m = IdMatcher::new(v).unwrap();
        let t = "note: ANN\u{a0}  lee wrote from Ann@X.io; Lee again; Annual report";
        let spans: Vec<&str> = m.find(t).into_iter().map(|(a, b)| &t[a..b]).collect();
        assert_eq!(spans, ["ANN\u{a0}  lee", "Ann@X.io", "Lee"]);
    }
}
