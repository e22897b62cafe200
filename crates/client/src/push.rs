//! Push a file or directory tree as a new version.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::Method;
use tokio_util::io::ReaderStream;
use vault_api::{
    CommitRequest, DeclareDigestRequest, DeclareDigestResponse, Kind, OpenUploadRequest,
    OpenUploadResponse, PushResult, Reference, Selector, UploadedFile,
};
use vault_manifest::Manifest;

use crate::local::{collect, entries, hash_file, unix_now_ns};
use crate::{Client, Error, Result};

/// Files at least this large that the cache does not know are hashed while
/// they upload rather than before (see [`PushOptions::hash_first`]).
pub const HASH_WHILE_UPLOADING_MIN: u64 = 32 << 20;

/// Options of [`Client::push`].
pub struct PushOptions {
    /// Artifact kind.
    pub kind: Kind,
    /// Parent manifest digests to record as lineage.
    pub parents: Vec<String>,
    /// Sign the manifest with this key.
    pub sign_key: Option<vault_manifest::SecretKey>,
    /// Sensitivity label for a new artifact (e.g. `raw-pii`).
    pub sensitivity: Option<String>,
    /// Files hashed and uploaded at once.
    pub parallel: usize,
    /// Told about hashed and uploaded bytes.
    pub progress: Option<crate::Progress>,
    /// Reuse the digests of files unchanged since the cache in this
    /// directory recorded them (see [`crate::Cache`]); `None` hashes every
    /// file. A cache that cannot be opened is skipped.
    pub cache: Option<std::path::PathBuf>,
    /// Hash every file before uploading anything, so that a file the
    /// namespace already holds sends no bytes. Otherwise a file of at least
    /// [`HASH_WHILE_UPLOADING_MIN`] bytes whose digest the cache does not
    /// know starts uploading at once and is hashed beside the upload: if
    /// the hash ends first and the namespace holds the content, the upload
    /// is dropped; if the upload ends first, the server keeps one copy.
    pub hash_first: bool,
    /// A rate limit shared by every file sent with these options
    /// (`--limit-rate`).
    pub limit: Option<Arc<crate::RateLimit>>,
}

/// One file to upload.
struct Upload<'a> {
    session: &'a str,
    index: usize,
    local: &'a Path,
    entry: &'a vault_api::FileEntry,
    progress: Option<crate::Progress>,
    limit: Option<Arc<crate::RateLimit>>,
}

