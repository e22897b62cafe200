use anyhow::Result;
use vault_client::{Client, PushOptions};

use super::config::Config;
use super::{human, keygen, output, parse_ref, usage};
use crate::cli::{Global, PushArgs};

pub async fn run(g: &Global, cfg: &Config, c: &Client, a: PushArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let kind = a.kind.parse().map_err(usage)?;
    for p in &a.parents {
        if !vault_api::valid_digest(p) {
            return Err(usage(format!(
                "--parent `{p}` is not a `sha256:<hex>` digest"
            )));
        }
    }
    for al in &a.aliases {
        if !vault_api::is_valid_alias(al) {
            return Err(usage(format!("`{al}` is not a valid alias")));
        }
    }
    let sign_key = match a.sign_key.as_ref().or(cfg.sign_key.as_ref()) {
        Some(p) => Some(keygen::load_secret_key(p)?),
        None => None,
    };
    let res = c
        .push(
            &r,
            &a.path,
            &PushOptions {
                kind,
                parents: a.parents,
                sign_key,
                sensitivity: a.sensitivity,
                parallel: usize::from(a.transfer.parallel),
                progress: super::progress::bar(g, "push"),
                cache: a.transfer.cache(),
                hash_first: a.hash_first,
                limit: a.transfer.limit(),
            },
        )
        .await?;
    let mut aliases = Vec::new();
    for al in &a.aliases {
        let vr = parse_ref(&format!("{}:{}", res.name, res.version))?;
        let moved = c.set_alias(&vr, al).await.map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "pushed {} ({}), but the alias `{al}` was not moved",
                res.reference, res.digest
            ))
        })?;
        aliases.push(moved);
    }
    let mut json = serde_json::to_value(&res)?;
    if !aliases.is_empty() {
        json["aliases"] = serde_json::to_value(&aliases)?;
    }
    output(g, &json, || {
        let mut s = format!(
            "pushed {} ({}): {}, {}; hashed {}, uploaded {}",
            res.reference,
            res.digest,
            human::count(res.files as u64, "file"),
            human::amount(res.bytes),
            human::size(res.hashed_bytes),
            human::size(res.uploaded_bytes)
        );
        if let Some(scan) = &res.scan {
            s.push_str(&format!("\nadmission scan: {scan}"));
        }
        for al in &aliases {
            s.push_str(&format!(
                "\n{}:{} → version {}",
                al.name, al.alias, al.version
            ));
        }
        s
    })
}
