//! Reference resolution, the one way a `name:7`, `name@sha256:…`,
//! `name:latest` or `name:alias` becomes a version, and the signed alias
//! records that point names at versions (renewed here, once past half
//! their life, whenever they are served).

use vault_api::{Reference, Selector};
use vault_audit::Event;
use vault_manifest::{AliasRecord, GateGrant, SignedAlias};
use vault_store::{AliasEntry, MetaStore, VersionRecord};

use super::error::{Error, Result};
use crate::vault::Vault;

/// A resolved reference: the version, and for an alias the signed record
/// that names it (as served, possibly just renewed).
pub struct Resolved {
    /// The version the reference names.
    pub record: VersionRecord,
    /// The signed alias record (JSON), when the reference is an alias.
    pub alias: Option<String>,
}

/// Resolve `r`. `latest` is the newest *released* version (a job output
/// held for review is named by its number); an alias resolves through its
/// current record, renewed first if it is past half its life. Missing is
/// [`Error::NotFound`].
pub fn resolve(v: &Vault, r: &Reference) -> Result<Resolved> {
    let missing = || Error::NotFound(format!("`{r}` not found"));
    let name = r.name.as_str();
    let meta = v.meta.as_ref();
    let (record, alias) = match &r.selector {
        Selector::Latest => (newest_released(meta, name)?, None),
        Selector::Version(n) => (meta.version(name, *n)?, None),
        Selector::Digest(d) => (meta.version_by_digest(d)?.filter(|v| v.name == name), None),
        Selector::Alias(a) => {
            let e = current_alias(v, name, a)?.ok_or_else(missing)?;
            (meta.version(name, e.version)?, Some(e.signed))
        }
    };
    Ok(Resolved {
        record: record.ok_or_else(missing)?,
        alias,
    })
}

/// Resolve a reference that must name one version exactly (a number or a
/// digest): what a delete names.
pub fn exact(v: &Vault, r: &Reference) -> Result<VersionRecord> {
    if matches!(r.selector, Selector::Latest | Selector::Alias(_)) {
        return Err(Error::Invalid(
            "delete needs an exact version (`name:7` or `name@sha256:…`)".into(),
        ));
    }
    Ok(resolve(v, r)?.record)
}

fn newest_released(meta: &dyn MetaStore, name: &str) -> Result<Option<VersionRecord>> {
    let Some(latest) = meta.latest_version(name)? else {
        return Ok(None);
    };
    if latest.released() {
        return Ok(Some(latest));
    }
    for n in (1..latest.version).rev() {
        if let Some(rec) = meta.version(name, n)?.filter(VersionRecord::released) {
            return Ok(Some(rec));
        }
    }
    Ok(None)
}

/// The version `alias` of the artifact `r` names would point at: only
/// released versions may be named, and never through another alias.
pub fn alias_target(v: &Vault, r: &Reference, alias: &str) -> Result<VersionRecord> {
    if matches!(r.selector, Selector::Alias(_)) {
        return Err(Error::Invalid(
            "point an alias at a version number or digest, not at another alias".into(),
        ));
    }
    if !vault_api::is_valid_alias(alias) {
        return Err(Error::Invalid(format!(
            "`{alias}` is not a valid alias (lowercase letter first, then letters, digits, `.`, `_`, `-`; `latest` is reserved for the newest version)"
        )));
    }
    let rec = resolve(v, r)?.record;
    if !rec.released() {
        return Err(Error::Invalid(format!(
            "`{}:{}` is an anonymization output not released by a reviewer (`vault-cli job approve`)",
            rec.name, rec.version
        )));
    }
    Ok(rec)
}

/// Point `alias` at `rec` (from [`alias_target`]): a new signed record
/// with the next sequence number, carrying `gate`, the promotion gate it
/// was granted on. `record` is the audit event of the move (its detail is
/// filled in), made in the same transaction.
pub fn set_alias(
    v: &Vault,
    rec: &VersionRecord,
    alias: &str,
    gate: Option<GateGrant>,
    record: Event,
) -> Result<AliasEntry> {
    write_alias(v, &rec.name, alias, rec.version, &rec.digest, gate, &record)
}

