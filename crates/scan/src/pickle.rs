//! Pickle streams (protocols 0 to 5), judged by simulating the pickle
//! machine without running it: every opcode is decoded with its argument,
//! the stack, marks and memo are kept, so that every import (GLOBAL, INST,
//! STACK_GLOBAL, also through memo and duplicated strings) is known by its
//! full name and checked against an **allowlist**; an import the scan
//! cannot name, an extension-registry import, an unknown opcode, anything
//! after STOP, out-of-band buffers, a malformed stream or a spent budget
//! fails (or leaves the scan incomplete). What the allowlist names is what
//! PyTorch's `weights_only` loader permits for a state dict.

use std::collections::{BTreeSet, HashMap};

use crate::{FileReport, Verdict};

/// What a plain state dict saved by `torch.save` imports: the rebuild
/// functions, storage and dtype classes, `OrderedDict`.
pub const DEFAULT_ALLOWLIST: &[&str] = &[
    "collections OrderedDict",
    // How protocols 0 to 2 write `bytes`.
    "_codecs encode",
    "torch._utils _rebuild_tensor_v2",
    "torch._utils _rebuild_tensor_v3",
    "torch._utils _rebuild_parameter",
    "torch._utils _rebuild_parameter_with_state",
    "torch._utils _rebuild_qtensor",
    "torch._utils _rebuild_sparse_tensor",
    "torch._tensor _rebuild_from_type_v2",
    "torch Size",
    "torch device",
    "torch.storage UntypedStorage",
    "torch BoolStorage",
    "torch ByteStorage",
    "torch CharStorage",
    "torch ShortStorage",
    "torch IntStorage",
    "torch LongStorage",
    "torch HalfStorage",
    "torch BFloat16Storage",
    "torch FloatStorage",
    "torch DoubleStorage",
    "torch ComplexFloatStorage",
    "torch ComplexDoubleStorage",
    "torch bool",
    "torch uint8",
    "torch int8",
    "torch int16",
    "torch int32",
    "torch int64",
    "torch float16",
    "torch bfloat16",
    "torch float32",
    "torch float64",
    "torch complex64",
    "torch complex128",
];

/// Opcodes run at most.
const MAX_OPS: u64 = 50_000_000;
/// Stack and memo entries held at most.
const MAX_ITEMS: usize = 5_000_000;
/// Longest string kept as a possible import operand; a longer one names
/// nothing the scan will allow (an import of it cannot be determined).
const MAX_OPERAND: usize = 4096;

#[derive(Clone, Debug)]
enum Val {
    Mark,
    /// A short text or byte string (a possible import operand), shared
    /// by every copy DUP and the memo make.
    Str(std::rc::Rc<str>),
    Other,
}

/// The value a string of the stream pushes.
fn operand(s: &str) -> Val {
    if s.len() <= MAX_OPERAND {
        Val::Str(s.into())
    } else {
        Val::Other
    }
}

/// Why the walk stopped early.
enum Stop {
    Bad(String),
    Budget(String),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Val>,
    memo: HashMap<u64, Val>,
    imports: BTreeSet<String>,
    ops: u64,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Stop> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| Stop::Bad(format!("{what} runs past the end of the stream")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize, what: &str) -> Result<u64, Stop> {
        let b = self.take(n, what)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    }

    fn len(&mut self, n: usize, what: &str) -> Result<usize, Stop> {
        let v = self.uint(n, what)?;
        usize::try_from(v).map_err(|_| Stop::Bad(format!("{what} of {v} bytes")))
    }

    fn line(&mut self, what: &str) -> Result<&'a str, Stop> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| Stop::Bad(format!("{what} has no end of line")))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| Stop::Bad(format!("{what} is not UTF-8")))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Val) -> Result<(), Stop> {
        if self.stack.len() >= MAX_ITEMS {
            return Err(Stop::Budget(format!(
                "a stack of more than {MAX_ITEMS} items"
            )));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self, op: &str) -> Result<Val, Stop> {
        match self.stack.pop() {
            Some(Val::Mark) => Err(Stop::Bad(format!("{op} pops a mark"))),
            Some(v) => Ok(v),
            None => Err(Stop::Bad(format!("{op} on an empty stack"))),
        }
    }

    fn top(&self, op: &str) -> Result<Val, Stop> {
        match self.stack.last() {
            Some(Val::Mark) | None => Err(Stop::Bad(format!("{op} needs a value on the stack"))),
            Some(v) => Ok(v.clone()),
        }
    }

