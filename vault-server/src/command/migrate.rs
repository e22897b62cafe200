//! `vault-server migrate`: copy a single-node vault (redb metadata, the
//! audit log file, the sealed keys) into a PostgreSQL database that
//! replicas then share, and verify the copy before saying it is done.

use std::fs;
use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use vault_audit::{Checkpoint, Entry};
use vault_crypto::Keyring;
use vault_manifest::{PublicKey, SignedAlias};
use vault_store::{LogRow, MetaStore, PgMeta, RedbMeta};

use crate::cli::MigrateArgs;
use crate::exit::{fail, ExitStatus};
use crate::vault::{self, Layout};

/// Audit entries appended per transaction.
const LOG_BATCH: usize = 5000;

pub fn run(a: MigrateArgs) -> Result<()> {
    let layout = Layout::new(&a.from);
    if !layout.marker().exists() {
        return Err(fail(
            ExitStatus::Usage,
            format!("`{}` is not an mlvault data directory", a.from.display()),
        ));
    }
    let url =
        a.to.clone()
            .or_else(|| std::env::var("MLVAULT_METADATA_URL").ok())
            .ok_or_else(|| {
                fail(
                    ExitStatus::Usage,
                    "name the target database with --to or MLVAULT_METADATA_URL",
                )
            })?;
    let src = RedbMeta::open(&layout.meta()).map_err(|e| {
        fail(
            ExitStatus::Failure,
            format!(
                "cannot open `{}` (stop its server first): {e}",
                layout.meta().display()
            ),
        )
    })?;

    // The keys: the master key must open, and the key ring with it.
    let unseal = vault::unsealer(&layout, &a.unseal, false)?;
    let sealed = fs::read(layout.sealed_master())
        .with_context(|| format!("cannot read `{}`", layout.sealed_master().display()))?;
    let master = unseal.unseal(&sealed)?;
    let ring = src
        .keyring()?
        .context("the source has no key ring: it was not fully initialized")?;
    Keyring::open(&master, ring.id, &ring.keks, ring.min_decryption_version)
        .context("the source's key ring does not open with this master key")?;
    let public = vault::server_key(&src, &master, &layout)?.public();

    // The audit log must verify, against its anchor, before it is copied.
    let log = layout.audit_log();
    let anchor = src
        .config(vault::AUDIT_ANCHOR)?
        .map(|b| Checkpoint::verify(&String::from_utf8_lossy(&b), &public))
        .transpose()
        .map_err(|e| {
            fail(
                ExitStatus::Integrity,
                format!("the anchored audit checkpoint does not verify: {e}"),
            )
        })?;
    let report = if log.exists() {
        vault_audit::verify_with(&log, &public, anchor.as_slice())?
    } else {
        vault_audit::Report::default()
    };
    let problem = report.problem().or_else(|| {
        anchor
            .as_ref()
            .filter(|c| c.size > 0 && !log.exists())
            .map(|c| {
                format!(
                    "the log is missing, but a checkpoint covers {} entries",
                    c.size
                )
            })
    });
    if let Some(p) = problem {
        return Err(fail(
            ExitStatus::Integrity,
            format!("the audit log does not verify: {p}. Nothing was copied"),
        ));
    }

    let dst = Arc::new(
        PgMeta::connect(&url, 4, a.ca_file.as_deref())
            .map_err(|e| fail(ExitStatus::Unavailable, format!("metadata database: {e}")))?,
    );
    let copied = src.copy_into(dst.as_ref()).map_err(|e| match e {
        vault_store::Error::Conflict(m) => fail(ExitStatus::Usage, m),
        e => anyhow::Error::new(e).context("copying the metadata"),
    })?;
    let mut problems = Vec::new();
    if let Some(p) = src.same_rows(dst.as_ref())? {
        problems.push(format!("the copied metadata differs: {p}"));
    }
    dst.put_config(vault::SEALED_MASTER, &sealed)?;
    let entries = if log.exists() {
        copy_log(&log, &dst)?
    } else {
        0
    };

    // Verify the copy as replicas will read it.
    let checked = verify_copy(&src, dst.as_ref(), &public, &mut problems)?;
    let ring = dst.keyring()?.context("the copy has no key ring")?;
    if let Err(e) = Keyring::open(&master, ring.id, &ring.keks, ring.min_decryption_version) {
        problems.push(format!("the copied key ring does not open: {e}"));
    }
    let chain = crate::audit_chain::PgChain::new(dst.clone());
    let kept = Checkpoint {
        size: report.sealed_seq,
        hash: report.sealed_hash.clone(),
    };
    let kept: Vec<Checkpoint> = (kept.size > 0).then_some(kept).into_iter().collect();
    let chained = vault_audit::verify_chain(&chain, &public, &kept)?;
    if let Some(p) = chained.problem() {
        problems.push(format!("the copied audit chain does not verify: {p}"));
    } else if chained.entries != report.entries {
        problems.push(format!(
            "the copied audit chain has {} entries, the log {}",
            chained.entries, report.entries
        ));
    }

    if a.json {
        let tables: serde_json::Map<String, serde_json::Value> = copied
            .iter()
            .map(|(t, n)| ((*t).to_owned(), (*n).into()))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "tables": tables,
                "audit_entries": entries,
                "versions": checked.versions,
                "signed_versions": checked.signed,
                "aliases": checked.aliases,
                "verified": problems.is_empty(),
                "problems": problems,
            }))?
        );
    } else {
        let rows: usize = copied.iter().map(|(_, n)| n).sum();
        println!(
            "copied {rows} metadata rows ({}), {entries} audit entries and the sealed master key",
            copied
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "verified: {} versions resolve by number and digest ({} signed, signatures checked), {} alias records verify, the key ring opens, the audit chain verifies ({} entries)",
            checked.versions, checked.signed, checked.aliases, chained.entries
        );
    }
    if !problems.is_empty() {
        return Err(fail(
            ExitStatus::Integrity,
            format!("the copy does not verify: {}", problems.join("; ")),
        ));
    }
    if !a.json {
        println!(
            "done. Serve it with `[metadata] backend = \"postgres\"` in --config (this data directory works as is), add replicas with `vault-server init --join`; `{}` is kept as it was",
            layout.meta().display()
        );
    }
    Ok(())
}

