//! safetensors: `u64 LE` header length N, N bytes of JSON (an object of
//! tensors `{dtype, shape, data_offsets}` and an optional `__metadata__`
//! of strings), then the tensors' bytes, contiguous to the end of the
//! file. Checked here: every bound the reference loader checks, and what a
//! loader that trusts the header would read wrong (duplicate names, gaps,
//! overlaps, sizes that overflow).

use std::fmt;
use std::io::{Read, Seek, SeekFrom};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::{FileReport, Verdict};

/// The reference implementation refuses headers over 100 MB.
pub(crate) const MAX_HEADER: u64 = 100_000_000;

/// Bits per element of each dtype safetensors defines.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// The header's top-level entries in order, duplicates kept (a JSON
/// object read into a map keeps only the last of two equal keys; a loader
/// might keep the first).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct Tensor {
    name: String,
    begin: u64,
    end: u64,
}

fn fail(report: &mut FileReport, code: &'static str, message: impl Into<String>) {
    report.find(Verdict::Fail, code, message);
}

pub(crate) fn validate<R: Read + Seek>(file: &mut R, len: u64, report: &mut FileReport) {
    let mut n = [0u8; 8];
    if let Err(e) = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut n))
    {
        report.find(
            Verdict::Incomplete,
            "io",
            format!("cannot read the header length: {e}"),
        );
        return;
    }
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return fail(
            report,
            "safetensors.header",
            format!("a header of {n} bytes (at most {MAX_HEADER})"),
        );
    }
    let Some(data_len) = len.checked_sub(8).and_then(|l| l.checked_sub(n)) else {
        return fail(
            report,
            "safetensors.header",
            format!("a header of {n} bytes in a file of {len}"),
        );
    };
    let mut header = vec![0u8; usize::try_from(n).unwrap_or(0)];
    if let Err(e) = file.read_exact(&mut header) {
        report.find(
            Verdict::Incomplete,
            "io",
            format!("cannot read the header: {e}"),
        );
        return;
    }
    let Ok(text) = std::str::from_utf8(&header) else {
        return fail(report, "safetensors.header", "the header is not UTF-8");
    };
    // The writer pads the header with spaces to align the data.
    let text = text.trim_end_matches(' ');
    if !text.starts_with('{') {
        return fail(
            report,
            "safetensors.header",
            "the header is not a JSON object",
        );
    }
    let entries = match serde_json::from_str::<Entries>(text) {
        Ok(Entries(e)) => e,
        Err(e) => {
            return fail(
                report,
                "safetensors.header",
                format!("the header is not valid JSON: {e}"),
            )
        }
    };
    let mut tensors: Vec<Tensor> = Vec::with_capacity(entries.len());
    let mut seen = std::collections::HashSet::new();
    for (name, value) in entries {
        if !seen.insert(name.clone()) {
            fail(
                report,
                "safetensors.duplicate",
                format!("`{name}` is named twice in the header"),
            );
            continue;
        }
        if name == "__metadata__" {
            let strings = value
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !strings {
                fail(
                    report,
                    "safetensors.metadata",
                    "`__metadata__` must map strings to strings",
                );
            }
            continue;
        }
        match tensor(&name, &value) {
            Ok(t) => tensors.push(t),
            Err(why) => fail(report, "safetensors.tensor", format!("`{name}`: {why}")),
        }
    }
    // The tensors must tile the data exactly: from 0, no gap, no overlap,
    // to the end of the file.
    tensors.sort_by_key(|t| (t.begin, t.end));
    let mut at = 0u64;
    for t in &tensors {
        if t.begin != at {
            let what = if t.begin > at { "a gap" } else { "an overlap" };
            fail(
                report,
                "safetensors.offsets",
                format!(
                    "`{}` starts at {} after {what} (expected {at})",
                    t.name, t.begin
                ),
            );
        }
        at = at.max(t.end);
    }
    if at != data_len {
        fail(
            report,
            "safetensors.offsets",
            format!("the tensors end at {at} but the data is {data_len} bytes"),
        );
    }
}

/// One tensor entry: its dtype known, its shape's byte size (checked for
/// overflow) equal to its offsets' span.
fn tensor(name: &str, v: &Value) -> Result<Tensor, String> {
    let o = v.as_object().ok_or("not an object")?;
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
    {
        return Err(format!("unknown field `{k}`"));
    }
    let dtype = o.get("dtype").and_then(Value::as_str).ok_or("no dtype")?;
    let bits = dtype_bits(dtype).ok_or_else(|| format!("unknown dtype `{dtype}`"))?;
    let shape = o.get("shape").and_then(Value::as_array).ok_or("no shape")?;
    let mut elements: u64 = 1;
    for d in shape {
        let d = d
            .as_u64()
            .ok_or("a dimension that is not a natural number")?;
        elements = elements
            .checked_mul(d)
            .ok_or("a shape whose size overflows")?;
    }
    let total_bits = elements
        .checked_mul(bits)
        .ok_or("a shape whose size overflows")?;
    if total_bits % 8 != 0 {
        return Err(format!(
            "{elements} elements of {dtype} are not whole bytes"
        ));
    }
    let offsets = o
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or("data_offsets must be two numbers")?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err("data_offsets must be two natural numbers".into());
    };
    if end < begin {
        return Err(format!(
            "data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    if end - begin != total_bits / 8 {
        return Err(format!(
            "shape {shape:?} of {dtype} is {} bytes but data_offsets span {}",
            total_bits / 8,
            end - begin
        ));
    }
    Ok(Tensor {
        name: name.to_owned(),
        begin,
        end,
    })
}
