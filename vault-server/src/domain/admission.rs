//! The admission scan of a push: every file is judged by `vault-scan` from
//! the stored, encrypted blob (headers, pickles and configs are read, by
//! ranged reads of the segments that hold them, never the tensor data),
//! and the verdict is signed by the server key as an in-toto statement
//! about the version's manifest digest. `[scan] mode` says whether a
//! `fail` refuses the push (`enforce`) or is only recorded (`record`).

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use serde::Serialize;
use vault_scan::{FileReport, Verdict};
use vault_store::{BlobRecord, ScanRecord, SessionRecord, VersionRecord};

use super::{Error, Result};
use crate::vault::Vault;

/// The in-toto predicate type of a scan verdict.
pub const PREDICATE_TYPE: &str = "https://mlvault.dev/admission-scan/v1";

/// Bytes fetched at least per read of a blob (a read that asks for more
/// gets what it asks).
const WINDOW: u64 = 256 << 10;

/// A stored blob's plaintext as `Read + Seek`, for the scanner: each read
/// fetches and opens only the segments of the bytes it needs.
struct BlobReader {
    v: Arc<Vault>,
    blob: BlobRecord,
    rt: tokio::runtime::Handle,
    pos: u64,
    /// Bytes from `buf_at`, read ahead.
    buf: Bytes,
    buf_at: u64,
}

impl Read for BlobReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.blob.size || out.is_empty() {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_at && self.pos < self.buf_at + self.buf.len() as u64;
        if !in_buf {
            let want = (out.len() as u64).max(WINDOW);
            let (v, blob, at) = (self.v.clone(), self.blob.clone(), self.pos);
            self.buf = self
                .rt
                .block_on(async move { v.blobs.read_range(&blob, &v.keyring(), at, want).await })
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.buf_at = self.pos;
        }
        let mut b = self.buf.clone();
        b.advance((self.pos - self.buf_at) as usize);
        let n = out.len().min(b.len());
        out[..n].copy_from_slice(&b[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let next = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.blob.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = next.ok_or_else(|| std::io::Error::other("a seek before the start"))?;
        Ok(self.pos)
    }
}

/// The scan of a version: what the signed statement's predicate holds.
#[derive(Serialize)]
pub struct Scanned {
    /// The worst of the files' verdicts.
    pub verdict: Verdict,
    /// `vault-scan/<version>`.
    pub scanner: &'static str,
    /// `sha256:` of the pickle import allowlist the scan used.
    pub allowlist: String,
    /// `sha256:` of the namespace's allowlist extension it included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    /// Per file: format, verdict, findings, details (imports seen,
    /// template digests).
    pub files: Vec<FileReport>,
}

/// `sha256:` of an allowlist, one `module name` per line in its order.
pub fn allowlist_digest<S: AsRef<str>>(allow: &[S]) -> String {
    let lines: Vec<&str> = allow.iter().map(AsRef::as_ref).collect();
    vault_manifest::digest_of(lines.join("\n").as_bytes())
}

/// A namespace's extension of the pickle import allowlist, set by an
/// admin (`PUT /v1/scan/allowlist`, audited) and stored in the metadata.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Extension {
    pub namespace: String,
    pub imports: Vec<String>,
    pub reason: String,
    pub by: String,
    pub at: u64,
}

/// The metadata config key of a namespace's extension.
pub fn extension_key(namespace: &str) -> String {
    format!("scan-allow/{namespace}")
}

/// The allowlist a namespace's scans use: the defaults, then its
/// extension's entries.
pub struct Allowlist {
    pub entries: Vec<String>,
    /// `sha256:` of `entries`, recorded in verdicts.
    pub digest: String,
    /// `sha256:` of the extension record, when there is one.
    pub extension: Option<String>,
    pub record: Option<Extension>,
}

/// The in-toto predicate type of an allowlist extension.
pub const EXTENSION_TYPE: &str = "https://mlvault.dev/scan-allowlist/v1";

/// `ext` as stored: an in-toto statement about the namespace in a DSSE
/// envelope signed by the server key (JSON text).
pub fn sign_extension(v: &Vault, ext: &Extension) -> Result<String> {
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("namespace:{}", ext.namespace),
            "digest": {"sha256": allowlist_digest(&ext.imports).trim_start_matches("sha256:")}}],
        "predicateType": EXTENSION_TYPE,
        "predicate": ext,
    });
    let payload = serde_json::to_vec(&statement)
        .map_err(|e| Error::Invalid(format!("the allowlist cannot be written: {e}")))?;
    let mut env = vault_manifest::Envelope::wrap(&payload);
    env.sign(&v.signing_key)?;
    Ok(env.to_json())
}

