//! `vault-server fsck`: metadata against the blob store, offline.

use std::collections::HashSet;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::FsckArgs;
use crate::config::ServerConfig;
use crate::exit::{fail, ExitStatus};
use crate::vault::Layout;

#[derive(Debug, Default, Serialize)]
struct Findings {
    versions: usize,
    blob_records: usize,
    objects: usize,
    /// Objects no record names (left by a crash mid-upload, or a failed delete).
    orphaned_objects: Vec<String>,
    /// Records whose object is missing.
    missing_objects: Vec<String>,
    /// Version files naming a blob record that does not exist.
    dangling_references: Vec<String>,
    /// Upload sessions (and their pending blobs) left by interrupted pushes.
    stale_sessions: Vec<String>,
    /// Partly written blob files (local backend) left by a crash mid-write.
    staging_files: Vec<String>,
    repaired: bool,
}

pub fn run(a: FsckArgs) -> Result<()> {
    let layout = Layout::new(&a.data_dir);
    if !layout.marker().exists() {
        return Err(fail(
            ExitStatus::Usage,
            format!(
                "`{}` is not an mlvault data directory",
                a.data_dir.display()
            ),
        ));
    }
    let config = ServerConfig::load(a.config.as_deref())?;
    let meta = crate::vault::open_meta(&layout, &config.metadata)
        .map_err(|e| {
            fail(
                ExitStatus::Failure,
                format!("cannot open the metadata (is the server still running?): {e:#}"),
            )
        })?
        .store;
    let blobs = crate::storage::blob_store(&config.storage, &layout.blobs())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut f = Findings::default();
    let objects: HashSet<String> = rt
        .block_on(blobs.list_ids())
        .context("cannot list the blob store")?
        .into_iter()
        .collect();
    let records = meta.list_blobs()?;
    let known: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    f.objects = objects.len();
    f.blob_records = records.len();
    let mut orphans: Vec<String> = objects
        .iter()
        .filter(|o| !known.contains(o.as_str()))
        .cloned()
        .collect();
    orphans.sort();
    f.orphaned_objects = orphans;
    f.missing_objects = records
        .iter()
        .filter(|r| r.pending_session.is_none() && !objects.contains(&r.id))
        .map(|r| r.id.clone())
        .collect();
    for (_, versions) in meta.list("")? {
        for v in versions {
            f.versions += 1;
            for file in &v.files {
                if !known.contains(file.blob.as_str()) {
                    f.dangling_references
                        .push(format!("{}:{} {}", v.name, v.version, file.entry.path));
                }
            }
        }
    }
    let sessions = meta.list_sessions()?;
    f.stale_sessions = sessions.iter().map(|s| s.id.clone()).collect();
    let staging = blobs.staging_files()?;
    f.staging_files = staging.iter().map(|p| p.display().to_string()).collect();
    if a.repair {
        for s in &sessions {
            for b in meta.abandon_session(&s.id)? {
                rt.block_on(blobs.delete(&b.id))?;
            }
        }
        // Orphans: listed again, after the sessions' blobs went.
        let known: HashSet<String> = meta.list_blobs()?.into_iter().map(|r| r.id).collect();
        for o in &f.orphaned_objects {
            if !known.contains(o) {
                rt.block_on(blobs.delete(o))?;
            }
        }
        for p in &staging {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove `{}`", p.display()))
                }
                _ => {}
            }
        }
        f.repaired = true;
    }
    let problems = f.orphaned_objects.len()
        + f.missing_objects.len()
        + f.dangling_references.len()
        + f.stale_sessions.len()
        + f.staging_files.len();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&f)?);
    } else {
        println!(
            "{} versions, {} blob records, {} objects: {} orphaned objects, {} missing objects, {} dangling references, {} stale upload sessions, {} staging files{}",
            f.versions,
            f.blob_records,
            f.objects,
            f.orphaned_objects.len(),
            f.missing_objects.len(),
            f.dangling_references.len(),
            f.stale_sessions.len(),
            f.staging_files.len(),
            if a.repair { " (repaired: orphans, stale sessions and staging files removed)" } else { "" }
        );
    }
    // Missing objects and dangling references are data loss: exit 5. Orphans
    // and stale sessions are only clutter.
    if !f.missing_objects.is_empty() || !f.dangling_references.is_empty() {
        return Err(fail(
            ExitStatus::Integrity,
            "metadata names blobs that are gone",
        ));
    }
    if problems > 0 && !a.repair {
        return Err(fail(
            ExitStatus::Failure,
            "run with --repair to remove orphans, stale sessions and staging files",
        ));
    }
    Ok(())
}
