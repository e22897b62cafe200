//! The safetensors validator against files generated here: benign ones
//! pass, and each way a header can lie to a loader is refused with its
//! finding. Plus format detection from bytes against extensions.

use std::io::{Read, Seek, SeekFrom};

use vault_scan::{scan, scan_bytes, Format, Verdict};

/// A safetensors file: `header` (JSON text) then `data` bytes of zeros.
fn st(header: &str, data: usize) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header.as_bytes());
    f.extend(std::iter::repeat_n(0u8, data));
    f
}

fn codes(path: &str, bytes: &[u8]) -> (Verdict, Vec<&'static str>) {
    let r = scan_bytes(path, bytes);
    (r.verdict, r.findings.iter().map(|f| f.code).collect())
}

#[test]
fn a_real_shaped_file_with_many_tensors_and_metadata_passes() {
    let dtypes = [
        ("F32", 4),
        ("F16", 2),
        ("BF16", 2),
        ("I64", 8),
        ("U8", 1),
        ("BOOL", 1),
    ];
    let mut entries = vec![r#""__metadata__":{"format":"pt","source":"unit test"}"#.to_owned()];
    let mut at = 0u64;
    for i in 0..300u64 {
        let (dt, size) = dtypes[i as usize % dtypes.len()];
        let (rows, cols) = (1 + i % 7, 3 + i % 5);
        let bytes = rows * cols * size;
        entries.push(format!(
            r#""layer.{i}.weight":{{"dtype":"{dt}","shape":[{rows},{cols}],"data_offsets":[{at},{}]}}"#,
            at + bytes
        ));
        at += bytes;
    }
    // Reversed: the header's order is not the data's.
    entries[1..].reverse();
    // A scalar (shape []) is one element; an empty tensor is zero bytes.
    entries.push(format!(
        r#""scale":{{"dtype":"F64","shape":[],"data_offsets":[{at},{}]}}"#,
        at + 8
    ));
    at += 8;
    entries.push(format!(
        r#""empty":{{"dtype":"F32","shape":[0,4],"data_offsets":[{at},{at}]}}"#
    ));
    // Sub-byte dtypes in whole bytes.
    entries.push(format!(
        r#""packed":{{"dtype":"F4","shape":[6],"data_offsets":[{at},{}]}}"#,
        at + 3
    ));
    at += 3;
    // The writer pads the header with spaces.
    let header = format!("{{{}}}    ", entries.join(","));
    let file = st(&header, at as usize);
    let r = scan_bytes("model.safetensors", &file);
    assert_eq!(r.format, Format::Safetensors);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
}

#[test]
fn every_lying_header_is_refused_with_its_finding() {
    let ok = r#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    assert_eq!(codes("m.safetensors", &st(ok, 16)).0, Verdict::Pass);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "data after the last tensor",
            st(ok, 17),
            "safetensors.offsets",
        ),
        (
            "a gap between tensors",
            st(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}"#,
                12,
            ),
            "safetensors.offsets",
        ),
        (
            "overlapping tensors",
            st(
                r#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                8,
            ),
            "safetensors.offsets",
        ),
        (
            "data not starting at zero",
            st(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                8,
            ),
            "safetensors.offsets",
        ),
        (
            "a duplicate tensor name (a map keeps only one)",
            st(
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                8,
            ),
            "safetensors.duplicate",
        ),
        (
            "a shape whose byte size differs from its offsets",
            st(
                r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,16]}}"#,
                16,
            ),
            "safetensors.tensor",
        ),
        (
            "a shape whose size overflows u64",
            st(
                r#"{"w":{"dtype":"F64","shape":[4294967296,4294967296,2],"data_offsets":[0,16]}}"#,
                16,
            ),
            "safetensors.tensor",
        ),
        (
            "a bit size that overflows",
            st(
                r#"{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16]}}"#,
                16,
            ),
            "safetensors.tensor",
        ),
        (
            "a negative dimension",
            st(
                r#"{"w":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}}"#,
                4,
            ),
            "safetensors.tensor",
        ),
        (
            "an unknown dtype",
            st(
                r#"{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#,
                16,
            ),
            "safetensors.tensor",
        ),
        (
            "an unknown field",
            st(
                r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4],"loader":"x"}}"#,
                4,
            ),
            "safetensors.tensor",
        ),
        (
            "offsets that end before they begin",
            st(
                r#"{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#,
                4,
            ),
            "safetensors.tensor",
        ),
        (
            "sub-byte elements that are not whole bytes",
            st(
                r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                1,
            ),
            "safetensors.tensor",
        ),
        (
            "metadata that is not strings",
            st(
                r#"{"__metadata__":{"n":1},"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
                1,
            ),
            "safetensors.metadata",
        ),
        (
            "a header that is not valid JSON",
            st(r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}"#, 1),
            "safetensors.header",
        ),
    ];
    for (what, bytes, code) in cases {
        let (verdict, found) = codes("m.safetensors", &bytes);
        assert_eq!(verdict, Verdict::Fail, "{what}: {found:?}");
        assert!(found.contains(&code), "{what}: {found:?}");
    }
    // Not UTF-8.
    let mut bad = st(
        r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        1,
    );
    bad[12] = 0xff;
    assert_eq!(
        codes("m.safetensors", &bad),
        (Verdict::Fail, vec!["safetensors.header"])
    );
}