    /// Pop everything down to and including the topmost mark.
    fn pop_mark(&mut self, op: &str) -> Result<Vec<Val>, Stop> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Val::Mark))
            .ok_or_else(|| Stop::Bad(format!("{op} without a mark")))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn memo_put(&mut self, key: u64) -> Result<(), Stop> {
        let v = self.top("PUT")?;
        if self.memo.len() >= MAX_ITEMS {
            return Err(Stop::Budget(format!(
                "a memo of more than {MAX_ITEMS} entries"
            )));
        }
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), Stop> {
        let v = self
            .memo
            .get(&key)
            .cloned()
            .ok_or_else(|| Stop::Bad(format!("GET of memo entry {key}, never put")))?;
        self.push(v)
    }

    fn import(&mut self, module: &str, name: &str) -> Result<(), Stop> {
        self.imports.insert(format!("{module} {name}"));
        self.push(Val::Other)
    }

    fn string(&mut self, n: usize, what: &str) -> Result<(), Stop> {
        let b = self.take(n, what)?;
        let v = match std::str::from_utf8(b) {
            Ok(s) => operand(s),
            Err(_) => Val::Other,
        };
        self.push(v)
    }

    /// Run to STOP; `Ok` once it is reached.
    fn run(&mut self) -> Result<(), Stop> {
        loop {
            self.ops += 1;
            if self.ops > MAX_OPS {
                return Err(Stop::Budget(format!("more than {MAX_OPS} opcodes")));
            }
            let op = *self.take(1, "an opcode")?.first().unwrap_or(&b'.');
            match op {
                b'.' => return Ok(()),
                b'(' => self.push(Val::Mark)?,
                b'0' => {
                    self.pop("POP")?;
                }
                b'1' => {
                    self.pop_mark("POP_MARK")?;
                }
                b'2' => {
                    let v = self.top("DUP")?;
                    self.push(v)?;
                }
                b'F' | b'I' | b'L' => {
                    self.line("a number")?;
                    self.push(Val::Other)?;
                }
                b'J' => {
                    self.take(4, "BININT")?;
                    self.push(Val::Other)?;
                }
                b'K' => {
                    self.take(1, "BININT1")?;
                    self.push(Val::Other)?;
                }
                b'M' => {
                    self.take(2, "BININT2")?;
                    self.push(Val::Other)?;
                }
                b'G' => {
                    self.take(8, "BINFLOAT")?;
                    self.push(Val::Other)?;
                }
                b'N' | 0x88 | 0x89 | b'}' | b']' | b')' | 0x8f => self.push(Val::Other)?,
                b'P' => {
                    // A persistent id resolved by the loader (torch's storages).
                    self.line("PERSID")?;
                    self.push(Val::Other)?;
                }
                b'Q' => {
                    self.pop("BINPERSID")?;
                    self.push(Val::Other)?;
                }
                b'R' => {
                    self.pop("REDUCE")?;
                    self.pop("REDUCE")?;
                    self.push(Val::Other)?;
                }
                b'S' => {
                    let s = self.line("STRING")?;
                    let inner = s
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| s.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                        .ok_or_else(|| Stop::Bad("STRING without quotes".into()))?;
                    // Escapes would change the text: only plain strings
                    // count as import operands.
                    let v = if inner.contains('\\') {
                        Val::Other
                    } else {
                        operand(inner)
                    };
                    self.push(v)?;
                }
                b'T' => {
                    let n = self.len(4, "BINSTRING")?;
                    self.string(n, "BINSTRING")?;
                }
                b'U' => {
                    let n = self.len(1, "SHORT_BINSTRING")?;
                    self.string(n, "SHORT_BINSTRING")?;
                }
                b'V' => {
                    let s = self.line("UNICODE")?;
                    let v = if s.contains('\\') {
                        Val::Other
                    } else {
                        operand(s)
                    };
                    self.push(v)?;
                }
                b'X' => {
                    let n = self.len(4, "BINUNICODE")?;
                    self.string(n, "BINUNICODE")?;
                }
                0x8c => {
                    let n = self.len(1, "SHORT_BINUNICODE")?;
                    self.string(n, "SHORT_BINUNICODE")?;
                }
                0x8d => {
                    let n = self.len(8, "BINUNICODE8")?;
                    self.string(n, "BINUNICODE8")?;
                }
                b'B' => {
                    let n = self.len(4, "BINBYTES")?;
                    self.take(n, "BINBYTES")?;
                    self.push(Val::Other)?;
                }
                b'C' => {
                    let n = self.len(1, "SHORT_BINBYTES")?;
                    self.take(n, "SHORT_BINBYTES")?;
                    self.push(Val::Other)?;
                }
                0x8e | 0x96 => {
                    let n = self.len(8, "BINBYTES8")?;
                    self.take(n, "BINBYTES8")?;
                    self.push(Val::Other)?;
                }
                0x8a => {
                    let n = self.len(1, "LONG1")?;
                    self.take(n, "LONG1")?;
                    self.push(Val::Other)?;
                }
                0x8b => {
                    let n = self.len(4, "LONG4")?;
                    self.take(n, "LONG4")?;
                    self.push(Val::Other)?;
                }
                b'a' => {
                    self.pop("APPEND")?;
                    self.top("APPEND")?;
                }
                b'b' => {
                    self.pop("BUILD")?;
                    self.top("BUILD")?;
                }
                b'c' | b'i' => {
                    let what = if op == b'c' { "GLOBAL" } else { "INST" };
                    let module = self.line(what)?;
                    let name = self.line(what)?;
                    if op == b'i' {
                        self.pop_mark("INST")?;
                    }
                    self.import(module, name)?;
                }
                0x93 => {
                    let name = self.pop("STACK_GLOBAL")?;
                    let module = self.pop("STACK_GLOBAL")?;
                    match (module, name) {
                        (Val::Str(m), Val::Str(n)) => self.import(&m, &n)?,
                        _ => {
                            return Err(Stop::Bad(
                                "STACK_GLOBAL of a name the scan cannot determine".into(),
                            ))
                        }
                    }
                }
                0x82..=0x84 => {
                    return Err(Stop::Bad(
                        "an import through the extension registry (EXT1/2/4)".into(),
                    ))
                }
                b'd' | b'l' | b't' | 0x91 => {
                    self.pop_mark("a collection")?;
                    self.push(Val::Other)?;
                }
                b'e' | b'u' | 0x90 => {
                    self.pop_mark("APPENDS/SETITEMS/ADDITEMS")?;
                    self.top("APPENDS/SETITEMS/ADDITEMS")?;
                }
                b's' => {
                    self.pop("SETITEM")?;
                    self.pop("SETITEM")?;
                    self.top("SETITEM")?;
                }
                b'o' => {
                    if self.pop_mark("OBJ")?.is_empty() {
                        return Err(Stop::Bad("OBJ without a class".into()));
                    }
                    self.push(Val::Other)?;
                }
                0x81 => {
                    self.pop("NEWOBJ")?;
                    self.pop("NEWOBJ")?;
                    self.push(Val::Other)?;
                }
                0x92 => {
                    self.pop("NEWOBJ_EX")?;
                    self.pop("NEWOBJ_EX")?;
                    self.pop("NEWOBJ_EX")?;
                    self.push(Val::Other)?;
                }
                0x85 => {
                    self.pop("TUPLE1")?;
                    self.push(Val::Other)?;
                }
                0x86 => {
                    self.pop("TUPLE2")?;
                    self.pop("TUPLE2")?;
                    self.push(Val::Other)?;
                }
                0x87 => {
                    for _ in 0..3 {
                        self.pop("TUPLE3")?;
                    }
                    self.push(Val::Other)?;
                }
                b'g' => {
                    let k = self.line("GET")?;
                    let k = k
                        .parse()
                        .map_err(|_| Stop::Bad("GET of a bad key".into()))?;
                    self.memo_get(k)?;
                }
                b'h' => {
                    let k = self.uint(1, "BINGET")?;
                    self.memo_get(k)?;
                }
                b'j' => {
                    let k = self.uint(4, "LONG_BINGET")?;
                    self.memo_get(k)?;
                }
                b'p' => {
                    let k = self.line("PUT")?;
                    let k = k
                        .parse()
                        .map_err(|_| Stop::Bad("PUT of a bad key".into()))?;
                    self.memo_put(k)?;
                }
                b'q' => {
                    let k = self.uint(1, "BINPUT")?;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.uint(4, "LONG_BINPUT")?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?;
                }
                0x80 => {
                    let p = self.uint(1, "PROTO")?;
                    if p > 5 {
                        return Err(Stop::Bad(format!("pickle protocol {p}")));
                    }
                }
                0x95 => {
                    self.take(8, "FRAME")?;
                }
                0x97 | 0x98 => {
                    return Err(Stop::Bad(
                        "an out-of-band buffer (NEXT_BUFFER/READONLY_BUFFER)".into(),
                    ))
                }
                other => return Err(Stop::Bad(format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }
}

/// Judge the pickle stream `data` against `allow` (`"module name"` pairs).
pub fn judge(data: &[u8], allow: &[&str], report: &mut FileReport) {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        imports: BTreeSet::new(),
        ops: 0,
    };
    let result = m.run();
    if !m.imports.is_empty() {
        let seen: Vec<&str> = m.imports.iter().map(String::as_str).collect();
        report
            .details
            .insert("pickle.imports".into(), seen.join(", "));
    }
    match result {
        Ok(()) => {
            if m.pos != data.len() {
                report.find(
                    Verdict::Fail,
                    "pickle.after_stop",
                    format!("{} bytes after STOP", data.len() - m.pos),
                );
            }
        }
        Err(Stop::Bad(why)) => report.find(Verdict::Fail, "pickle.stream", why),
        Err(Stop::Budget(why)) => report.find(Verdict::Incomplete, "pickle.budget", why),
    }
    let refused: Vec<&String> = m
        .imports
        .iter()
        .filter(|i| !allow.contains(&i.as_str()))
        .collect();
    if !refused.is_empty() {
        report.find(
            Verdict::Fail,
            "pickle.import",
            format!(
                "imports outside the allowlist: {} (as allowlist entries: {})",
                refused
                    .iter()
                    .map(|s| s.replacen(' ', ".", 1))
                    .collect::<Vec<_>>()
                    .join(", "),
                refused
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
}
