//! Push a file or directory tree as a new version.

use std::path::Path;

use futures_util::StreamExt;
use reqwest::Method;
use tokio_util::io::ReaderStream;
use vault_api::{
    CommitRequest, Kind, OpenUploadRequest, OpenUploadResponse, PushResult, Reference, Selector,
    UploadedFile,
};
use vault_manifest::Manifest;

use crate::local::{collect, entries, unix_now_ns};
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
    /// namespace already holds is never sent. Otherwise a file of at least
    /// [`HASH_WHILE_UPLOADING_MIN`] bytes whose digest the cache does not
    /// know is hashed while it uploads (one read, hashing beside the
    /// transfer); the server then keeps one copy if it held the content.
    pub hash_first: bool,
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
        let uploads = open.needed.iter().map(|&i| {
            let (files, list, sid, cache) = (&files, &list, &open.session_id, cache.as_ref());
            async move {
                let (local, _) = files
                    .get(i)
                    .ok_or_else(|| Error::Server(format!("server asked for unknown file {i}")))?;
                let entry = &list[i];
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
                let progress = opts.progress.clone();
                // A file sent without a digest is hashed from the chunks as
                // they go out, on a thread of its own.
                let hashing = entry.sha256.is_empty().then(|| {
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
                    let task = tokio::task::spawn_blocking(move || {
                        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                        while let Some(c) = rx.blocking_recv() {
                            h.update(&c);
                        }
                        hex::encode(h.finish())
                    });
                    (tx, task)
                });
                let tx = hashing.as_ref().map(|(tx, _)| tx.clone());
                let stream = ReaderStream::with_capacity(f, 1 << 20).then(move |c| {
                    let (progress, tx) = (progress.clone(), tx.clone());
                    async move {
                        if let Ok(b) = &c {
                            if let Some(p) = &progress {
                                p.advance(b.len() as u64);
                            }
                            if let Some(tx) = &tx {
                                // A closed channel fails the digest check below.
                                let _ = tx.send(b.clone()).await;
                            }
                        }
                        c
                    }
                });
                let up: UploadedFile = self
                    .json(
                        self.request(Method::PUT, &format!("/v1/uploads/{sid}/files/{i}"))
                            .header(reqwest::header::CONTENT_LENGTH, entry.size)
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                            .body(reqwest::Body::wrap_stream(stream)),
                    )
                    .await
                    .map_err(|e| match e {
                        Error::Integrity(m) => changed(m),
                        other => other,
                    })?;
                let sha = match hashing {
                    None => entry.sha256.clone(),
                    Some((tx, task)) => {
                        drop(tx);
                        let ours = task.await.map_err(|e| Error::Server(e.to_string()))?;
                        if let (Some(c), Some(b), Some(a)) = (cache, &before, stat()) {
                            c.remember_digest(b, &a, started_ns, &ours);
                        }
                        ours
                    }
                };
                if up.sha256 != sha {
                    return Err(changed(format!(
                        "the server received SHA-256 {}, the file read as {sha}",
                        up.sha256
                    )));
                }
                Ok::<(usize, String), Error>((i, sha))
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
            let (i, sha) = r?;
            uploaded += list[i].size;
            found.push((i, sha));
        }
        drop(results);
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
        if let Some(p) = &opts.progress {
            // Files the server already had count as done.
            let total: u64 = list.iter().map(|e| e.size).sum();
            p.advance(total.saturating_sub(uploaded));
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
