//! Formats told apart by their first bytes, and what a file's extension
//! says it should be.

use serde::Serialize;

use crate::{FileReport, Verdict};

/// A file format, as its bytes show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An 8-byte little-endian header length, then a JSON object.
    Safetensors,
    /// `GGUF`.
    Gguf,
    /// A zip archive (PyTorch checkpoints, `.keras`, `.npz`).
    Zip,
    /// A pickle stream of protocol 2 to 5 (`0x80 0x02`…`0x80 0x05`).
    Pickle,
    /// `\x93NUMPY`.
    Npy,
    /// HDF5 (legacy Keras `.h5`).
    Hdf5,
    /// An ONNX protobuf (no magic: known by its `.onnx` name and judged
    /// by parsing).
    Onnx,
    /// A file an extension names as plain data (JSON, text, YAML, CSV,
    /// tokenizer files) whose bytes are no model format: nothing a model
    /// loader runs.
    Data,
    /// None of these.
    Unknown,
}

impl Format {
    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "GGUF",
            Format::Zip => "zip",
            Format::Pickle => "pickle",
            Format::Npy => "NumPy",
            Format::Hdf5 => "HDF5",
            Format::Onnx => "ONNX",
            Format::Data => "data",
            Format::Unknown => "unknown",
        }
    }
}

/// The format `head` (the first bytes of a file of `len` bytes) shows.
/// Never [`Format::Data`]: that takes the extension too (see `scan`).
pub fn detect(head: &[u8], len: u64) -> Format {
    if head.len() >= 9 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&head[..8]);
        let n = u64::from_le_bytes(n);
        if head[8] == b'{' && n >= 2 && n <= len.saturating_sub(8) {
            return Format::Safetensors;
        }
    }
    if head.starts_with(b"GGUF") {
        return Format::Gguf;
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Format::Zip;
    }
    if head.len() >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        return Format::Pickle;
    }
    if head.starts_with(b"\x93NUMPY") {
        return Format::Npy;
    }
    if head.starts_with(b"\x89HDF\r\n\x1a\n") {
        return Format::Hdf5;
    }
    Format::Unknown
}

/// What the extension of `path` says the file is: the formats its loader
/// would read it as, or `None` for an extension that names no model
/// format.
fn expected(path: &str) -> Option<&'static [Format]> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
    Some(match ext {
        "safetensors" => &[Format::Safetensors],
        "gguf" => &[Format::Gguf],
        // torch.save writes a zip since PyTorch 1.6, a bare pickle before.
        "bin" | "pt" | "pth" | "ckpt" => &[Format::Zip, Format::Pickle],
        "pkl" | "pickle" | "joblib" => &[Format::Pickle],
        "keras" | "npz" => &[Format::Zip],
        "npy" => &[Format::Npy],
        "h5" | "hdf5" => &[Format::Hdf5],
        "onnx" => &[Format::Onnx],
        "json" | "txt" | "md" | "yaml" | "yml" | "csv" | "jsonl" | "model" | "tiktoken" => {
            &[Format::Data]
        }
        _ => return None,
    })
}

/// A file whose extension routes it to another loader than its bytes:
/// the scanner and the loader would read it differently, a known way past
/// scanners. A data file's bytes that are no model format make it
/// [`Format::Data`].
pub(crate) fn check_extension(path: &str, format: Format, report: &mut FileReport) {
    let Some(want) = expected(path) else {
        return;
    };
    if want == [Format::Data] && format == Format::Unknown {
        report.format = Format::Data;
        return;
    }
    // Protocols 0 and 1 start with no marker: a file named as a pickle is
    // judged as one (the judge fails anything that does not parse).
    if want.contains(&Format::Pickle) && format == Format::Unknown {
        report.format = Format::Pickle;
        return;
    }
    // A protobuf has no magic: a file named as ONNX is parsed as one.
    if want == [Format::Onnx] && format == Format::Unknown {
        report.format = Format::Onnx;
        return;
    }
    if !want.contains(&format) {
        let names: Vec<&str> = want.iter().map(|f| f.name()).collect();
        report.find(
            Verdict::Fail,
            "extension.mismatch",
            format!(
                "its name says {} but its bytes are {}",
                names.join(" or "),
                format.name()
            ),
        );
    }
}
