//! NumPy `.npy` arrays (alone, or members of an `.npz`): the header is a
//! Python dict literal, parsed strictly (never evaluated). An `O` (object)
//! dtype anywhere means the data is a pickle NumPy would unpickle with
//! `allow_pickle=True`: a failure. A plain dtype's byte size must match
//! the data that follows.

use crate::{FileReport, Verdict};

/// Header bytes at most (NumPy itself refuses more than 10,000 by
/// default).
pub(crate) const MAX_HEADER: usize = 1 << 16;

/// A Python literal as `.npy` headers use them.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(u64),
    Bool(bool),
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(String, Lit)>),
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    depth: u32,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.at < self.s.len() && matches!(self.s[self.at], b' ' | b'\t' | b'\n') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Lit, String> {
        self.depth += 1;
        if self.depth > 32 {
            return Err("a header nested too deep".into());
        }
        self.ws();
        let v = match self.s.get(self.at) {
            Some(b'\'') | Some(b'"') => Lit::Str(self.string()?),
            Some(b'(') => {
                self.at += 1;
                Lit::Tuple(self.items(b')')?)
            }
            Some(b'[') => {
                self.at += 1;
                Lit::List(self.items(b']')?)
            }
            Some(b'{') => {
                self.at += 1;
                let mut out = Vec::new();
                loop {
                    if self.eat(b'}') {
                        break;
                    }
                    self.ws();
                    let k = self.string()?;
                    if !self.eat(b':') {
                        return Err("a dict key without `:`".into());
                    }
                    out.push((k, self.value()?));
                    if !self.eat(b',') {
                        if self.eat(b'}') {
                            break;
                        }
                        return Err("a dict entry not followed by `,` or `}`".into());
                    }
                }
                Lit::Dict(out)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.at < self.s.len() && self.s[self.at].is_ascii_digit() {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                Lit::Int(text.parse().map_err(|_| "an integer out of range")?)
            }
            _ if self.s[self.at..].starts_with(b"True") => {
                self.at += 4;
                Lit::Bool(true)
            }
            _ if self.s[self.at..].starts_with(b"False") => {
                self.at += 5;
                Lit::Bool(false)
            }
            _ => return Err("a value that is not a plain literal".into()),
        };
        self.depth -= 1;
        Ok(v)
    }

    fn items(&mut self, close: u8) -> Result<Vec<Lit>, String> {
        let mut out = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(out);
            }
            out.push(self.value()?);
            if !self.eat(b',') {
                if self.eat(close) {
                    return Ok(out);
                }
                return Err("a sequence item not followed by `,` or its end".into());
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let q = self.s.get(self.at).copied().unwrap_or(0);
        if q != b'\'' && q != b'"' {
            return Err("a key that is not a string".into());
        }
        let start = self.at + 1;
        let end = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("an unterminated string")?;
        let text = &self.s[start..start + end];
        if text.contains(&b'\\') {
            return Err("a string with escapes".into());
        }
        self.at = start + end + 1;
        Ok(String::from_utf8_lossy(text).into_owned())
    }
}

/// Bytes per item of a plain dtype string (`<f4`, `|b1`, `<U10`,
/// `<M8[ns]`), `None` when it is not one, `Err` for an object dtype.
fn item_size(descr: &str) -> Result<Option<u64>, ()> {
    let d = descr.trim_start_matches(['<', '>', '|', '=']);
    let mut chars = d.chars();
    let kind = chars.next().unwrap_or(' ');
    if kind == 'O' {
        return Err(());
    }
    let rest: String = chars.collect();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let tail = &rest[digits.len()..];
    let n: Option<u64> = digits.parse().ok();
    Ok(match (kind, n, tail) {
        ('?', None, "") => Some(1),
        ('b' | 'i' | 'u', Some(n @ (1 | 2 | 4 | 8)), "") => Some(n),
        ('f', Some(n @ (2 | 4 | 8 | 16)), "") => Some(n),
        ('c', Some(n @ (8 | 16 | 32)), "") => Some(n),
        ('S' | 'V' | 'a', Some(n), "") => Some(n),
        ('U', Some(n), "") => n.checked_mul(4),
        ('M' | 'm', Some(8), t) if t.is_empty() || (t.starts_with('[') && t.ends_with(']')) => {
            Some(8)
        }
        _ => None,
    })
}