/// The extension stored as `raw`, its signature and subject checked: one
/// that does not verify (edited in the database) fails every scan of the
/// namespace rather than widening it.
fn open_extension(v: &Vault, namespace: &str, raw: &[u8]) -> Result<Extension> {
    let corrupt = |detail: String| {
        Error::Store(vault_store::Error::Corrupt {
            table: "config",
            detail: format!("the scan allowlist extension of `{namespace}`: {detail}"),
        })
    };
    let text = std::str::from_utf8(raw).map_err(|_| corrupt("not UTF-8".into()))?;
    let env = vault_manifest::Envelope::from_json(text).map_err(|e| corrupt(e.to_string()))?;
    env.verify_any(&[v.signing_key.public()])
        .map_err(|e| corrupt(format!("its signature does not verify: {e}")))?;
    let payload = env.payload_bytes().map_err(|e| corrupt(e.to_string()))?;
    let st: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|e| corrupt(e.to_string()))?;
    if st["predicateType"] != EXTENSION_TYPE {
        return Err(corrupt("not an allowlist extension".into()));
    }
    let ext: Extension =
        serde_json::from_value(st["predicate"].clone()).map_err(|e| corrupt(e.to_string()))?;
    if ext.namespace != namespace || st["subject"][0]["name"] != format!("namespace:{namespace}") {
        return Err(corrupt("it names another namespace".into()));
    }
    Ok(ext)
}

/// The allowlist of `namespace` (blocking: reads the metadata).
pub fn allowlist_for(v: &Vault, namespace: &str) -> Result<Allowlist> {
    // An empty value is an extension removed.
    let raw = v
        .meta
        .config(&extension_key(namespace))?
        .filter(|b| !b.is_empty());
    let record = match &raw {
        Some(b) => Some(open_extension(v, namespace, b)?),
        None => None,
    };
    let mut entries: Vec<String> = vault_scan::DEFAULT_ALLOWLIST
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(r) = &record {
        entries.extend(r.imports.iter().cloned());
    }
    Ok(Allowlist {
        digest: allowlist_digest(&entries),
        extension: raw.map(|b| vault_manifest::digest_of(&b)),
        entries,
        record,
    })
}

/// Scan the files of session `s`, each from its stored blob.
pub async fn scan_session(v: &Arc<Vault>, s: &SessionRecord) -> Result<Scanned> {
    let mut files = Vec::with_capacity(s.files.len());
    for (i, f) in s.files.iter().enumerate() {
        let Some(blob_id) = s.blobs.get(i).cloned().flatten() else {
            return Err(Error::Invalid(format!(
                "file `{}` was not uploaded",
                f.path.escape_debug()
            )));
        };
        files.push((f.path.clone(), f.size, blob_id));
    }
    let (v2, ns) = (v.clone(), namespace_of(&s.name).to_owned());
    let allow = super::error::blocking(move || allowlist_for(&v2, &ns)).await?;
    scan_files(v, files, allow).await
}

fn namespace_of(name: &str) -> &str {
    name.split('/').next().unwrap_or_default()
}

/// Scan files given as (path, size, blob id), each from its stored blob.
async fn scan_files(
    v: &Arc<Vault>,
    list: Vec<(String, u64, String)>,
    allow: Allowlist,
) -> Result<Scanned> {
    let started = std::time::Instant::now();
    let entries = Arc::new(allow.entries);
    let mut files = Vec::with_capacity(list.len());
    for (path, size, blob_id) in list {
        let (v2, entries) = (v.clone(), entries.clone());
        let rt = tokio::runtime::Handle::current();
        let report = tokio::task::spawn_blocking(move || -> Result<FileReport> {
            let blob = vault_store::may_block(|| v2.meta.blob(&blob_id))?
                .ok_or_else(|| Error::Conflict(format!("the blob of `{path}` is gone")))?;
            let mut r = BlobReader {
                v: v2,
                blob,
                rt,
                pos: 0,
                buf: Bytes::new(),
                buf_at: 0,
            };
            let allow: Vec<&str> = entries.iter().map(String::as_str).collect();
            Ok(vault_scan::scan_with(&path, &mut r, size, &allow))
        })
        .await??;
        files.push(report);
    }
    vault_scan::check_references(&mut files);
    let verdict = files
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    metrics::histogram!("mlvault_scan_seconds").record(started.elapsed().as_secs_f64());
    metrics::counter!("mlvault_scans_total", "verdict" => verdict.as_str()).increment(1);
    Ok(Scanned {
        verdict,
        scanner: vault_scan::VERSION,
        allowlist: allow.digest,
        extension: allow.extension,
        files,
    })
}

/// Whether `rec`'s verdict was made by this scanner with the allowlist
/// whose digest is `allowlist` (else it is due for a rescan).
pub fn current(rec: &VersionRecord, allowlist: &str) -> bool {
    rec.scan
        .as_ref()
        .is_some_and(|s| s.scanner == vault_scan::VERSION && s.allowlist == allowlist)
}

