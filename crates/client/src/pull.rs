//! Verified pull: resolve → check the manifest → stream each file into a
//! partial file under `DEST/.mlvault/partial/` (or into the cache), hashing
//! as it lands, and keep it only when size and SHA-256 match → once every
//! file of the version is verified and staged there, rename each into place.
//!
//! So a pull that fails or is killed while it downloads leaves the
//! destination as it was: the version pulled there before stays whole, and
//! no file of the new one appears beside it. Only the renames at the end,
//! one per file, can be cut short; the destination's manifest then still
//! names the old version, `verify` fails, and pulling again finishes it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Serialize;
use vault_api::{FileEntry, Reference, Selector};
use vault_manifest::{digest_of, parse_envelope};

use crate::beneath::Dir;
use crate::cache::Cache;
use crate::download::Progress;
use crate::local::{
    previous_manifest, remove_previous, safe_destination, unexpected_entries, MANIFEST_DIR,
    MANIFEST_FILE, REPORT_FILE,
};
use crate::{Client, Error, Result};

/// Options of [`Client::pull`].
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Accept an alias that moved back to an older version or an older record.
    pub allow_downgrade: bool,
    /// Accept an expired alias record.
    pub allow_expired: bool,
    /// Refuse an alias record issued longer ago than this many seconds (a
    /// replayed record, for a client with no state of its own).
    pub max_record_age: Option<u64>,
    /// Publisher keys: when any are given, the manifest must carry a valid
    /// signature by one of them.
    pub trusted: Vec<vault_manifest::PublicKey>,
    /// Keys trusted to sign alias records; when empty, the key pinned for
    /// this server is used, pinned on first use.
    pub server_keys: Vec<vault_manifest::PublicKey>,
    /// Client state directory (default [`crate::default_state_dir`]).
    pub state_dir: Option<PathBuf>,
    /// Files transferred at once.
    pub parallel: usize,
    /// Content-addressed cache directory; `None` downloads straight into
    /// the destination.
    pub cache: Option<PathBuf>,
    /// Re-hash cached files instead of trusting their recorded state.
    pub verify_cache: bool,
    /// Told about transferred bytes.
    pub progress: Option<Progress>,
    /// A rate limit shared by every file received with these options
    /// (`--limit-rate`).
    pub limit: Option<std::sync::Arc<crate::RateLimit>>,
    /// Write downloaded files with direct I/O (past the page cache) where
    /// the file system takes it, as `MLVAULT_DIRECT_IO=on` does; unless
    /// `MLVAULT_DIRECT_IO=off`. For files that are not read right away.
    pub direct_io: bool,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("parallel", &self.parallel)
            .field("cache", &self.cache)
            .field("direct_io", &self.direct_io)
            .finish_non_exhaustive()
    }
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
    /// Files of the version the destination held before that this one does
    /// not have, removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed_files: Vec<String>,
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
        crate::check_report(&rv, &m)?;
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
        let previous = previous_manifest(dest);
        // A directory no pull wrote before is not walked afterwards (it may
        // be large); one look says whether it held anything.
        let held_other_files = previous.is_none()
            && std::fs::read_dir(dest)
                .is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != MANIFEST_DIR)));
        // Every folder below the destination is opened without following
        // links (see `beneath`); partial and staged files are named through
        // the open staging folder.
        let root = Dir::root(dest)?;
        let meta_dir = root.make(MANIFEST_DIR)?;
        let partial = meta_dir.make("partial")?;
        let partial_dir = partial.anchored("");
        if let Some(p) = &opts.progress {
            p.total(m.total_bytes());
        }
        let cache = match &opts.cache {
            Some(dir) => Some(Cache::open(dir)?),
            None => None,
        };
        let jobs = m
            .files()
            .iter()
            .zip(&targets)
            .enumerate()
            .map(|(i, (f, target))| {
                let (cache, partial_dir, digest) =
                    (cache.clone(), partial_dir.clone(), digest.clone());
                async move {
                    match cache {
                        Some(c) => {
                            let staged = partial_dir.join(staged_name(&f.sha256, i));
                            self.fetch_cached(&c, &digest, i, f, target, &staged, opts)
                                .await
                        }
                        None => {
                            // Kept when the pull fails: the next one resumes it.
                            let partial = partial_dir.join(format!("{}-{i}", f.sha256));
                            let n = self.download_to(&digest, i, f, &partial, opts).await?;
                            Ok((n, Some(partial)))
                        }
                    }
                }
            });
        // Every file verified and staged before the destination changes.
        let mut downloaded = 0;
        let mut staged: Vec<Option<PathBuf>> = vec![None; m.files().len()];
        let mut failed = None;
        let mut results =
            futures_util::stream::iter(jobs.enumerate().map(|(i, j)| async move { (i, j.await) }))
                .buffer_unordered(opts.parallel.max(1));
        while let Some((i, r)) = results.next().await {
            match r {
                Ok((n, s)) => {
                    downloaded += n;
                    staged[i] = s;
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(results);
        if let Some(e) = failed {
            if cache.is_some() {
                remove_staged(&partial_dir, |pid| pid == std::process::id()).await;
            }
            return Err(e);
        }
        for (s, f) in staged.iter().zip(m.files()) {
            if let Some(s) = s {
                place(&root, &partial, s, &f.path)?;
            }
        }
        // What an earlier pull left here that this version does not have
        // goes before the new manifest is written: if this stops in
        // between, the destination fails `verify` and a new pull finishes it.
        let mut removed_files = Vec::new();
        if let Some(before) = &previous {
            let (gone, kept) = {
                let (dest, before, now) = (dest.to_path_buf(), before.clone(), m.clone());
                tokio::task::spawn_blocking(move || {
                    Dir::root(&dest).map(|root| remove_previous(&root, &before, &now))
                })
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))??
            };
            let old = format!("{}:{}", before.predicate().name, before.predicate().version);
            if !gone.is_empty() {
                notes.push(format!(
                    "removed {} of {old} that {}:{} does not have",
                    count_files(gone.len()),
                    p.name,
                    p.version
                ));
            }
            if !kept.is_empty() {
                notes.push(format!(
                    "kept {} of {old} that changed since it was pulled and is not in this version: {}",
                    count_files(kept.len()),
                    some_of(&kept)
                ));
            }
            removed_files = gone;
        }
        // The report first: a manifest that signs a report is never left
        // beside a missing one.
        match &rv.report {
            Some(r) => {
                let text = serde_json::to_vec_pretty(r)
                    .map_err(|e| integrity(format!("job report: {e}")))?;
                write_atomic(&meta_dir, REPORT_FILE, &text)?;
            }
            None => {
                let _ = meta_dir.remove_file(REPORT_FILE);
            }
        }
        write_atomic(&meta_dir, MANIFEST_FILE, rv.envelope.as_bytes())?;
        // Links a killed pull staged here would keep cache objects in use.
        if cfg!(target_os = "linux") {
            remove_staged(&partial_dir, |pid| {
                !Path::new("/proc").join(pid.to_string()).exists()
            })
            .await;
        }
        drop(partial);
        let _ = meta_dir.remove_dir("partial");
        if previous.is_some() {
            let extra = {
                let (dest, m) = (dest.to_path_buf(), m.clone());
                tokio::task::spawn_blocking(move || {
                    let expected: HashSet<&str> =
                        m.files().iter().map(|f| f.path.as_str()).collect();
                    // Only for a note: a folder it cannot list is left to `verify`.
                    unexpected_entries(&dest, &expected).unwrap_or_default()
                })
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))?
            };
            if !extra.is_empty() {
                notes.push(format!(
                    "`{}` also holds {} not in the manifest (`vault-cli verify` reports them): {}",
                    dest.display(),
                    count_files(extra.len()),
                    some_of(&extra)
                ));
            }
        } else if held_other_files {
            notes.push(format!(
                "`{}` held other files before this pull; `vault-cli verify` reports anything not in the manifest",
                dest.display()
            ));
        }
        Ok(PullResult {
            reference: format!("{}:{}", p.name, p.version),
            version: p.version,
            digest,
            files: m.files().len(),
            bytes: m.total_bytes(),
            downloaded_bytes: downloaded,
            signer,
            alias_sequence,
            removed_files,
            notes,
        })
    }

    /// One file through the cache: nothing to do when the destination is
    /// already the verified object; else the object (downloaded into the
    /// cache first when the cache lacks it) is staged at `staged`, to be
    /// renamed into place. One process fills an object at a time. Returns
    /// the bytes downloaded and the staged file, if any.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_cached(
        &self,
        cache: &Cache,
        digest: &str,
        index: usize,
        f: &FileEntry,
        target: &Path,
        staged: &Path,
        opts: &PullOptions,
    ) -> Result<(u64, Option<PathBuf>)> {
        if !opts.verify_cache && cache.is_current(&f.sha256, f.size, target) {
            if let Some(p) = &opts.progress {
                p.advance(f.size);
            }
            return Ok((0, None));
        }
        let lock = {
            let (c, sha) = (cache.clone(), f.sha256.clone());
            tokio::task::spawn_blocking(move || c.lock(&sha))
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))??
        };
        let verified = {
            let (c, sha, size, re) = (cache.clone(), f.sha256.clone(), f.size, opts.verify_cache);
            tokio::task::spawn_blocking(move || c.verified(&sha, size, re))
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))??
        };
        let mut n = 0;
        if verified {
            if let Some(p) = &opts.progress {
                p.advance(f.size);
            }
        } else {
            n = self
                .download_to(digest, index, f, &cache.partial(&f.sha256), opts)
                .await?;
            cache.commit_partial(&f.sha256)?;
        }
        {
            let (c, sha, staged) = (cache.clone(), f.sha256.clone(), staged.to_path_buf());
            tokio::task::spawn_blocking(move || c.stage(&sha, &staged))
                .await
                .map_err(|e| Error::Local(format!("a worker task failed: {e}")))??;
        }
        drop(lock);
        Ok((n, Some(staged.to_path_buf())))
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
            &crate::trust::Expect {
                name: r.name.as_str(),
                alias,
                version: rv.version,
                digest,
            },
            st.aliases.get(&key),
            &crate::trust::Rules {
                allow_downgrade: opts.allow_downgrade,
                allow_expired: opts.allow_expired,
                max_record_age: opts.max_record_age,
                now: unix_now(),
            },
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
}

