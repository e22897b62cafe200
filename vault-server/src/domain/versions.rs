//! Deleting versions (crypto-shredding their blobs) and rewrapping DEKs
//! under the current KEK.

use std::sync::Arc;

use vault_api::Reference;
use vault_audit::Event;

use super::error::{blocking, Result};
use super::resolve;
use crate::vault::Vault;

/// What a delete removed.
pub struct Deleted {
    /// The artifact.
    pub name: String,
    /// The version deleted.
    pub version: u64,
    /// Blobs no other version used: their wrapped DEKs are gone
    /// (crypto-shredded) and their objects deleted.
    pub shredded: usize,
}

/// Delete the version `r` names exactly. Blobs only it used are shredded:
/// their DEKs go in the metadata transaction, their objects after it (an
/// object left by a failure is an orphan `fsck` removes).
/// `record` is the audit event of the delete, made in its transaction.
pub async fn delete(v: &Arc<Vault>, r: Reference, record: Event) -> Result<Deleted> {
    let v2 = v.clone();
    let (name, version, shredded) = blocking(move || {
        let rec = resolve::exact(&v2, &r)?;
        let shredded = v2.change(
            |m| m.delete_version(&rec.name, rec.version),
            |shredded| {
                let mut ev = record.clone();
                ev.resource = format!("{}:{}", rec.name, rec.version);
                ev.detail = format!("{}; {} blob(s) shredded", rec.digest, shredded.len());
                vec![ev]
            },
        )?;
        if let Err(e) = v2.meta.reclaim() {
            tracing::warn!(error = %e, "metadata compaction after delete failed");
        }
        Ok((rec.name, rec.version, shredded))
    })
    .await?;
    for b in &shredded {
        if let Err(e) = v.blobs.delete(&b.id).await {
            tracing::warn!(blob = %b.id, error = %e, "could not delete a shredded blob object (fsck removes orphans)");
        }
    }
    Ok(Deleted {
        name,
        version,
        shredded: shredded.len(),
    })
}

/// What a rewrap did.
pub struct Rewrapped {
    /// DEKs moved to the current KEK.
    pub rewrapped: u64,
    /// DEKs already under it.
    pub already: u64,
    /// The current KEK version.
    pub current: u32,
}

/// Rewrap every DEK not under the current KEK. Blob bytes are untouched.
/// Each swap is a compare-and-set, so it is safe while serving, and a
/// rerun after an interruption continues where it stopped.
pub fn rewrap(v: &Vault) -> Result<Rewrapped> {
    let ring = v.keyring();
    let current = ring.current_version();
    let (mut rewrapped, mut already) = (0, 0);
    for b in v.meta.list_blobs()? {
        if b.wrapped_dek.kek_version == current {
            already += 1;
            continue;
        }
        let ctx = b.context()?;
        let new = ring.rewrap(&b.wrapped_dek, &ctx)?;
        if v.meta.swap_dek(&b.id, &b.wrapped_dek, &new)? {
            rewrapped += 1;
        }
    }
    tracing::info!(rewrapped, already, current, "rewrap finished");
    Ok(Rewrapped {
        rewrapped,
        already,
        current,
    })
}
