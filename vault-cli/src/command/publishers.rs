//! `vault-cli publisher …`: the keys allowed to sign manifests for a namespace.

use std::path::Path;

use anyhow::{Context, Result};
use vault_client::Client;

use super::output;
use crate::cli::{Global, PublisherCommand};

pub async fn publisher(g: &Global, c: &Client, cmd: PublisherCommand) -> Result<()> {
    match cmd {
        PublisherCommand::Add { namespace, pubfile } => {
            let text = std::fs::read_to_string(&pubfile)
                .with_context(|| format!("cannot read `{}`", pubfile.display()))?;
            let info = c.publisher_add(&namespace, &text).await?;
            output(g, &info, || {
                format!(
                    "`{}` may now sign manifests for `{}`",
                    info.keyid, info.namespace
                )
            })
        }
        PublisherCommand::List { namespace } => {
            let list = c.publisher_list(namespace.as_deref().unwrap_or("")).await?;
            output(g, &list, || {
                if list.is_empty() {
                    return "no publishers (pushes need no signature)".into();
                }
                list.iter()
                    .map(|p| format!("{:<24} {}  added by {}", p.namespace, p.keyid, p.added_by))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        PublisherCommand::Remove { namespace, key } => {
            let keyid = if key.starts_with("ed25519:") {
                key
            } else {
                vault_client::load_public_key(Path::new(&key))?.keyid()
            };
            c.publisher_remove(&namespace, &keyid).await?;
            let json = serde_json::json!({"namespace": namespace, "keyid": keyid, "removed": true});
            output(g, &json, || format!("removed `{keyid}` from `{namespace}`"))
        }
    }
}
