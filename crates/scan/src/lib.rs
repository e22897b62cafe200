//! `vault-scan` judges model files before the vault stores them: it
//! detects each file's format from its bytes (an extension that says
//! otherwise is a finding: scanner and loader must read a file the same
//! way), validates what it can judge, and says `unsupported` for what it
//! cannot, never `pass`.
//!
//! Formats judged: safetensors (header bounds, JSON, dtypes, shapes
//! against offsets, contiguous data to the end of the file), GGUF 2/3
//! (counts and lengths against the file, value types, tensor types, whole
//! blocks, aligned in-bounds non-overlapping data, unique keys and names,
//! the chat template hashed and checked for template injection), pickle
//! streams (protocols 0–5, simulated: imports checked against an
//! allowlist, by default what PyTorch's `weights_only` loader permits),
//! zip archives through a strict reader (PyTorch checkpoints with their
//! pickles judged, Keras `.keras` configs, NumPy `.npz`), NumPy `.npy`
//! headers (object arrays fail) and ONNX models (external data must stay
//! beside the model; [`check_references`] checks a set holds it).
//! Recognized but not judged (verdict `unsupported`): HDF5, TorchScript
//! code, zip archives of other layouts.
//!
//! ```
//! use vault_scan::{scan_bytes, Verdict};
//! let mut file = Vec::new();
//! let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
//! file.extend_from_slice(&(header.len() as u64).to_le_bytes());
//! file.extend_from_slice(header);
//! file.extend_from_slice(&[0u8; 8]);
//! let report = scan_bytes("model.safetensors", &file);
//! assert_eq!(report.verdict, Verdict::Pass, "{report:?}");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod archive;
mod detect;
mod gguf;
mod npy;
mod onnx;
mod pickle;
mod safetensors;
mod zip;

pub use pickle::DEFAULT_ALLOWLIST;

/// Modules an allowlist extension may never name: they run commands, load
/// code, or resolve any other callable by name (a way around every
/// allowlist). A guard against a mistaken extension, not the boundary:
/// an extension is trusted as the admins who write it.
const NEVER_ALLOWED: &[&str] = &[
    "builtins",
    "__builtin__",
    "__main__",
    "os",
    "posix",
    "nt",
    "sys",
    "subprocess",
    "importlib",
    "pkgutil",
    "runpy",
    "shutil",
    "socket",
    "pickle",
    "_pickle",
    "copyreg",
    "copy_reg",
    "marshal",
    "types",
    "code",
    "codeop",
    "ctypes",
    "operator",
    "functools",
    "inspect",
    "multiprocessing",
    "asyncio",
    "pty",
    "webbrowser",
    "torch.hub",
    "torch.jit",
    "joblib.parallel",
    "numpy.testing",
    "pydoc",
    "timeit",
    "trace",
    "cProfile",
    "profile",
    "pdb",
    "bdb",
];

/// Check an allowlist entry, `"module name"`: a dotted module path and a
/// (dotted) attribute name of Python identifiers, in no module of the
/// never-allowed list (nor a submodule of one).
pub fn valid_import(entry: &str) -> Result<(), String> {
    let ident = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|p| {
                let mut c = p.chars();
                c.next()
                    .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                    && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
            })
    };
    let Some((module, name)) = entry.split_once(' ') else {
        return Err(format!("`{entry}` is not `module name`"));
    };
    if !ident(module) || !ident(name) {
        return Err(format!(
            "`{entry}` is not `module name` of Python identifiers"
        ));
    }
    if let Some(bad) = NEVER_ALLOWED
        .iter()
        .find(|m| module == **m || module.starts_with(&format!("{m}.")))
    {
        return Err(format!(
            "`{entry}`: module `{bad}` runs or resolves code and is never allowed"
        ));
    }
    if [
        "eval",
        "exec",
        "compile",
        "getattr",
        "__import__",
        "open",
        "system",
        "popen",
    ]
    .iter()
    .any(|n| name == *n || name.ends_with(&format!(".{n}")))
    {
        return Err(format!(
            "`{entry}`: `{name}` runs or resolves code and is never allowed"
        ));
    }
    Ok(())
}

