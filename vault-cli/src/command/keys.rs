use anyhow::Result;
use vault_client::Client;

use super::output;
use crate::cli::{Global, KeyCommand};

fn status_line(s: &vault_api::KeyStatus) -> String {
    let by: Vec<String> = s
        .blobs_by_version
        .iter()
        .map(|(v, n)| format!("v{v}: {n} blobs"))
        .collect();
    format!(
        "key ring {}: current KEK v{}, versions {:?}, minimum decryption version {}{}{}",
        s.keyring_id,
        s.current_version,
        s.versions,
        s.min_decryption_version,
        if by.is_empty() { "" } else { "; " },
        by.join(", ")
    )
}

pub async fn run(g: &Global, c: &Client, k: KeyCommand) -> Result<()> {
    match k {
        KeyCommand::Status => {
            let s = c.key_status().await?;
            output(g, &s, || status_line(&s))
        }
        KeyCommand::Rotate => {
            let s = c.key_rotate().await?;
            output(g, &s, || format!("rotated: {}", status_line(&s)))
        }
        KeyCommand::Rewrap => {
            let r = c.key_rewrap().await?;
            output(g, &r, || {
                format!(
                    "rewrapped {} DEKs to KEK v{} ({} already current)",
                    r.rewrapped, r.current_version, r.already_current
                )
            })
        }
        KeyCommand::Retire { min_version } => {
            let s = c.key_retire(min_version).await?;
            output(g, &s, || format!("retired: {}", status_line(&s)))
        }
    }
}