#[test]
fn a_header_length_beyond_the_file_or_the_bound_is_refused() {
    // A length past the end of the file: the bytes are not safetensors.
    let mut f = 1_000u64.to_le_bytes().to_vec();
    f.extend_from_slice(b"{}");
    let r = scan_bytes("m.safetensors", &f);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    // Over the 100 MB bound, in a file that long (never read whole).
    let n = 100_000_001u64;
    let mut big = Synthetic::new(n.to_le_bytes().to_vec(), 8 + n + 16);
    let r = scan("m.safetensors", &mut big, 8 + n + 16);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(r.findings[0].message.contains("at most 100000000"), "{r:?}");
    assert!(big.read < 1024, "read {} bytes", big.read);
}

/// A file of `len` bytes: `head`, then `{`, then zeros, made up as read;
/// counts the bytes read.
struct Synthetic {
    head: Vec<u8>,
    len: u64,
    pos: u64,
    read: u64,
}

impl Synthetic {
    fn new(mut head: Vec<u8>, len: u64) -> Self {
        head.push(b'{');
        Self {
            head,
            len,
            pos: 0,
            read: 0,
        }
    }
}

impl Read for Synthetic {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos as usize + i;
            *b = self.head.get(at).copied().unwrap_or(0);
        }
        self.pos += n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl Seek for Synthetic {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => self.len.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

#[test]
fn a_4_gib_file_is_judged_from_its_header_alone() {
    let data = 4u64 << 30;
    let header =
        format!(r#"{{"w":{{"dtype":"F32","shape":[1073741824],"data_offsets":[0,{data}]}}}}"#);
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    let len = file.len() as u64 + data;
    let mut f = Synthetic {
        head: file,
        len,
        pos: 0,
        read: 0,
    };
    let r = scan("big.safetensors", &mut f, len);
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert!(f.read < 4096, "read {} bytes of a 4 GiB file", f.read);
}

#[test]
fn bytes_decide_the_format_and_an_extension_that_disagrees_is_refused() {
    let safetensors = st(
        r#"{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
        1,
    );
    let pickle = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00N.".to_vec();
    let zip = b"PK\x03\x04rest of a zip".to_vec();
    let cases: Vec<(&str, &[u8], Format, Verdict)> = vec![
        (
            "model.safetensors",
            &safetensors,
            Format::Safetensors,
            Verdict::Pass,
        ),
        // A pickle named as safetensors goes to the pickle judge, and the
        // name is a finding of its own.
        ("model.safetensors", &pickle, Format::Pickle, Verdict::Fail),
        ("model.safetensors", &zip, Format::Zip, Verdict::Fail),
        // Safetensors bytes named as a PyTorch file: a loader would unpickle.
        (
            "pytorch_model.bin",
            &safetensors,
            Format::Safetensors,
            Verdict::Fail,
        ),
        // A pickle hidden as configuration.
        ("config.json", &pickle, Format::Pickle, Verdict::Fail),
        // Plain data is no model format: nothing a loader runs.
        (
            "config.json",
            b"{\"hidden_size\": 8}",
            Format::Data,
            Verdict::Pass,
        ),
        (
            "tokenizer.model",
            b"\x0a\x05hello",
            Format::Data,
            Verdict::Pass,
        ),
        // What the scanner cannot judge is never a pass; a zip cut short
        // is no archive a loader reads the same way.
        ("model.pt", &pickle, Format::Pickle, Verdict::Pass),
        ("model.pt", &zip, Format::Zip, Verdict::Fail),
        (
            "weights.dat",
            b"\x00\x01\x02\x03",
            Format::Unknown,
            Verdict::Unsupported,
        ),
        // A GGUF cut after its version.
        (
            "model.gguf",
            b"GGUF\x03\x00\x00\x00",
            Format::Gguf,
            Verdict::Fail,
        ),
        // A NumPy header cut after its version.
        (
            "model.npy",
            b"\x93NUMPY\x01\x00",
            Format::Npy,
            Verdict::Fail,
        ),
    ];
    for (path, bytes, format, verdict) in cases {
        let r = scan_bytes(path, bytes);
        assert_eq!((r.format, r.verdict), (format, verdict), "{path}: {r:?}");
    }
}