/// Sign and store a record for `name:alias` → `version`, with the next
/// sequence number, recorded by `record` in the same transaction.
fn write_alias(
    v: &Vault,
    name: &str,
    alias: &str,
    version: u64,
    digest: &str,
    gate: Option<GateGrant>,
    record: &Event,
) -> Result<AliasEntry> {
    v.change(
        |m| {
            let current = m.alias_sequence(name, alias)?;
            let sequence = current.map_or(1, |c| c + 1);
            let now = vault_store::now();
            let rec = AliasRecord {
                name: name.to_owned(),
                alias: alias.to_owned(),
                version,
                digest: digest.to_owned(),
                sequence,
                issued: now,
                expires: now + v.alias_ttl,
                gate: gate.clone(),
            };
            let signed = SignedAlias::sign(&rec, &v.signing_key).map_err(|e| {
                vault_store::Error::Meta(format!("cannot sign the alias record: {e}"))
            })?;
            let entry = AliasEntry {
                name: name.to_owned(),
                alias: alias.to_owned(),
                version,
                sequence,
                expires: rec.expires,
                signed: signed.to_json(),
            };
            // Read and written in one transaction: only a concurrent
            // writer the store did not serialize could have moved it.
            if !m.put_alias(&entry, current)? {
                return Err(vault_store::Error::Conflict(format!(
                    "alias `{name}:{alias}` moved meanwhile; try again"
                )));
            }
            Ok(entry)
        },
        |e| {
            let mut ev = record.clone();
            ev.detail = format!(
                "version {} {digest} sequence {} expires {}",
                e.version, e.sequence, e.expires
            );
            if let Some(g) = &gate {
                ev.detail
                    .push_str(&format!(" gate {} on {}", g.digest, g.evidence.join(",")));
            }
            vec![ev]
        },
    )
}

/// The alias entry to serve, renewed first if it is past half its life.
/// A renewal re-signs only what the stored record says, verified with the
/// server key: a row edited in the database (another version, a grant
/// pasted in) is never laundered into a valid signature; it is served as
/// stored, and clients refuse it.
fn current_alias(v: &Vault, name: &str, alias: &str) -> Result<Option<AliasEntry>> {
    let Some(e) = v.meta.alias(name, alias)? else {
        return Ok(None);
    };
    let now = vault_store::now();
    if v.alias_renewal && e.expires.saturating_sub(now) < v.alias_ttl / 2 {
        let Some(stored) = stored_record(v, &e) else {
            tracing::error!(name, alias, "the stored alias record does not verify with the server key or does not match its row; not renewed");
            return Ok(Some(e));
        };
        if let Some(rec) = v.meta.version(name, e.version)? {
            if rec.digest != stored.digest {
                tracing::error!(
                    name,
                    alias,
                    "the stored alias record names another digest than its version; not renewed"
                );
                return Ok(Some(e));
            }
            let renewed = Event::new(
                "vault-server",
                "alias_renew",
                &format!("{name}:{alias}"),
                "ok",
            );
            // A renewal is no move: it carries the grant of the move.
            return write_alias(
                v,
                name,
                alias,
                e.version,
                &rec.digest,
                stored.gate,
                &renewed,
            )
            .map(Some);
        }
    }
    Ok(Some(e))
}

/// The record stored in `e`, if its signature verifies with the server
/// key and it says what the row says.
fn stored_record(v: &Vault, e: &AliasEntry) -> Option<AliasRecord> {
    let signed: SignedAlias = serde_json::from_str(&e.signed).ok()?;
    let rec = signed.verify(&[v.signing_key.public()]).ok()?;
    (rec.name == e.name
        && rec.alias == e.alias
        && rec.version == e.version
        && rec.sequence == e.sequence)
        .then_some(rec)
}