/// Append the log file's entries, unchanged, to the database's chain.
fn copy_log(path: &std::path::Path, dst: &PgMeta) -> Result<u64> {
    let f = fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut batch: Vec<LogRow> = Vec::with_capacity(LOG_BATCH);
    let mut first_prev = String::new();
    let mut total = 0u64;
    let mut flush = |batch: &mut Vec<LogRow>, first_prev: &str| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut fits = true;
        dst.log_append(&mut |seq, head| {
            fits = batch.first().is_some_and(|r| r.seq == seq + 1) && first_prev == head;
            if fits {
                batch.clone()
            } else {
                Vec::new()
            }
        })?;
        if !fits {
            anyhow::bail!("the target's audit chain is not empty or moved during the copy");
        }
        total += batch.len() as u64;
        batch.clear();
        Ok(())
    };
    for line in std::io::BufReader::new(f).lines() {
        let line = line.with_context(|| format!("cannot read `{}`", path.display()))?;
        let e: Entry = serde_json::from_str(&line).context("an audit entry does not parse")?;
        if batch.is_empty() {
            first_prev = e.prev.clone();
        }
        batch.push(LogRow {
            seq: e.seq,
            hash: e.hash,
            line,
        });
        if batch.len() >= LOG_BATCH {
            flush(&mut batch, &first_prev)?;
        }
    }
    flush(&mut batch, &first_prev)?;
    Ok(total)
}

struct Checked {
    versions: usize,
    signed: usize,
    aliases: usize,
}

/// Every version of the source resolves in the copy by number and by
/// digest to the same record, whose envelope has that digest and whose
/// signatures verify (with the namespace's publishers or the server key);
/// every alias record verifies with the server key and names what the
/// copy holds.
fn verify_copy(
    src: &RedbMeta,
    dst: &PgMeta,
    server: &PublicKey,
    problems: &mut Vec<String>,
) -> Result<Checked> {
    let mut c = Checked {
        versions: 0,
        signed: 0,
        aliases: 0,
    };
    for (artifact, versions) in src.list("")? {
        let ns = artifact.name.split('/').next().unwrap_or_default();
        let mut trusted = vec![server.clone()];
        for p in dst.publishers(ns)? {
            if let Ok(k) = PublicKey::from_file_text(&p.public_key) {
                trusted.push(k);
            }
        }
        for v in versions {
            let at = format!("{}:{}", v.name, v.version);
            let by_number = dst.version(&v.name, v.version)?;
            let by_digest = dst.version_by_digest(&v.digest)?;
            match (by_number, by_digest) {
                (Some(n), Some(d))
                    if n.digest == v.digest && d.name == v.name && d.version == v.version => {}
                _ => {
                    problems.push(format!("`{at}` does not resolve in the copy"));
                    continue;
                }
            }
            if vault_manifest::digest_of(v.envelope.as_bytes()) != v.digest {
                problems.push(format!("`{at}`: the manifest does not have its digest"));
                continue;
            }
            match vault_manifest::parse_envelope(&v.envelope) {
                Ok((env, _)) if env.signatures.is_empty() => {}
                Ok((env, _)) => match env.verify_any(&trusted) {
                    Ok(_) => c.signed += 1,
                    Err(e) => problems.push(format!("`{at}`: {e}")),
                },
                Err(e) => problems.push(format!("`{at}`: the manifest does not parse: {e}")),
            }
            c.versions += 1;
        }
        for entry in dst.aliases(&artifact.name)? {
            let at = format!("{}:{}", entry.name, entry.alias);
            let verified = serde_json::from_str::<SignedAlias>(&entry.signed)
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    s.verify(std::slice::from_ref(server))
                        .map_err(|e| e.to_string())
                });
            match verified {
                Ok(r) if r.version == entry.version && r.sequence == entry.sequence => {
                    c.aliases += 1
                }
                Ok(_) => problems.push(format!("`{at}`: the signed record names another version")),
                Err(e) => problems.push(format!("`{at}`: {e}")),
            }
        }
    }
    Ok(c)
}
