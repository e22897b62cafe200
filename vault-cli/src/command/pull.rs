use anyhow::Result;
use vault_client::{load_public_key, Client, PullOptions};

use super::config::Config;
use super::{human, output, parse_ref};
use crate::cli::{Global, PullArgs};

pub async fn run(g: &Global, cfg: &Config, c: &Client, a: PullArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let trusted = a
        .trust
        .iter()
        .chain(&cfg.trust)
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let server_keys = a
        .server_key
        .as_ref()
        .or(cfg.server_key.as_ref())
        .map(|p| load_public_key(p))
        .transpose()?
        .into_iter()
        .collect();
    let opts = PullOptions {
        allow_downgrade: a.allow_downgrade,
        allow_expired: a.allow_expired,
        max_record_age: a.max_record_age,
        trusted,
        server_keys,
        state_dir: g.state_dir.clone(),
        parallel: usize::from(a.transfer.parallel),
        cache: a.transfer.cache(),
        verify_cache: a.verify_cache,
        limit: a.transfer.limit(),
        progress: super::progress::bar(g, "pull"),
        direct_io: a.direct_io,
        require_gate: a.require_gate.clone(),
    };
    if opts.trusted.is_empty() && !g.quiet && !g.json {
        eprintln!("note: no trusted publisher keys (--trust or config); checking digests, not who signed the manifest");
    }
    let res = c.pull(&r, &a.to, &opts).await?;
    for n in &res.notes {
        eprintln!("note: {}", super::terminal_safe(n));
    }
    output(g, &res, || {
        let mut s = format!(
            "pulled {} ({}) into {}: {}, {} verified; downloaded {}",
            res.reference,
            res.digest,
            a.to.display(),
            human::count(res.files as u64, "file"),
            human::amount(res.bytes),
            human::size(res.downloaded_bytes)
        );
        if let Some(k) = &res.signer {
            s.push_str(&format!("\nsigned by trusted key {k}"));
        }
        if let Some(scan) = &res.scan {
            s.push_str(&format!("\n{}", super::read::describe_scan(scan)));
        }
        if let Some(gate) = &res.gate {
            s.push_str(&format!("\n{}", describe_gate(gate)));
        }
        s
    })
}

/// A checked gate grant, in words.
pub fn describe_gate(g: &vault_client::GateView) -> String {
    let mut s = format!(
        "promotion gate `{}` ({}) granted at {} (record sequence {}), on:",
        g.alias,
        g.gate,
        human::utc(g.granted),
        g.sequence
    );
    for e in &g.evidence {
        s.push_str(&format!(
            "\n  {} {}{}",
            e.predicate_type,
            e.says
                .as_deref()
                .map(|x| format!("{x} "))
                .unwrap_or_default(),
            e.digest
        ));
    }
    super::terminal_safe(&s).into_owned()
}
