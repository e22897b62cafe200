//! Encrypted blobs in an `object_store`: encrypt-and-hash on write, verified
//! ranged decryption on read. Object names are random ids under `blobs/`;
//! artifact names never appear in the blob store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use vault_crypto::{BlobDecryptor, BlobEncryptor, Header, Keyring, StreamOpener};

use crate::direct::{self, DirectDir, DirectWrite, LocalReads};
use crate::records::BlobRecord;
use crate::{Error, Result};

/// A stream of verified plaintext.
pub type PlaintextStream = BoxStream<'static, Result<Bytes>>;

/// Most segments fetched per ranged read when streaming a blob.
const READ_SEGMENTS: u64 = 4;

/// Ranged reads in flight per stream.
const READ_AHEAD: usize = 2;

/// Ciphertext that all concurrent reads together aim to keep in flight.
/// A lone stream reads [`READ_SEGMENTS`] segments at a time; as more
/// streams run, each reads fewer (never less than one segment, the unit
/// that can be verified), so memory stays flat under many pulls at once.
const READ_BUDGET: u64 = 32 << 20;

/// Part size for multipart uploads (S3 needs at least 5 MiB parts).
const UPLOAD_PART: usize = 8 << 20;

/// Blob storage over any [`ObjectStore`].
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The local backend's directory: blob data is then written and read
    /// there with direct I/O (listing and deleting still go through
    /// `store`).
    direct: Option<DirectDir>,
    /// Plaintext streams open now (for the read-ahead budget).
    reading: Arc<AtomicUsize>,
}

/// Counts one open read stream; uncounts it when the stream is dropped.
struct Reading(Arc<AtomicUsize>);

