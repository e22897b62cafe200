//! Descriptor-relative file operations under a pull's destination.
//!
//! Someone who may write into a shared destination can plant a symbolic
//! link anywhere under it (`.mlvault`, a sub-folder of the artifact) or
//! swap one in while a pull runs, so that a write "into the destination"
//! lands outside it. Every folder below the destination is therefore
//! opened one component at a time relative to its parent's descriptor with
//! `O_NOFOLLOW | O_DIRECTORY`, and files are created, renamed and removed
//! relative to those descriptors (`openat`, `renameat`, `unlinkat`): a
//! symbolic link anywhere below the destination is refused, never
//! followed, whenever it appears. The destination itself is the caller's
//! choice of path and may be reached through a link.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{mkdirat, openat, renameat, unlinkat, AtFlags, Mode, OFlags, CWD};

use crate::{Error, Result};

/// An open folder at or below the destination.
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Its path, for messages only.
    shown: PathBuf,
}

fn refuse(path: &Path) -> Error {
    Error::Integrity(format!(
        "refusing `{}`: a symbolic link or non-folder inside the destination could lead outside it",
        path.display()
    ))
}

impl Dir {
    /// Open the destination folder itself.
    pub(crate) fn root(path: &Path) -> Result<Dir> {
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(format!("cannot open `{}`", path.display()), e.into()))?;
        Ok(Dir {
            fd,
            shown: path.to_path_buf(),
        })
    }

    /// The folder `rel` (`/`-separated, already a checked manifest path or
    /// a fixed name) below this one, created when missing if `create`.
    /// `Ok(None)` when it is missing and not created.
    pub(crate) fn sub(&self, rel: &str, create: bool) -> Result<Option<Dir>> {
        let mut cur = Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("cannot duplicate a descriptor", e))?,
            shown: self.shown.clone(),
        };
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            let shown = cur.shown.join(seg);
            if create {
                match mkdirat(&cur.fd, seg, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => {
                        return Err(Error::io(
                            format!("cannot create `{}`", shown.display()),
                            e.into(),
                        ))
                    }
                }
            }
            let fd = match openat(
                &cur.fd,
                seg,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if !create => return Ok(None),
                Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                    return Err(refuse(&shown))
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("cannot open `{}`", shown.display()),
                        e.into(),
                    ))
                }
            };
            cur = Dir { fd, shown };
        }
        Ok(Some(cur))
    }

    /// Like [`Dir::sub`] with `create`.
    pub(crate) fn make(&self, rel: &str) -> Result<Dir> {
        self.sub(rel, true)?
            .ok_or_else(|| Error::Local(format!("`{rel}` vanished while it was created")))
    }

    /// A path naming `name` in this folder through the open descriptor
    /// (`/proc/self/fd/N/name` on Linux), for code that opens by path: the
    /// folder is not looked up by name again, so a link swapped in above
    /// it changes nothing. Open what it names with `O_NOFOLLOW`. Elsewhere
    /// the plain path.
    pub(crate) fn anchored(&self, name: &str) -> PathBuf {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let proc = Path::new("/proc/self/fd");
            if proc.is_dir() {
                return proc.join(self.fd.as_raw_fd().to_string()).join(name);
            }
        }
        self.shown.join(name)
    }

    /// Its path, for messages.
    pub(crate) fn shown(&self) -> &Path {
        &self.shown
    }

    /// Create `name` here, which must not exist (a link there is refused).
    pub(crate) fn create_new(&self, name: &str) -> Result<File> {
        let fd = openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| {
            Error::io(
                format!("cannot create `{}`", self.shown.join(name).display()),
                e.into(),
            )
        })?;
        Ok(File::from(fd))
    }

    /// Rename `name` here to `to_name` in `to` (a link at `to_name` is
    /// replaced, not followed).
    pub(crate) fn rename(&self, name: &str, to: &Dir, to_name: &str) -> Result<()> {
        renameat(&self.fd, name, &to.fd, to_name).map_err(|e| {
            Error::io(
                format!(
                    "cannot move into place `{}`",
                    to.shown.join(to_name).display()
                ),
                e.into(),
            )
        })
    }

    /// Remove the file (or link) `name` here.
    pub(crate) fn remove_file(&self, name: &str) -> io::Result<()> {
        unlinkat(&self.fd, name, AtFlags::empty()).map_err(Into::into)
    }

    /// Remove the empty folder `name` here.
    pub(crate) fn remove_dir(&self, name: &str) -> io::Result<()> {
        unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(Into::into)
    }

    /// What `name` here is, without following a link.
    pub(crate) fn stat(&self, name: &str) -> io::Result<rustix::fs::Stat> {
        rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(Into::into)
    }

    /// Make renames and creations in this folder durable.
    pub(crate) fn sync(&self) {
        let _ = rustix::fs::fsync(self.fd.as_fd());
    }
}

/// A manifest path split into its folder (maybe "") and file name.
pub(crate) fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_anywhere_below_is_refused_and_nothing_is_written_outside() {
        let t = tempfile::tempdir().unwrap();
        let (dest, outside) = (t.path().join("dest"), t.path().join("outside"));
        std::fs::create_dir_all(dest.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("a/b")).unwrap();
        let root = Dir::root(&dest).unwrap();
        assert!(matches!(root.sub("a/b/c", true), Err(Error::Integrity(_))));
        assert!(matches!(root.sub("a/b", false), Err(Error::Integrity(_))));
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // A link in place of a file is not followed by create_new.
        let a = root.make("a").unwrap();
        std::os::unix::fs::symlink(outside.join("x"), dest.join("a/f")).unwrap();
        assert!(a.create_new("f").is_err());
        assert!(!outside.join("x").exists());
        // Through the anchored path, the folder is the one opened.
        let anchored = a.anchored("g");
        std::fs::write(&anchored, b"ok").unwrap();
        assert_eq!(std::fs::read(dest.join("a/g")).unwrap(), b"ok");
        assert_eq!(split("x/y/z.bin"), ("x/y", "z.bin"));
        assert_eq!(split("z.bin"), ("", "z.bin"));
    }
}
