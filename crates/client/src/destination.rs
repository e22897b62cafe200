//! The pull destination and the folder mlvault keeps in it,
//! `DEST/.mlvault`: the verified manifest, the job report, and `partial/`,
//! where files are downloaded or staged until every file of a version is
//! verified. Everything a pull writes under the destination goes through
//! [`Destination`], over descriptors that never follow a link (`beneath`);
//! `verify` re-checks what a pull left.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use vault_manifest::{parse_envelope, Manifest};

use crate::beneath::Dir;
use crate::local::{hash_file, walk, Names};
use crate::{Error, Result};

/// Folder inside a pull destination that keeps the verified manifest.
pub const MANIFEST_DIR: &str = ".mlvault";
pub(crate) const MANIFEST_FILE: &str = "manifest.json";
pub(crate) const REPORT_FILE: &str = "report.json";

/// Where a pull keeps the anonymization report of the version it wrote.
pub(crate) fn report_path(dest: &Path) -> PathBuf {
    dest.join(MANIFEST_DIR).join(REPORT_FILE)
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

/// A destination opened for one pull.
pub(crate) struct Destination {
    path: PathBuf,
    root: Dir,
    meta: Dir,
    partial: Dir,
    /// `partial`, named through the open folder.
    partial_path: PathBuf,
    /// The version an earlier pull left here, if any.
    previous: Option<Manifest>,
    /// Whether a folder no pull wrote before held anything.
    held_other_files: bool,
}

impl Destination {
    /// Create `dest` if needed, check every path of `m` (reserved names,
    /// links on the way) before anything is written, and open the staging
    /// folder. Returns the destination and each file's target path.
    pub(crate) async fn open(dest: &Path, m: &Manifest) -> Result<(Self, Vec<PathBuf>)> {
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| Error::io(format!("cannot create `{}`", dest.display()), e))?;
        let targets = m
            .files()
            .iter()
            .map(|f| safe_destination(dest, &f.path))
            .collect::<Result<Vec<_>>>()?;
        let previous = previous_manifest(dest);
        // A directory no pull wrote before is not walked afterwards (it may
        // be large); one look says whether it held anything.
        let held_other_files = previous.is_none()
            && fs::read_dir(dest)
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != MANIFEST_DIR)));
        let root = Dir::root(dest)?;
        let meta = root.make(MANIFEST_DIR)?;
        let partial = meta.make("partial")?;
        let partial_path = partial.anchored("");
        Ok((
            Self {
                path: dest.to_path_buf(),
                root,
                meta,
                partial,
                partial_path,
                previous,
                held_other_files,
            },
            targets,
        ))
    }

    /// Where file `index` (SHA-256 `sha`) is staged from the cache.
    pub(crate) fn staged_path(&self, sha: &str, index: usize) -> PathBuf {
        self.partial_path.join(staged_name(sha, index))
    }

    /// Where file `index` is downloaded without a cache; kept when the pull
    /// fails, so the next one resumes it.
    pub(crate) fn partial_path(&self, sha: &str, index: usize) -> PathBuf {
        self.partial_path.join(format!("{sha}-{index}"))
    }

    /// After a failure: remove what this process staged from the cache
    /// (partial downloads stay, to be resumed).
    pub(crate) async fn discard_staged(&self) {
        remove_staged(&self.partial_path, |pid| pid == std::process::id()).await;
    }

    /// Move every verified, staged file of `m` into place.
    pub(crate) fn place_all(&self, staged: &[Option<PathBuf>], m: &Manifest) -> Result<()> {
        for (s, f) in staged.iter().zip(m.files()) {
            if let Some(s) = s {
                place(&self.root, &self.partial, s, &f.path)?;
            }
        }
        Ok(())
    }

    /// Remove what an earlier pull left here that `m` does not have, before
    /// the new manifest is written: if this stops in between, the
    /// destination fails `verify` and a new pull finishes it. Says what it
    /// did in `notes`; returns the removed paths.
    pub(crate) async fn remove_previous(
        &self,
        m: &Manifest,
        notes: &mut Vec<String>,
    ) -> Result<Vec<String>> {
        let Some(before) = &self.previous else {
            return Ok(Vec::new());
        };
        let (gone, kept) = {
            let (dest, before, now) = (self.path.clone(), before.clone(), m.clone());
            tokio::task::spawn_blocking(move || {
                Dir::root(&dest).map(|root| remove_previous(&root, &before, &now))
            })
            .await
            .map_err(|e| Error::Local(format!("a worker task failed: {e}")))??
        };
        let old = format!("{}:{}", before.predicate().name, before.predicate().version);
        let p = m.predicate();
        if !gone.is_empty() {
            notes.push(format!(
                "removed {} of {old} that {}:{} does not have",
                count_files(gone.len()),
                p.name,
                p.version
            ));
        }
        if !kept.is_empty() {
            notes.push(format!(
                "kept {} of {old} that changed since it was pulled and is not in this version: {}",
                count_files(kept.len()),
                some_of(&kept)
            ));
        }
        Ok(gone)
    }

    /// Record the version now in place: its job report first (a manifest
    /// that signs a report is never left beside a missing one), then the
    /// manifest.
    pub(crate) fn record(
        &self,
        envelope: &str,
        report: Option<&serde_json::Value>,
        promotion: Option<&crate::gate::Promotion>,
    ) -> Result<()> {
        // The promotion record of an alias pull; none for a pull by
        // number or digest (`verify --require-gate` then refuses).
        match promotion {
            Some(p) => {
                let text = serde_json::to_vec_pretty(p)
                    .map_err(|e| Error::Integrity(format!("promotion record: {e}")))?;
                write_atomic(&self.meta, crate::gate::PROMOTION_FILE, &text)?;
            }
            None => {
                let _ = self.meta.remove_file(crate::gate::PROMOTION_FILE);
            }
        }
        match report {
            Some(r) => {
                let text = serde_json::to_vec_pretty(r)
                    .map_err(|e| Error::Integrity(format!("job report: {e}")))?;
                write_atomic(&self.meta, REPORT_FILE, &text)?;
            }
            None => {
                let _ = self.meta.remove_file(REPORT_FILE);
            }
        }
        write_atomic(&self.meta, MANIFEST_FILE, envelope.as_bytes())
    }

    /// Clear the staging folder and note what else the destination holds
    /// that `m` does not name.
    pub(crate) async fn finish(self, m: &Manifest, notes: &mut Vec<String>) -> Result<()> {
        // Links a killed pull staged here would keep cache objects in use.
        if cfg!(target_os = "linux") {
            remove_staged(&self.partial_path, |pid| {
                !Path::new("/proc").join(pid.to_string()).exists()
            })
            .await;
        }
        drop(self.partial);
        let _ = self.meta.remove_dir("partial");
        if self.previous.is_some() {
            let extra = {
                let (dest, m) = (self.path.clone(), m.clone());
                tokio::task::spawn_blocking(move || {
                    let expected: HashSet<&str> =
                        m.files().iter().map(|f| f.path.as_str()).collect();
                    // Only for a note: a folder it cannot list is left to `verify`.
                    unexpected_entries(&dest, &expected).unwrap_or_default()
                })
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))?
            };
            if !extra.is_empty() {
                notes.push(format!(
                    "`{}` also holds {} not in the manifest (`vault-cli verify` reports them): {}",
                    self.path.display(),
                    count_files(extra.len()),
                    some_of(&extra)
                ));
            }
        } else if self.held_other_files {
            notes.push(format!(
                "`{}` held other files before this pull; `vault-cli verify` reports anything not in the manifest",
                self.path.display()
            ));
        }
        Ok(())
    }
}

