//! The GGUF validator against files generated here: a benign file with
//! metadata, a tokenizer array and quantized tensors passes; each
//! malformed header and a template-injection chat template are refused.

use vault_scan::{scan_bytes, Format, Verdict};

/// A GGUF v3 file under construction.
#[derive(Clone, Default)]
struct Gguf {
    version: u32,
    kvs: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    alignment: u64,
    data: u64,
    /// Overrides of the counts written in the header.
    counts: Option<(u64, u64)>,
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Gguf {
    fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            ..Default::default()
        }
    }

    fn kv_raw(mut self, key: &str, t: u32, value: &[u8]) -> Self {
        string(&mut self.kvs, key);
        self.kvs.extend_from_slice(&t.to_le_bytes());
        self.kvs.extend_from_slice(value);
        self.n_kv += 1;
        self
    }

    fn kv_str(self, key: &str, v: &str) -> Self {
        let mut b = Vec::new();
        string(&mut b, v);
        self.kv_raw(key, 8, &b)
    }

    fn kv_u32(self, key: &str, v: u32) -> Self {
        self.kv_raw(key, 4, &v.to_le_bytes())
    }

    fn kv_strings(self, key: &str, items: &[&str]) -> Self {
        let mut b = 8u32.to_le_bytes().to_vec();
        b.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for i in items {
            string(&mut b, i);
        }
        self.kv_raw(key, 9, &b)
    }

    /// A tensor of `dims` of ggml type `t` at `offset` in the data.
    fn tensor(mut self, name: &str, dims: &[u64], t: u32, offset: u64) -> Self {
        string(&mut self.infos, name);
        self.infos
            .extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            self.infos.extend_from_slice(&d.to_le_bytes());
        }
        self.infos.extend_from_slice(&t.to_le_bytes());
        self.infos.extend_from_slice(&offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn data(mut self, bytes: u64) -> Self {
        self.data = bytes;
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend_from_slice(&self.version.to_le_bytes());
        let (t, k) = self.counts.unwrap_or((self.n_tensors, self.n_kv));
        f.extend_from_slice(&t.to_le_bytes());
        f.extend_from_slice(&k.to_le_bytes());
        f.extend_from_slice(&self.kvs);
        f.extend_from_slice(&self.infos);
        while !(f.len() as u64).is_multiple_of(self.alignment) {
            f.push(0);
        }
        f.extend(std::iter::repeat_n(0u8, self.data as usize));
        f
    }
}

fn benign() -> Gguf {
    let vocab: Vec<String> = (0..2000).map(|i| format!("tok{i}")).collect();
    let vocab: Vec<&str> = vocab.iter().map(String::as_str).collect();
    Gguf::new()
        .kv_str("general.architecture", "llama")
        .kv_u32("general.alignment", 32)
        .kv_strings("tokenizer.ggml.tokens", &vocab)
        .kv_str(
            "tokenizer.chat_template",
            "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}",
        )
        // F32 [8, 2] = 64 bytes; Q4_K [256, 2] = 2 blocks of 144 = 288;
        // Q8_0 [64] = 2 blocks of 34 = 68 (padded to 96 before the next).
        .tensor("tok_embd.weight", &[8, 2], 0, 0)
        .tensor("blk.0.attn_q.weight", &[256, 2], 12, 64)
        .tensor("output_norm.weight", &[64], 8, 352)
        .data(352 + 68)
}

#[test]
fn a_gguf_with_metadata_a_vocabulary_and_quantized_tensors_passes() {
    let r = scan_bytes("model.gguf", &benign().build());
    assert_eq!(
        (r.format, r.verdict),
        (Format::Gguf, Verdict::Pass),
        "{r:?}"
    );
    let hash = r
        .details
        .get("tokenizer.chat_template.sha256")
        .expect("template hashed");
    assert_eq!(hash.len(), 64);
}

#[test]
fn every_malformed_header_is_refused() {
    let cases: Vec<(&str, Gguf, &str)> = vec![
        (
            "a count the file cannot hold",
            {
                let mut g = benign();
                g.counts = Some((1 << 40, 4));
                g
            },
            "cannot fit",
        ),
        (
            "a duplicate key",
            benign().kv_str("general.architecture", "x"),
            "twice",
        ),
        (
            "a duplicate tensor",
            benign().tensor("tok_embd.weight", &[8], 0, 384).data(416),
            "twice",
        ),
        (
            "an unknown tensor type",
            Gguf::new().tensor("w", &[4], 4, 0).data(32),
            "unknown tensor type",
        ),
        (
            "more than four dimensions",
            Gguf::new().tensor("w", &[1, 1, 1, 1, 1], 0, 0).data(32),
            "dimensions",
        ),
        (
            "a row that is not whole blocks",
            Gguf::new().tensor("w", &[100], 12, 0).data(288),
            "whole blocks",
        ),
        (
            "an unaligned offset",
            Gguf::new().tensor("w", &[4], 0, 4).data(64),
            "not aligned",
        ),
        (
            "data past the end",
            Gguf::new().tensor("w", &[64], 0, 0).data(100),
            "past the end",
        ),
        (
            "overlapping tensors",
            Gguf::new()
                .tensor("a", &[16], 0, 0)
                .tensor("b", &[16], 0, 32)
                .data(128),
            "overlaps",
        ),
        (
            "a size that overflows",
            Gguf::new().tensor("w", &[1 << 40, 1 << 40], 0, 0).data(32),
            "overflows",
        ),
        ("a bool that is 2", Gguf::new().kv_raw("x", 7, &[2]), "bool"),
        (
            "an unknown value type",
            Gguf::new().kv_raw("x", 13, &[0; 8]),
            "unknown value type",
        ),
        (
            "a string past the end",
            Gguf::new().kv_raw("x", 8, &(1u64 << 40).to_le_bytes()),
            "past the end",
        ),
        (
            "an array longer than the file",
            Gguf::new().kv_raw(
                "x",
                9,
                &[&0u32.to_le_bytes()[..], &(1u64 << 40).to_le_bytes()].concat(),
            ),
            "elements in",
        ),
        (
            "an alignment that is no power of two",
            Gguf::new().kv_u32("general.alignment", 24),
            "power of two",
        ),
        (
            "a name of 64 bytes",
            Gguf::new().tensor(&"n".repeat(64), &[4], 0, 0).data(32),
            "bytes",
        ),
    ];
    for (what, g, says) in cases {
        let r = scan_bytes("model.gguf", &g.build());
        assert_eq!(r.verdict, Verdict::Fail, "{what}: {r:?}");
        assert!(
            r.findings.iter().any(|f| f.message.contains(says)),
            "{what}: {r:?}"
        );
    }
    // A version this scanner does not know is not judged, and not passed.
    let mut g = benign();
    g.version = 4;
    assert_eq!(
        scan_bytes("m.gguf", &g.build()).verdict,
        Verdict::Unsupported
    );
}

#[test]
fn a_chat_template_that_reaches_python_objects_fails_the_file() {
    for t in [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ messages|attr('__class__') }}",
        "{% set x = lipsum.__globals__ %}",
    ] {
        let g = Gguf::new().kv_str("tokenizer.chat_template", t);
        let r = scan_bytes("model.gguf", &g.build());
        assert_eq!(r.verdict, Verdict::Fail, "{t}: {r:?}");
        assert_eq!(r.findings[0].code, "gguf.chat_template", "{t}");
    }
    // Named templates are checked too.
    let g = Gguf::new().kv_str("tokenizer.chat_template.tool_use", "{{ x.__class__ }}");
    assert_eq!(scan_bytes("model.gguf", &g.build()).verdict, Verdict::Fail);
}
