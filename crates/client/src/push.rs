//! Push a file or directory tree as a new version.

use std::path::Path;

use futures_util::StreamExt;
use reqwest::Method;
use tokio_util::io::ReaderStream;
use vault_api::{
    CommitRequest, Kind, OpenUploadRequest, OpenUploadResponse, PushResult, Reference, Selector,
};
use vault_manifest::Manifest;

use crate::local::{collect, entries};
use crate::{Client, Error, Result};

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
        let (list, hashed) = entries(&files, opts.parallel.max(1), cache.as_ref()).await?;
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
            let (files, list, sid) = (&files, &list, &open.session_id);
            async move {
                let (local, _) = files
                    .get(i)
                    .ok_or_else(|| Error::Server(format!("server asked for unknown file {i}")))?;
                let entry = &list[i];
                let f = tokio::fs::File::open(local)
                    .await
                    .map_err(|e| Error::io(format!("cannot open `{}`", local.display()), e))?;
                let progress = opts.progress.clone();
                let stream = ReaderStream::with_capacity(f, 1 << 20).inspect(move |c| {
                    if let (Some(p), Ok(b)) = (&progress, c) {
                        p.advance(b.len() as u64);
                    }
                });
                self.send(
                    self.request(Method::PUT, &format!("/v1/uploads/{sid}/files/{i}"))
                        .header(reqwest::header::CONTENT_LENGTH, entry.size)
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .body(reqwest::Body::wrap_stream(stream)),
                )
                .await
                .map_err(|e| match e {
                    Error::Integrity(m) => Error::Integrity(format!(
                        "`{}` changed while being pushed or was corrupted in transit: {m}",
                        local.display()
                    )),
                    other => other,
                })?;
                Ok::<u64, Error>(entry.size)
            }
        });
        if let Some(p) = &opts.progress {
            p.total(list.iter().map(|e| e.size).sum());
        }
        let mut uploaded = 0u64;
        let mut results =
            futures_util::stream::iter(uploads).buffer_unordered(opts.parallel.max(1));
        while let Some(r) = results.next().await {
            uploaded += r?;
        }
        drop(results);
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
