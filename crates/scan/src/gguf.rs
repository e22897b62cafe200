//! GGUF (versions 2 and 3): magic, version, counts, the metadata
//! key-values, the tensor infos and their data, read from the header
//! alone. Every count and length is checked against the bytes left in the
//! file before anything is allocated for it, every size product against
//! overflow; tensors must have a known type, whole blocks, aligned offsets
//! and data inside the file without overlap; keys and names are unique.
//! The chat template a serving stack renders is hashed into the report
//! and fails the file when it uses constructs known from template
//! injection (reaching Python objects through Jinja).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Seek};

use crate::{FileReport, Verdict};

/// Values read at most (array elements included) before the scan gives
/// up as incomplete: a tokenizer of 256 Ki entries with merges is well
/// under it.
const MAX_VALUES: u64 = 20_000_000;
/// Nesting of arrays allowed.
const MAX_DEPTH: u32 = 2;
/// ggml's limits.
const MAX_DIMS: u32 = 4;
const MAX_NAME: u64 = 64;

/// Bytes per block and elements per block of each ggml tensor type a GGUF
/// file may hold (ggml.h's enum; removed types are not valid).
fn block(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (4, 1),     // F32
        1 => (2, 1),     // F16
        2 => (18, 32),   // Q4_0
        3 => (20, 32),   // Q4_1
        6 => (22, 32),   // Q5_0
        7 => (24, 32),   // Q5_1
        8 => (34, 32),   // Q8_0
        9 => (36, 32),   // Q8_1
        10 => (84, 256), // Q2_K
        11 => (110, 256),
        12 => (144, 256),
        13 => (176, 256),
        14 => (210, 256),
        15 => (292, 256), // Q8_K
        16 => (66, 256),  // IQ2_XXS
        17 => (74, 256),
        18 => (98, 256),
        19 => (50, 256),
        20 => (18, 32), // IQ4_NL
        21 => (110, 256),
        22 => (82, 256),
        23 => (136, 256), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (2, 1),
        26 => (4, 1),
        27 => (8, 1),
        28 => (8, 1),    // F64
        29 => (56, 256), // IQ1_M
        30 => (2, 1),    // BF16
        34 => (54, 256), // TQ1_0
        35 => (66, 256),
        39 => (17, 32),  // MXFP4
        40 => (36, 64),  // NVFP4
        41 => (18, 128), // Q1_0
        42 => (18, 64),  // Q2_0
        _ => return None,
    })
}

/// Chat-template constructs that reach Python objects from a Jinja
/// sandbox (server-side template injection): no chat template needs them.
const TEMPLATE_INJECTION: &[&str] = &[
    "__class__",
    "__subclasses__",
    "__globals__",
    "__builtins__",
    "__import__",
    "__mro__",
    "__base__",
    "__init__",
    "__dict__",
    "__getattribute__",
    "|attr(",
    "| attr(",
    "cycler",
    "joiner",
    "lipsum",
    "os.popen",
    "subprocess",
    "eval(",
    "exec(",
];

struct Reader<R> {
    r: BufReader<R>,
    pos: u64,
    len: u64,
    values: u64,
}

/// Why reading stopped.
enum Stop {
    /// The file is malformed: a finding.
    Bad(String),
    /// It could not be read, or the budget ran out.
    Incomplete(String),
}

type Res<T> = Result<T, Stop>;