impl Reading {
    fn new(n: &Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Reading(n.clone())
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Object path of a blob: `blobs/<first two hex digits>/<id>`.
fn object_path(id: &str) -> Path {
    let shard = id.get(..2).unwrap_or("00");
    Path::from(format!("blobs/{shard}/{id}"))
}

impl BlobStore {
    /// Wrap an object store.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            direct: None,
            reading: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Write and read blob data directly in `root`, the directory that
    /// `store` (a `LocalFileSystem`) was opened on, bypassing the page
    /// cache where the file system allows it (see `vault-directio`); reads
    /// go as `reads` says.
    pub fn with_local_dir(mut self, root: std::path::PathBuf, reads: LocalReads) -> Self {
        self.direct = Some(DirectDir::new(root, reads));
        self
    }

    /// The underlying object store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Encrypt `body` into blob `enc`'s object, hashing the plaintext on the
    /// way, and return its SHA-256. A v2 encryptor without a declared digest
    /// is bound to the digest found. Fails (and leaves no object) if the
    /// body errors, is longer or shorter than declared, or hashes
    /// differently from a declared digest.
    pub async fn write<S, E>(&self, id: &str, enc: BlobEncryptor, body: S) -> Result<[u8; 32]>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let path = object_path(id);
        let mut sink = match &self.direct {
            Some(d) => Sink::Direct(d.create(&path)),
            None => Sink::Store(Box::new(
                BufWriter::with_capacity(self.store.clone(), path.clone(), UPLOAD_PART)
                    .with_max_concurrency(2),
            )),
        };
        let written = self.write_inner(&mut sink, enc, body).await;
        match (written, sink) {
            (Ok(d), Sink::Direct(w)) => w.finish().await.map(|()| d),
            (Err(e), Sink::Direct(w)) => Err(w.abort().await.unwrap_or(e)),
            (Ok(d), Sink::Store(mut w)) => match w.shutdown().await {
                Ok(()) => Ok(d),
                Err(e) => {
                    let _ = self.store.delete(&path).await;
                    Err(Error::Backend(e.to_string()))
                }
            },
            (Err(e), Sink::Store(mut w)) => {
                let _ = w.abort().await;
                let _ = self.store.delete(&path).await;
                Err(e)
            }
        }
    }

    async fn write_inner<S, E>(
        &self,
        w: &mut Sink,
        mut enc: BlobEncryptor,
        mut body: S,
    ) -> Result<[u8; 32]>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let declared = enc.header_info().context().plaintext_size();
        let expected_sha = enc.declared_digest();
        let seg = enc.segment_size();
        w.put(Bytes::copy_from_slice(enc.header())).await?;
        // SHA-256 runs on its own thread, fed the received chunks (shared,
        // not copied), while this task encrypts and writes: the two
        // heaviest steps of an upload use both cores.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let hashing = tokio::task::spawn_blocking(move || {
            let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher.finish()
        });
        let mut buf: Vec<u8> = Vec::with_capacity(seg + vault_crypto::TAG_LEN);
        let mut total: u64 = 0;
        let too_long = |got| {
            Error::Mismatch(format!(
                "body longer than the declared {declared} bytes (got at least {got})"
            ))
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Body(e.to_string()))?;
            if total + chunk.len() as u64 > declared {
                return Err(too_long(total + chunk.len() as u64));
            }
            if tx.send(chunk.clone()).await.is_err() {
                return Err(Error::Body("hashing stopped".into()));
            }
            let mut data = &chunk[..];
            while !data.is_empty() {
                let take = (seg - buf.len()).min(data.len());
                buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                total += take as u64;
                if buf.len() == seg && total < declared {
                    enc.seal_segment(&mut buf, false)?;
                    let full = std::mem::replace(&mut buf, Vec::with_capacity(seg + 16));
                    w.put(Bytes::from(full)).await?;
                }
            }
        }
        drop(tx);
        let digest = hashing
            .await
            .map_err(|e| Error::Body(format!("hashing failed: {e}")))?;
        if total != declared {
            return Err(Error::Mismatch(format!(
                "body has {total} bytes, {declared} were declared"
            )));
        }
        let mut sha = [0u8; 32];
        sha.copy_from_slice(digest.as_ref());
        match expected_sha {
            Some(e) if e != sha => {
                return Err(Error::Mismatch(format!(
                    "body SHA-256 is {}, {} was declared",
                    hex::encode(sha),
                    hex::encode(e)
                )))
            }
            Some(_) => {}
            None => enc.set_digest(sha)?,
        }
        enc.seal_segment(&mut buf, true)?;
        w.put(Bytes::from(buf)).await?;
        Ok(sha)
    }

    /// Open a blob for reading from plaintext byte `offset`. Unwraps the DEK
    /// (bound to the record's context), checks the header's commitment and
    /// context, and returns a stream that yields only verified plaintext and
    /// ends with an error on any tampering or truncation.
    pub async fn read(
        &self,
        rec: &BlobRecord,
        keyring: &Keyring,
        offset: u64,
    ) -> Result<PlaintextStream> {
        self.read_until(rec, keyring, offset, None).await
    }

    /// Bytes `offset..offset + len` of a blob's plaintext (fewer at its
    /// end), verified: only the segments that hold them are fetched and
    /// opened. For reads of a few headers in a large blob (the admission
    /// scan), where streaming from `offset` would fetch ahead.
    pub async fn read_range(
        &self,
        rec: &BlobRecord,
        keyring: &Keyring,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let end = offset.saturating_add(len).min(rec.size);
        let want = usize::try_from(end.saturating_sub(offset))
            .map_err(|_| Error::Mismatch("a range too large to hold".into()))?;
        let mut s = self.read_until(rec, keyring, offset, Some(end)).await?;
        let mut out = BytesMut::with_capacity(want);
        while out.len() < want {
            match s.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let take = chunk.len().min(want - out.len());
                    out.extend_from_slice(&chunk[..take]);
                }
                None => break,
            }
        }
        if out.len() < want {
            return Err(Error::Mismatch(format!(
                "the blob ended {} bytes short of the range asked for",
                want - out.len()
            )));
        }
        Ok(out.freeze())
    }

    /// [`BlobStore::read`], fetching no segment past the one that holds
    /// plaintext byte `stop - 1` when `stop` is given (the stream is then
    /// not to be read past `stop`).
    async fn read_until(
        &self,
        rec: &BlobRecord,
        keyring: &Keyring,
        offset: u64,
        stop: Option<u64>,
    ) -> Result<PlaintextStream> {
        let ctx = rec.context()?;
        let dek = keyring.unwrap_dek(&rec.wrapped_dek, &ctx)?;
        if offset > rec.size {
            return Err(Error::Mismatch(format!(
                "range start {offset} is past the end ({} bytes)",
                rec.size
            )));
        }
        let path = object_path(&rec.id);
        let header_len = Header::len_for_namespace(&rec.namespace) as u64;
        let source = match &self.direct {
            // A bounded read (a scan of headers) is not a read of the
            // blob for deploy jobs: it does not make it hot.
            Some(d) => Source::Direct(d.open_with(&path, stop.is_none()).await?),
            None => Source::Store(self.store.clone(), path),
        };
        let head = source.get(0..header_len).await?;
        let (mut header, _) = Header::parse(&head)?;
        header.expect_digest(ctx.plaintext_sha256())?;
        if header.context() != &ctx {
            return Err(Error::Crypto(vault_crypto::Error::Commitment));
        }
        let dec = BlobDecryptor::new(&header, &dek)?;
        drop(dek);
        if offset == rec.size && rec.size > 0 {
            return Ok(futures_util::stream::empty().boxed());
        }
        let seg_size = u64::from(header.segment_size());
        let first = offset / seg_size;
        let skip = (offset - first * seg_size) as usize;
        // Large ranged reads, READ_AHEAD in flight: one request (or one
        // blocking read) per few segments instead of many small chunks. The
        // size of each read is chosen when it is issued, from the number of
        // streams open then (see READ_BUDGET).
        let start = header.ciphertext_offset(first);
        let end = match stop {
            Some(stop) if stop < rec.size => header
                .ciphertext_offset(stop.div_ceil(seg_size))
                .min(header.blob_len()),
            _ => header.blob_len(),
        };
        let seg_ct = seg_size + vault_crypto::TAG_LEN as u64;
        let reading = Reading::new(&self.reading);
        let open = reading.0.clone();
        let ranges = futures_util::stream::unfold(start, move |pos| {
            let open = open.clone();
            async move {
                if pos >= end {
                    return None;
                }
                let streams = open.load(Ordering::Relaxed).max(1) as u64;
                let segs =
                    (READ_BUDGET / (streams * READ_AHEAD as u64 * seg_ct)).clamp(1, READ_SEGMENTS);
                let next = (pos + segs * seg_ct).min(end);
                Some((pos..next, next))
            }
        });
        let inner = ranges
            .map(move |r| {
                let source = source.clone();
                async move { source.get(r).await }
            })
            .buffered(READ_AHEAD)
            .boxed();
        let opener = StreamOpener::new(dec, first);
        let state = ReadState {
            inner,
            opener,
            pending: BytesMut::new(),
            skip,
            done: false,
            _reading: reading,
        };
        Ok(futures_util::stream::unfold(state, next_plaintext).boxed())
    }

    /// Staging files of interrupted writes in the local backend's directory
    /// (none for other backends). Only meaningful while no server runs.
    pub fn staging_files(&self) -> Result<Vec<std::path::PathBuf>> {
        match &self.direct {
            Some(d) => d
                .staging_files()
                .map_err(|e| Error::Backend(format!("cannot list staging files: {e}"))),
            None => Ok(vec![]),
        }
    }

    /// Delete a blob's object (missing objects are fine).
    pub async fn delete(&self, id: &str) -> Result<()> {
        match self.store.delete(&object_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Ids of every blob object in the store.
    pub async fn list_ids(&self) -> Result<Vec<String>> {
        let prefix = Path::from("blobs");
        let mut out = Vec::new();
        let mut s = self.store.list(Some(&prefix));
        while let Some(meta) = s.next().await {
            let meta = meta?;
            if let Some(name) = meta.location.filename() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// Check the store answers (used by readiness).
    pub async fn ping(&self) -> Result<()> {
        let prefix = Path::from("blobs");
        let mut s = self.store.list(Some(&prefix));
        match s.next().await {
            Some(Err(e)) => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Where a blob upload goes.
enum Sink {
    Store(Box<BufWriter>),
    Direct(DirectWrite),
}

impl Sink {
    async fn put(&mut self, b: Bytes) -> Result<()> {
        match self {
            Sink::Store(w) => Ok(w.put(b).await?),
            Sink::Direct(w) => w.put(b).await,
        }
    }
}

/// Where a blob's ciphertext is read from.
#[derive(Clone)]
enum Source {
    Store(Arc<dyn ObjectStore>, Path),
    Direct(Arc<vault_directio::Reader>),
}

impl Source {
    async fn get(&self, r: std::ops::Range<u64>) -> Result<Bytes> {
        match self {
            Source::Store(store, path) => Ok(store.get_range(path, r).await?),
            Source::Direct(f) => direct::read_range(f.clone(), r).await,
        }
    }
}

struct ReadState {
    inner: BoxStream<'static, Result<Bytes>>,
    opener: StreamOpener,
    /// Ciphertext of the last ranged read not yet decrypted, starting at a
    /// segment boundary: segments are opened in place and handed out as
    /// slices of this one buffer (no copy, no allocation per segment).
    pending: BytesMut,
    skip: usize,
    done: bool,
    _reading: Reading,
}

impl ReadState {
    /// Drop the first `skip` plaintext bytes (a read that starts inside a
    /// segment); `None` when nothing of `b` is left.
    fn trim(&mut self, mut b: Bytes) -> Option<Bytes> {
        if self.skip > 0 {
            let s = self.skip.min(b.len());
            b = b.slice(s..);
            self.skip -= s;
        }
        (!b.is_empty()).then_some(b)
    }

    fn fail(mut self, e: Error) -> Option<(Result<Bytes>, ReadState)> {
        self.done = true;
        Some((Err(e), self))
    }
}

async fn next_plaintext(mut st: ReadState) -> Option<(Result<Bytes>, ReadState)> {
    if st.done {
        return None;
    }
    loop {
        // Whole segments left from the last read: decrypt in place.
        if let Some(want) = st.opener.next_len() {
            if st.pending.len() >= want {
                let mut seg = st.pending.split_to(want);
                match st.opener.open_next_in_place(&mut seg) {
                    Ok(n) => {
                        seg.truncate(n);
                        match st.trim(seg.freeze()) {
                            Some(b) => return Some((Ok(b), st)),
                            None => continue,
                        }
                    }
                    Err(e) => return st.fail(e.into()),
                }
            }
        }
        // A part of a segment, or bytes past the end: the copying decoder
        // buffers the former and reports the latter.
        let chunk = if st.pending.is_empty() {
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    if st.opener.is_aligned() {
                        match chunk.try_into_mut() {
                            Ok(m) => {
                                st.pending = m;
                                continue;
                            }
                            Err(shared) => shared,
                        }
                    } else {
                        chunk
                    }
                }
                Some(Err(e)) => return st.fail(e),
                None => {
                    st.done = true;
                    return match st.opener.finish() {
                        Ok(()) => None,
                        Err(e) => Some((Err(e.into()), st)),
                    };
                }
            }
        } else {
            st.pending.split().freeze()
        };
        let mut out = Vec::new();
        if let Err(e) = st.opener.feed(&chunk, &mut out) {
            return st.fail(e.into());
        }
        if let Some(b) = st.trim(Bytes::from(out)) {
            return Some((Ok(b), st));
        }
    }
}
