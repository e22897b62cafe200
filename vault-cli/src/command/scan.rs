//! `vault-cli scan`: the admission scan, offline.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use vault_scan::{FileReport, Verdict};

use super::{output, Exit, ExitStatus, Global};
use crate::cli::{ScanAllowArgs, ScanArgs};

#[derive(Serialize)]
struct Scan {
    scanner: &'static str,
    verdict: Verdict,
    files: Vec<FileReport>,
}

/// Every regular file under `path` (itself if it is one), in name order;
/// a symbolic link is not followed, nor a special file read: both are
/// reported refused.
fn files(path: &Path, out: &mut Vec<PathBuf>, refused: &mut Vec<FileReport>) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    if meta.file_type().is_symlink() {
        refused.push(vault_scan::refused_link(&path.display().to_string()));
    } else if meta.is_dir() {
        let mut entries = std::fs::read_dir(path)
            .with_context(|| format!("cannot list `{}`", path.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("cannot list `{}`", path.display()))?;
        entries.sort();
        for e in entries {
            files(&e, out, refused)?;
        }
    } else if meta.is_file() {
        out.push(path.to_path_buf());
    } else {
        refused.push(vault_scan::refused_special(&path.display().to_string()));
    }
    Ok(())
}

pub fn scan(g: &Global, a: ScanArgs) -> Result<()> {
    let (mut paths, mut refused) = (Vec::new(), Vec::new());
    for p in &a.paths {
        files(p, &mut paths, &mut refused)?;
    }
    let mut reports = Vec::with_capacity(paths.len());
    for p in &paths {
        let mut f =
            std::fs::File::open(p).with_context(|| format!("cannot open `{}`", p.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("cannot read `{}`", p.display()))?
            .len();
        reports.push(vault_scan::scan(&p.display().to_string(), &mut f, len));
    }
    // What a file makes its loader read beside it must be scanned too.
    vault_scan::check_references(&mut reports);
    reports.extend(refused);
    let verdict = reports
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Pass);
    let result = Scan {
        scanner: vault_scan::VERSION,
        verdict,
        files: reports,
    };
    output(g, &result, || {
        let mut s = String::new();
        for r in &result.files {
            s.push_str(&format!(
                "{}: {} ({})\n",
                r.path,
                word(r.verdict),
                r.format.name()
            ));
            for f in &r.findings {
                s.push_str(&format!(
                    "  {} {}: {}\n",
                    word(f.severity),
                    f.code,
                    f.message
                ));
            }
        }
        s.push_str(&format!(
            "{} file(s): {} ({})",
            result.files.len(),
            word(verdict),
            vault_scan::VERSION
        ));
        s
    })?;
    match verdict {
        Verdict::Pass | Verdict::Warn => Ok(()),
        v => Err(Exit {
            status: ExitStatus::Integrity,
            message: format!("scan verdict: {}", word(v)),
        }
        .into()),
    }
}

fn word(v: Verdict) -> &'static str {
    v.as_str()
}

/// `vault-cli scan-allow`: show or change a namespace's allowlist extension.
pub async fn allow(g: &Global, c: &vault_client::Client, a: ScanAllowArgs) -> Result<()> {
    let list = if a.imports.is_empty() && !a.clear {
        c.scan_allowlist(&a.namespace).await?
    } else {
        let reason = a.reason.clone().ok_or_else(|| Exit {
            status: ExitStatus::Usage,
            message: "changing an allowlist needs --reason TEXT".into(),
        })?;
        c.set_scan_allowlist(&vault_api::ScanAllowRequest {
            namespace: a.namespace.clone(),
            imports: a.imports.clone(),
            reason,
        })
        .await?
    };
    output(g, &list, || {
        let mut s = if list.imports.is_empty() {
            format!(
                "{}: the default allowlist ({})",
                list.namespace, list.allowlist
            )
        } else {
            format!(
                "{}: the default allowlist and {} more ({}), extension {} by {}: {}",
                list.namespace,
                list.imports.len(),
                list.allowlist,
                list.extension,
                list.by,
                list.reason
            )
        };
        for i in &list.imports {
            s.push_str(&format!("\n  {i}"));
        }
        if list.rescans > 0 {
            s.push_str(&format!(
                "\n{} aliased version(s) are being rescanned",
                list.rescans
            ));
        }
        s
    })
}
