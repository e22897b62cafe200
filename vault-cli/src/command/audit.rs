//! `vault-cli audit …`: tail, verify and checkpoint the server's audit log.

use anyhow::Result;
use vault_client::Client;

use super::{human, output, Exit};
use crate::cli::{AuditCommand, Global};

pub async fn audit(g: &Global, c: &Client, a: AuditCommand) -> Result<()> {
    match a {
        AuditCommand::Tail { n } => {
            let entries = c.audit_tail(n).await?;
            output(g, &entries, || {
                entries
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
                                let bytes = e["bytes"]
                                    .as_u64()
                                    .map_or(String::new(), |b| format!(" {b}B"));
                                format!(
                                    "{:>6} {} {:<10} {:<16} {:<18} {}{}{}",
                                    e["seq"].as_u64().unwrap_or_default(),
                                    e["time_ms"].as_u64().map_or(String::new(), human::utc_ms),
                                    s("outcome"),
                                    s("principal"),
                                    s("action"),
                                    s("resource"),
                                    bytes,
                                    if s("detail").is_empty() {
                                        String::new()
                                    } else {
                                        format!("  ({})", s("detail"))
                                    }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            })
        }
        AuditCommand::Checkpoint => {
            let note = c.audit_checkpoint().await?;
            // Byte for byte into a file; escaped on a terminal.
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                out!("{}", super::terminal_safe(&note));
            } else {
                out!("{note}");
            }
            Ok(())
        }
        AuditCommand::Verify => {
            let r = c.audit_verify().await?;
            let bad = r["first_bad"].as_array().cloned();
            output(g, &r, || {
                match &bad {
                None => format!(
                    "audit log intact: {} entries, {} signed checkpoints (last at {}), {} entries after it",
                    r["entries"], r["checkpoints"], r["last_checkpoint"], r["unsigned_tail"]
                ),
                Some(b) => format!(
                    "audit log TAMPERED: first bad entry at line {} (sequence {}): {}",
                    b[0], b[1], b[2].as_str().unwrap_or("")
                ),
            }
            })?;
            match bad {
                None => Ok(()),
                Some(b) => Err(Exit {
                    status: super::ExitStatus::Integrity,
                    message: format!("audit log tampered at line {} (sequence {})", b[0], b[1]),
                }
                .into()),
            }
        }
    }
}