/// The name under which file `index` (SHA-256 `sha`) is staged from the
/// cache by this process: its id in the name keeps concurrent pulls into one
/// destination apart, and tells a later pull whether its owner still runs.
fn staged_name(sha: &str, index: usize) -> String {
    format!("{sha}-{index}.staged-{}", std::process::id())
}

/// Remove the files staged from the cache in `partial_dir` by the processes
/// `owner` picks (partial downloads are left for the next pull to resume).
async fn remove_staged(partial_dir: &Path, owner: impl Fn(u32) -> bool) {
    let Ok(mut dir) = tokio::fs::read_dir(partial_dir).await else {
        return;
    };
    while let Ok(Some(e)) = dir.next_entry().await {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.rsplit_once(".staged-"))
            .and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(&owner) {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}

/// Move a verified file staged at `staged` (in the folder `partial`) into
/// place at the manifest path `rel` below `root`, creating its folders; a
/// link anywhere on the way is refused.
fn place(root: &Dir, partial: &Dir, staged: &Path, rel: &str) -> Result<()> {
    let name = staged
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Local(format!("staged file `{}` has no name", staged.display())))?;
    let (folder, file) = crate::beneath::split(rel);
    let parent = root.make(folder)?;
    partial.rename(name, &parent, file)?;
    parent.sync();
    Ok(())
}

/// Write `bytes` to `name` in `dir` through a new temporary file and a
/// rename; a link at either name is replaced, never followed.
fn write_atomic(dir: &Dir, name: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = format!("{name}.tmp");
    let _ = dir.remove_file(&tmp);
    let shown = dir.shown().join(&tmp);
    let mut f = dir.create_new(&tmp)?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("cannot write `{}`", shown.display()), e))?;
    dir.rename(&tmp, dir, name)?;
    dir.sync();
    Ok(())
}

/// The first few of `paths`, and how many more.
fn some_of(paths: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = paths
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        s.push_str(&format!(" and {} more", paths.len() - SHOWN));
    }
    s
}

fn count_files(n: usize) -> String {
    if n == 1 {
        "1 file".into()
    } else {
        format!("{n} files")
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