impl Client {
    /// Push `path` (a file or a directory) as the next version of `r`.
    pub async fn push(&self, r: &Reference, path: &Path, opts: &PushOptions) -> Result<PushResult> {
        if r.selector != Selector::Latest {
            return Err(Error::Usage(format!(
                "push takes a name without a tag or digest (`{}`); the server assigns the version",
                r.name
            )));
        }
        let files = collect(path)?;
        let cache = opts
            .cache
            .as_deref()
            .and_then(|d| crate::Cache::open(d).ok());
        let hash_later = (!opts.hash_first).then_some(HASH_WHILE_UPLOADING_MIN);
        let (mut list, mut hashed) =
            entries(&files, opts.parallel.max(1), cache.as_ref(), hash_later).await?;
        let open: OpenUploadResponse = self
            .json(
                self.request(Method::POST, "/v1/uploads")
                    .json(&OpenUploadRequest {
                        name: r.name.clone(),
                        kind: opts.kind,
                        files: list.clone(),
                        sensitivity: opts.sensitivity.clone(),
                    }),
            )
            .await?;
        let limit = opts.limit.clone();
        let uploads = open.needed.iter().map(|&i| {
            let (files, list, limit) = (&files, &list, limit.clone());
            let (session, cache) = (open.session_id.as_str(), cache.as_ref());
            async move {
                let (local, _) = files
                    .get(i)
                    .ok_or_else(|| Error::Server(format!("server asked for unknown file {i}")))?;
                let up = Upload {
                    session,
                    index: i,
                    local,
                    entry: &list[i],
                    progress: opts.progress.clone(),
                    limit,
                };
                self.upload(up, cache).await
            }
        });
        if let Some(p) = &opts.progress {
            p.total(list.iter().map(|e| e.size).sum());
        }
        let mut uploaded = 0u64;
        let mut found = Vec::new();
        let mut results =
            futures_util::stream::iter(uploads).buffer_unordered(opts.parallel.max(1));
        while let Some(r) = results.next().await {
            let (i, sha, sent) = r?;
            if sent {
                uploaded += list[i].size;
            }
            found.push((i, sha));
        }
        drop(results);
        if let Some(p) = &opts.progress {
            // Files the server already had count as done (each upload
            // accounts for its own file, sent or not).
            let needed: u64 = open.needed.iter().map(|&i| list[i].size).sum();
            let total: u64 = list.iter().map(|e| e.size).sum();
            p.advance(total.saturating_sub(needed));
        }
        for (i, sha) in found {
            if list[i].sha256.is_empty() {
                hashed += list[i].size;
                list[i].sha256 = sha;
            }
        }
        if let Some(f) = list.iter().find(|f| f.sha256.is_empty()) {
            return Err(Error::Server(format!(
                "the server did not ask for `{}`, whose digest is unknown",
                f.path
            )));
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let manifest = Manifest::new(
            r.name.clone(),
            opts.kind,
            open.version,
            created,
            list,
            opts.parents.clone(),
        )
        .map_err(|e| Error::Usage(e.to_string()))?;
        let manifest = match &opts.sign_key {
            Some(k) => manifest.with_signer(k.public().keyid()),
            None => manifest,
        };
        let mut env = manifest.to_envelope();
        if let Some(k) = &opts.sign_key {
            env.sign(k).map_err(|e| Error::Usage(e.to_string()))?;
        }
        let envelope = env.to_json();
        let mut result: PushResult = self
            .json(
                self.request(
                    Method::POST,
                    &format!("/v1/uploads/{}/commit", open.session_id),
                )
                .json(&CommitRequest { envelope }),
            )
            .await?;
        result.uploaded_bytes = uploaded;
        result.hashed_bytes = hashed;
        Ok(result)
    }
}

impl Client {
    /// Upload one file; returns its index, its digest and whether it was
    /// sent whole. A file declared without a digest is hashed, from a
    /// second read, while it uploads. If the hash is done first and the
    /// namespace already holds that content, the upload is dropped.
    async fn upload(
        &self,
        up: Upload<'_>,
        cache: Option<&crate::Cache>,
    ) -> Result<(usize, String, bool)> {
        let Upload {
            session,
            index: i,
            local,
            entry,
            progress,
            limit,
        } = up;
        let changed = |m: String| {
            Error::Integrity(format!(
                "`{}` changed while being pushed or was corrupted in transit: {m}",
                local.display()
            ))
        };
        let stat = || std::fs::metadata(local).ok();
        let (before, started_ns) = (stat(), unix_now_ns());
        let f = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::io(format!("cannot open `{}`", local.display()), e))?;
        let sent = Arc::new(AtomicU64::new(0));
        let (p, counter) = (progress.clone(), sent.clone());
        let stream = ReaderStream::with_capacity(f, 1 << 20).then(move |c| {
            let (p, counter, limit) = (p.clone(), counter.clone(), limit.clone());
            async move {
                if let Ok(b) = &c {
                    if let Some(l) = &limit {
                        l.take(b.len()).await;
                    }
                    counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                    if let Some(p) = &p {
                        p.advance(b.len() as u64);
                    }
                }
                c
            }
        });
        let upload = async {
            self.json::<UploadedFile>(
                self.request(Method::PUT, &format!("/v1/uploads/{session}/files/{i}"))
                    .header(reqwest::header::CONTENT_LENGTH, entry.size)
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(stream)),
            )
            .await
            .map_err(|e| match e {
                Error::Integrity(m) => changed(m),
                other => other,
            })
        };
        let (ours, answer) = if entry.sha256.is_empty() {
            let path = local.to_path_buf();
            let mut hashing = tokio::task::spawn_blocking(move || hash_file(&path));
            tokio::pin!(upload);
            let hashed = |h: Result<Result<(String, u64)>, tokio::task::JoinError>| {
                let (sha, n) =
                    h.map_err(|e| Error::Local(format!("a worker task failed: {e}")))??;
                if n != entry.size {
                    return Err(changed(format!("read {n} bytes, {} expected", entry.size)));
                }
                Ok(sha)
            };
            tokio::select! {
                answer = &mut upload => (hashed(hashing.await)?, Some(answer?)),
                h = &mut hashing => {
                    let sha = hashed(h)?;
                    // Only a shortcut: if the server cannot answer (an
                    // older server, a rate limit), the upload goes on.
                    let held = self
                        .json::<DeclareDigestResponse>(
                            self.request(
                                Method::POST,
                                &format!("/v1/uploads/{session}/files/{i}/digest"),
                            )
                            .json(&DeclareDigestRequest { sha256: sha.clone() }),
                        )
                        .await
                        .is_ok_and(|r| r.held);
                    if held {
                        (sha, None)
                    } else {
                        (sha, Some(upload.await?))
                    }
                }
            }
        } else {
            (entry.sha256.clone(), Some(upload.await?))
        };
        if entry.sha256.is_empty() {
            if let (Some(c), Some(b), Some(a)) = (cache, &before, stat()) {
                c.remember_digest(b, &a, started_ns, &ours);
            }
        }
        match answer {
            Some(a) if a.sha256 != ours => Err(changed(format!(
                "the server received SHA-256 {}, the file read as {ours}",
                a.sha256
            ))),
            Some(_) => Ok((i, ours, true)),
            None => {
                // Dropped: the rest of the file counts as done.
                if let Some(p) = &progress {
                    p.advance(entry.size.saturating_sub(sent.load(Ordering::Relaxed)));
                }
                Ok((i, ours, false))
            }
        }
    }
}
