//! Local files: hashing, walking a tree to push, safe destination paths,
//! re-verifying a pulled directory.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use vault_api::FileEntry;
use vault_manifest::{parse_envelope, Manifest};

use crate::beneath::Dir;
use crate::{Error, Result};

/// Folder inside a pull destination that keeps the verified manifest.
pub const MANIFEST_DIR: &str = ".mlvault";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const REPORT_FILE: &str = "report.json";

/// Where a pull keeps the anonymization report of the version it wrote.
pub(crate) fn report_path(dest: &Path) -> PathBuf {
    dest.join(MANIFEST_DIR).join(REPORT_FILE)
}

/// SHA-256 (hex) and size of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open `{}`", path.display()), e))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n: u64 = 0;
    loop {
        let k = f
            .read(&mut buf)
            .map_err(|e| Error::io(format!("cannot read `{}`", path.display()), e))?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), n))
}

/// The files to push from `root` (a file or a directory), with their paths
/// relative to it. Symlinks are refused rather than followed.
pub(crate) fn collect(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let meta = fs::symlink_metadata(root)
        .map_err(|e| Error::io(format!("cannot read `{}`", root.display()), e))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::Usage(format!("`{}` has no UTF-8 file name", root.display())))?;
        return Ok(vec![(root.to_path_buf(), name.to_owned())]);
    }
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "`{}` is neither a file nor a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    walk(root, Names::Strict, |path, rel, ft| {
        if ft.is_symlink() {
            return Err(Error::Usage(format!(
                "`{}` is a symbolic link; push does not follow links",
                path.display()
            )));
        }
        if ft.is_file() {
            // The server refuses these too; saying so before any byte is
            // sent names the local file.
            vault_manifest::validate_path(&rel)
                .map_err(|e| Error::Usage(format!("cannot push `{}`: {e}", path.display())))?;
            out.push((path, rel));
        }
        Ok(())
    })?;
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Refuse a manifest path that is reserved or that would leave `dest`
/// through an existing symlink (checked on every existing component).
pub(crate) fn safe_destination(dest: &Path, rel: &str) -> Result<PathBuf> {
    vault_manifest::validate_path(rel).map_err(|e| Error::Integrity(e.to_string()))?;
    if rel == MANIFEST_DIR || rel.starts_with(&format!("{MANIFEST_DIR}/")) {
        return Err(Error::Integrity(format!(
            "manifest path `{rel}` is reserved for mlvault's own records"
        )));
    }
    let mut p = dest.to_path_buf();
    for seg in rel.split('/') {
        p.push(seg);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Integrity(format!(
                    "refusing to write `{rel}`: `{}` is a symbolic link that could lead outside the destination",
                    p.display()
                )))
            }
            _ => {}
        }
    }
    Ok(p)
}

pub(crate) fn manifest_path(dest: &Path) -> PathBuf {
    dest.join(MANIFEST_DIR).join(MANIFEST_FILE)
}

/// The manifest a destination was last pulled with, if it holds a readable
/// one.
pub(crate) fn previous_manifest(dest: &Path) -> Option<Manifest> {
    let text = fs::read_to_string(manifest_path(dest)).ok()?;
    parse_envelope(&text).ok().map(|(_, m)| m)
}

/// How a tree walk treats a name that is not UTF-8.
#[derive(Clone, Copy)]
enum Names {
    /// As an error (push: a manifest path must be the file's real name).
    Strict,
    /// Shown lossily (verify: reporting it is what matters).
    Lossy,
}

/// Walk the tree under the directory `root` without following symlinks,
/// skipping mlvault's own folder at its top. `visit` gets every entry that
/// is not a directory: its path, its `/`-separated path relative to `root`
/// and its type. A folder that cannot be listed stops the walk with an error.
fn walk(
    root: &Path,
    names: Names,
    mut visit: impl FnMut(PathBuf, String, fs::FileType) -> Result<()>,
) -> Result<()> {
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let listing = |e| Error::io(format!("cannot list `{}`", dir.display()), e);
        for entry in fs::read_dir(&dir).map_err(listing)? {
            let entry = entry.map_err(listing)?;
            let name = match (entry.file_name().into_string(), names) {
                (Ok(n), _) => n,
                (Err(n), Names::Lossy) => n.to_string_lossy().into_owned(),
                (Err(n), Names::Strict) => {
                    return Err(Error::Usage(format!(
                        "file name {n:?} in `{}` is not UTF-8",
                        dir.display()
                    )))
                }
            };
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| Error::io(format!("cannot stat `{}`", path.display()), e))?;
            let top = rel.is_empty();
            let rel_path = if top { name } else { format!("{rel}/{name}") };
            if !ft.is_dir() {
                visit(path, rel_path, ft)?;
            } else if !(top && rel_path == MANIFEST_DIR) {
                stack.push((path, rel_path));
            }
        }
    }
    Ok(())
}

