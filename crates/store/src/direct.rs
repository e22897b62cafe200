//! The local blob backend's data path: blob objects written and read with
//! direct I/O (`vault-directio`) in the same layout as object_store's
//! `LocalFileSystem`, which still lists and deletes them.
//!
//! How reads go is a [`LocalReads`]. By default a blob's first read is
//! direct: it streams from the device into a buffer the allocator recycles,
//! at a steady cost, without filling the page cache with data that is read
//! once. Measured with `scripts/bench.sh 1024` (push then pull of 1 GiB over
//! loopback, median of 3, two runs each): direct reads pulled at 752 and
//! 672 MiB/s, page-cache reads at 508 and 529 MiB/s. A blob read again
//! within a while of its last read (a model a fleet of deploy jobs pulls) is
//! read through the page cache, so from then on it is served from memory
//! instead of the device; see [`LocalReads::Hot`] for the figures.
//!
//! A write goes to a staging file `<object>#<n>` (a name `LocalFileSystem`
//! does not list), is synced, renamed into place and its directory synced:
//! the same durability as `LocalFileSystem::with_fsync(true)`, without the
//! page-cache copy and the whole-object flush at the end.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use vault_directio::{Block, Reader, Writer};

use crate::{Error, Result};

/// Bytes gathered before one write of a blob object.
const BLOCK: usize = 4 << 20;

/// Chunks queued between the encrypting task and the writing thread.
const QUEUE: usize = 2;

/// How the local backend reads blob data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalReads {
    /// Every read with direct I/O, past the page cache.
    Direct,
    /// Every read through the page cache (`page_cache_reads = true`).
    PageCache,
    /// Direct, except that a blob read again within this long of its last
    /// read is read through the page cache, where it then stays while it is
    /// in demand (`hot_read_secs`, the default 600). Data read once (most
    /// dataset pulls) never fills the page cache; a model that deploy jobs
    /// keep pulling is served from memory from its second read on. On the
    /// development VM (virtio disk, 2 cores), four deploy jobs pulling one
    /// 1 GiB model at once took 4.17–4.31 s a round with every read from
    /// disk, and 4.47 s, then 2.95 and 2.99 s with hot reads (the fleet
    /// step of `scripts/bench.sh`); one `curl` of the file from the server
    /// took 0.78–0.84 s from disk and 0.34–0.36 s from the page cache.
    Hot(Duration),
}

/// Blobs read lately, for [`LocalReads::Hot`]: object path → last read.
#[derive(Debug)]
struct RecentReads {
    window: Duration,
    last: Mutex<HashMap<String, Instant>>,
}

/// Blobs remembered at most; past it, entries older than the window go,
/// and if that frees less than a quarter of the room, all of them (a hot
/// blob then takes one more direct read to be hot again). So the scan that
/// prunes runs at most once per `RECENT_MAX / 4` new blobs, not on every
/// open while the map stays nearly full of recent reads.
const RECENT_MAX: usize = 65_536;

impl RecentReads {
    /// Record a read of `object` now; whether it was also read within the
    /// window before.
    fn touch(&self, object: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = |t: &Instant| now.duration_since(*t) < self.window;
        let hot = last.get(object).is_some_and(fresh);
        if last.len() >= RECENT_MAX && !last.contains_key(object) {
            last.retain(|_, t| fresh(t));
            if last.len() > RECENT_MAX / 4 * 3 {
                last.clear();
            }
        }
        last.insert(object.to_owned(), now);
        hot
    }
}

/// [`LocalReads`] with the state hot reads keep.
#[derive(Debug, Clone)]
enum ReadMode {
    Direct,
    PageCache,
    Hot(Arc<RecentReads>),
}

/// A directory holding blob objects under their object paths.
#[derive(Debug, Clone)]
pub(crate) struct DirectDir {
    root: Arc<PathBuf>,
    reads: ReadMode,
}

fn backend(what: &str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        return Error::MissingBlob(format!("`{}`", path.display()));
    }
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return Error::Full(format!("cannot {what} `{}`: {e}", path.display()));
    }
    Error::Backend(format!("cannot {what} `{}`: {e}", path.display()))
}

fn joined(e: tokio::task::JoinError) -> Error {
    Error::Backend(format!("blob I/O thread failed: {e}"))
}