/// Scan a committed version again and replace its verdict, recorded in
/// the audit log with the change (`scan_rescan`).
pub async fn rescan(v: &Arc<Vault>, rec: &VersionRecord) -> Result<ScanRecord> {
    let list = rec
        .files
        .iter()
        .map(|f| (f.entry.path.clone(), f.entry.size, f.blob.clone()))
        .collect();
    let (v2, ns) = (v.clone(), namespace_of(&rec.name).to_owned());
    let allow = super::error::blocking(move || allowlist_for(&v2, &ns)).await?;
    let scanned = scan_files(v, list, allow).await?;
    let scan = sign(v, &rec.name, rec.version, &rec.digest, &scanned)?;
    let (v2, name, version) = (v.clone(), rec.name.clone(), rec.version);
    let was = rec.scan.as_ref().map_or("none".to_owned(), |s| {
        format!("{} by {}", s.verdict, s.scanner)
    });
    let s2 = scan.clone();
    super::error::blocking(move || {
        v2.change(
            |m| m.set_scan(&name, version, &s2),
            |found| {
                if !*found {
                    return Vec::new();
                }
                let mut ev = vault_audit::Event::new(
                    "vault-server",
                    "scan_rescan",
                    &format!("{name}:{version}"),
                    "ok",
                );
                ev.detail = format!("{} by {} (was {was})", s2.verdict, s2.scanner);
                vec![ev]
            },
        )
    })
    .await?;
    Ok(scan)
}

/// The versions aliases point at (in `namespace`, or all) whose verdict
/// is missing or was made by another scanner or allowlist (blocking).
pub fn due_for_rescan(v: &Vault, namespace: Option<&str>) -> Result<Vec<VersionRecord>> {
    let prefix = namespace.map_or(String::new(), |n| format!("{n}/"));
    let mut digests = std::collections::HashMap::new();
    let mut due: Vec<VersionRecord> = Vec::new();
    for (art, _) in v.meta.list(&prefix)? {
        let ns = namespace_of(&art.name).to_owned();
        if !digests.contains_key(&ns) {
            digests.insert(ns.clone(), allowlist_for(v, &ns)?.digest);
        }
        let want = &digests[&ns];
        for a in v.meta.aliases(&art.name)? {
            if let Some(rec) = v.meta.version(&art.name, a.version)? {
                if !current(&rec, want) && !due.iter().any(|d| d.digest == rec.digest) {
                    due.push(rec);
                }
            }
        }
    }
    Ok(due)
}

/// Rescan every version an alias points at whose verdict is missing or
/// was made by another scanner or allowlist: what deploy jobs pull is
/// always judged by the scanner and allowlist in force. Run at start-up
/// and after an allowlist change, in the background; a failure is logged
/// and the version keeps its verdict.
pub async fn rescan_aliased(v: Arc<Vault>, namespace: Option<String>) {
    let v2 = v.clone();
    let due = super::error::blocking(move || due_for_rescan(&v2, namespace.as_deref())).await;
    let due = match due {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the aliased versions to rescan");
            return;
        }
    };
    for rec in due {
        match rescan(&v, &rec).await {
            Ok(s) => tracing::info!(name = %rec.name, version = rec.version, verdict = %s.verdict,
                "aliased version rescanned"),
            Err(e) => tracing::error!(name = %rec.name, version = rec.version, error = %e,
                "rescan failed; the version keeps its verdict"),
        }
    }
}

/// The signed record of `scanned`: an in-toto statement whose subject is
/// the version (`name:version`, the manifest digest), in a DSSE envelope
/// signed by the server key.
pub fn sign(
    v: &Vault,
    name: &str,
    version: u64,
    digest: &str,
    scanned: &Scanned,
) -> Result<ScanRecord> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": format!("{name}:{version}"), "digest": {"sha256": hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": scanned,
    });
    let payload = serde_json::to_vec(&statement)
        .map_err(|e| Error::Invalid(format!("the scan verdict cannot be written: {e}")))?;
    let mut env = vault_manifest::Envelope::wrap(&payload);
    env.sign(&v.signing_key)?;
    Ok(ScanRecord {
        verdict: scanned.verdict.as_str().to_owned(),
        scanner: scanned.scanner.to_owned(),
        allowlist: scanned.allowlist.clone(),
        envelope: env.to_json(),
    })
}

/// The findings of a refused scan, for the refusal's message.
pub fn refusal(scanned: &Scanned) -> String {
    let mut lines = Vec::new();
    for f in &scanned.files {
        for x in f.findings.iter().filter(|x| x.severity == Verdict::Fail) {
            lines.push(format!("{}: {} ({})", f.path, x.message, x.code));
        }
    }
    lines.truncate(20);
    format!(
        "push refused by the admission scan ({}): {}",
        scanned.scanner,
        lines.join("; ")
    )
}
