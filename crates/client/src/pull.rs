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

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Serialize;
use vault_api::ResolvedVersion;
use vault_api::{FileEntry, Reference, Selector};
use vault_manifest::{digest_of, parse_envelope, Envelope, Manifest};

use crate::cache::Cache;
use crate::destination::Destination;
use crate::download::Progress;
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
    /// Require the alias record to carry a grant of this promotion gate
    /// (`--require-gate production`): the reference must name that alias,
    /// and every envelope the grant names must be delivered, about this
    /// version. Kept in `DEST/.mlvault/promotion.json` for `verify`.
    pub require_gate: Option<String>,
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
    /// The admission scan's verdict, its signature verified (versions
    /// pushed before scans existed have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::ScanView>,
    /// The attestations and approvals kept about the version.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationView>,
    /// The promotion gate the alias record was granted on, checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::GateView>,
    /// Things the user should know (a server key pinned on first use).
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// One attestation about a pulled version, as `pull --json` lists it.
#[derive(Clone, Debug, Serialize)]
pub struct AttestationView {
    /// `sha256:` of the envelope.
    pub digest: String,
    /// Its predicate type.
    pub predicate_type: String,
    /// The attestor that signed it (`approval:NAME` for approvals).
    pub attestor: String,
    /// For test results: PASSED, WARNED or FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// When the vault accepted it (epoch seconds).
    pub added: u64,
}

fn integrity(m: impl Into<String>) -> Error {
    Error::Integrity(m.into())
}