impl DirectDir {
    pub(crate) fn new(root: PathBuf, reads: LocalReads) -> Self {
        let reads = match reads {
            LocalReads::Direct => ReadMode::Direct,
            LocalReads::PageCache => ReadMode::PageCache,
            LocalReads::Hot(window) => ReadMode::Hot(Arc::new(RecentReads {
                window,
                last: Mutex::new(HashMap::new()),
            })),
        };
        Self {
            root: Arc::new(root),
            reads,
        }
    }

    /// Whether this read of `object` goes through the page cache.
    fn cached_read(&self, object: &object_store::path::Path) -> bool {
        match &self.reads {
            ReadMode::Direct => false,
            ReadMode::PageCache => true,
            ReadMode::Hot(recent) => recent.touch(object.as_ref()),
        }
    }

    fn file(&self, object: &object_store::path::Path) -> PathBuf {
        self.root.join(object.as_ref())
    }

    /// Start writing `object`; nothing is visible under its name until
    /// [`DirectWrite::finish`] returns.
    pub(crate) fn create(&self, object: &object_store::path::Path) -> DirectWrite {
        let dest = self.file(object);
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        let task = tokio::task::spawn_blocking(move || write_object(&dest, rx));
        DirectWrite { tx, task }
    }

    /// Open `object` for ranged reads; a read that is not `counted` (a
    /// scan of its headers) neither makes the blob hot nor goes through
    /// the page cache unless every read does.
    pub(crate) async fn open_with(
        &self,
        object: &object_store::path::Path,
        counted: bool,
    ) -> Result<Arc<Reader>> {
        let cached = if counted {
            self.cached_read(object)
        } else {
            matches!(self.reads, ReadMode::PageCache)
        };
        let path = self.file(object);
        tokio::task::spawn_blocking(move || {
            if cached {
                Reader::open(&path)
            } else {
                Reader::open_direct(&path)
            }
            .map(Arc::new)
            .map_err(|e| backend("open", &path, e))
        })
        .await
        .map_err(joined)?
    }

    /// Staging files under the blob directory: left by a process that died
    /// mid-write. Only stale when no server is running on the directory.
    pub(crate) fn staging_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut found = vec![];
        let mut dirs = vec![self.root.join("blobs")];
        while let Some(d) = dirs.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let e = e?;
                if e.file_type()?.is_dir() {
                    dirs.push(e.path());
                } else if is_staging(&e.file_name().to_string_lossy()) {
                    found.push(e.path());
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// Whether `name` is a staging file name (`<object>#<digits>`).
fn is_staging(name: &str) -> bool {
    matches!(name.rsplit_once('#'), Some((_, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Exactly the bytes of `range` of an opened object.
pub(crate) async fn read_range(r: Arc<Reader>, range: Range<u64>) -> Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        r.read_range(range.clone())
            .map(|b| b.freeze())
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::Backend(format!(
                        "blob object is shorter than its record (range {range:?}): {e}"
                    ))
                } else {
                    Error::Backend(format!("blob read failed: {e}"))
                }
            })
    })
    .await
    .map_err(joined)?
}

/// A blob object being written.
pub(crate) struct DirectWrite {
    tx: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<Result<Option<PathBuf>>>,
}

/// Sent after the last chunk: an empty chunk means "commit" (real chunks
/// are never empty); a closed channel without it means "abort".
const COMMIT: Bytes = Bytes::new();

impl DirectWrite {
    pub(crate) async fn put(&mut self, b: Bytes) -> Result<()> {
        if b.is_empty() {
            return Ok(());
        }
        if self.tx.send(b).await.is_err() {
            // The thread stopped on an error; `finish` or `abort` reports it.
            return Err(Error::Backend("blob write stopped".into()));
        }
        Ok(())
    }

    /// Sync the object and publish it under its name.
    pub(crate) async fn finish(self) -> Result<()> {
        let _ = self.tx.send(COMMIT).await;
        drop(self.tx);
        self.task.await.map_err(joined)?.map(drop)
    }

    /// Drop what was written; returns the writing thread's own error, if
    /// it stopped on one.
    pub(crate) async fn abort(self) -> Option<Error> {
        drop(self.tx);
        match self.task.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(joined(e)),
        }
    }
}

