//! The local content-addressed cache: verified files by SHA-256, with the
//! (size, mtime, inode) recorded when each was verified, so a warm pull is a
//! `stat`, not a download or a re-hash. Safe for several processes at once:
//! each object is filled under an exclusive file lock and published by an
//! atomic rename.
//!
//! ```text
//! CACHE/objects/<sha256>        verified content, read-only
//! CACHE/objects/<sha256>.state  {"size", "mtime_ns", "ino"} at verification
//! CACHE/partial/<sha256>        download in progress (resumable)
//! CACHE/locks/<sha256>          lock file
//! CACHE/hashes/<dev>-<ino>      digest of a pushed file, with its stat
//! ```
//!
//! Pulled files are hard links to their objects where the file system
//! allows, so an object whose link count is above one is in use by a pulled
//! directory; [`Cache::prune`] removes the others (and stale partial
//! downloads), which frees their space. Removing a linked object frees
//! nothing until its pulled copies go too, and the next pull of it
//! downloads it again.
//!
//! Push reuses `hashes/`: a local file whose device, inode, size, mtime and
//! ctime all match what was recorded when it was hashed is not read again.
//! A digest is recorded only when the file did not change while it was
//! hashed and its last change was at least [`RACY_NS`] before hashing began
//! (git's rule for "racily clean" files), so a write that lands in the same
//! timestamp tick as the hash cannot go unseen. Changing content without
//! changing size and mtime still changes ctime, which userspace cannot set.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What a cache holds ([`Cache::status`]); the shape of
/// `vault-cli cache status --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStatus {
    /// The cache directory.
    pub dir: PathBuf,
    /// Verified objects, and their bytes.
    pub objects: u64,
    /// Bytes of all objects.
    pub object_bytes: u64,
    /// Objects that a pulled directory also links (in use).
    pub linked: u64,
    /// Their bytes.
    pub linked_bytes: u64,
    /// Objects nothing else links: what `prune` removes.
    pub unlinked: u64,
    /// Their bytes: the space `prune` frees.
    pub unlinked_bytes: u64,
    /// Interrupted downloads kept to resume.
    pub partial: u64,
    /// Their bytes.
    pub partial_bytes: u64,
    /// Recorded digests of pushed files.
    pub digest_records: u64,
}

/// What [`Cache::prune`] removed; the shape of `vault-cli cache prune --json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// The cache directory.
    pub dir: PathBuf,
    /// Objects removed.
    pub removed_objects: u64,
    /// Partial downloads removed.
    pub removed_partial: u64,
    /// Bytes freed (objects nothing else linked, and partials).
    pub freed_bytes: u64,
    /// Objects kept because a pulled directory links them.
    pub kept_linked: u64,
    /// Objects and partials skipped because a pull was using them.
    pub busy: u64,
    /// Recorded digests of pushed files removed (with `all`).
    pub removed_digest_records: u64,
}

/// A partial download untouched for this long is abandoned: `prune`
/// removes it (a pull of it starts over).
pub const PARTIAL_STALE_SECS: u64 = 3600;

/// An object's name: 64 lowercase hex digits.
fn is_sha(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Default location: `$MLVAULT_CACHE_DIR`, else `$XDG_CACHE_HOME/mlvault/files`,
/// else `~/.cache/mlvault/files`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MLVAULT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("mlvault/files");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/mlvault/files")
}

/// How long before hashing began a file must have last changed for its
/// digest to be recorded (file system timestamps can be this coarse).
pub const RACY_NS: i128 = 2_000_000_000;

/// A file timestamp in nanoseconds since the Unix epoch.
fn nanos(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// A pushed file's stat when its digest was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Hashed {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    sha256: String,
}

