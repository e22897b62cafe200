//! The writer: a dedicated thread appends batches of entries and fsyncs once
//! per batch (group commit); every caller waits until its entry is durable.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
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

/// Read the chain head (seq, hash) of a log; cuts a torn last line (a write
/// that never completed, so never acknowledged).
fn recover_head(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, GENESIS.into())),
        Err(e) => return Err(e),
    };
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if complete < data.len() {
        f.set_len(complete as u64)?;
        f.sync_all()?;
    }
    let text = String::from_utf8_lossy(&data[..complete]);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => {
            let e: Entry = serde_json::from_str(last).map_err(|e| {
                std::io::Error::other(format!("last audit entry does not parse: {e}"))
            })?;
            Ok((e.seq, e.hash))
        }
        None => Ok((0, GENESIS.into())),
    }
}

struct Writer {
    path: PathBuf,
    key: SecretKey,
    every: u64,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    resync: bool,
    shared: Arc<Shared>,
}

impl Writer {
    /// Chain one entry and add its JSON line to `lines`.
    fn append(&mut self, kind: &str, event: Event, lines: &mut String) {
        let e = self.entry(kind, event);
        lines.push_str(&serde_json::to_string(&e).unwrap_or_default());
        lines.push('\n');
    }

    fn append_checkpoint(&mut self, lines: &mut String) {
        self.append(
            "checkpoint",
            Event::new("vault-server", "checkpoint", "audit", "ok"),
            lines,
        );
    }

    fn entry(&mut self, kind: &str, event: Event) -> Entry {
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
            e.sig = STANDARD.encode(self.key.sign_bytes(&e.checkpoint_message()));
            e.keyid = self.key.public().keyid();
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        self.head = e.hash.clone();
        e
    }

    fn write_batch(&mut self, msgs: Vec<Msg>) {
        let saved = (self.seq, self.head.clone(), self.since_checkpoint);
        let mut lines = String::new();
        let mut replies = Vec::with_capacity(msgs.len());
        let res: std::io::Result<()> = (|| {
            if self.resync {
                let (seq, head) = recover_head(&self.path)?;
                self.seq = seq;
                self.head = head;
                self.resync = false;
            }
            for m in msgs {
                match m {
                    Msg::Event(ev, reply) => {
                        self.append("event", *ev, &mut lines);
                        if self.since_checkpoint >= self.every {
                            self.append_checkpoint(&mut lines);
                        }
                        replies.push(reply);
                    }
                    Msg::Checkpoint(reply) => {
                        if self.since_checkpoint > 0 {
                            self.append_checkpoint(&mut lines);
                        }
                        replies.push(reply);
                    }
                }
            }
            if !lines.is_empty() {
                // Reopened for every batch: a log file replaced or made
                // unwritable under us fails here, loudly.
                let mut f: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                f.write_all(lines.as_bytes())?;
                f.sync_data()?;
            }
            Ok(())
        })();
        let outcome = match res {
            Ok(()) => {
                self.shared.failed.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => {
                (self.seq, self.head, self.since_checkpoint) = saved;
                self.resync = true;
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

impl AuditLog {
    /// Open (or create) the log at `path`, continuing its chain; entries are
    /// checkpointed (signed with `key`) every `checkpoint_every` events.
    pub fn open(path: PathBuf, key: SecretKey, checkpoint_every: u64) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|cause| Error::Io {
                path: dir.display().to_string(),
                cause,
            })?;
        }
        let (seq, head) = recover_head(&path).map_err(|cause| Error::Io {
            path: path.display().to_string(),
            cause,
        })?;
        let shared = Arc::new(Shared {
            failed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            path: path.clone(),
            key,
            every: checkpoint_every.max(1),
            seq,
            head,
            since_checkpoint: 0,
            resync: false,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|cause| Error::Io {
                path: path.display().to_string(),
                cause,
            })?;
        Ok(Self {
            tx: Mutex::new(tx),
            shared,
            path,
        })
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