/// Everything under `dir` that is not a directory (files, symlinks, other
/// special files) and not one of `expected`, as `/`-separated paths
/// relative to `dir`, sorted.
pub(crate) fn unexpected_entries(dir: &Path, expected: &HashSet<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, Names::Lossy, |_, rel, _| {
        if !expected.contains(rel.as_str()) {
            out.push(rel);
        }
        Ok(())
    })?;
    out.sort();
    Ok(out)
}

/// After a pull of `now` into `dest`, remove the files of `before` (the
/// version `dest` held) that `now` does not have, so that no file of an
/// older version is left for a loader to pick up. A file changed since it
/// was pulled (another size, or no longer a plain file) is kept. Emptied
/// folders go too. Returns the removed and the kept paths.
pub(crate) fn remove_previous(
    root: &Dir,
    before: &Manifest,
    now: &Manifest,
) -> (Vec<String>, Vec<String>) {
    let current: HashSet<&str> = now.files().iter().map(|f| f.path.as_str()).collect();
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    for f in before.files() {
        if current.contains(f.path.as_str()) || vault_manifest::validate_path(&f.path).is_err() {
            continue;
        }
        let (folder, name) = crate::beneath::split(&f.path);
        // A folder on the way that is missing: nothing to remove; one
        // replaced by a link: not followed, the file counts as changed.
        let dir = match root.sub(folder, false) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(_) => {
                kept.push(f.path.clone());
                continue;
            }
        };
        match dir.stat(name) {
            Ok(st)
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    == rustix::fs::FileType::RegularFile
                    && st.st_size as u64 == f.size =>
            {
                if dir.remove_file(name).is_ok() {
                    removed.push(f.path.clone());
                    remove_empty_folders(root, folder);
                } else {
                    kept.push(f.path.clone());
                }
            }
            Ok(_) => kept.push(f.path.clone()),
            Err(_) => {}
        }
    }
    (removed, kept)
}

/// Remove `folder` (a path below `root`) and its parents while they are
/// empty (`rmdir` fails on a folder that still holds anything).
fn remove_empty_folders(root: &Dir, folder: &str) {
    let mut rest = folder;
    while !rest.is_empty() {
        let (up, last) = crate::beneath::split(rest);
        let Ok(Some(parent)) = root.sub(up, false) else {
            return;
        };
        if parent.remove_dir(last).is_err() {
            return;
        }
        rest = up;
    }
}

/// Result of [`verify_dir`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    /// Artifact name.
    pub name: String,
    /// Version.
    pub version: u64,
    /// Manifest digest.
    pub digest: String,
    /// Files checked.
    pub files: usize,
    /// Bytes hashed.
    pub bytes: u64,
    /// Problems found (empty when intact).
    pub problems: Vec<String>,
    /// The anonymization report, when the manifest signs one and the copy
    /// in the destination matches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
}

