//! `vault-cli alias`: point an alias at a version, or delete it.

use anyhow::Result;
use vault_client::Client;

use super::{output, parse_ref, usage};
use crate::cli::{AliasArgs, Global};

pub async fn alias(g: &Global, c: &Client, a: AliasArgs) -> Result<()> {
    if a.delete {
        let r = parse_ref(&a.reference)?;
        if !matches!(r.selector, vault_api::Selector::Latest) {
            return Err(usage(format!(
                "alias --delete takes the artifact name (`{}`), not a version",
                r.name
            )));
        }
        let gone = c.delete_alias(&r.name, &a.alias).await?;
        return output(g, &gone, || {
            format!(
                "deleted alias {}:{} (it pointed at version {})",
                gone.name, gone.alias, gone.version
            )
        });
    }
    let r = parse_ref(&a.reference)?;
    let info = c.set_alias(&r, &a.alias).await?;
    output(g, &info, || {
        format!(
            "{}:{} → version {} ({}), record sequence {}",
            info.name, info.alias, info.version, info.digest, info.sequence
        )
    })
}