/// The writing thread: stage, fill blocks, write, sync, rename, sync the
/// directory. Removes the staging file unless it commits.
fn write_object(dest: &Path, mut rx: mpsc::Receiver<Bytes>) -> Result<Option<PathBuf>> {
    let dir = dest
        .parent()
        .ok_or_else(|| Error::Backend(format!("`{}` has no parent", dest.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| backend("create", dir, e))?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    let (mut out, staging) = (1u32..)
        .find_map(|n| {
            let mut name = dest.as_os_str().to_owned();
            name.push(format!("#{n}"));
            let staging = PathBuf::from(name);
            match Writer::open(&opts, &staging) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                other => Some(other.map(|w| (w, staging.clone()))),
            }
        })
        .unwrap_or_else(|| Err(io::Error::other("no free staging name")))
        .map_err(|e| backend("create", dest, e))?;
    let result = (|| {
        let mut block = Block::new(BLOCK);
        let mut offset = 0u64;
        let mut committed = false;
        while let Some(chunk) = rx.blocking_recv() {
            if chunk.is_empty() {
                committed = true;
                break;
            }
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = block.fill(rest);
                rest = &rest[n..];
                if block.is_full() {
                    out.write(&mut block, offset)?;
                    offset += block.len() as u64;
                    block.clear();
                }
            }
        }
        if !committed {
            return Ok(false);
        }
        if !block.is_empty() {
            out.write(&mut block, offset)?;
            offset += block.len() as u64;
        }
        out.finish(offset)?;
        std::fs::rename(&staging, dest)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(true)
    })();
    match result {
        Ok(true) => Ok(Some(dest.to_path_buf())),
        Ok(false) => {
            let _ = std::fs::remove_file(&staging);
            Ok(None)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&staging);
            Err(backend("write", dest, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(window: Duration) -> RecentReads {
        RecentReads {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn a_blob_is_hot_only_when_read_again_within_the_window() {
        let r = recent(Duration::from_secs(60));
        assert!(!r.touch("blobs/a"), "a first read is cold");
        assert!(r.touch("blobs/a"), "a second read is hot");
        assert!(!r.touch("blobs/b"), "another blob is cold");
        let r = recent(Duration::from_millis(20));
        assert!(!r.touch("blobs/a"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!r.touch("blobs/a"), "the last read is past the window");
        assert!(r.touch("blobs/a"));
    }

    #[test]
    fn the_memory_of_reads_stays_bounded() {
        let r = recent(Duration::from_secs(60));
        for i in 0..RECENT_MAX {
            r.touch(&format!("blobs/{i}"));
        }
        assert!(r.touch("blobs/7"), "a known blob while the map is full");
        // One more: nothing is old enough to drop, so all of it goes.
        assert!(!r.touch("blobs/new"));
        assert_eq!(r.last.lock().unwrap().len(), 1);
        assert!(!r.touch("blobs/7"), "forgotten, cold again");
    }

    #[test]
    fn a_full_map_drops_old_reads_and_keeps_recent_ones_while_that_frees_room() {
        // `half`: half the reads old; `most`: an eighth old, the rest recent.
        let (half, most) = (
            recent(Duration::from_secs(2)),
            recent(Duration::from_secs(2)),
        );
        let fill = |r: &RecentReads, prefix: &str, n: usize| {
            for i in 0..n {
                r.touch(&format!("{prefix}/{i}"));
            }
        };
        fill(&half, "old", RECENT_MAX / 2);
        fill(&most, "old", RECENT_MAX / 8);
        std::thread::sleep(Duration::from_millis(2100));
        fill(&half, "recent", RECENT_MAX / 2);
        fill(&most, "recent", RECENT_MAX / 8 * 7);
        assert!(!half.touch("blobs/new"));
        assert_eq!(half.last.lock().unwrap().len(), RECENT_MAX / 2 + 1);
        assert!(half.touch("recent/9"), "a recent read survives the prune");
        assert!(!half.touch("old/9"), "an old one is gone");
        // Pruning would free too little room (it would run again at the
        // next new blob): everything goes.
        assert!(!most.touch("blobs/new"));
        assert_eq!(most.last.lock().unwrap().len(), 1);
    }
}