/// Whether a dtype (a string, or a structured list of fields) holds
/// Python objects anywhere.
fn holds_objects(d: &Lit) -> bool {
    match d {
        Lit::Str(s) => item_size(s).is_err(),
        Lit::List(fields) => fields.iter().any(|f| match f {
            Lit::Tuple(parts) => parts.get(1).is_none_or(holds_objects),
            _ => true,
        }),
        _ => true,
    }
}

/// Judge an array whose header starts `bytes` (the magic included) and
/// whose whole size is `len`.
pub(crate) fn judge(bytes: &[u8], len: u64, report: &mut FileReport) {
    let fail = |r: &mut FileReport, m: String| r.find(Verdict::Fail, "npy.header", m);
    if bytes.len() < 10 || !bytes.starts_with(b"\x93NUMPY") {
        return fail(report, "not a NumPy array header".into());
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return fail(
                report,
                format!("format version {major}.{minor} is not known"),
            )
        }
    };
    if hlen > MAX_HEADER || start + hlen > bytes.len() {
        return fail(
            report,
            format!("a header of {hlen} bytes that the file does not hold (at most {MAX_HEADER})"),
        );
    }
    let text = &bytes[start..start + hlen];
    if major < 3 && !text.is_ascii() {
        return fail(report, "a header that is not ASCII".into());
    }
    let mut p = Parser {
        s: text,
        at: 0,
        depth: 0,
    };
    let dict = match p.value() {
        Ok(Lit::Dict(d)) => d,
        Ok(_) => return fail(report, "a header that is not a dict".into()),
        Err(e) => return fail(report, format!("the header does not parse: {e}")),
    };
    p.ws();
    if p.at != text.len() {
        return fail(report, "bytes after the header's dict".into());
    }
    let get = |k: &str| dict.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    let mut keys: Vec<&str> = dict.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if keys != ["descr", "fortran_order", "shape"] {
        return fail(
            report,
            format!("header keys {keys:?}, not exactly descr, fortran_order and shape"),
        );
    }
    let (Some(descr), Some(Lit::Bool(_)), Some(Lit::Tuple(shape))) =
        (get("descr"), get("fortran_order"), get("shape"))
    else {
        return fail(report, "a header whose values have the wrong types".into());
    };
    if holds_objects(descr) {
        report.find(
            Verdict::Fail,
            "npy.object",
            "an object array: its data is a pickle that runs code when loaded with allow_pickle",
        );
        return;
    }
    let mut count: Option<u64> = Some(1);
    for d in shape {
        match d {
            Lit::Int(n) => count = count.and_then(|c| c.checked_mul(*n)),
            _ => return fail(report, "a shape that is not a tuple of integers".into()),
        }
    }
    let data = len.saturating_sub((start + hlen) as u64);
    let Lit::Str(d) = descr else {
        report.find(
            Verdict::Warn,
            "npy.structured",
            "a structured dtype: its size is not checked",
        );
        return;
    };
    match (item_size(d), count) {
        (Ok(Some(size)), Some(c)) if c.checked_mul(size) == Some(data) => {}
        (Ok(Some(size)), c) => fail(
            report,
            format!(
                "shape and dtype `{d}` need {} bytes, the file holds {data}",
                c.and_then(|c| c.checked_mul(size))
                    .map_or("more than 2^64".to_string(), |n| n.to_string())
            ),
        ),
        _ => fail(report, format!("dtype `{d}` is not one the scanner knows")),
    }
}