/// The name under which file `index` (SHA-256 `sha`) is staged from the
/// cache by this process: its id in the name keeps concurrent pulls into one
/// destination apart, and tells a later pull whether its owner still runs.
fn staged_name(sha: &str, index: usize) -> String {
    format!("{sha}-{index}.staged-{}", std::process::id())
}

/// Remove the files staged from the cache in `partial_dir` by the processes
/// `owner` picks (partial downloads are left for the next pull to resume).
async fn remove_staged(partial_dir: &Path, owner: impl Fn(u32) -> bool) {
    let Ok(mut dir) = tokio::fs::read_dir(partial_dir).await else {
        return;
    };
    while let Ok(Some(e)) = dir.next_entry().await {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.rsplit_once(".staged-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(&owner) {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

/// Move a verified file staged at `staged` (in the folder `partial`) into
/// place at the manifest path `rel` below `root`, creating its folders; a
/// link anywhere on the way is refused.
fn place(root: &Dir, partial: &Dir, staged: &Path, rel: &str) -> Result<()> {
    let name = staged
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Local(format!("staged file `{}` has no name", staged.display())))?;
    let (folder, file) = crate::beneath::split(rel);
    let parent = root.make(folder)?;
    partial.rename(name, &parent, file)?;
    parent.sync();
    Ok(())
}

/// Write `bytes` to `name` in `dir` through a new temporary file and a
/// rename; a link at either name is replaced, never followed.
fn write_atomic(dir: &Dir, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = format!("{name}.tmp");
    let _ = dir.remove_file(&tmp);
    let shown = dir.shown().join(&tmp);
    let mut f = dir.create_new(&tmp)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write `{}`", shown.display()), e))?;
    dir.rename(&tmp, dir, name)?;
    dir.sync();
    Ok(())
}

/// The first few of `paths`, and how many more.
fn some_of(paths: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = paths
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        s.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    s
}

fn count_files(n: usize) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}
