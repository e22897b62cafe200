//! Verified pull: resolve → check the manifest → stream each file into a
//! partial file under `DEST/.mlvault/partial/`, hashing as it lands → fsync
//! and rename into place only when size and SHA-256 match.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::Method;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vault_api::{FileEntry, Reference, Selector};
use vault_manifest::{digest_of, parse_envelope};

use crate::local::{manifest_path, safe_destination, MANIFEST_DIR};
use crate::{Client, Error, Result};

/// Retries of one file after a connection drops mid-body (each resumes with
/// a range request where the last one stopped).
const RESUME_ATTEMPTS: usize = 3;

/// Options of [`Client::pull`].
#[derive(Clone, Debug, Default)]
pub struct PullOptions {
    /// Accept an alias that moved back to an older version or an older record.
    pub allow_downgrade: bool,
    /// Accept an expired alias record.
    pub allow_expired: bool,
    /// Publisher keys: when any are given, the manifest must carry a valid
    /// signature by one of them.
    pub trusted: Vec<vault_manifest::PublicKey>,
    /// Keys trusted to sign alias records; when empty, the key pinned for
    /// this server is used, pinned on first use.
    pub server_keys: Vec<vault_manifest::PublicKey>,
    /// Client state directory (default [`crate::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
}

/// What a pull did; the shape of `vault-cli pull --json`.
#[derive(Clone, Debug, Serialize)]
pub struct PullResult {
    /// `name:version`.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Version pulled.
    pub version: u64,
    /// Manifest digest.
    pub digest: String,
    /// Files in the version.
    pub files: usize,
    /// Total bytes.
    pub bytes: u64,
    /// Bytes actually downloaded.
    pub downloaded_bytes: u64,
    /// Key id of the trusted key that signed the manifest, if checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The verified alias record's sequence, for alias references.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias_sequence: Option<u64>,
    /// Things the user should know (a server key pinned on first use).
    #[serde(skip)]
    pub notes: Vec<String>,
}

fn integrity(m: impl Into<String>) -> Error {
    Error::Integrity(m.into())
}

