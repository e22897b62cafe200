//! Anonymization jobs: durable records in the metadata, one runner at a
//! time. A job decrypts its source as it streams, transforms it in memory
//! (plaintext never reaches a file), hashes the output (the blob header
//! declares size and SHA-256), then transforms again into the encryptor, and
//! commits a new dataset version signed by the server's key. A crash
//! mid-job leaves only a pending upload session, which is abandoned when the
//! job runs again from the start.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use vault_anonymize::{Job, Prepared, Report, Spec};
use vault_api::{FileEntry, Kind, Reference, Selector};
use vault_audit::Event;
use vault_manifest::Manifest;
use vault_store::{JobRecord, Review, ReviewState, VersionFile, VersionRecord};

use super::error::{blocking as blocking_domain, Error as DomainError, Result as DomainResult};
use super::{ingest, resolve};
use crate::vault::Vault;

/// One job at a time: they are CPU-bound.
fn slots() -> &'static Semaphore {
    static S: OnceLock<Semaphore> = OnceLock::new();
    S.get_or_init(|| Semaphore::new(1))
}

/// Live row counters of running jobs.
pub fn progress() -> &'static Mutex<HashMap<String, Arc<AtomicU64>>> {
    static P: OnceLock<Mutex<HashMap<String, Arc<AtomicU64>>>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Rows processed so far by a running job.
pub fn live_rows(id: &str) -> Option<u64> {
    progress()
        .lock()
        .ok()?
        .get(id)
        .map(|c| c.load(Ordering::Relaxed))
}

/// Files a job can read.
pub fn file_format_ok(spec: &Spec, path: &str) -> bool {
    let p = path.to_ascii_lowercase();
    match spec.format {
        vault_anonymize::Format::Csv => {
            p.ends_with(".csv") || p.ends_with(".tsv") || p.ends_with(".txt")
        }
        vault_anonymize::Format::Jsonl => {
            p.ends_with(".jsonl") || p.ends_with(".ndjson") || p.ends_with(".json")
        }
    }
}

/// A blocking `Read` over a channel of plaintext chunks.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// Stream a stored file's verified plaintext into a blocking reader. The
/// blob record is read afresh for every pass: a key rewrap may have moved
/// its DEK to a newer KEK (and retired the old one) since the last pass.
async fn reader(v: &Arc<Vault>, blob_id: &str) -> anyhow::Result<ChannelReader> {
    let (meta, id) = (v.meta.clone(), blob_id.to_owned());
    let blob = blocking(move || Ok(meta.blob(&id)?))
        .await?
        .ok_or_else(|| anyhow::anyhow!("blob {blob_id} is missing"))?;
    let mut s = v.blobs.read(&blob, &v.keyring(), 0).await?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        while let Some(b) = s.next().await {
            let stop = b.is_err();
            if tx.send(b.map_err(|e| e.to_string())).await.is_err() || stop {
                break;
            }
        }
    });
    Ok(ChannelReader {
        rx,
        cur: Bytes::new(),
    })
}

/// A blocking `Write` that hashes and counts.
struct HashWriter {
    ctx: ring::digest::Context,
    n: u64,
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ctx.update(buf);
        self.n += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A blocking `Write` into a channel of 1 MiB chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, String>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("blob writer stopped"))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(|| vault_store::may_block(f)).await?
}

/// Jobs this process is running, so that a job is not started twice here.
fn local() -> &'static Mutex<std::collections::HashSet<String>> {
    static L: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

/// Removes a job from [`local`] when its run ends, however it ends.
struct LocalRun(String);

