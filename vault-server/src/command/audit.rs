//! `vault-server audit verify`: check a copy of the audit log offline.

use std::fs;

use anyhow::{Context, Result};
use vault_audit::Checkpoint;
use vault_manifest::PublicKey;

use crate::cli::AuditVerifyArgs;
use crate::exit::{fail, ExitStatus};
use crate::vault::Layout;

pub fn verify(a: AuditVerifyArgs) -> Result<()> {
    let layout = Layout::new(&a.data_dir);
    let key_path = a.key.clone().unwrap_or_else(|| layout.server_pub());
    let key_text = fs::read_to_string(&key_path).map_err(|e| {
        fail(
            ExitStatus::Usage,
            format!("cannot read the server key `{}`: {e}", key_path.display()),
        )
    })?;
    let key = PublicKey::from_file_text(&key_text)
        .map_err(|e| fail(ExitStatus::Usage, format!("`{}`: {e}", key_path.display())))?;
    let mut files = a.checkpoint.clone();
    let exported = layout.audit_checkpoint();
    if exported.exists() && !files.contains(&exported) {
        files.push(exported);
    }
    let mut checkpoints = Vec::new();
    for f in &files {
        let note = fs::read_to_string(f).map_err(|e| {
            fail(
                ExitStatus::Usage,
                format!("cannot read checkpoint `{}`: {e}", f.display()),
            )
        })?;
        let cp = Checkpoint::verify(&note, &key).map_err(|e| {
            fail(
                ExitStatus::Integrity,
                format!("checkpoint `{}`: {e}", f.display()),
            )
        })?;
        checkpoints.push(cp);
    }
    let shared = match &a.config {
        Some(path) => {
            let config = crate::config::ServerConfig::load(Some(path))?;
            crate::vault::open_meta(&layout, &config.metadata)?.shared
        }
        None => None,
    };
    if let Some(pg) = shared {
        let chain = crate::audit_chain::PgChain::new(pg);
        let r = vault_audit::verify_chain(&chain, &key, &checkpoints)
            .context("cannot read the shared audit chain")?;
        return report(&a, "the shared audit chain", &r, checkpoints.len());
    }
    let log = a.log.clone().unwrap_or_else(|| layout.audit_log());
    if !log.exists() {
        let covered = checkpoints.iter().map(|c| c.size).max().unwrap_or(0);
        return Err(fail(
            ExitStatus::Integrity,
            format!(
                "audit log `{}` is missing{}",
                log.display(),
                if covered > 0 {
                    format!(" although a checkpoint covers {covered} entries (deleted)")
                } else {
                    String::new()
                }
            ),
        ));
    }
    let r = vault_audit::verify_with(&log, &key, &checkpoints)
        .with_context(|| format!("cannot read `{}`", log.display()))?;
    report(&a, &log.display().to_string(), &r, checkpoints.len())
}

/// Print what verification found; exit 5 unless intact.
fn report(a: &AuditVerifyArgs, what: &str, r: &vault_audit::Report, given: usize) -> Result<()> {
    if a.json {
        let mut v = serde_json::to_value(r)?;
        v["intact"] = r.intact().into();
        v["checkpoints_given"] = given.into();
        v["problem"] = r.problem().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}: {} entries, {} signed checkpoints, last sealed entry {}; checked against {} checkpoint(s) kept elsewhere",
            what,
            r.entries,
            r.checkpoints,
            r.sealed_seq,
            given
        );
    }
    match r.problem() {
        None => {
            if !a.json {
                println!("intact");
            }
            Ok(())
        }
        Some(p) => Err(fail(
            ExitStatus::Integrity,
            format!("audit log does not verify: {p}"),
        )),
    }
}