impl<R: Read> Reader<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64, what: &str) -> Res<Vec<u8>> {
        if n > self.left() {
            return Err(Stop::Bad(format!(
                "{what} of {n} bytes runs past the end of the file"
            )));
        }
        let mut b =
            vec![0u8; usize::try_from(n).map_err(|_| Stop::Bad(format!("{what} too long")))?];
        self.r
            .read_exact(&mut b)
            .map_err(|e| Stop::Incomplete(format!("cannot read {what}: {e}")))?;
        self.pos += n;
        Ok(b)
    }

    fn skip(&mut self, n: u64, what: &str) -> Res<()> {
        if n > self.left() {
            return Err(Stop::Bad(format!(
                "{what} of {n} bytes runs past the end of the file"
            )));
        }
        let mut left = n;
        while left > 0 {
            let buf = self
                .r
                .fill_buf()
                .map_err(|e| Stop::Incomplete(format!("cannot read {what}: {e}")))?;
            if buf.is_empty() {
                return Err(Stop::Bad(format!("{what} runs past the end of the file")));
            }
            let k = (buf.len() as u64).min(left) as usize;
            self.r.consume(k);
            left -= k as u64;
        }
        self.pos += n;
        Ok(())
    }

    fn u32(&mut self, what: &str) -> Res<u32> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Res<u64> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn string(&mut self, what: &str) -> Res<String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|_| Stop::Bad(format!("{what} is not UTF-8")))
    }

    fn count(&mut self) -> Res<()> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(Stop::Incomplete(format!(
                "more than {MAX_VALUES} metadata values"
            )));
        }
        Ok(())
    }

    /// Skip (or, for strings, read) one value of type `t`; a string
    /// value is returned when `keep`.
    fn value(&mut self, t: u32, depth: u32, keep: bool, key: &str) -> Res<Option<String>> {
        self.count()?;
        let fixed = match t {
            0 | 1 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => 0,
        };
        if fixed > 0 {
            self.skip(fixed, key)?;
            return Ok(None);
        }
        match t {
            7 => {
                let b = self.bytes(1, key)?;
                if b[0] > 1 {
                    return Err(Stop::Bad(format!("`{key}`: a bool that is {}", b[0])));
                }
                Ok(None)
            }
            8 => {
                if keep {
                    return Ok(Some(self.string(key)?));
                }
                let n = self.u64(key)?;
                self.skip(n, key)?;
                Ok(None)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(Stop::Bad(format!(
                        "`{key}`: arrays nested deeper than {MAX_DEPTH}"
                    )));
                }
                let et = self.u32(key)?;
                let n = self.u64(key)?;
                // Every element takes at least a byte.
                if n > self.left() {
                    return Err(Stop::Bad(format!(
                        "`{key}`: an array of {n} elements in {} bytes",
                        self.left()
                    )));
                }
                if et > 12 {
                    return Err(Stop::Bad(format!("`{key}`: an array of unknown type {et}")));
                }
                for _ in 0..n {
                    self.value(et, depth + 1, false, key)?;
                }
                Ok(None)
            }
            other => Err(Stop::Bad(format!("`{key}`: unknown value type {other}"))),
        }
    }
}

pub(crate) fn validate<R: Read + Seek>(file: &mut R, len: u64, report: &mut FileReport) {
    if !crate::rewind(file, report) {
        return;
    }
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        len,
        values: 0,
    };
    match walk(&mut r, report) {
        Ok(()) => {}
        Err(Stop::Bad(why)) => report.find(Verdict::Fail, "gguf.header", why),
        Err(Stop::Incomplete(why)) => report.find(Verdict::Incomplete, "gguf.budget", why),
    }
}

struct Info {
    name: String,
    size: u64,
    offset: u64,
}