impl Client {
    /// Pull `r` into `dest`, verified: resolve and check the manifest (and
    /// an alias's signed record), fetch every file into the destination's
    /// staging folder, and only when all are verified put them in place,
    /// remove what an earlier version left and record the manifest.
    pub async fn pull(&self, r: &Reference, dest: &Path, opts: &PullOptions) -> Result<PullResult> {
        if let Some(g) = &opts.require_gate {
            if !matches!(&r.selector, Selector::Alias(a) if a == g) {
                return Err(Error::Usage(format!(
                    "--require-gate {g} needs the reference to name that alias (`{}:{g}`)",
                    r.name
                )));
            }
        }
        let (rv, digest, env, m) = self.verified_manifest(r).await?;
        // Refused by policy (a model whose scan did not pass, for a deploy
        // job): nothing is placed, not even from the local cache.
        if let Some(why) = &rv.pull_denied {
            return Err(Error::Auth(why.clone()));
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
        let record = match &r.selector {
            Selector::Alias(a) => Some((
                a.as_str(),
                self.check_alias_record(r, a, &rv, &digest, opts, &mut notes)
                    .await?,
            )),
            _ => None,
        };
        let alias_sequence = record.as_ref().map(|(_, rec)| rec.sequence);
        // The envelopes a gate grant may name: the attestations kept and
        // the scan verdict.
        let envelopes: Vec<String> = rv
            .attestations
            .iter()
            .map(|a| a.envelope.clone())
            .chain(rv.scan.clone())
            .collect();
        let gate = match &record {
            Some((alias, rec)) if rec.gate.is_some() || opts.require_gate.is_some() => {
                Some(crate::gate::check_grant(rec, alias, &digest, &envelopes)?)
            }
            _ => None,
        };
        let promotion = record.as_ref().map(|_| crate::gate::Promotion {
            server: self.base().to_owned(),
            record: rv.alias.clone().unwrap_or_default(),
            evidence: gate
                .as_ref()
                .map(|g| {
                    envelopes
                        .iter()
                        .filter(|e| {
                            g.evidence
                                .iter()
                                .any(|x| x.digest == digest_of(e.as_bytes()))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        });
        let scan = self.check_scan_verdict(&rv, opts, &mut notes).await?;
        let (dest, targets) = Destination::open(dest, &m).await?;
        if let Some(p) = &opts.progress {
            p.total(m.total_bytes());
        }
        let cache = match &opts.cache {
            Some(dir) => Some(Cache::open(dir)?),
            None => None,
        };
        let (downloaded, staged) = match self
            .fetch_all(&dest, cache.as_ref(), &m, &targets, &digest, opts)
            .await
        {
            Ok(fetched) => fetched,
            Err(e) => {
                if cache.is_some() {
                    dest.discard_staged().await;
                }
                return Err(e);
            }
        };
        dest.place_all(&staged, &m)?;
        let removed_files = dest.remove_previous(&m, &mut notes).await?;
        dest.record(&rv.envelope, rv.report.as_ref(), promotion.as_ref())?;
        dest.finish(&m, &mut notes).await?;
        let p = m.predicate();
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
            scan,
            attestations: rv
                .attestations
                .iter()
                .map(|a| AttestationView {
                    digest: a.digest.clone(),
                    predicate_type: a.predicate_type.clone(),
                    attestor: a.attestor.clone(),
                    result: a.result.clone(),
                    added: a.added,
                })
                .collect(),
            gate,
            notes,
        })
    }

    /// Resolve `r` and check what came back: the envelope hashes to the
    /// digest named, the digest or version asked for is the one sent, the
    /// manifest names this artifact and version, and a job report matches
    /// the digest the manifest signs.
    async fn verified_manifest(
        &self,
        r: &Reference,
    ) -> Result<(ResolvedVersion, String, Envelope, Manifest)> {
        let rv = self.resolve_with_attestations(r).await?;
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
        Ok((rv, digest, env, m))
    }

    /// Fetch every file of `m`, `opts.parallel` at a time, through the
    /// cache or straight into the staging folder, each verified. Returns
    /// the bytes downloaded and each file's staged copy (none when the
    /// destination already holds the verified file); the first failure
    /// stops the rest.
    async fn fetch_all(
        &self,
        dest: &Destination,
        cache: Option<&Cache>,
        m: &Manifest,
        targets: &[PathBuf],
        digest: &str,
        opts: &PullOptions,
    ) -> Result<(u64, Vec<Option<PathBuf>>)> {
        let jobs = m
            .files()
            .iter()
            .zip(targets)
            .enumerate()
            .map(|(i, (f, target))| async move {
                let fetched = match cache {
                    Some(c) => {
                        let staged = dest.staged_path(&f.sha256, i);
                        self.fetch_cached(c, digest, i, f, target, &staged, opts)
                            .await
                    }
                    None => {
                        let partial = dest.partial_path(&f.sha256, i);
                        self.download_to(digest, i, f, &partial, opts)
                            .await
                            .map(|n| (n, Some(partial)))
                    }
                };
                (i, fetched)
            });
        let mut downloaded = 0;
        let mut staged: Vec<Option<PathBuf>> = vec![None; m.files().len()];
        let mut results = futures_util::stream::iter(jobs).buffer_unordered(opts.parallel.max(1));
        while let Some((i, r)) = results.next().await {
            let (n, s) = r?;
            downloaded += n;
            staged[i] = s;
        }
        Ok((downloaded, staged))
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

    /// The server keys to check what the server signs (alias records,
    /// scan verdicts) with: those given, else the one pinned for this
    /// server, else the server's own, pinned now (trust on first use).
    async fn trusted_server_keys(
        &self,
        opts: &PullOptions,
        st: &mut crate::ServerState,
        notes: &mut Vec<String>,
    ) -> Result<Vec<vault_manifest::PublicKey>> {
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
                        "pinned the server signing key {} of {} (trust on first use)",
                        k.keyid(),
                        self.base()
                    ));
                    st.server_key = Some(k.to_file_text());
                    keys.push(k);
                }
            }
        }
        Ok(keys)
    }

    /// This server's client state (pinned key, alias records seen) and the
    /// keys to check what it signs with.
    async fn server_state_and_keys(
        &self,
        opts: &PullOptions,
        notes: &mut Vec<String>,
    ) -> Result<(
        std::path::PathBuf,
        crate::ServerState,
        Vec<vault_manifest::PublicKey>,
    )> {
        let dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(crate::default_state_dir);
        let mut st = crate::ServerState::load(&dir, self.base())?;
        let keys = self.trusted_server_keys(opts, &mut st, notes).await?;
        Ok((dir, st, keys))
    }

    /// The version's scan verdict, its signature checked with the server
    /// key (pinned as for alias records).
    async fn check_scan_verdict(
        &self,
        rv: &ResolvedVersion,
        opts: &PullOptions,
        notes: &mut Vec<String>,
    ) -> Result<Option<crate::ScanView>> {
        if rv.scan.is_none() {
            return Ok(None);
        }
        let (dir, st, keys) = self.server_state_and_keys(opts, notes).await?;
        let view = crate::check_scan(rv, &keys)?;
        st.save(&dir)?;
        Ok(view)
    }

    async fn check_alias_record(
        &self,
        r: &Reference,
        alias: &str,
        rv: &vault_api::ResolvedVersion,
        digest: &str,
        opts: &PullOptions,
        notes: &mut Vec<String>,
    ) -> Result<vault_manifest::AliasRecord> {
        let signed = rv
            .alias
            .as_deref()
            .ok_or_else(|| integrity("the server sent no signed alias record"))?;
        let (dir, mut st, keys) = self.server_state_and_keys(opts, notes).await?;
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
        Ok(rec)
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