impl Hashed {
    fn of(m: &fs::Metadata, sha256: String) -> Self {
        Hashed {
            size: m.len(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
            sha256,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct State {
    size: u64,
    mtime_ns: i128,
    ino: u64,
}

impl State {
    fn of(m: &fs::Metadata) -> Self {
        State {
            size: m.len(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ino: m.ino(),
        }
    }
}

/// A cache directory.
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} `{}`", p.display()), e)
}

impl Cache {
    /// Open (creating, private to this user) a cache at `root`. A cache
    /// that another user owns or may write to is refused: its records decide
    /// what a pull links into place and what a push declares without
    /// reading the file, so nobody else may be able to plant them.
    pub fn open(root: &Path) -> Result<Self> {
        let uid = rustix::process::geteuid().as_raw();
        let mut mk = fs::DirBuilder::new();
        mk.recursive(true).mode(0o700);
        for d in ["", "objects", "partial", "locks", "hashes"] {
            let p = root.join(d);
            mk.create(&p)
                .map_err(|e| io("cannot create cache directory", &p, e))?;
            let m = fs::metadata(&p).map_err(|e| io("cannot stat", &p, e))?;
            if m.uid() != uid || m.mode() & 0o022 != 0 {
                return Err(Error::Usage(format!(
                    "cache directory `{}` is owned by another user or writable by group or others; make it private (chmod go-w) or choose another with --cache-dir",
                    p.display()
                )));
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Where a verified object lives.
    pub fn object(&self, sha: &str) -> PathBuf {
        self.root.join("objects").join(sha)
    }

    fn state_path(&self, sha: &str) -> PathBuf {
        self.root.join("objects").join(format!("{sha}.state"))
    }

    /// The resumable download file of an object.
    pub fn partial(&self, sha: &str) -> PathBuf {
        self.root.join("partial").join(sha)
    }

    /// Take the object's exclusive lock (blocks while another process
    /// fills it). Released when the returned file is dropped.
    pub fn lock(&self, sha: &str) -> Result<fs::File> {
        let (f, p) = self.lock_file(sha)?;
        f.lock().map_err(|e| io("cannot lock", &p, e))?;
        Ok(f)
    }

    /// The object's lock file, opened. Lock files are never removed: a
    /// process may have one open, and a new file under the same name would
    /// let two holders in at once.
    fn lock_file(&self, sha: &str) -> Result<(fs::File, PathBuf)> {
        let p = self.root.join("locks").join(sha);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| io("cannot open lock", &p, e))?;
        Ok((f, p))
    }

    fn recorded(&self, sha: &str) -> Option<State> {
        serde_json::from_slice(&fs::read(self.state_path(sha)).ok()?).ok()
    }

    /// Is `path` exactly the verified object (same inode, size and mtime as
    /// recorded at verification)? A `stat`, no hashing.
    pub fn is_current(&self, sha: &str, size: u64, path: &Path) -> bool {
        match (self.recorded(sha), fs::symlink_metadata(path)) {
            (Some(rec), Ok(m)) => rec.size == size && State::of(&m) == rec,
            _ => false,
        }
    }

    /// Is the object present and unchanged since it was verified? With
    /// `rehash`, hash it again instead of trusting the record (and drop it if
    /// it no longer matches).
    pub fn verified(&self, sha: &str, size: u64, rehash: bool) -> Result<bool> {
        let obj = self.object(sha);
        if !obj.exists() {
            return Ok(false);
        }
        if !rehash && self.is_current(sha, size, &obj) {
            return Ok(true);
        }
        let (h, n) = crate::hash_file(&obj)?;
        if h == sha && n == size {
            self.record(sha)?;
            return Ok(true);
        }
        // Corrupted on disk: forget it so it is fetched again.
        let _ = fs::remove_file(&obj);
        let _ = fs::remove_file(self.state_path(sha));
        Ok(false)
    }

    fn record(&self, sha: &str) -> Result<()> {
        let obj = self.object(sha);
        let m = fs::metadata(&obj).map_err(|e| io("cannot stat", &obj, e))?;
        let st = self.state_path(sha);
        let tmp = st.with_extension(format!("state.{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec(&State::of(&m)).unwrap_or_default())
            .and_then(|_| fs::rename(&tmp, &st))
            .map_err(|e| io("cannot write", &st, e))
    }

    fn hashed_path(&self, m: &fs::Metadata) -> PathBuf {
        self.root
            .join("hashes")
            .join(format!("{:x}-{:x}", m.dev(), m.ino()))
    }

    /// The SHA-256 recorded for the file `m` describes, if the file has not
    /// changed since (same device, inode, size, mtime and ctime).
    pub(crate) fn known_digest(&self, m: &fs::Metadata) -> Option<String> {
        let rec: Hashed = serde_json::from_slice(&fs::read(self.hashed_path(m)).ok()?).ok()?;
        let valid = rec.sha256.len() == 64 && rec.sha256.bytes().all(|b| b.is_ascii_hexdigit());
        (valid && rec == Hashed::of(m, rec.sha256.clone())).then_some(rec.sha256)
    }

    /// Record `sha` for a file stat'ed as `before` when hashing began at
    /// `started_ns` (Unix time) and as `after` when it ended; skipped when
    /// the file changed meanwhile or too recently (see [`RACY_NS`]). Best
    /// effort: a cache that cannot be written only costs a re-hash.
    pub(crate) fn remember_digest(
        &self,
        before: &fs::Metadata,
        after: &fs::Metadata,
        started_ns: i128,
        sha: &str,
    ) {
        let rec = Hashed::of(before, sha.to_owned());
        if (before.dev(), before.ino()) != (after.dev(), after.ino())
            || Hashed::of(after, sha.to_owned()) != rec
            || started_ns - rec.mtime_ns.max(rec.ctime_ns) < RACY_NS
        {
            return;
        }
        let p = self.hashed_path(before);
        let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
        let written = serde_json::to_vec(&rec)
            .map_err(std::io::Error::other)
            .and_then(|b| fs::write(&tmp, b))
            .and_then(|_| fs::rename(&tmp, &p));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Publish a verified, synced partial as the object.
    pub fn commit_partial(&self, sha: &str) -> Result<()> {
        let p = self.partial(sha);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o444))
            .map_err(|e| io("cannot chmod", &p, e))?;
        let obj = self.object(sha);
        fs::rename(&p, &obj).map_err(|e| io("cannot publish", &obj, e))?;
        self.record(sha)
    }

    /// Names in `sub` that are object digests, with their metadata.
    fn entries(&self, sub: &str) -> Result<Vec<(String, fs::Metadata)>> {
        let dir = self.root.join(sub);
        let rd = fs::read_dir(&dir).map_err(|e| io("cannot list", &dir, e))?;
        Ok(rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let m = e.metadata().ok()?;
                (is_sha(&name) && m.is_file()).then_some((name, m))
            })
            .collect())
    }

    /// What the cache holds.
    pub fn status(&self) -> Result<CacheStatus> {
        let mut st = CacheStatus {
            dir: self.root.clone(),
            ..CacheStatus::default()
        };
        for (_, m) in self.entries("objects")? {
            st.objects += 1;
            st.object_bytes += m.len();
            if m.nlink() > 1 {
                st.linked += 1;
                st.linked_bytes += m.len();
            } else {
                st.unlinked += 1;
                st.unlinked_bytes += m.len();
            }
        }
        for (_, m) in self.entries("partial")? {
            st.partial += 1;
            st.partial_bytes += m.len();
        }
        let hashes = self.root.join("hashes");
        st.digest_records = fs::read_dir(&hashes)
            .map_err(|e| io("cannot list", &hashes, e))?
            .count() as u64;
        Ok(st)
    }

    /// Remove the objects no pulled directory links and the partial
    /// downloads untouched for [`PARTIAL_STALE_SECS`]; with `all`, every
    /// object, partial and recorded push digest (pulled directories keep
    /// their files; later pulls and pushes download and hash again). An
    /// object or partial a running pull holds is skipped.
    pub fn prune(&self, all: bool) -> Result<PruneReport> {
        let mut r = PruneReport {
            dir: self.root.clone(),
            ..PruneReport::default()
        };
        let now = std::time::SystemTime::now();
        for (sha, _) in self.entries("objects")? {
            let Some(_lock) = self.try_lock(&sha)? else {
                r.busy += 1;
                continue;
            };
            // Under the lock no pull links it, so the count holds.
            let obj = self.object(&sha);
            let Ok(m) = fs::symlink_metadata(&obj) else {
                continue;
            };
            if m.nlink() > 1 && !all {
                r.kept_linked += 1;
                continue;
            }
            // The record goes first: an object without one is re-hashed
            // before use, never trusted.
            let _ = fs::remove_file(self.state_path(&sha));
            fs::remove_file(&obj).map_err(|e| io("cannot remove", &obj, e))?;
            r.removed_objects += 1;
            if m.nlink() == 1 {
                r.freed_bytes += m.len();
            }
        }
        for (sha, m) in self.entries("partial")? {
            let idle = m
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map_or(0, |d| d.as_secs());
            if !all && idle < PARTIAL_STALE_SECS {
                continue;
            }
            let Some(_lock) = self.try_lock(&sha)? else {
                r.busy += 1;
                continue;
            };
            let p = self.partial(&sha);
            fs::remove_file(&p).map_err(|e| io("cannot remove", &p, e))?;
            r.removed_partial += 1;
            r.freed_bytes += m.len();
        }
        if all {
            let hashes = self.root.join("hashes");
            for e in fs::read_dir(&hashes)
                .map_err(|e| io("cannot list", &hashes, e))?
                .flatten()
            {
                if fs::remove_file(e.path()).is_ok() {
                    r.removed_digest_records += 1;
                }
            }
        }
        Ok(r)
    }

    /// The object's lock if no other process holds it.
    fn try_lock(&self, sha: &str) -> Result<Option<fs::File>> {
        let (f, p) = self.lock_file(sha)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io("cannot lock", &p, e)),
        }
    }

    /// Put the object at `path`, a new name beside the destination (its
    /// staging folder), for the caller to rename into place: a hard link
    /// where possible, else a synced copy. A hard link also keeps `prune`
    /// from removing the object meanwhile.
    pub fn stage(&self, sha: &str, path: &Path) -> Result<()> {
        let obj = self.object(sha);
        let _ = fs::remove_file(path);
        if fs::hard_link(&obj, path).is_err() {
            // A new file, never through a link planted at its name.
            use std::os::unix::fs::OpenOptionsExt;
            let copied = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
                .and_then(|mut out| {
                    std::io::copy(&mut fs::File::open(&obj)?, &mut out)?;
                    out.sync_all()
                });
            copied.map_err(|e| {
                let _ = fs::remove_file(path);
                io("cannot copy to", path, e)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object as a pull leaves it: verified, read-only, with its record.
    fn object(cache: &Cache, sha: &str, bytes: &[u8]) {
        fs::write(cache.partial(sha), bytes).unwrap();
        cache.commit_partial(sha).unwrap();
    }

    #[test]
    fn prune_skips_what_a_pull_holds_and_keeps_what_is_linked() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let (held, linked, loose) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        for sha in [&held, &linked, &loose] {
            object(&cache, sha, sha.as_bytes());
        }
        cache.stage(&linked, &dir.path().join("pulled")).unwrap();
        let st = cache.status().unwrap();
        assert_eq!((st.objects, st.linked, st.unlinked), (3, 1, 2));

        // A pull filling or linking `held` holds its lock.
        let lock = cache.lock(&held).unwrap();
        let r = cache.prune(false).unwrap();
        assert_eq!((r.removed_objects, r.busy, r.kept_linked), (1, 1, 1));
        assert_eq!(r.freed_bytes, 64);
        assert!(cache.object(&held).exists() && cache.object(&linked).exists());
        assert!(!cache.object(&loose).exists());
        assert!(cache.verified(&held, 64, false).unwrap());

        drop(lock);
        let r = cache.prune(true).unwrap();
        assert_eq!((r.removed_objects, r.busy), (2, 0));
        // Only the unlinked one frees space; the pulled copy keeps its bytes.
        assert_eq!(r.freed_bytes, 64);
        assert_eq!(
            fs::read(dir.path().join("pulled")).unwrap(),
            linked.as_bytes()
        );
        assert!(!cache.verified(&linked, 64, false).unwrap());
        assert_eq!(cache.status().unwrap().objects, 0);
    }
}
