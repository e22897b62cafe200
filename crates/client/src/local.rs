//! Local files: hashing, walking a tree (to push, and to verify a pulled
//! one), the digests of files to push.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use vault_api::FileEntry;

use crate::destination::MANIFEST_DIR;
use crate::{Error, Result};

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

/// How a tree walk treats a name that is not UTF-8.
#[derive(Clone, Copy)]
pub(crate) enum Names {
    /// As an error (push: a manifest path must be the file's real name).
    Strict,
    /// Shown lossily (verify: reporting it is what matters).
    Lossy,
}

/// Walk the tree under the directory `root` without following symlinks,
/// skipping mlvault's own folder at its top. `visit` gets every entry that
/// is not a directory: its path, its `/`-separated path relative to `root`
/// and its type. A folder that cannot be listed stops the walk with an error.
pub(crate) fn walk(
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
