//! Zip archives (PyTorch checkpoints, Keras files, NumPy `.npz`), NumPy
//! arrays and ONNX models, each bypass class built here as a fixture: the
//! ways scanners and loaders have been made to read one file differently
//! (CRC, flags, local headers against the directory, prepended bytes, two
//! end records, names outside the root, duplicates, methods), code in
//! configs, object arrays and external data outside the model's folder.

use vault_scan::{check_references, scan_bytes, FileReport, Format, Verdict};

/// A benign pickle: `collections.OrderedDict()`, protocol 2.
const BENIGN_PICKLE: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
/// `os.system("echo")`, protocol 0.
const EVIL_PICKLE: &[u8] = b"cos\nsystem\n(S'echo'\ntR.";

struct Entry<'a> {
    name: &'a str,
    data: Vec<u8>,
    deflate: bool,
}

fn entry<'a>(name: &'a str, data: &[u8]) -> Entry<'a> {
    Entry {
        name,
        data: data.to_vec(),
        deflate: false,
    }
}

/// A zip built the plain way; returns the bytes and where each local
/// header and the central directory (and each of its entries) start.
struct Built {
    bytes: Vec<u8>,
    locals: Vec<usize>,
    centrals: Vec<usize>,
    eocd: usize,
}

fn zip(entries: &[Entry<'_>]) -> Built {
    let mut out = Vec::new();
    let mut locals = Vec::new();
    let mut meta = Vec::new();
    for e in entries {
        let crc = crc32fast::hash(&e.data);
        let (method, body) = if e.deflate {
            (8u16, miniz_oxide::deflate::compress_to_vec(&e.data, 6))
        } else {
            (0u16, e.data.clone())
        };
        locals.push(out.len());
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]); // time, date
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
        out.extend_from_slice(&body);
        meta.push((crc, method, body.len(), e.data.len()));
    }
    let cd = out.len();
    let mut centrals = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (crc, method, csize, size) = meta[i];
        centrals.push(out.len());
        out.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // flags
        out.extend_from_slice(&method.to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&(csize as u32).to_le_bytes());
        out.extend_from_slice(&(size as u32).to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0u8; 12]); // extra, comment, disk, attrs
        out.extend_from_slice(&(locals[i] as u32).to_le_bytes());
        out.extend_from_slice(e.name.as_bytes());
    }
    let eocd = out.len();
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&((eocd - cd) as u32).to_le_bytes());
    out.extend_from_slice(&(cd as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    Built {
        bytes: out,
        locals,
        centrals,
        eocd,
    }
}

fn torch(pickle: &[u8]) -> Built {
    zip(&[
        entry("archive/data.pkl", pickle),
        entry("archive/byteorder", b"little"),
        entry("archive/data/0", &[0u8; 48]),
        entry("archive/version", b"3\n"),
    ])
}

fn failed(r: &FileReport, code: &str) {
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    assert!(
        r.findings.iter().any(|f| f.code == code),
        "expected a `{code}` finding: {r:?}"
    );
}

fn refused_as(bytes: &[u8], why: &str) {
    let r = scan_bytes("model.pt", bytes);
    failed(&r, "zip.malformed");
    assert!(
        r.findings.iter().any(|f| f.message.contains(why)),
        "expected `{why}`: {r:?}"
    );
}

#[test]
fn a_pytorch_style_checkpoint_passes_and_its_pickle_is_judged() {
    let r = scan_bytes("model.pt", &torch(BENIGN_PICKLE).bytes);
    assert_eq!((r.format, r.verdict), (Format::Zip, Verdict::Pass), "{r:?}");
    assert_eq!(r.details["archive"], "pytorch");
    assert!(r.details["archive/data.pkl: pickle.imports"].contains("collections OrderedDict"));
    // The same archive with a pickle that runs code.
    failed(
        &scan_bytes("model.pt", &torch(EVIL_PICKLE).bytes),
        "pickle.import",
    );
    // Deflated, the pickle is inflated and still judged.
    let mut e = entry("archive/data.pkl", EVIL_PICKLE);
    e.deflate = true;
    let z = zip(&[e, entry("archive/version", b"3\n")]);
    failed(&scan_bytes("model.pt", &z.bytes), "pickle.import");
    // TorchScript carries code: not judged, so not a pass.
    let z = zip(&[
        entry("archive/data.pkl", BENIGN_PICKLE),
        entry("archive/code/__torch__.py", b"def forward(self): ..."),
    ]);
    assert_eq!(
        scan_bytes("model.pt", &z.bytes).verdict,
        Verdict::Unsupported
    );
}

#[test]
fn a_member_whose_crc_does_not_match_is_refused() {
    // The loader that skips the CRC would read bytes the scan never saw.
    let mut z = torch(BENIGN_PICKLE);
    let at = z.locals[0] + 30 + "archive/data.pkl".len() + 3;
    z.bytes[at] ^= 0x01;
    let r = scan_bytes("model.pt", &z.bytes);
    failed(&r, "zip.member");
    assert!(
        r.findings.iter().any(|f| f.message.contains("CRC")),
        "{r:?}"
    );
}

#[test]
fn encrypted_and_unknown_flags_and_methods_are_refused() {
    for (bits, why) in [
        (0x0001u16, "encrypted"),
        (0x0040, "encrypted"),
        (0x0010, "flag bits"),
    ] {
        let mut z = torch(BENIGN_PICKLE);
        for at in [z.locals[0] + 6, z.centrals[0] + 8] {
            z.bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
        }
        refused_as(&z.bytes, why);
    }
    // Flags that differ between the local header and the directory.
    let mut z = torch(BENIGN_PICKLE);
    z.bytes[z.locals[0] + 6] = 0x08;
    refused_as(&z.bytes, "disagrees with the directory");
    // LZMA (14): a method the reader does not inflate.
    let mut z = torch(BENIGN_PICKLE);
    for at in [z.locals[0] + 8, z.centrals[0] + 10] {
        z.bytes[at] = 14;
    }
    refused_as(&z.bytes, "compression method 14");
}

#[test]
fn a_local_header_that_disagrees_with_the_directory_is_refused() {
    // The local name differs: a streaming reader sees another member.
    let mut z = torch(BENIGN_PICKLE);
    let at = z.locals[0] + 30 + "archive/".len();
    z.bytes[at] = b'D';
    refused_as(&z.bytes, "named differently");
    // The local CRC differs from the directory's.
    let mut z = torch(BENIGN_PICKLE);
    z.bytes[z.locals[0] + 14] ^= 0xff;
    refused_as(&z.bytes, "CRC or sizes");
}

#[test]
fn prepended_bytes_two_end_records_and_trailing_bytes_are_refused() {
    // Another format's bytes first (a wrapper, a polyglot): the offsets
    // no longer name the members, as a reader that searches would find.
    let z = torch(BENIGN_PICKLE);
    let mut wrapped = b"7z\xbc\xaf\x27\x1c junk before the archive".to_vec();
    wrapped.extend_from_slice(&z.bytes);
    let r = scan_bytes("model.pt", &wrapped);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
    // An unlisted member hidden between the listed ones.
    let a = zip(&[entry("archive/data.pkl", BENIGN_PICKLE)]);
    let b = zip(&[entry("archive/hidden.pkl", EVIL_PICKLE)]);
    let mut hidden = b.bytes[..b.centrals[0]].to_vec();
    let shift = hidden.len();
    let mut cd = a.bytes[a.centrals[0]..].to_vec();
    // Point the listed member past the hidden one.
    let local = (shift + a.locals[0]) as u32;
    cd[42..46].copy_from_slice(&local.to_le_bytes());
    let cd_at = (shift + a.bytes[..a.centrals[0]].len()) as u32;
    let eocd = cd.len() - 22;
    cd[eocd + 16..eocd + 20].copy_from_slice(&cd_at.to_le_bytes());
    hidden.extend_from_slice(&a.bytes[..a.centrals[0]]);
    hidden.extend_from_slice(&cd);
    refused_as(&hidden, "before the first entry");
    // A second end record that also fits the end of the file.
    let mut z = torch(BENIGN_PICKLE);
    let tail = z.bytes[z.eocd..].to_vec();
    let n = z.bytes.len();
    z.bytes[n - 2..].copy_from_slice(&22u16.to_le_bytes());
    z.bytes.extend_from_slice(&tail);
    refused_as(&z.bytes, "two end-of-directory records");
    // Bytes after the end record.
    let mut z = torch(BENIGN_PICKLE);
    z.bytes.extend_from_slice(b"trailing");
    refused_as(&z.bytes, "no end-of-central-directory record");
}

#[test]
fn names_outside_the_root_duplicates_and_overlaps_are_refused() {
    for name in [
        "../evil.pkl",
        "/etc/evil.pkl",
        "a\\..\\evil.pkl",
        "C:evil.pkl",
    ] {
        let z = zip(&[entry(name, BENIGN_PICKLE)]);
        refused_as(&z.bytes, "outside the archive root");
    }
    let z = zip(&[
        entry("archive/data.pkl", BENIGN_PICKLE),
        entry("archive/data.pkl", EVIL_PICKLE),
    ]);
    refused_as(&z.bytes, "listed twice");
    // Two directory entries pointing at one local header.
    let mut z = torch(BENIGN_PICKLE);
    let first = z.locals[0] as u32;
    let at = z.centrals[1] + 42;
    z.bytes[at..at + 4].copy_from_slice(&first.to_le_bytes());
    let r = scan_bytes("model.pt", &z.bytes);
    assert_eq!(r.verdict, Verdict::Fail, "{r:?}");
}

#[test]
fn keras_configs_with_code_or_foreign_objects_fail() {
    let config = |layer: &str| {
        format!(r#"{{"module":"keras","class_name":"Sequential","config":{{"layers":[{layer}]}}}}"#)
    };
    let keras = |cfg: String| {
        zip(&[
            entry("metadata.json", br#"{"keras_version":"3.6.0"}"#),
            entry("config.json", cfg.as_bytes()),
            entry("model.weights.h5", b"\x89HDF\r\n\x1a\n"),
        ])
        .bytes
    };
    let dense = r#"{"module":"keras.layers","class_name":"Dense","config":{"units":4},"registered_name":null}"#;
    let r = scan_bytes("model.keras", &keras(config(dense)));
    assert_eq!(r.verdict, Verdict::Pass, "{r:?}");
    assert_eq!(r.details["archive"], "keras");
    let lambda = r#"{"module":"keras.layers","class_name":"Lambda","config":{"function":{"class_name":"__lambda__","config":{"code":"4wEAAAAA"}}}}"#;
    failed(
        &scan_bytes("model.keras", &keras(config(lambda))),
        "keras.code",
    );
    for layer in [
        r#"{"module":"keras.layers","class_name":"TFSMLayer","config":{"filepath":"/tmp/x"}}"#,
        r#"{"module":"keras.layers","class_name":"TorchModuleWrapper","config":{}}"#,
    ] {
        failed(
            &scan_bytes("model.keras", &keras(config(layer))),
            "keras.code",
        );
    }
    let custom = r#"{"module":"evil_pkg.layers","class_name":"MyLayer","config":{},"registered_name":"evil>MyLayer"}"#;
    failed(
        &scan_bytes("model.keras", &keras(config(custom))),
        "keras.custom",
    );
    failed(
        &scan_bytes("model.keras", &keras("{not json".into())),
        "keras.config",
    );
}

fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn numpy_arrays_pass_and_object_or_malformed_ones_fail() {
    let ok = npy(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        &[0u8; 24],
    );
    let r = scan_bytes("a.npy", &ok);
    assert_eq!((r.format, r.verdict), (Format::Npy, Verdict::Pass), "{r:?}");
    let cases: &[(&str, usize, &str)] = &[
        ("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16, "npy.object"),
        (
            "{'descr': [('a', '<i4'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }",
            12,
            "npy.object",
        ),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20, "npy.header"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            0,
            "npy.header",
        ),
        ("{'descr': __import__('os').system('x'), 'fortran_order': False, 'shape': (), }", 4, "npy.header"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", 4, "npy.header"),
        // Found by the fuzzer: a dict cut short where a key should be.
        ("{", 0, "npy.header"),
        ("{'descr': '<f4', ", 0, "npy.header"),
    ];
    for (header, n, code) in cases {
        failed(&scan_bytes("a.npy", &npy(header, &vec![0u8; *n])), code);
    }
    // In an .npz, each member is an array judged the same way.
    let z = zip(&[
        entry("a.npy", &ok),
        entry(
            "b.npy",
            &npy(
                "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                &[0x80, 2],
            ),
        ),
    ]);
    failed(&scan_bytes("arrays.npz", &z.bytes), "npy.object");
    // A zip of no layout the scanner knows is not a pass.
    let z = zip(&[entry("readme.txt", b"hi")]);
    assert_eq!(
        scan_bytes("bundle.npz", &z.bytes).verdict,
        Verdict::Unsupported
    );
}

/// Protobuf encoding, just enough for ONNX fixtures.
fn field(n: u64, body: &[u8]) -> Vec<u8> {
    let mut out = varint(n << 3 | 2);
    out.extend(varint(body.len() as u64));
    out.extend_from_slice(body);
    out
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// A model whose graph holds one initializer with external data at
/// `location`, and one embedded tensor of raw bytes.
fn onnx(location: &str) -> Vec<u8> {
    let mut external = field(1, b"location");
    external.extend(field(2, location.as_bytes()));
    let mut tensor = field(8, b"w");
    tensor.extend(field(13, &external));
    tensor.extend(varint(14 << 3));
    tensor.extend(varint(1));
    let mut embedded = field(8, b"b");
    embedded.extend(field(9, &[7u8; 64]));
    let mut graph = field(5, &tensor);
    graph.extend(field(5, &embedded));
    let mut model = varint(1 << 3);
    model.extend(varint(8));
    model.extend(field(7, &graph));
    model
}

#[test]
fn onnx_external_data_must_stay_inside_the_version() {
    let r = scan_bytes("m/model.onnx", &onnx("weights.bin"));
    assert_eq!(
        (r.format, r.verdict),
        (Format::Onnx, Verdict::Pass),
        "{r:?}"
    );
    assert_eq!(r.references, vec!["m/weights.bin".to_string()]);
    // Scanned with the file it names: pass; without it: fail.
    let mut set = vec![r.clone(), scan_bytes("m/weights.bin", &[0u8; 16])];
    check_references(&mut set);
    assert_eq!(set[0].verdict, Verdict::Pass, "{set:?}");
    let mut alone = vec![r];
    check_references(&mut alone);
    failed(&alone[0], "reference.missing");
    for outside in ["../../etc/passwd", "/etc/passwd", "..\\x", "C:/x"] {
        failed(
            &scan_bytes("m/model.onnx", &onnx(outside)),
            "onnx.external_path",
        );
    }
    // Malformed protobuf: a field running past the end, a group.
    let mut cut = onnx("weights.bin");
    cut.truncate(cut.len() - 3);
    failed(&scan_bytes("model.onnx", &cut), "onnx.malformed");
    failed(&scan_bytes("model.onnx", &[0x0b, 0x0c]), "onnx.malformed");
}
