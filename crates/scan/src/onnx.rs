//! ONNX models: the protobuf is walked (never the tensor bytes, which are
//! skipped by seeking) along every path that can hold a tensor (graph
//! initializers, sparse initializers, node attributes, subgraphs, local
//! functions), and every tensor whose data is external must name a file
//! by a relative path that stays inside the model's folder. The files it
//! names are the file's `references`: a version scanned as a whole must
//! hold them (see `crate::check_references`).

use std::io::{BufReader, Read, Seek};

use crate::{FileReport, Verdict};

/// Messages nested at most.
const MAX_DEPTH: u32 = 64;
/// Fields read at most.
const MAX_FIELDS: u64 = 10_000_000;
/// A tensor's name or an external-data entry read at most.
const MAX_STRING: u64 = 64 << 10;

/// What a message is, for the fields walked into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Function,
    Sparse,
    Tensor,
    /// An external-data entry (key, value).
    Entry,
}

fn child(kind: Kind, field: u64) -> Option<Kind> {
    use Kind::*;
    Some(match (kind, field) {
        (Model, 7) => Graph,
        (Model, 25) => Function,
        (Graph, 1) => Node,
        (Graph, 5) => Tensor,
        (Graph, 15) => Sparse,
        (Node, 5) => Attribute,
        (Attribute, 5 | 10) => Tensor,
        (Attribute, 6 | 11) => Graph,
        (Attribute, 22 | 23) => Sparse,
        (Function, 7) => Node,
        (Sparse, 1 | 2) => Tensor,
        (Tensor, 13) => Entry,
        _ => return None,
    })
}

struct Walk<R> {
    r: BufReader<R>,
    fields: u64,
    /// External files named, as written.
    external: Vec<String>,
}

/// A tensor's external-data facts, gathered while it is walked.
#[derive(Default)]
struct TensorFacts {
    external: bool,
    location: Option<String>,
}

impl<R: Read + Seek> Walk<R> {
    fn byte(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("the protobuf ends early: {e}"))?;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<(u64, u64), String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v, i + 1));
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let n = i64::try_from(n).map_err(|_| "a field too long".to_string())?;
        self.r
            .seek_relative(n)
            .map_err(|e| format!("cannot skip a field: {e}"))
    }

    fn string(&mut self, n: u64) -> Result<String, String> {
        if n > MAX_STRING {
            return Err(format!(
                "a string of {n} bytes where at most {MAX_STRING} are read"
            ));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("the protobuf ends early: {e}"))?;
        String::from_utf8(b).map_err(|_| "a string that is not UTF-8".into())
    }

    /// Walk a message of `len` bytes; `facts` collects a tensor's
    /// external-data fields, `entry` an external-data entry's key and value.
    fn message(
        &mut self,
        kind: Kind,
        len: u64,
        depth: u32,
        facts: &mut TensorFacts,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("messages nested deeper than {MAX_DEPTH}"));
        }
        let mut own = TensorFacts::default();
        let mut entry: (Option<String>, Option<String>) = (None, None);
        let mut left = len;
        while left > 0 {
            self.fields += 1;
            if self.fields > MAX_FIELDS {
                return Err(format!("more than {MAX_FIELDS} fields"));
            }
            let (key, n) = self.varint()?;
            left = left.checked_sub(n).ok_or("a field runs past its message")?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    let (v, n) = self.varint()?;
                    left = left.checked_sub(n).ok_or("a field runs past its message")?;
                    if kind == Kind::Tensor && field == 14 && v == 1 {
                        own.external = true;
                    }
                }
                1 | 5 => {
                    let n = if wire == 1 { 8 } else { 4 };
                    left = left.checked_sub(n).ok_or("a field runs past its message")?;
                    self.skip(n)?;
                }
                2 => {
                    let (l, n) = self.varint()?;
                    left = left
                        .checked_sub(n)
                        .and_then(|x| x.checked_sub(l))
                        .ok_or("a field runs past its message")?;
                    if kind == Kind::Entry && (field == 1 || field == 2) {
                        let s = self.string(l)?;
                        if field == 1 {
                            entry.0 = Some(s);
                        } else {
                            entry.1 = Some(s);
                        }
                    } else if let Some(sub) = child(kind, field) {
                        if sub == Kind::Entry {
                            own.external = true;
                        }
                        self.message(sub, l, depth + 1, &mut own)?;
                    } else {
                        self.skip(l)?;
                    }
                }
                _ => return Err(format!("wire type {wire} (groups are not ONNX)")),
            }
        }
        if kind == Kind::Entry {
            if entry.0.as_deref() == Some("location") {
                facts.location = entry.1;
            }
        } else if kind == Kind::Tensor && own.external {
            let Some(loc) = own.location else {
                return Err("a tensor with external data names no location".into());
            };
            self.external.push(loc);
        }
        Ok(())
    }
}

/// Whether `path`, relative to the model's folder, stays inside it.
fn inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\\')
        && !path.contains(':')
        && !path.contains('\0')
        && !path.split('/').any(|c| c == "..")
}

pub(crate) fn validate<R: Read + Seek>(file: &mut R, len: u64, report: &mut FileReport) {
    if !crate::rewind(file, report) {
        return;
    }
    let mut w = Walk {
        r: BufReader::with_capacity(64 << 10, file),
        fields: 0,
        external: Vec::new(),
    };
    if let Err(e) = w.message(Kind::Model, len, 0, &mut TensorFacts::default()) {
        report.find(Verdict::Fail, "onnx.malformed", e);
        return;
    }
    let folder = report
        .path
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    let mut named = std::collections::BTreeSet::new();
    for loc in w.external {
        if !inside(&loc) {
            report.find(
                Verdict::Fail,
                "onnx.external_path",
                format!(
                    "external data `{}` is outside the model's folder",
                    loc.escape_debug()
                ),
            );
            continue;
        }
        named.insert(format!("{folder}{loc}"));
    }
    report.references.extend(named);
}