use std::io::{Read, Seek, SeekFrom};

use serde::Serialize;

pub use detect::{detect, Format};

/// The scanner's version, recorded with every verdict.
pub const VERSION: &str = concat!("vault-scan/", env!("CARGO_PKG_VERSION"));

/// What the scan concluded about a file (or a version: the worst of its
/// files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Judged and nothing found.
    Pass,
    /// Judged; findings worth a look, none that refuses it.
    Warn,
    /// A format the scanner cannot judge: not a pass.
    Unsupported,
    /// The scan could not finish (a budget ran out, the file could not be
    /// read): not a pass.
    Incomplete,
    /// Judged unsafe or malformed.
    Fail,
}

impl Verdict {
    /// The verdict as a word: `pass`, `warn`, `unsupported`, `incomplete`,
    /// `fail` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Unsupported => "unsupported",
            Verdict::Incomplete => "incomplete",
            Verdict::Fail => "fail",
        }
    }
}

/// One thing the scan found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What it makes of the file.
    pub severity: Verdict,
    /// A stable code (`safetensors.offsets`, `extension.mismatch`, …).
    pub code: &'static str,
    /// What was found, in words.
    pub message: String,
}

/// The scan of one file.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    /// The file's path as given.
    pub path: String,
    /// The format its bytes show.
    pub format: Format,
    /// The worst finding's severity, `pass` without any.
    pub verdict: Verdict,
    /// What was found.
    pub findings: Vec<Finding>,
    /// Facts worth recording (a GGUF chat template's SHA-256, …).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub details: std::collections::BTreeMap<String, String>,
    /// Other files a loader reads with this one (an ONNX model's external
    /// data), as paths beside it: a set of files scanned together must
    /// hold them ([`check_references`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<String>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl FileReport {
    fn new(path: &str, format: Format) -> Self {
        Self {
            path: path.to_owned(),
            format,
            verdict: Verdict::Pass,
            findings: Vec::new(),
            details: Default::default(),
            references: Vec::new(),
        }
    }

    /// Take in the report of a member of this file (an archive's), its
    /// findings and details named by the member.
    fn absorb(&mut self, member: &str, inner: FileReport) {
        for f in inner.findings {
            self.find(f.severity, f.code, format!("{member}: {}", f.message));
        }
        for (k, v) in inner.details {
            self.details.insert(format!("{member}: {k}"), v);
        }
    }

    fn find(&mut self, severity: Verdict, code: &'static str, message: impl Into<String>) {
        self.verdict = self.verdict.max(severity);
        self.findings.push(Finding {
            severity,
            code,
            message: message.into(),
        });
    }
}

/// Seek `file` to its start; a file that cannot be read is an
/// `incomplete` finding (false).
pub(crate) fn rewind<R: Seek>(file: &mut R, report: &mut FileReport) -> bool {
    match file.seek(SeekFrom::Start(0)) {
        Ok(_) => true,
        Err(e) => {
            report.find(
                Verdict::Incomplete,
                "io",
                format!("cannot read the file: {e}"),
            );
            false
        }
    }
}

/// Bytes read from the start of a file to detect its format.
const HEAD: usize = 64;

/// Scan the file `path` names, `len` bytes read from `file`. Only
/// headers are read, never the tensor data.
pub fn scan<R: Read + Seek>(path: &str, file: &mut R, len: u64) -> FileReport {
    scan_with(path, file, len, DEFAULT_ALLOWLIST)
}

