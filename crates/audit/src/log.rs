//! The writer: a dedicated thread appends batches of entries and fsyncs once
//! per batch (group commit); every caller waits until its entry is durable.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use vault_manifest::SecretKey;

use crate::entry::{Entry, Event, GENESIS};
use crate::{Error, Result};

enum Msg {
    Event(Box<Event>, SyncSender<Result<(), String>>),
    Checkpoint(SyncSender<Result<(), String>>),
}

struct Shared {
    failed: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The latest signed checkpoint note.
    checkpoint: Mutex<Option<String>>,
}

/// An append-only, hash-chained audit log file.
pub struct AuditLog {
    tx: Mutex<Sender<Msg>>,
    shared: Arc<Shared>,
    path: PathBuf,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Called with the signed checkpoint note after every checkpoint is durable.
pub type OnCheckpoint = Box<dyn Fn(&str) + Send>;

struct Writer {
    path: PathBuf,
    key: SecretKey,
    every: u64,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    /// Length of the file up to the last durable, sealed write.
    good_len: u64,
    shared: Arc<Shared>,
    on_checkpoint: Option<OnCheckpoint>,
}

impl Writer {
    /// Chain one entry onto `batch`.
    fn append(&mut self, kind: &str, event: Event, batch: &mut Vec<Entry>) {
        self.seq += 1;
        let mut e = Entry {
            seq: self.seq,
            time_ms: now_ms(),
            kind: kind.into(),
            event,
            prev: std::mem::take(&mut self.head),
            hash: String::new(),
            sig: String::new(),
            keyid: String::new(),
        };
        e.hash = e.compute_hash();
        if kind == "checkpoint" {
            self.seal(&mut e);
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        self.head = e.hash.clone();
        batch.push(e);
    }

    fn append_checkpoint(&mut self, batch: &mut Vec<Entry>) {
        self.append(
            "checkpoint",
            Event::new("vault-server", "checkpoint", "audit", "ok"),
            batch,
        );
    }

    /// Sign the entry's hash: nobody without the server key can add to,
    /// or rewrite, the log after a sealed entry.
    fn seal(&self, e: &mut Entry) {
        e.sig = STANDARD.encode(self.key.sign_bytes(&e.checkpoint_message()));
        e.keyid = self.key.public().keyid();
    }

    fn write_batch(&mut self, msgs: Vec<Msg>) {
        let saved = (self.seq, self.head.clone(), self.since_checkpoint);
        let mut batch = Vec::new();
        let mut replies = Vec::with_capacity(msgs.len());
        for m in msgs {
            match m {
                Msg::Event(ev, reply) => {
                    self.append("event", *ev, &mut batch);
                    if self.since_checkpoint >= self.every {
                        self.append_checkpoint(&mut batch);
                    }
                    replies.push(reply);
                }
                Msg::Checkpoint(reply) => {
                    if self.since_checkpoint > 0 {
                        self.append_checkpoint(&mut batch);
                    }
                    replies.push(reply);
                }
            }
        }
        // Every write ends with a sealed entry.
        if let Some(last) = batch.last_mut().filter(|e| e.sig.is_empty()) {
            self.seal(last);
        }
        let checkpoint = batch
            .iter()
            .rev()
            .find(|e| e.kind == "checkpoint")
            .map(|e| crate::Checkpoint {
                size: e.seq,
                hash: e.hash.clone(),
            });
        let res: std::io::Result<()> = (|| {
            if batch.is_empty() {
                return Ok(());
            }
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
            if f.metadata()?.len() != self.good_len {
                f.set_len(self.good_len)?;
            }
            f.write_all(lines.as_bytes())?;
            f.sync_data()?;
            self.good_len += lines.len() as u64;
            Ok(())
        })();
        if let (Ok(()), Some(cp)) = (&res, checkpoint) {
            match cp.sign(&self.key) {
                Ok(note) => {
                    if let Some(f) = &self.on_checkpoint {
                        f(&note);
                    }
                    if let Ok(mut g) = self.shared.checkpoint.lock() {
                        *g = Some(note);
                    }
                }
                Err(e) => {
                    if let Ok(mut g) = self.shared.last_error.lock() {
                        *g = Some(format!("cannot sign a checkpoint note: {e}"));
                    }
                }
            }
        }
        let outcome = match res {
            Ok(()) => {
                self.shared.failed.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                // What this batch chained is dropped: a partly written
                // batch ends unsealed and is cut when the log is opened.
                (self.seq, self.head, self.since_checkpoint) = saved;
                let msg = format!("audit log `{}` cannot be written: {e}", self.path.display());
                self.shared.failed.store(true, Ordering::SeqCst);
                if let Ok(mut g) = self.shared.last_error.lock() {
                    *g = Some(msg.clone());
                }
                Err(msg)
            }
        };
        for r in replies {
            let _ = r.send(outcome.clone());
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }
}

/// What [`AuditLog::open_anchored`] did to the log it opened.
#[derive(Debug, Default)]
pub struct Opened {
    /// Entries after the last sealed one that were removed: a write that
    /// never completed, so was never acknowledged.
    pub cut_unsealed: u64,
    /// Entries in the log.
    pub entries: u64,
}

impl AuditLog {
    /// Open (or create) the log at `path`, continuing its chain; entries are
    /// checkpointed (signed with `key`) every `checkpoint_every` events.
    pub fn open(path: PathBuf, key: SecretKey, checkpoint_every: u64) -> Result<Self> {
        Self::open_anchored(path, key, checkpoint_every, None, None).map(|(log, _)| log)
    }

    /// Like [`AuditLog::open`], first verifying the whole log with the
    /// key's public half and against `anchor` (the last checkpoint kept
    /// elsewhere): a log that is shorter than the anchor, forked from it,
    /// or broken anywhere is refused ([`Error::Tampered`]). Entries after
    /// the last sealed one (a write that never completed) are cut.
    /// `on_checkpoint` gets every signed checkpoint note once it is
    /// durable, to anchor it elsewhere.
    pub fn open_anchored(
        path: PathBuf,
        key: SecretKey,
        checkpoint_every: u64,
        anchor: Option<&crate::Checkpoint>,
        on_checkpoint: Option<OnCheckpoint>,
    ) -> Result<(Self, Opened)> {
        let io = |cause| Error::Io {
            path: path.display().to_string(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| Error::Io {
                path: dir.display().to_string(),
                cause,
            })?;
        }
        let exists = path.exists();
        let report = if exists {
            crate::verify_with(&path, &key.public(), anchor.cloned().as_slice())?
        } else {
            crate::Report::default()
        };
        if let Some((_, _, why)) = &report.first_bad {
            let Some(problem) = report.problem() else {
                return Err(Error::Tampered(why.clone()));
            };
            return Err(Error::Tampered(problem));
        }
        if let Some(a) = anchor.filter(|a| a.size > 0 && !exists) {
            return Err(Error::Tampered(format!(
                "the log is missing, but a checkpoint covers {} entries (deleted)",
                a.size
            )));
        }
        let mut opened = Opened {
            cut_unsealed: report.unsigned_tail,
            entries: report.entries - report.unsigned_tail,
        };
        if exists {
            let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
            let len = f.metadata().map_err(io)?.len();
            if len != report.sealed_bytes {
                f.set_len(report.sealed_bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
        } else {
            opened.cut_unsealed = 0;
        }
        let (seq, head) = if report.sealed_seq == 0 {
            (0, GENESIS.to_owned())
        } else {
            (report.sealed_seq, report.sealed_hash.clone())
        };
        let latest = anchor.and_then(|a| a.sign(&key).ok());
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            last_error: Mutex::new(None),
            checkpoint: Mutex::new(latest),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            key,
            every: checkpoint_every.max(1),
            seq,
            head,
            since_checkpoint: 0,
            good_len: report.sealed_bytes,
            shared: shared.clone(),
            on_checkpoint,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io)?;
        Ok((
            Self {
                tx: Mutex::new(tx),
                shared,
                path,
            },
            opened,
        ))
    }

    /// The latest signed checkpoint note (C2SP signed-note format).
    pub fn latest_checkpoint(&self) -> Option<String> {
        self.shared.checkpoint.lock().ok().and_then(|g| g.clone())
    }

    fn send(&self, make: impl FnOnce(SyncSender<Result<(), String>>) -> Msg) -> Result<(), String> {
        let (rtx, rrx) = mpsc::sync_channel(1);
        {
            let tx = self
                .tx
                .lock()
                .map_err(|_| "audit writer poisoned".to_owned())?;
            tx.send(make(rtx)).map_err(|_| Error::Stopped.to_string())?;
        }
        rrx.recv().map_err(|_| Error::Stopped.to_string())?
    }

    /// Append an event; returns once it is on disk. An error means the entry
    /// is not recorded: callers fail closed.
    pub fn record(&self, event: Event) -> Result<(), String> {
        self.send(|r| Msg::Event(Box::new(event), r))
    }

    /// Append a signed checkpoint if events arrived since the last one.
    pub fn checkpoint(&self) -> Result<(), String> {
        self.send(Msg::Checkpoint)
    }

    /// `Some(reason)` while the last write failed.
    pub fn failure(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::SeqCst) {
            self.shared.last_error.lock().ok().and_then(|g| g.clone())
        } else {
            None
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last `n` entries.
    pub fn tail(&self, n: usize) -> Result<Vec<Entry>> {
        let f = File::open(&self.path).map_err(|cause| Error::Io {
            path: self.path.display().to_string(),
            cause,
        })?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        // Read the end of the file: enough for n entries of a few hundred bytes.
        let want = (n as u64).saturating_mul(2048).min(len);
        let mut f = f;
        f.seek(SeekFrom::Start(len - want))
            .map_err(|cause| Error::Io {
                path: self.path.display().to_string(),
                cause,
            })?;
        let mut lines: Vec<Entry> = BufReader::new(f)
            .lines()
            .skip(usize::from(want < len))
            .map_while(|l| l.ok())
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect();
        let skip = lines.len().saturating_sub(n);
        Ok(lines.split_off(skip))
    }
}