impl Client {
    /// Pull `r` into `dest`, verified.
    pub async fn pull(&self, r: &Reference, dest: &Path, opts: &PullOptions) -> Result<PullResult> {
        let rv = self.resolve(r).await?;
        let digest = digest_of(rv.envelope.as_bytes());
        if digest != rv.digest {
            return Err(integrity(
                "the manifest does not hash to the digest the server named",
            ));
        }
        match &r.selector {
            Selector::Digest(d) if *d != digest => {
                return Err(integrity(format!(
                    "asked for {d}, the server sent {digest}"
                )))
            }
            Selector::Version(n) if *n != rv.version => {
                return Err(integrity(format!(
                    "asked for version {n}, got {}",
                    rv.version
                )))
            }
            _ => {}
        }
        let (env, m) = parse_envelope(&rv.envelope).map_err(|e| integrity(e.to_string()))?;
        let p = m.predicate();
        if p.name != r.name || p.version != rv.version {
            return Err(integrity(format!(
                "manifest is for {}:{}, not {}:{}",
                p.name, p.version, r.name, rv.version
            )));
        }
        let signer = if opts.trusted.is_empty() {
            None
        } else {
            Some(
                env.verify_any(&opts.trusted)
                    .map_err(|e| integrity(e.to_string()))?,
            )
        };
        let mut notes = Vec::new();
        let alias_sequence = match &r.selector {
            Selector::Alias(a) => Some(
                self.check_alias_record(r, a, &rv, &digest, opts, &mut notes)
                    .await?,
            ),
            _ => None,
        };
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| Error::io(format!("cannot create `{}`", dest.display()), e))?;
        // Every path is checked before the first byte is written.
        let targets = m
            .files()
            .iter()
            .map(|f| safe_destination(dest, &f.path))
            .collect::<Result<Vec<_>>>()?;
        let partial_dir = dest.join(MANIFEST_DIR).join("partial");
        tokio::fs::create_dir_all(&partial_dir)
            .await
            .map_err(|e| Error::io(format!("cannot create `{}`", partial_dir.display()), e))?;
        let mut downloaded = 0;
        for (i, (f, target)) in m.files().iter().zip(&targets).enumerate() {
            downloaded += self.fetch_file(&digest, i, f, target, &partial_dir).await?;
        }
        write_atomic(&manifest_path(dest), rv.envelope.as_bytes()).await?;
        let _ = tokio::fs::remove_dir(&partial_dir).await;
        Ok(PullResult {
            reference: format!("{}:{}", p.name, p.version),
            version: p.version,
            digest,
            files: m.files().len(),
            bytes: m.total_bytes(),
            downloaded_bytes: downloaded,
            signer,
            alias_sequence,
            notes,
        })
    }

    async fn check_alias_record(
        &self,
        r: &Reference,
        alias: &str,
        rv: &vault_api::ResolvedVersion,
        digest: &str,
        opts: &PullOptions,
        notes: &mut Vec<String>,
    ) -> Result<u64> {
        let signed = rv
            .alias
            .as_deref()
            .ok_or_else(|| integrity("the server sent no signed alias record"))?;
        let dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(crate::default_state_dir);
        let mut st = crate::ServerState::load(&dir, self.base())?;
        let mut keys = opts.server_keys.clone();
        if keys.is_empty() {
            match &st.server_key {
                Some(t) => keys.push(
                    vault_manifest::PublicKey::from_file_text(t)
                        .map_err(|e| Error::Usage(format!("pinned server key: {e}")))?,
                ),
                None => {
                    let info = self.server_key().await?;
                    let k = vault_manifest::PublicKey::from_file_text(&info.public_key)
                        .map_err(|e| integrity(format!("server key: {e}")))?;
                    notes.push(format!(
                        "pinned the alias-signing key {} of {} (trust on first use)",
                        k.keyid(),
                        self.base()
                    ));
                    st.server_key = Some(k.to_file_text());
                    keys.push(k);
                }
            }
        }
        let key = format!("{}:{alias}", r.name);
        let rec = crate::trust::check_alias(
            signed,
            &keys,
            r.name.as_str(),
            alias,
            rv.version,
            digest,
            st.aliases.get(&key),
            opts.allow_downgrade,
            opts.allow_expired,
        )?;
        let seen = st.aliases.entry(key).or_default();
        if rec.sequence >= seen.sequence {
            *seen = crate::Seen {
                sequence: rec.sequence,
                version: rec.version,
            };
        }
        st.save(&dir)?;
        Ok(rec.sequence)
    }

    async fn fetch_file(
        &self,
        digest: &str,
        index: usize,
        f: &FileEntry,
        target: &Path,
        partial_dir: &Path,
    ) -> Result<u64> {
        let partial = partial_dir.join(&f.sha256);
        let io = |what: &str, e| Error::io(format!("{what} `{}`", partial.display()), e);
        // Resume: hash what an interrupted pull left, if it is not too long.
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut have = hash_prefix(&partial, f.size, &mut hasher).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)
            .await
            .map_err(|e| io("cannot open", e))?;
        let start = have;
        let mut attempts = 0;
        while have < f.size {
            let mut rb = self.request(Method::GET, &format!("/v1/versions/{digest}/files/{index}"));
            if have > 0 {
                rb = rb.header(reqwest::header::RANGE, format!("bytes={have}-"));
            }
            let resp = match self.send(rb).await {
                Ok(r) => r,
                Err(e) => {
                    if matches!(e, Error::Integrity(_)) {
                        drop(file);
                        let _ = tokio::fs::remove_file(&partial).await;
                    }
                    return Err(e);
                }
            };
            let mut body = resp.bytes_stream();
            let mut dropped = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(c) => {
                        if have + c.len() as u64 > f.size {
                            drop(file);
                            let _ = tokio::fs::remove_file(&partial).await;
                            return Err(integrity(format!(
                                "`{}`: server sent more than {} bytes",
                                f.path, f.size
                            )));
                        }
                        hasher.update(&c);
                        file.write_all(&c)
                            .await
                            .map_err(|e| io("cannot write", e))?;
                        have += c.len() as u64;
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
                    return Err(Error::Unavailable(format!(
                        "`{}` stopped at {have} of {} bytes after {RESUME_ATTEMPTS} resumes ({e}); run pull again to resume",
                        f.path, f.size
                    )));
                }
            }
        }
        let sha = hex::encode(hasher.finish().as_ref());
        if sha != f.sha256 {
            drop(file);
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(integrity(format!(
                "`{}`: downloaded bytes hash to {sha}, the manifest says {}",
                f.path, f.sha256
            )));
        }
        file.sync_all().await.map_err(|e| io("cannot sync", e))?;
        drop(file);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io(format!("cannot create `{}`", parent.display()), e))?;
        }
        tokio::fs::rename(&partial, target)
            .await
            .map_err(|e| Error::io(format!("cannot move into place `{}`", target.display()), e))?;
        if let Some(parent) = target.parent() {
            sync_dir(parent).await;
        }
        Ok(f.size - start)
    }
}

/// Hash an existing partial file into `hasher`; returns its length, or 0
/// (after truncating it) when it is longer than the file can be.
async fn hash_prefix(partial: &Path, size: u64, hasher: &mut ring::digest::Context) -> Result<u64> {
    let mut f = match tokio::fs::File::open(partial).await {
        Ok(f) => f,
        Err(_) => return Ok(0),
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    if len > size {
        drop(f);
        let _ = tokio::fs::remove_file(partial).await;
        return Ok(0);
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("cannot read `{}`", partial.display()), e))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
    Ok(n)
}

async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent: PathBuf = path.parent().map(Path::to_path_buf).unwrap_or_default();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(|e| Error::io(format!("cannot create `{}`", parent.display()), e))?;
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| Error::io(format!("cannot create `{}`", tmp.display()), e))?;
    f.write_all(bytes)
        .await
        .map_err(|e| Error::io(format!("cannot write `{}`", tmp.display()), e))?;
    f.sync_all()
        .await
        .map_err(|e| Error::io(format!("cannot sync `{}`", tmp.display()), e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::io(format!("cannot write `{}`", path.display()), e))?;
    sync_dir(&parent).await;
    Ok(())
}
