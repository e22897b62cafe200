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
    /// Per file: format, verdict, findings, details (imports seen,
    /// template digests).
    pub files: Vec<FileReport>,
}

/// `sha256:` of an allowlist, one `module name` per line in its order.
pub fn allowlist_digest(allow: &[&str]) -> String {
    vault_manifest::digest_of(allow.join("\n").as_bytes())
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
    scan_files(v, files).await
}

/// Scan files given as (path, size, blob id), each from its stored blob.
async fn scan_files(v: &Arc<Vault>, list: Vec<(String, u64, String)>) -> Result<Scanned> {
    let started = std::time::Instant::now();
    let allow = vault_scan::DEFAULT_ALLOWLIST;
    let mut files = Vec::with_capacity(list.len());
    for (path, size, blob_id) in list {
        let v2 = v.clone();
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
            Ok(vault_scan::scan_with(&path, &mut r, size, allow))
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
        allowlist: allowlist_digest(allow),
        files,
    })
}

/// Whether `rec`'s verdict was made by this scanner with this allowlist
/// (else it is due for a rescan).
pub fn current(rec: &VersionRecord) -> bool {
    rec.scan.as_ref().is_some_and(|s| {
        s.scanner == vault_scan::VERSION
            && s.allowlist == allowlist_digest(vault_scan::DEFAULT_ALLOWLIST)
    })
}

/// Scan a committed version again and replace its verdict, recorded in
/// the audit log with the change (`scan_rescan`).
pub async fn rescan(v: &Arc<Vault>, rec: &VersionRecord) -> Result<ScanRecord> {
    let list = rec
        .files
        .iter()
        .map(|f| (f.entry.path.clone(), f.entry.size, f.blob.clone()))
        .collect();
    let scanned = scan_files(v, list).await?;
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

/// Rescan every version an alias points at whose verdict is missing or
/// was made by another scanner or allowlist: what deploy jobs pull is
/// always judged by the scanner running now. Run at start-up, in the
/// background; a failure is logged and the version keeps its verdict.
pub async fn rescan_aliased(v: Arc<Vault>) {
    let v2 = v.clone();
    let due = super::error::blocking(move || {
        let mut due = Vec::new();
        for (art, _) in v2.meta.list("")? {
            for a in v2.meta.aliases(&art.name)? {
                if let Some(rec) = v2.meta.version(&art.name, a.version)? {
                    if !current(&rec) && !due.iter().any(|d: &VersionRecord| d.digest == rec.digest)
                    {
                        due.push(rec);
                    }
                }
            }
        }
        Ok(due)
    })
    .await;
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
