//! The writer: a dedicated thread appends batches of entries and fsyncs once
//! per batch (group commit); every caller waits until its entry is durable.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use vault_manifest::SecretKey;

use crate::chain::{Chain, FileChain};
use crate::entry::{Entry, Event};
use crate::{Error, Result};

enum Msg {
    Event(Box<Event>, SyncSender<Result<(), String>>),
    Checkpoint(SyncSender<Result<(), String>>),
}

struct Shared {
    /// Entries journaled with changes since the writer last counted them
    /// toward the next checkpoint.
    journaled: AtomicU64,
    failed: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// The latest signed checkpoint note.
    checkpoint: Mutex<Option<String>>,
}

/// An append-only, hash-chained audit log: a file, or a [`Chain`] that
/// several servers share.
pub struct AuditLog {
    tx: Mutex<Sender<Msg>>,
    shared: Arc<Shared>,
    chain: Arc<dyn Chain>,
    /// Seals entries journaled with changes (see [`AuditLog::journal`]).
    key: SecretKey,
    every: u64,
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
    chain: Arc<dyn Chain>,
    key: SecretKey,
    every: u64,
    since_checkpoint: u64,
    shared: Arc<Shared>,
    on_checkpoint: Option<OnCheckpoint>,
}

/// What one message asks the writer to chain.
enum Item {
    Event(Box<Event>),
    Checkpoint,
}

/// Chains entries onto a head: the part of a write that [`Chain::append`]
/// may run again when its store retries.
struct Builder<'a> {
    key: &'a SecretKey,
    every: u64,
    seq: u64,
    head: String,
    since_checkpoint: u64,
    batch: Vec<Entry>,
}

impl Builder<'_> {
    /// Chain one entry onto the batch.
    fn append(&mut self, kind: &str, event: Event) {
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
            seal(self.key, &mut e);
            self.since_checkpoint = 0;
        } else {
            self.since_checkpoint += 1;
        }
        self.head = e.hash.clone();
        self.batch.push(e);
    }

    fn append_checkpoint(&mut self) {
        self.append(
            "checkpoint",
            Event::new("vault-server", "checkpoint", "audit", "ok"),
        );
    }

    fn build(mut self, items: &[Item]) -> (Vec<Entry>, u64) {
        for item in items {
            match item {
                Item::Event(ev) => {
                    self.append("event", (**ev).clone());
                    if self.since_checkpoint >= self.every {
                        self.append_checkpoint();
                    }
                }
                Item::Checkpoint => {
                    if self.since_checkpoint > 0 {
                        self.append_checkpoint();
                    }
                }
            }
        }
        // Every write ends with a sealed entry.
        if let Some(last) = self.batch.last_mut().filter(|e| e.sig.is_empty()) {
            seal(self.key, last);
        }
        (self.batch, self.since_checkpoint)
    }
}

/// Sign the entry's hash: nobody without the server key can add to, or
/// rewrite, the log after a sealed entry.
fn seal(key: &SecretKey, e: &mut Entry) {
    e.sig = STANDARD.encode(key.sign_bytes(&e.checkpoint_message()));
    e.keyid = key.public().keyid();
}

impl Writer {
    fn write_batch(&mut self, msgs: Vec<Msg>) {
        let mut items = Vec::with_capacity(msgs.len());
        let mut replies = Vec::with_capacity(msgs.len());
        for m in msgs {
            match m {
                Msg::Event(ev, reply) => {
                    items.push(Item::Event(ev));
                    replies.push(reply);
                }
                Msg::Checkpoint(reply) => {
                    items.push(Item::Checkpoint);
                    replies.push(reply);
                }
            }
        }
        self.since_checkpoint += self.shared.journaled.swap(0, Ordering::SeqCst);
        let mut made = (Vec::new(), self.since_checkpoint);
        let res = self.chain.append(&mut |seq, head| {
            let b = Builder {
                key: &self.key,
                every: self.every,
                seq,
                head: head.to_owned(),
                since_checkpoint: self.since_checkpoint,
                batch: Vec::with_capacity(items.len() + 1),
            };
            made = b.build(&items);
            made.0.clone()
        });
        let (batch, since_checkpoint) = made;
        if res.is_ok() {
            // What a failed write chained is dropped with it.
            self.since_checkpoint = since_checkpoint;
        }
        let checkpoint = batch
            .iter()
            .rev()
            .find(|e| e.kind == "checkpoint")
            .map(|e| crate::Checkpoint {
                size: e.seq,
                hash: e.hash.clone(),
            });
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
            Err(msg) => {
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
            crate::chain::genesis()
        } else {
            (report.sealed_seq, report.sealed_hash.clone())
        };
        let chain = Arc::new(FileChain::new(path, seq, head, report.sealed_bytes));
        let log = Self::start(chain, key, checkpoint_every, anchor, on_checkpoint)?;
        Ok((log, opened))
    }

