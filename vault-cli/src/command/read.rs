use anyhow::Result;
use vault_client::Client;

use super::{human, output, parse_ref, Exit};
use crate::cli::{CacheArgs, CacheCommand, Global, LsArgs, RefArgs, VerifyArgs};

/// What `verify --json` prints.
#[derive(serde::Serialize)]
struct VerifiedDir {
    #[serde(flatten)]
    report: vault_client::VerifyReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<vault_client::GateView>,
}

pub fn verify(g: &Global, cfg: &super::config::Config, a: VerifyArgs) -> Result<()> {
    let trusted = a
        .trust
        .iter()
        .chain(&cfg.trust)
        .map(|p| vault_client::load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut report, _m) = vault_client::verify_dir(&a.dir, &trusted)?;
    let mut gate = None;
    if let Some(want) = &a.require_gate {
        let keys = a
            .server_key
            .as_ref()
            .or(cfg.server_key.as_ref())
            .map(|p| vault_client::load_public_key(p))
            .transpose()?
            .into_iter()
            .collect::<Vec<_>>();
        let state = g
            .state_dir
            .clone()
            .unwrap_or_else(vault_client::default_state_dir);
        match vault_client::verify_promotion(&a.dir, want, &report.digest, &keys, &state) {
            Ok(v) => gate = Some(v),
            Err(vault_client::Error::Usage(m)) => return Err(vault_client::Error::Usage(m).into()),
            Err(e) => report.problems.push(e.to_string()),
        }
    }
    let report = VerifiedDir { report, gate };
    output(g, &report, || {
        let VerifiedDir { report, gate } = &report;
        if report.problems.is_empty() {
            let mut s = format!(
                "{}: {}:{} intact: {}, {} verified, {}",
                a.dir.display(),
                report.name,
                report.version,
                human::count(report.files as u64, "file"),
                human::amount(report.bytes),
                report.digest
            );
            if let Some(r) = &report.report {
                s.push_str(&format!(
                    "\njob report (signed in the manifest): rows written {}, suppressed {}; k {} → {}, l {} → {}",
                    r["rows_written"],
                    r["rows_suppressed"],
                    r["k_before"],
                    r["k_after"],
                    r["l_before"],
                    r["l_after"]
                ));
            }
            if let Some(gate) = gate {
                s.push_str(&format!("\n{}", super::pull::describe_gate(gate)));
            }
            s
        } else {
            let mut s = format!(
                "{}: {}:{} FAILED verification:",
                a.dir.display(),
                report.name,
                report.version
            );
            for p in &report.problems {
                s.push_str("\n  ");
                s.push_str(p);
            }
            s
        }
    })?;
    let report = report.report;
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(Exit {
            status: super::ExitStatus::Integrity,
            message: format!(
                "{} problem(s) in `{}`",
                report.problems.len(),
                a.dir.display()
            ),
        }
        .into())
    }
}

pub async fn ls(g: &Global, c: &Client, a: LsArgs) -> Result<()> {
    let items = c.list(&a.prefix).await?;
    output(g, &items, || {
        if items.is_empty() {
            return "no artifacts".into();
        }
        let mut s = format!(
            "{:<40} {:<8} {:>8} {:>8} {:>12}  UPDATED",
            "NAME", "KIND", "VERSIONS", "LATEST", "SIZE"
        );
        for it in &items {
            let latest = it.versions.last();
            s.push_str(&format!(
                "\n{:<40} {:<8} {:>8} {:>8} {:>12}  {}",
                it.name,
                it.kind.as_str(),
                it.versions.len(),
                latest.map_or(0, |v| v.version),
                latest.map_or(String::new(), |v| human::size(v.bytes)),
                latest.map_or(String::new(), |v| human::utc(v.created)),
            ));
        }
        // Named in full: its versions too.
        if let [it] = items.as_slice() {
            if it.name == a.prefix {
                s.push_str(&format!(
                    "\n\n{:>8} {:>6} {:>12}  {:<20}  DIGEST",
                    "VERSION", "FILES", "SIZE", "CREATED"
                ));
                for v in &it.versions {
                    s.push_str(&format!(
                        "\n{:>8} {:>6} {:>12}  {:<20}  {}",
                        v.version,
                        v.files,
                        human::size(v.bytes),
                        human::utc(v.created),
                        v.digest
                    ));
                }
            }
        }
        s
    })
}