/// [`scan`] with pickle imports checked against `allow` (`"module name"`
/// pairs) instead of [`DEFAULT_ALLOWLIST`].
pub fn scan_with<R: Read + Seek>(path: &str, file: &mut R, len: u64, allow: &[&str]) -> FileReport {
    let mut head = vec![0u8; HEAD.min(usize::try_from(len).unwrap_or(HEAD))];
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut head));
    let format = detect(&head, len);
    let mut report = FileReport::new(path, format);
    if let Err(e) = read {
        report.find(
            Verdict::Incomplete,
            "io",
            format!("cannot read the file: {e}"),
        );
        return report;
    }
    detect::check_extension(path, format, &mut report);
    match report.format {
        Format::Safetensors => safetensors::validate(file, len, &mut report),
        Format::Gguf => gguf::validate(file, len, &mut report),
        Format::Pickle => judge_pickle_file(file, len, allow, &mut report),
        Format::Zip => archive::validate(file, len, allow, &mut report),
        Format::Npy => judge_npy_file(file, len, &mut report),
        Format::Onnx => onnx::validate(file, len, &mut report),
        // Named as plain data and no model format: nothing a loader runs.
        Format::Data => {}
        Format::Unknown => report.find(
            Verdict::Unsupported,
            "format.unknown",
            "the bytes are of no model format the scanner knows",
        ),
        other => report.find(
            Verdict::Unsupported,
            "format.unjudged",
            format!("{} files are recognized but not judged yet", other.name()),
        ),
    }
    report
}

/// Raw pickle files read whole at most (the scan must see every opcode).
const MAX_PICKLE: u64 = 1 << 30;

fn judge_npy_file<R: Read + Seek>(file: &mut R, len: u64, report: &mut FileReport) {
    let want = len.min(npy::MAX_HEADER as u64 + 12);
    let mut head = vec![0u8; want as usize];
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_exact(&mut head));
    match read {
        Ok(()) => npy::judge(&head, len, report),
        Err(e) => report.find(
            Verdict::Incomplete,
            "io",
            format!("cannot read the file: {e}"),
        ),
    }
}

/// Check that every file a report refers to (an ONNX model's external
/// data) is among `reports`: a loader would otherwise read a file the scan
/// never saw, or fail. Such a file is a `fail` finding of the referrer.
pub fn check_references(reports: &mut [FileReport]) {
    let paths: std::collections::HashSet<String> = reports.iter().map(|r| r.path.clone()).collect();
    for r in reports.iter_mut() {
        let missing: Vec<String> = r
            .references
            .iter()
            .filter(|p| !paths.contains(*p))
            .cloned()
            .collect();
        for p in missing {
            r.find(
                Verdict::Fail,
                "reference.missing",
                format!(
                    "refers to `{}`, which is not among the files scanned",
                    p.escape_debug()
                ),
            );
        }
    }
}

fn judge_pickle_file<R: Read + Seek>(
    file: &mut R,
    len: u64,
    allow: &[&str],
    report: &mut FileReport,
) {
    if len > MAX_PICKLE {
        report.find(
            Verdict::Incomplete,
            "pickle.budget",
            format!("a pickle stream of {len} bytes (at most {MAX_PICKLE} are read)"),
        );
        return;
    }
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let read = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.take(len).read_to_end(&mut data));
    if let Err(e) = read {
        report.find(
            Verdict::Incomplete,
            "io",
            format!("cannot read the file: {e}"),
        );
        return;
    }
    pickle::judge(&data, allow, report);
}

/// Judge a pickle stream (a file of its own, or a member of an archive)
/// against `allow`, `"module name"` pairs.
pub fn judge_pickle(path: &str, data: &[u8], allow: &[&str]) -> FileReport {
    let mut r = FileReport::new(path, Format::Pickle);
    pickle::judge(data, allow, &mut r);
    r
}

/// A symbolic link where a file was expected: refused, not followed (a
/// loader would read what it points at, which the scan never saw).
pub fn refused_link(path: &str) -> FileReport {
    refused(
        path,
        "symlink",
        "a symbolic link: not followed, so not judged",
    )
}

/// Something that is neither a regular file nor a folder (a FIFO, a
/// device, a socket): refused, never read.
pub fn refused_special(path: &str) -> FileReport {
    refused(path, "special", "not a regular file: not judged")
}

fn refused(path: &str, code: &'static str, message: &str) -> FileReport {
    let mut r = FileReport::new(path, Format::Unknown);
    r.find(Verdict::Fail, code, message);
    r
}

/// [`scan`] over bytes in memory.
pub fn scan_bytes(path: &str, bytes: &[u8]) -> FileReport {
    scan(path, &mut std::io::Cursor::new(bytes), bytes.len() as u64)
}