impl Drop for LocalRun {
    fn drop(&mut self) {
        local()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// Claim job `id` for this server until a lease from now: `None` when
/// another server holds it, or it is finished.
async fn claim(v: &Arc<Vault>, id: &str, force: bool) -> anyhow::Result<Option<JobRecord>> {
    let (v2, jid) = (v.clone(), id.to_owned());
    blocking(move || {
        let now = vault_store::now();
        Ok(v2
            .meta
            .claim_job(&jid, &v2.instance, now, now + v2.jobs.lease_secs, force)?)
    })
    .await
}

/// Run job `id` to its end (or until the process dies), if this server
/// gets the claim on it: `force` takes it from whoever held it (one
/// server alone on its metadata, restarting). While it runs the claim is
/// renewed; a server that loses it (it stalled past its lease and another
/// took the job over) stops, and its output can no longer be committed.
pub async fn run(v: Arc<Vault>, id: String, force: bool) {
    if !local()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone())
    {
        return;
    }
    let _local = LocalRun(id.clone());
    let _slot = slots().acquire().await;
    match claim(&v, &id, force).await {
        Ok(Some(_)) => {}
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(job = %id, error = %format!("{e:#}"), "cannot claim a job");
            return;
        }
    }
    metrics::counter!("mlvault_jobs_total", "state" => "started").increment(1);
    let renewer = {
        let (v, id) = (v.clone(), id.clone());
        tokio::spawn(async move {
            let every = Duration::from_secs((v.jobs.lease_secs / 3).max(1));
            loop {
                tokio::time::sleep(every).await;
                match claim(&v, &id, false).await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(job = %id, error = %format!("{e:#}"), "cannot renew a job's claim")
                    }
                }
            }
        })
    };
    let counter = Arc::new(AtomicU64::new(0));
    if let Ok(mut p) = progress().lock() {
        p.insert(id.clone(), counter.clone());
    }
    let mut mine = None;
    let outcome = execute(&v, &id, counter.clone(), &mut mine).await;
    renewer.abort();
    if let Ok(mut p) = progress().lock() {
        p.remove(&id);
    }
    let Err(e) = outcome else {
        metrics::counter!("mlvault_jobs_total", "state" => "succeeded").increment(1);
        return;
    };
    // A failed attempt's partial output is thrown away.
    if let Some(sid) = mine {
        if let Err(e) = ingest::abandon(&v, sid).await {
            tracing::warn!(error = %e, "could not drop a failed job's partial output");
        }
    }
    let v2 = v.clone();
    let res = blocking(move || {
        let Some(mut job) = v2.meta.job(&id)? else {
            return Ok(());
        };
        if job.owner != v2.instance {
            tracing::warn!(job = %job.id, owner = %job.owner, error = %format!("{e:#}"), "another server took this job over; this attempt stopped");
            return Ok(());
        }
        metrics::counter!("mlvault_jobs_total", "state" => "failed").increment(1);
        job.updated = vault_store::now();
        job.rows = counter.load(Ordering::Relaxed);
        job.session = None;
        job.state = "failed".into();
        job.error = Some(format!("{e:#}"));
        tracing::warn!(job = %job.id, error = %format!("{e:#}"), "anonymization job failed");
        v2.meta.put_owned_job(&job)?;
        Ok(())
    })
    .await;
    if let Err(e) = res {
        tracing::error!(error = %format!("{e:#}"), "could not record a job's outcome");
    }
}

/// Store `job` while this server holds it; an error once another took it.
fn put_owned(v: &Vault, job: &JobRecord) -> anyhow::Result<()> {
    if v.meta.put_owned_job(job)? {
        Ok(())
    } else {
        anyhow::bail!("another server took this job over")
    }
}

