//! Downloading one file into a partial file, resuming with range requests,
//! hashing as bytes land, and refusing anything that does not match.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use reqwest::Method;
use tokio::io::AsyncReadExt;
use vault_api::FileEntry;

use crate::sink;
use crate::{Client, Error, Result};
use vault_directio::ALIGN;

/// Retries of one file after a connection drops mid-body (each resumes with
/// a range request where the last one stopped).
const RESUME_ATTEMPTS: usize = 3;

/// Told how far a transfer is (the CLI draws progress bars with it).
pub trait ProgressSink: Send + Sync {
    /// The total bytes of the transfer, once known.
    fn total(&self, _bytes: u64) {}
    /// `bytes` more are done.
    fn advance(&self, bytes: u64);
}

/// A shared progress sink.
pub type Progress = Arc<dyn ProgressSink>;

fn integrity(m: impl Into<String>) -> Error {
    Error::Integrity(m.into())
}

impl Client {
    /// Download file `index` of version `digest` into `partial`, continuing
    /// what an interrupted run left there. On success `partial` holds exactly
    /// the file (size and SHA-256 checked) and is synced; returns the bytes
    /// downloaded. On an integrity failure `partial` is removed.
    pub(crate) async fn download_to(
        &self,
        digest: &str,
        index: usize,
        f: &FileEntry,
        partial: &Path,
        opts: &crate::PullOptions,
    ) -> Result<u64> {
        let (progress, limit) = (opts.progress.as_ref(), opts.limit.as_deref());
        let io = |what: &str, e| Error::io(format!("{what} `{}`", partial.display()), e);
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut have = hash_prefix(partial, f.size, &mut hasher).await?;
        if let Some(p) = progress {
            p.advance(have);
        }
        // Writing and hashing run on their own threads, fed through a
        // bounded channel, so they overlap with receiving.
        let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(8);
        let writer = {
            let (partial, size, direct) = (partial.to_path_buf(), f.size, opts.direct_io);
            tokio::task::spawn_blocking(move || {
                sink::write_partial(&partial, have, size, direct, hasher, rx)
            })
        };
        let start = have;
        let mut attempts = 0;
        let mut failure: Option<Error> = None;
        'requests: while have < f.size {
            let mut rb = self.request(Method::GET, &format!("/v1/versions/{digest}/files/{index}"));
            if have > 0 {
                rb = rb.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let resp = match self.send(rb).await {
                Ok(r) => r,
                // The connection broke (for example the server reset the
                // stream on data that failed verification): ask again from
                // `have`; the server checks that segment before answering.
                Err(Error::Transport(_)) if attempts < RESUME_ATTEMPTS => {
                    attempts += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempts as u64))
                        .await;
                    continue 'requests;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let mut body = resp.bytes_stream();
            let mut dropped = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => {
                        if have + c.len() as u64 > f.size {
                            failure = Some(integrity(format!(
                                "`{}`: server sent more than {} bytes",
                                f.path, f.size
                            )));
                            break 'requests;
                        }
                        if let Some(l) = limit {
                            l.take(c.len()).await;
                        }
                        have += c.len() as u64;
                        if let Some(p) = progress {
                            p.advance(c.len() as u64);
                        }
                        if tx.send(c).is_err() {
                            break 'requests;
                        }
                    }
                    Err(e) => {
                        dropped = Some(Error::from(e));
                        break;
                    }
                }
            }
            if have < f.size {
                attempts += 1;
                if attempts > RESUME_ATTEMPTS {
                    let e =
                        dropped.unwrap_or_else(|| Error::Unavailable("body ended early".into()));
                    failure = Some(Error::Unavailable(format!(
                        "`{}` stopped at {have} of {} bytes after {RESUME_ATTEMPTS} resumes ({e}); run pull again to resume",
                        f.path, f.size
                    )));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| Error::Local(format!("a worker task failed: {e}")))?
            .map_err(|e| io("cannot write", e));
        if let Some(e) = failure {
            if matches!(e, Error::Integrity(_)) {
                let _ = tokio::fs::remove_file(partial).await;
            }
            return Err(e);
        }
        let hasher = written?;
        let sha = hex::encode(hasher.finish().as_ref());
        if sha != f.sha256 {
            let _ = tokio::fs::remove_file(partial).await;
            return Err(integrity(format!(
                "`{}`: downloaded bytes hash to {sha}, the manifest says {}",
                f.path, f.sha256
            )));
        }
        Ok(f.size - start)
    }
}

/// Hash an existing partial file into `hasher`; returns how many of its bytes
/// are kept. A partial file longer than the file can be is removed (0 kept);
/// an unfinished one is cut back to a multiple of [`ALIGN`] so writing can
/// go on with direct I/O.
async fn hash_prefix(partial: &Path, size: u64, hasher: &mut ring::digest::Context) -> Result<u64> {
    let err = |what: &str, e| Error::io(format!("cannot {what} `{}`", partial.display()), e);
    let mut f = match tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        // A link planted at the partial file's name is not followed.
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(partial)
        .await
    {
        Ok(f) => f,
        Err(_) => {
            // Missing, or not a plain file: start afresh (the name is
            // freed; removing a link removes only the link).
            let _ = tokio::fs::remove_file(partial).await;
            return Ok(0);
        }
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len > size {
        drop(f);
        let _ = tokio::fs::remove_file(partial).await;
        return Ok(0);
    }
    let keep = if len == size {
        len
    } else {
        len - len % ALIGN as u64
    };
    if keep != len {
        f.set_len(keep).await.map_err(|e| err("truncate", e))?;
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    while n < keep {
        let k = f.read(&mut buf).await.map_err(|e| err("read", e))?;
        if k == 0 {
            break;
        }
        let k = k.min((keep - n) as usize);
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok(n)
}
