//! token and policy commands.
use anyhow::Result;
use vault_api::TokenRequest;
use vault_client::Client;

use super::{human, output, Exit};
use crate::cli::{AuditCommand, Global, TokenCommand};

pub async fn token(g: &Global, c: &Client, t: TokenCommand) -> Result<()> {
    match t {
        TokenCommand::Create {
            principal,
            role,
            ttl,
            namespaces,
        } => {
            let created = c
                .token_create(&TokenRequest {
                    principal,
                    role,
                    ttl_secs: ttl,
                    namespaces,
                })
                .await?;
            // The token itself goes to stdout alone, so scripts can capture it.
            if g.json {
                outln!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                outln!("{}", created.token);
                if !g.quiet {
                    eprintln!(
                        "created {} for `{}` (role {}, namespaces [{}]); it is shown only now",
                        created.info.id,
                        created.info.principal,
                        created.info.role,
                        created.info.namespaces.join(", ")
                    );
                    if created.info.pending {
                        eprintln!(
                            "it stays inactive until another admin runs `vault-cli token approve {}`",
                            created.info.id
                        );
                    }
                }
            }
            Ok(())
        }
        TokenCommand::List => {
            let list = c.token_list().await?;
            output(g, &list, || {
                let mut s = format!(
                    "{:<22} {:<16} {:<10} {:<24} {:<20} STATE",
                    "ID", "PRINCIPAL", "ROLE", "NAMESPACES", "EXPIRES"
                );
                let now = human::now();
                for t in &list {
                    let exp = t.expires.map_or("never".into(), |e| human::expiry(e, now));
                    let state = if t.revoked {
                        "revoked"
                    } else if t.suspended {
                        "suspended"
                    } else if t.pending {
                        "pending approval"
                    } else {
                        "active"
                    };
                    s.push_str(&format!(
                        "\n{:<22} {:<16} {:<10} {:<24} {:<20} {state}",
                        t.id,
                        t.principal,
                        t.role,
                        t.namespaces.join(","),
                        exp
                    ));
                }
                s
            })
        }
        TokenCommand::Unsuspend { id } => {
            c.token_unsuspend(&id).await?;
            let json = serde_json::json!({"id": id, "suspended": false});
            output(g, &json, || format!("lifted the suspension of {id}"))
        }
        TokenCommand::Approve { id } => {
            let t = c.token_approve(&id).await?;
            output(g, &t, || {
                format!(
                    "approved {} for `{}` (role {}, created by {})",
                    t.id, t.principal, t.role, t.created_by
                )
            })
        }
        TokenCommand::Revoke { id } => {
            c.token_revoke(&id).await?;
            let json = serde_json::json!({"id": id, "revoked": true});
            output(g, &json, || format!("revoked {id}"))
        }
    }
}

pub async fn policy_reload(g: &Global, c: &Client) -> Result<()> {
    let s = c.policy_reload().await?;
    output(g, &s, || {
        format!("reloaded {} policies from {}", s.policies, s.source)
    })
}

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