/// One attempt at job `id`; `mine` gets the output session it opens, for
/// the caller to drop if the attempt fails. On success the output and the
/// finished job are committed in one transaction.
async fn execute(
    v: &Arc<Vault>,
    id: &str,
    counter: Arc<AtomicU64>,
    mine: &mut Option<String>,
) -> anyhow::Result<()> {
    let (meta, jid) = (v.meta.clone(), id.to_owned());
    let mut job: JobRecord = blocking(move || {
        meta.job(&jid)?
            .ok_or_else(|| anyhow::anyhow!("job `{jid}` not found"))
    })
    .await?;
    // A previous attempt's partial output is thrown away.
    if let Some(sid) = job.session.take() {
        ingest::abandon(v, sid).await?;
    }
    let v2 = v.clone();
    let mut job: JobRecord = blocking(move || {
        job.state = "running".into();
        job.attempts += 1;
        job.updated = vault_store::now();
        put_owned(&v2, &job)?;
        Ok(job)
    })
    .await?;
    tracing::info!(job = %job.id, source = %job.source, target = %job.target, attempt = job.attempts, "anonymization job started");
    let r: Reference = job.source.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let Selector::Version(version) = r.selector else {
        anyhow::bail!("job source must name a version");
    };
    let meta = v.meta.clone();
    let name = r.name.to_string();
    let src = blocking(move || Ok(meta.version(&name, version)?))
        .await?
        .ok_or_else(|| anyhow::anyhow!("source `{}` no longer exists", job.source))?;
    let spec = Spec::parse(&job.spec)?;
    let target: vault_api::ArtifactName = job.target.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = v.namespace_key(target.namespace());

    // Reserve the output version through an upload session.
    let n = src.files.len();
    let placeholder: Vec<FileEntry> = src.files.iter().map(|f| f.entry.clone()).collect();
    let (v2, mut j2, t2) = (v.clone(), job.clone(), target.clone());
    let session = blocking(move || {
        let s = ingest::open_for_job(&v2, &t2, placeholder, &j2.id)?;
        j2.session = Some(s.id.clone());
        if let Err(e) = put_owned(&v2, &j2) {
            let _ = v2.meta.abandon_session(&s.id);
            return Err(e);
        }
        Ok(s)
    })
    .await?;
    *mine = Some(session.id.clone());
    job.session = Some(session.id.clone());

    // Pass 1, over every file: parse and check the whole input, count the
    // k-anonymity classes, collect identifier values. The job fails here,
    // before anything is written, when the spec or the data do not allow
    // a safe release.
    let anon = Arc::new(Job::new(spec.clone(), key)?.with_progress(counter.clone()));
    let mut survey = anon.survey_start();
    for f in &src.files {
        let rd = reader(v, f.blob.as_str()).await?;
        let (a, path) = (anon.clone(), f.entry.path.clone());
        survey = blocking(move || {
            a.survey(rd, &path, &mut survey)
                .map_err(|e| anyhow::anyhow!("`{path}`: {e}"))?;
            Ok(survey)
        })
        .await?;
    }
    let a = anon.clone();
    let prepared: Arc<Prepared> = Arc::new(blocking(move || Ok(a.prepare(survey)?)).await?);

    let mut reports = Vec::with_capacity(n);
    let mut entries = Vec::with_capacity(n);
    let mut files = Vec::with_capacity(n);
    for (i, f) in src.files.iter().enumerate() {
        let source = f.blob.as_str();
        // Pass 2: size and SHA-256 of the output, for the blob header.
        counter.store(0, Ordering::Relaxed);
        let rd = reader(v, source).await?;
        let (a, p) = (anon.clone(), prepared.clone());
        let (size, sha, report) = blocking(move || {
            let mut h = HashWriter {
                ctx: ring::digest::Context::new(&ring::digest::SHA256),
                n: 0,
            };
            let report = a.run(rd, &mut h, &p)?;
            let mut sha = [0u8; 32];
            sha.copy_from_slice(h.ctx.finish().as_ref());
            Ok((h.n, sha, report))
        })
        .await?;
        // Pass 3: the same output, encrypted into a new blob.
        counter.store(0, Ordering::Relaxed);
        let rd = reader(v, source).await?;
        let (tx, rx) = mpsc::channel::<Result<Bytes, String>>(4);
        let (a, p) = (anon.clone(), prepared.clone());
        let transform = tokio::task::spawn_blocking(move || -> anyhow::Result<Report> {
            let mut w = ChannelWriter {
                tx,
                buf: Vec::with_capacity(1 << 20),
            };
            let r = a.run(rd, &mut w, &p)?;
            w.flush()?;
            Ok(r)
        });
        let body =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
            )
            .boxed();
        let written = ingest::store_file(v, &session, i, (size, Some(sha)), body, None).await;
        let again = transform.await??;
        written?;
        if again != report {
            anyhow::bail!("the job's output was not deterministic between passes");
        }
        let mut report = report;
        if report.malformed_rows > 0 && n > 1 {
            report.warnings.push(format!(
                "`{}`: {} malformed row(s), first at line(s) {:?}",
                f.entry.path,
                report.malformed_rows,
                &report.malformed_lines[..report.malformed_lines.len().min(10)]
            ));
        }
        reports.push(report);
        let entry = FileEntry {
            path: f.entry.path.clone(),
            size,
            sha256: hex::encode(sha),
        };
        entries.push(entry.clone());
        files.push(entry);
    }

    // The dataset report; a scan over `max_findings` fails the job here.
    let (a, p) = (anon.clone(), prepared.clone());
    let total = blocking(move || Ok(a.finish(&p, reports)?)).await?;

    // The manifest: lineage to the source, the spec and the report, signed
    // by the server, so the report of a released dataset verifies offline.
    let report = serde_json::to_value(&total)?;
    let manifest = Manifest::new(
        target.clone(),
        Kind::Dataset,
        session.version,
        vault_store::now(),
        entries,
        vec![src.digest.clone()],
    )?
    .with_job_spec(job.spec_digest.clone())
    .with_job_report(vault_manifest::report_digest(&report))
    .with_signer(v.signing_key.public().keyid());
    let mut env = manifest.to_envelope();
    env.sign(&v.signing_key)?;
    let envelope = env.to_json();
    // The blobs the session holds now, in manifest (path) order.
    let (meta, sid) = (v.meta.clone(), session.id.clone());
    let held = blocking(move || Ok(meta.session(&sid)?))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the job's upload session vanished"))?;
    let mut files = files
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let blob = held.blobs.get(i).cloned().flatten();
            blob.map(|blob| VersionFile { entry, blob })
                .ok_or_else(|| anyhow::anyhow!("file {i} of the job's output was not stored"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    files.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    let record = VersionRecord {
        name: target.to_string(),
        version: session.version,
        kind: Kind::Dataset,
        digest: vault_manifest::digest_of(envelope.as_bytes()),
        envelope,
        files,
        created: vault_store::now(),
        report: Some(report),
        // Held for a steward's review before anyone else may read it.
        review: Some(pending_review()),
        scan: None,
        pushed_by: "vault-server".into(),
    };
    let output = format!("{}:{}", record.name, record.version);
    job.updated = vault_store::now();
    job.rows = counter.load(Ordering::Relaxed);
    job.state = "succeeded".into();
    job.output = Some(output.clone());
    job.review = Some(pending_review());
    job.report = serde_json::to_value(&total).ok();
    job.session = None;
    let (v2, sid) = (v.clone(), session.id.clone());
    let mut ev = Event::new("vault-server", "job_commit", &output, "ok");
    ev.detail = format!(
        "job {} output {} from {} ({} rows)",
        job.id, record.digest, job.source, job.rows
    );
    let committed = blocking(move || {
        Ok(v2.change(
            |m| m.commit_job(&sid, &record, &job),
            |committed| {
                if *committed {
                    vec![ev.clone()]
                } else {
                    Vec::new()
                }
            },
        )?)
    })
    .await?;
    if !committed {
        anyhow::bail!("another server took this job over before its output was committed");
    }
    tracing::info!(job = %id, "anonymization job succeeded");
    Ok(())
}

/// The review of a job output that was just committed.
pub fn pending_review() -> Review {
    Review {
        state: ReviewState::Pending,
        by: String::new(),
        at: vault_store::now(),
        reason: String::new(),
    }
}

/// At start-up: jobs that were queued or running when the server stopped
/// run again from the start. A server alone on its metadata takes them
/// back at once; among replicas, a job is taken only once its holder's
/// claim ran out ([`take_over`] keeps looking).
pub fn resume(v: &Arc<Vault>) -> anyhow::Result<usize> {
    let pending: Vec<JobRecord> = v
        .meta
        .list_jobs()?
        .into_iter()
        .filter(JobRecord::is_unfinished)
        .collect();
    for j in &pending {
        tracing::info!(job = %j.id, state = %j.state, "resuming anonymization job from the start");
        tokio::spawn(run(v.clone(), j.id.clone(), !v.shared));
    }
    Ok(pending.len())
}

/// Among replicas: every half lease, start the unfinished jobs whose
/// holder stopped renewing its claim (it died), and queued jobs nobody
/// claimed. Runs until the process ends.
pub async fn take_over(v: Arc<Vault>) {
    let every = Duration::from_secs((v.jobs.lease_secs / 2).max(1));
    loop {
        tokio::time::sleep(every).await;
        let v2 = v.clone();
        let orphans = blocking(move || {
            let now = vault_store::now();
            Ok(v2
                .meta
                .list_jobs()?
                .into_iter()
                .filter(|j| j.is_unfinished() && j.lease_until < now)
                .collect::<Vec<_>>())
        })
        .await;
        match orphans {
            Ok(jobs) => {
                for j in jobs {
                    tracing::info!(job = %j.id, owner = %j.owner, "taking over an anonymization job whose server stopped");
                    tokio::spawn(run(v.clone(), j.id, false));
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot look for jobs to take over")
            }
        }
    }
}

/// Refuse a job before it starts: files of the wrong format, or (CSV) a
/// header that repeats a name, lacks a column the spec names or has one it
/// does not. JSON Lines fields are checked by the job's survey pass, which
/// reads every record before anything is written.
pub async fn check_source(v: &Arc<Vault>, spec: &Spec, src: &VersionRecord) -> Result<(), String> {
    let s2 = spec.clone();
    let probe = Arc::new(
        blocking(move || Ok(Job::new(s2, [0; 32])?))
            .await
            .map_err(|e| format!("{e:#}"))?,
    );
    for f in &src.files {
        if !file_format_ok(spec, &f.entry.path) {
            return Err(format!(
                "`{}` is not a {:?} file; the job reads every file of the source",
                f.entry.path, spec.format
            ));
        }
        if spec.format != vault_anonymize::Format::Csv {
            continue;
        }
        let rd = reader(v, &f.blob)
            .await
            .map_err(|e| format!("`{}`: {e:#}", f.entry.path))?;
        let p = probe.clone();
        let header = blocking(move || Ok(p.csv_header(rd)?))
            .await
            .map_err(|e| format!("`{}`: {e:#}", f.entry.path))?;
        if let Some(header) = header {
            probe
                .check_header(&header)
                .map_err(|e| format!("`{}`: {e}", f.entry.path))?;
        }
    }
    Ok(())
}

/// A job to queue: what the caller asked, already parsed and authorized.
pub struct JobPlan {
    /// The spec as sent (its digest goes into the output's manifest).
    pub spec_text: String,
    /// The spec, parsed and its patterns compiled once.
    pub spec: Spec,
    /// The source dataset.
    pub source: Reference,
    /// The artifact the output is committed to.
    pub target: vault_api::ArtifactName,
    /// Who asked.
    pub principal: String,
}

/// Queue a job and start it: the source must be a dataset whose files the
/// spec can read ([`check_source`]); anything else is refused now, before
/// a record exists.
/// `record` is the audit event of the queueing, made with the job record.
pub async fn queue(v: &Arc<Vault>, plan: JobPlan, record: Event) -> DomainResult<JobRecord> {
    let (v2, r) = (v.clone(), plan.source.clone());
    let src = blocking_domain(move || Ok(resolve::resolve(&v2, &r)?.record)).await?;
    if src.kind != Kind::Dataset {
        return Err(DomainError::Invalid(format!(
            "`{}` is a model; jobs anonymize datasets",
            plan.source
        )));
    }
    check_source(v, &plan.spec, &src)
        .await
        .map_err(|e| DomainError::Invalid(format!("job refused before it started: {e}")))?;
    let now = vault_store::now();
    let job = JobRecord {
        id: format!("job_{}", ingest::random_id::<8>()?),
        state: "queued".into(),
        source: format!("{}:{}", src.name, src.version),
        source_digest: src.digest.clone(),
        target: plan.target.to_string(),
        spec_digest: vault_manifest::digest_of(plan.spec_text.as_bytes()),
        spec: plan.spec_text,
        principal: plan.principal,
        created: now,
        updated: now,
        rows: 0,
        session: None,
        output: None,
        report: None,
        error: None,
        attempts: 0,
        review: None,
        owner: String::new(),
        lease_until: 0,
    };
    let (v2, j) = (v.clone(), job.clone());
    let mut ev = record;
    ev.detail = format!(
        "job {} from {} ({}) spec {}",
        job.id, job.source, job.source_digest, job.spec_digest
    );
    blocking_domain(move || v2.change(|m| m.put_job(&j), |_| vec![ev.clone()])).await?;
    tracing::info!(job = %job.id, source = %job.source, target = %job.target, principal = %job.principal, "anonymization job queued");
    tokio::spawn(run(v.clone(), job.id.clone(), false));
    Ok(job)
}

/// The output (`name`, version) of a succeeded job, to be reviewed.
pub fn output_of(job: &JobRecord) -> DomainResult<(String, u64)> {
    let output = job
        .output
        .as_deref()
        .filter(|_| job.state == "succeeded")
        .ok_or_else(|| {
            DomainError::Conflict(format!("job `{}` has no output to review", job.id))
        })?;
    output
        .rsplit_once(':')
        .and_then(|(n, ver)| Some((n.to_owned(), ver.parse::<u64>().ok()?)))
        .ok_or_else(|| {
            DomainError::Store(vault_store::Error::Corrupt {
                table: "jobs",
                detail: format!("job output `{output}` is not name:version"),
            })
        })
}

/// Record a reviewer's decision on job `id`'s output: moves the output's
/// review state from one of `from` to `review.state` by compare-and-set,
/// then notes it on the job.
/// `record` is the audit event of the decision, made in its transaction.
pub fn decide(
    v: &Vault,
    id: &str,
    from: &[ReviewState],
    review: Review,
    record: Event,
) -> DomainResult<JobRecord> {
    let job = v
        .meta
        .job(id)?
        .ok_or_else(|| DomainError::NotFound(format!("job `{id}` not found")))?;
    let (name, version) = output_of(&job)?;
    let now = v
        .meta
        .version(&name, version)?
        .and_then(|r| r.review.map(|x| x.state));
    let decided = v.change(
        |m| {
            if !m.set_review(&name, version, from, &review)? {
                return Ok(None);
            }
            let mut job = job.clone();
            job.review = Some(review.clone());
            job.updated = vault_store::now();
            m.put_job(&job)?;
            Ok(Some(job))
        },
        |decided| {
            if decided.is_some() {
                vec![record.clone()]
            } else {
                Vec::new()
            }
        },
    )?;
    decided.ok_or_else(|| {
        DomainError::Conflict(format!(
            "`{name}:{version}` is {}; only a {} output can be {}",
            now.map_or("released without review", |s| s.as_str()),
            from.first().map_or("", |s| s.as_str()),
            review.state.as_str()
        ))
    })
}