    /// Open a chain that other servers append to as well, after verifying
    /// all of it with the key's public half, against `anchor` and against
    /// the head the store records. Appends there are atomic, so nothing is
    /// ever left unsealed by a crash: a chain that does not verify, an
    /// unsealed tail included, is refused ([`Error::Tampered`]).
    pub fn open_shared(
        chain: Arc<dyn Chain>,
        key: SecretKey,
        checkpoint_every: u64,
        anchor: Option<&crate::Checkpoint>,
        on_checkpoint: Option<OnCheckpoint>,
    ) -> Result<(Self, Opened)> {
        let report =
            crate::verify_chain(chain.as_ref(), &key.public(), anchor.cloned().as_slice())?;
        if let Some(problem) = report.problem() {
            return Err(Error::Tampered(problem));
        }
        let opened = Opened {
            cut_unsealed: 0,
            entries: report.entries,
        };
        let log = Self::start(chain, key, checkpoint_every, anchor, on_checkpoint)?;
        Ok((log, opened))
    }

    fn start(
        chain: Arc<dyn Chain>,
        key: SecretKey,
        checkpoint_every: u64,
        anchor: Option<&crate::Checkpoint>,
        on_checkpoint: Option<OnCheckpoint>,
    ) -> Result<Self> {
        let latest = anchor.and_then(|a| a.sign(&key).ok());
        let shared = Arc::new(Shared {
            journaled: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            last_error: Mutex::new(None),
            checkpoint: Mutex::new(latest),
        });
        let (tx, rx) = mpsc::channel();
        let own_key = SecretKey::from_bytes(&key.to_bytes());
        let writer = Writer {
            chain: chain.clone(),
            key,
            every: checkpoint_every.max(1),
            since_checkpoint: 0,
            shared: shared.clone(),
            on_checkpoint,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|cause| Error::Io {
                path: chain.describe(),
                cause,
            })?;
        Ok(Self {
            tx: Mutex::new(tx),
            shared,
            chain,
            key: own_key,
            every: checkpoint_every.max(1),
        })
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

    /// Append an event; returns once it is durable. An error means the
    /// entry is not recorded: callers fail closed.
    pub fn record(&self, event: Event) -> Result<(), String> {
        self.send(|r| Msg::Event(Box::new(event), r))
    }

    /// The entries recording `events`, for a metadata transaction that
    /// makes the change they record (`MetaStore::journaled`), so that the
    /// change is never made without them:
    /// - given `head` (the store keeps this chain: sequence number and
    ///   hash of its last entry, locked by the transaction), they are
    ///   chained on it, the last one sealed, and returned for the store to
    ///   insert before it commits;
    /// - given none (this log is a file of this server's), they are
    ///   appended and made durable now, while the store's transaction
    ///   waits to commit, and none are returned.
    ///
    /// Call [`AuditLog::journaled`] once the transaction committed. An
    /// error means nothing was appended: the transaction must fail.
    pub fn journal(
        &self,
        events: &[Event],
        head: Option<(u64, &str)>,
    ) -> Result<Vec<Entry>, String> {
        let build = |seq: u64, head: &str| {
            let b = Builder {
                key: &self.key,
                // Checkpoints are the writer's: their notes are exported
                // once durable, which a transaction not yet committed is not.
                every: u64::MAX,
                seq,
                head: head.to_owned(),
                since_checkpoint: 0,
                batch: Vec::with_capacity(events.len()),
            };
            let items: Vec<Item> = events
                .iter()
                .map(|e| Item::Event(Box::new(e.clone())))
                .collect();
            b.build(&items).0
        };
        match (head, self.chain.kept_by_metadata()) {
            (Some((seq, hash)), true) => Ok(build(seq, hash)),
            (None, false) => {
                self.chain.append(&mut |seq, head| build(seq, head))?;
                Ok(Vec::new())
            }
            (Some(_), false) => Err(format!(
                "the metadata store keeps an audit chain, but this server writes {}",
                self.chain.describe()
            )),
            (None, true) => Err(format!(
                "{} is not kept by this metadata store",
                self.chain.describe()
            )),
        }
    }

    /// Count `n` entries made by [`AuditLog::journal`], whose transaction
    /// committed, toward the next checkpoint (written by the writer when
    /// due, without waiting for it).
    pub fn journaled(&self, n: usize) {
        let due = self.shared.journaled.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if due >= self.every {
            let (rtx, _) = mpsc::sync_channel(1);
            if let Ok(tx) = self.tx.lock() {
                let _ = tx.send(Msg::Checkpoint(rtx));
            }
        }
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

    /// Where the log is, for messages.
    pub fn describe(&self) -> String {
        self.chain.describe()
    }

    /// The last `n` entries.
    pub fn tail(&self, n: usize) -> Result<Vec<Entry>> {
        self.chain.tail(n)
    }

    /// Walk the whole log as [`crate::verify_chain`] does.
    pub fn verify(&self, key: &vault_manifest::PublicKey) -> Result<crate::Report> {
        crate::verify_chain(self.chain.as_ref(), key, &[])
    }
}
