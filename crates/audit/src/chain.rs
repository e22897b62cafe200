//! Where a log's entries are kept: a file of one server's, or a store that
//! several servers append to ([`Chain`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::checkpoint::Checkpoint;
use crate::entry::{Entry, GENESIS};
use crate::{Error, Result};

/// Builds the entries of one append on top of the chain's head: given the
/// sequence number and hash of the last entry (0 and [`GENESIS`] for an
/// empty chain), returns the new entries, already chained and sealed.
pub type Build<'a> = dyn FnMut(u64, &str) -> Vec<Entry> + Send + 'a;

/// A hash chain of entries in some store. Appends are atomic and durable,
/// and ordered: the head an append builds on is the head of the store at
/// that moment, held until the append is done, so several writers (one
/// per server) form one chain.
pub trait Chain: Send + Sync {
    /// Append what `build` makes on top of the current head, atomically
    /// and durably. `build` may be called again when the store retries
    /// (only what its last call made is kept); an error means nothing of
    /// this append is kept.
    fn append(&self, build: &mut Build<'_>) -> std::result::Result<(), String>;
    /// Every entry's line, in order, to `visit`, until it returns false.
    fn scan(&self, visit: &mut (dyn FnMut(&[u8]) -> bool + Send)) -> Result<()>;
    /// The last `n` entries.
    fn tail(&self, n: usize) -> Result<Vec<Entry>>;
    /// The head the store records apart from the entries, if it does:
    /// the chain must reach it (else entries were cut).
    fn head(&self) -> Result<Option<Checkpoint>>;
    /// Where it is, for messages.
    fn describe(&self) -> String;
    /// Whether the metadata store keeps this chain, so that a change and
    /// its entries commit in one of its transactions (see
    /// [`crate::AuditLog::journal`]).
    fn kept_by_metadata(&self) -> bool {
        false
    }
}

/// The log file of one server: appended to by one writer only.
pub struct FileChain {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    seq: u64,
    head: String,
    /// Length of the file up to the last durable, sealed write.
    good_len: u64,
}

impl FileChain {
    /// The file at `path`, whose last sealed entry is `seq` with `head`,
    /// ending at byte `good_len` (what a failed write leaves after it is
    /// cut before the next one).
    pub(crate) fn new(path: PathBuf, seq: u64, head: String, good_len: u64) -> Self {
        Self {
            path,
            state: Mutex::new(FileState {
                seq,
                head,
                good_len,
            }),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, cause: std::io::Error) -> Error {
        Error::Io {
            path: self.path.display().to_string(),
            cause,
        }
    }
}

impl Chain for FileChain {
    fn append(&self, build: &mut Build<'_>) -> std::result::Result<(), String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let batch = build(st.seq, &st.head);
        let Some(last) = batch.last() else {
            return Ok(());
        };
        let res: std::io::Result<()> = (|| {
            let mut lines = String::new();
            for e in &batch {
                lines.push_str(&serde_json::to_string(e).map_err(std::io::Error::other)?);
                lines.push('\n');
            }
            // Reopened for every batch: a log file replaced or made
            // unwritable under us fails here, loudly.
            let mut f: File = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            // What a failed earlier write left is cut first.
            if f.metadata()?.len() != st.good_len {
                f.set_len(st.good_len)?;
            }
            f.write_all(lines.as_bytes())?;
            f.sync_data()?;
            st.good_len += lines.len() as u64;
            Ok(())
        })();
        match res {
            Ok(()) => {
                st.seq = last.seq;
                st.head = last.hash.clone();
                Ok(())
            }
            Err(e) => Err(format!(
                "audit log `{}` cannot be written: {e}",
                self.path.display()
            )),
        }
    }

    fn scan(&self, visit: &mut (dyn FnMut(&[u8]) -> bool + Send)) -> Result<()> {
        scan_file(&self.path, visit)
    }

    fn tail(&self, n: usize) -> Result<Vec<Entry>> {
        let f = File::open(&self.path).map_err(|e| self.io(e))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // Read the end of the file: enough for n entries of a few hundred bytes.
        let want = (n as u64).saturating_mul(2048).min(len);
        let mut f = f;
        f.seek(SeekFrom::Start(len - want))
            .map_err(|e| self.io(e))?;
        let mut lines: Vec<Entry> = BufReader::new(f)
            .lines()
            .skip(usize::from(want < len))
            .map_while(|l| l.ok())
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let skip = lines.len().saturating_sub(n);
        Ok(lines.split_off(skip))
    }

    fn head(&self) -> Result<Option<Checkpoint>> {
        Ok(None)
    }

    fn describe(&self) -> String {
        format!("`{}`", self.path.display())
    }
}

/// Every line of the file at `path` (with its `\n`), in order.
pub(crate) fn scan_file(path: &Path, visit: &mut dyn FnMut(&[u8]) -> bool) -> Result<()> {
    let io = |cause| Error::Io {
        path: path.display().to_string(),
        cause,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if reader.read_until(b'\n', &mut raw).map_err(io)? == 0 || !visit(&raw) {
            return Ok(());
        }
    }
}

/// An empty chain's head.
pub(crate) fn genesis() -> (u64, String) {
    (0, GENESIS.to_owned())
}