fn walk<R: Read>(r: &mut Reader<R>, report: &mut FileReport) -> Res<()> {
    r.skip(4, "the magic")?;
    let version = r.u32("the version")?;
    if !(2..=3).contains(&version) {
        report.find(
            Verdict::Unsupported,
            "gguf.version",
            format!("GGUF version {version} (versions 2 and 3 are judged)"),
        );
        return Ok(());
    }
    let tensors = r.u64("the tensor count")?;
    let kvs = r.u64("the metadata count")?;
    // A tensor info takes at least 8+4+8+4+8 bytes, a key-value 8+4+1.
    if tensors > r.left() / 32 || kvs > r.left() / 13 {
        return Err(Stop::Bad(format!(
            "{tensors} tensors and {kvs} metadata entries cannot fit in {} bytes",
            r.left()
        )));
    }
    let mut keys = HashSet::new();
    let mut alignment = 32u64;
    for _ in 0..kvs {
        let key = r.string("a metadata key")?;
        if !keys.insert(key.clone()) {
            return Err(Stop::Bad(format!("metadata key `{key}` appears twice")));
        }
        let t = r.u32(&key)?;
        let template =
            key == "tokenizer.chat_template" || key.starts_with("tokenizer.chat_template.");
        if key == "general.alignment" {
            if t != 4 {
                return Err(Stop::Bad("`general.alignment` is not a u32".into()));
            }
            let a = u64::from(r.u32(&key)?);
            r.values += 1;
            if a == 0 || !a.is_power_of_two() {
                return Err(Stop::Bad(format!(
                    "`general.alignment` is {a}, not a power of two"
                )));
            }
            alignment = a;
            continue;
        }
        if let Some(text) = r.value(t, 0, template && t == 8, &key)? {
            check_template(&key, &text, report);
        }
    }
    let mut infos = Vec::new();
    let mut names = HashSet::new();
    for _ in 0..tensors {
        let name = r.string("a tensor name")?;
        if name.len() as u64 >= MAX_NAME {
            return Err(Stop::Bad(format!(
                "tensor name `{name}` is {} bytes (under {MAX_NAME})",
                name.len()
            )));
        }
        if !names.insert(name.clone()) {
            return Err(Stop::Bad(format!("tensor `{name}` appears twice")));
        }
        let dims = r.u32(&name)?;
        if dims > MAX_DIMS {
            return Err(Stop::Bad(format!(
                "`{name}` has {dims} dimensions (at most {MAX_DIMS})"
            )));
        }
        let mut ne = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            ne.push(r.u64(&name)?);
        }
        let t = r.u32(&name)?;
        let Some((bytes, elems)) = block(t) else {
            return Err(Stop::Bad(format!("`{name}` has unknown tensor type {t}")));
        };
        let offset = r.u64(&name)?;
        if offset % alignment != 0 {
            return Err(Stop::Bad(format!(
                "`{name}` starts at {offset}, not aligned to {alignment}"
            )));
        }
        let first = ne.first().copied().unwrap_or(1);
        if first % elems != 0 {
            return Err(Stop::Bad(format!(
                "`{name}`: a row of {first} elements is not whole blocks of {elems}"
            )));
        }
        let mut size = (first / elems)
            .checked_mul(bytes)
            .ok_or_else(|| Stop::Bad(format!("`{name}`: its size overflows")))?;
        for d in ne.iter().skip(1) {
            size = size
                .checked_mul(*d)
                .ok_or_else(|| Stop::Bad(format!("`{name}`: its size overflows")))?;
        }
        infos.push(Info { name, size, offset });
    }
    let data = r.pos.div_ceil(alignment).saturating_mul(alignment);
    let data_len = r.len.saturating_sub(data);
    infos.sort_by_key(|i| i.offset);
    let mut end = 0u64;
    for i in &infos {
        if i.offset < end {
            return Err(Stop::Bad(format!(
                "`{}` overlaps the tensor before it",
                i.name
            )));
        }
        end = i
            .offset
            .checked_add(i.size)
            .filter(|e| *e <= data_len)
            .ok_or_else(|| Stop::Bad(format!("`{}` runs past the end of the file", i.name)))?;
    }
    Ok(())
}

fn check_template(key: &str, text: &str, report: &mut FileReport) {
    report
        .details
        .insert(format!("{key}.sha256"), crate::sha256_hex(text.as_bytes()));
    let lower = text.to_ascii_lowercase();
    let found: Vec<&str> = TEMPLATE_INJECTION
        .iter()
        .copied()
        .filter(|c| lower.contains(c))
        .collect();
    if !found.is_empty() {
        report.find(
            Verdict::Fail,
            "gguf.chat_template",
            format!(
                "`{key}` uses constructs known from template injection: {}",
                found.join(", ")
            ),
        );
    }
}