/// Re-check a pulled directory against the manifest stored in it: every
/// file's size and SHA-256, and that nothing else is there (a file added
/// beside a model, such as code a loader would run, is a problem too); when
/// `trusted` keys are given, the manifest's signature too.
pub fn verify_dir(
    dir: &Path,
    trusted: &[vault_manifest::PublicKey],
) -> Result<(VerifyReport, Manifest)> {
    let mp = manifest_path(dir);
    let text = fs::read_to_string(&mp).map_err(|e| {
        Error::io(
            format!(
                "`{}` holds no mlvault manifest (was it pulled with vault-cli?)",
                dir.display()
            ),
            e,
        )
    })?;
    let (env, m) = parse_envelope(&text).map_err(|e| Error::Integrity(e.to_string()))?;
    let mut problems = Vec::new();
    if !trusted.is_empty() {
        if let Err(e) = env.verify_any(trusted) {
            problems.push(e.to_string());
        }
    }
    let mut bytes = 0;
    let expected: HashSet<&str> = m.files().iter().map(|f| f.path.as_str()).collect();
    // A folder verify cannot list could hide a file: that is a problem too.
    match unexpected_entries(dir, &expected) {
        Ok(extra) => problems.extend(
            extra
                .into_iter()
                .map(|p| format!("`{p}`: not in the manifest")),
        ),
        Err(e) => problems.push(e.to_string()),
    }
    for f in m.files() {
        let p = match safe_destination(dir, &f.path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        match hash_file(&p) {
            Ok((sha, size)) => {
                bytes += size;
                if size != f.size {
                    problems.push(format!(
                        "`{}`: size {size}, manifest says {}",
                        f.path, f.size
                    ));
                } else if sha != f.sha256 {
                    problems.push(format!("`{}`: SHA-256 differs from the manifest", f.path));
                }
            }
            Err(e) => problems.push(format!("`{}`: {e}", f.path)),
        }
    }
    let p = m.predicate();
    // The job report travels beside the manifest and is signed in it.
    let mut report = None;
    if let Some(want) = &p.lineage.job_report {
        let rp = report_path(dir);
        match fs::read(&rp)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) if vault_manifest::report_digest(&r) == *want => report = Some(r),
            Ok(_) => problems.push(format!(
                "`{MANIFEST_DIR}/{REPORT_FILE}`: the job report does not match the digest in the signed manifest"
            )),
            Err(e) => problems.push(format!(
                "`{MANIFEST_DIR}/{REPORT_FILE}`: the signed manifest names a job report that cannot be read: {e}"
            )),
        }
    }
    Ok((
        VerifyReport {
            name: p.name.to_string(),
            version: p.version,
            digest: vault_manifest::digest_of(text.as_bytes()),
            files: m.files().len(),
            bytes,
            problems,
            report,
        },
        m,
    ))
}

/// Entries for a set of collected files, hashing `parallel` files at once;
/// with a cache, files unchanged since they were last hashed reuse their
/// recorded digest. Returns the entries and the bytes hashed.
pub(crate) async fn entries(
    files: &[(PathBuf, String)],
    parallel: usize,
    cache: Option<&crate::Cache>,
    hash_later: Option<u64>,
) -> Result<(Vec<FileEntry>, u64)> {
    use futures_util::StreamExt;
    let jobs = files.iter().map(|(p, rel)| {
        let (p, rel, cache) = (p.clone(), rel.clone(), cache.cloned());
        async move {
            tokio::task::spawn_blocking(move || digest_of(&p, rel, cache.as_ref(), hash_later))
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))?
        }
    });
    // `buffered` keeps the order of `files`.
    let mut out = Vec::with_capacity(files.len());
    let mut hashed = 0;
    let mut results = futures_util::stream::iter(jobs).buffered(parallel);
    while let Some(r) = results.next().await {
        let (entry, n) = r?;
        hashed += n;
        out.push(entry);
    }
    Ok((out, hashed))
}

/// Now, in nanoseconds since the Unix epoch (when a hash began, for the
/// cache's racy-file rule).
pub(crate) fn unix_now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// One file's entry, and the bytes read to hash it (0 when `cache` knew it).
/// A file of at least `hash_later` bytes that the cache does not know is
/// not read here: its entry has an empty digest, found while it uploads.
fn digest_of(
    p: &Path,
    rel: String,
    cache: Option<&crate::Cache>,
    hash_later: Option<u64>,
) -> Result<(FileEntry, u64)> {
    let stat = |p: &Path| {
        fs::metadata(p).map_err(|e| Error::io(format!("cannot stat `{}`", p.display()), e))
    };
    let before = stat(p)?;
    if let Some(sha256) = cache.and_then(|c| c.known_digest(&before)) {
        let size = before.len();
        return Ok((
            FileEntry {
                path: rel,
                size,
                sha256,
            },
            0,
        ));
    }
    if hash_later.is_some_and(|min| before.len() >= min) {
        return Ok((
            FileEntry {
                path: rel,
                size: before.len(),
                sha256: String::new(),
            },
            0,
        ));
    }
    let started_ns = unix_now_ns();
    let (sha256, size) = hash_file(p)?;
    if let (Some(c), Ok(after)) = (cache, stat(p)) {
        if size == before.len() {
            c.remember_digest(&before, &after, started_ns, &sha256);
        }
    }
    Ok((
        FileEntry {
            path: rel,
            size,
            sha256,
        },
        size,
    ))
}
