//! `vault-cli policy reload` (the offline check is `vault-server policy check`).

use anyhow::Result;
use vault_client::Client;

use super::output;
use crate::cli::Global;

pub async fn policy_reload(g: &Global, c: &Client) -> Result<()> {
    let s = c.policy_reload().await?;
    output(g, &s, || {
        format!("reloaded {} policies from {}", s.policies, s.source)
    })
}