pub async fn show(g: &Global, c: &Client, a: RefArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let rv = c.resolve(&r).await?;
    let (_env, m) = vault_manifest::parse_envelope(&rv.envelope)
        .map_err(|e| vault_client::Error::Integrity(e.to_string()))?;
    if vault_manifest::digest_of(rv.envelope.as_bytes()) != rv.digest {
        return Err(
            vault_client::Error::Integrity("manifest does not match its digest".into()).into(),
        );
    }
    let report = vault_client::check_report(&rv, &m)?;
    // Checked against the server key the client pinned, else the one
    // the server gives now (over the same verified TLS connection).
    let keys = match c.pinned_server_key()? {
        Some(k) => vec![k],
        None if rv.scan.is_some() => {
            let info = c.server_key().await?;
            vec![vault_manifest::PublicKey::from_file_text(&info.public_key)
                .map_err(|e| vault_client::Error::Integrity(format!("server key: {e}")))?]
        }
        None => Vec::new(),
    };
    let scan = vault_client::check_scan(&rv, &keys)?;
    // Asked by the reference given (an alias for a deployer), which the
    // server resolves to the same version.
    let attestations = c.attestations(&r).await?;
    let json = serde_json::json!({
        "ref": format!("{}:{}", rv.name, rv.version),
        "digest": rv.digest,
        "manifest": m.statement(),
        "report": rv.report,
        "report_signed": report == vault_client::ReportCheck::Signed,
        "review": rv.review,
        "scan": scan,
        "attestations": attestations,
    });
    output(g, &json, || {
        let p = m.predicate();
        let mut s = format!(
            "{}:{}  {}\ndigest   {}\ncreated  {}\nroot     {}\nfiles    {}, {}",
            p.name,
            p.version,
            p.kind.as_str(),
            rv.digest,
            human::utc(p.created),
            p.root_digest,
            human::count(m.files().len() as u64, "file"),
            human::amount(m.total_bytes())
        );
        if let Some(signer) = &p.signer {
            s.push_str(&format!("\nsigner   {signer}"));
        }
        if let Some(a) = &rv.alias {
            s.push_str(&format!("\nalias    {}", describe_alias(a)));
        }
        if let Some(j) = &p.lineage.job_spec {
            s.push_str(&format!("\njob spec {j}"));
        }
        if let Some(r) = &rv.report {
            s.push_str(&format!(
                "\nreport   rows read {}, written {}, suppressed {}; k {} → {}, l {} → {} ({})",
                r["rows_read"],
                r["rows_written"],
                r["rows_suppressed"],
                r["k_before"],
                r["k_after"],
                r["l_before"],
                r["l_after"],
                if report == vault_client::ReportCheck::Signed {
                    "signed with the manifest"
                } else {
                    "NOT covered by the signature"
                }
            ));
        }
        if let Some(review) = &rv.review {
            s.push_str(&format!("\nreview   {review}"));
        }
        if let Some(scan) = &scan {
            s.push_str(&format!("\n{}", describe_scan(scan)));
        }
        for a in &attestations {
            s.push_str(&format!(
                "\nattested {} by {}{}",
                a.predicate_type,
                a.attestor,
                a.result
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
        }
        for parent in &p.lineage.parents {
            s.push_str(&format!("\nparent   {parent}"));
        }
        for f in m.files() {
            s.push_str(&format!(
                "\n  {:>14}  {}  {}",
                f.size,
                &f.sha256[..16],
                f.path
            ));
        }
        s
    })
}

pub async fn delete(g: &Global, c: &Client, a: RefArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let res = c.delete(&r).await?;
    output(g, &res, || {
        format!(
            "deleted {}:{}; destroyed the keys of {} blob(s)",
            res.name, res.version, res.shredded_blobs
        )
    })
}

/// An alias record as `show` prints it. `show` only describes it: `pull`
/// verifies the record's signature, sequence and expiry.
fn describe_alias(signed: &str) -> String {
    let parsed = serde_json::from_str::<vault_manifest::SignedAlias>(signed)
        .ok()
        .and_then(|sa| {
            serde_json::from_str::<vault_manifest::AliasRecord>(&sa.record)
                .ok()
                .map(|r| (sa.keyid, r))
        });
    match parsed {
        Some((keyid, r)) => {
            let mut s = format!(
                "{} → version {}, record sequence {}, expires {} ({}), signed by {keyid}",
                r.alias,
                r.version,
                r.sequence,
                human::utc(r.expires),
                human::expiry(r.expires, human::now())
            );
            if let Some(g) = &r.gate {
                s.push_str(&format!(
                    "\n         granted by the promotion gate `{}` ({}) at {} on {}",
                    r.alias,
                    g.digest,
                    human::utc(g.granted),
                    human::count(g.evidence.len() as u64, "envelope")
                ));
            }
            s
        }
        None => "(an alias record this client cannot read)".into(),
    }
}

pub fn cache(g: &Global, a: CacheArgs) -> Result<()> {
    let dir = a.cache_dir.unwrap_or_else(vault_client::default_cache_dir);
    let cache = vault_client::Cache::open(&dir)?;
    match a.command {
        CacheCommand::Status => {
            let st = cache.status()?;
            output(g, &st, || {
                format!(
                    "{}: {} ({})\n  in use by pulled directories: {} ({})\n  only in the cache, freed by `cache prune`: {} ({})\n  partial downloads: {} ({})\n  recorded push digests: {}",
                    st.dir.display(),
                    human::count(st.objects, "file"),
                    human::size(st.object_bytes),
                    human::count(st.linked, "file"),
                    human::size(st.linked_bytes),
                    human::count(st.unlinked, "file"),
                    human::size(st.unlinked_bytes),
                    st.partial,
                    human::size(st.partial_bytes),
                    st.digest_records
                )
            })
        }
        CacheCommand::Prune { all } => {
            let r = cache.prune(all)?;
            output(g, &r, || {
                let mut s = format!(
                    "{}: removed {} and {}, freed {}",
                    r.dir.display(),
                    human::count(r.removed_objects, "cached file"),
                    human::count(r.removed_partial, "partial download"),
                    human::size(r.freed_bytes)
                );
                if r.kept_linked > 0 {
                    s.push_str(&format!(
                        "; kept {} in use by pulled directories",
                        human::count(r.kept_linked, "file")
                    ));
                }
                if r.busy > 0 {
                    s.push_str(&format!("; skipped {} a pull is using", r.busy));
                }
                if r.removed_digest_records > 0 {
                    s.push_str(&format!(
                        "; forgot {} recorded push digests",
                        r.removed_digest_records
                    ));
                }
                s
            })
        }
    }
}

/// A scan verdict in a few lines: the verdict, by what, and its findings.
pub fn describe_scan(scan: &vault_client::ScanView) -> String {
    let mut s = format!(
        "scan     {} ({}, allowlist {}{})",
        scan.verdict,
        scan.scanner,
        &scan.allowlist[..scan.allowlist.len().min(19)],
        scan.signed_by.as_deref().map_or(
            ", signature not checked: no pinned server key".to_string(),
            |k| format!(", signed by {k}")
        )
    );
    for f in scan.findings.iter().take(20) {
        s.push_str(&format!("\n  {}", super::terminal_safe(f)));
    }
    if scan.findings.len() > 20 {
        s.push_str(&format!("\n  … {} more (--json)", scan.findings.len() - 20));
    }
    s
}
