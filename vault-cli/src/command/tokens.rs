//! `vault-cli token …`: create, list, revoke, unsuspend and approve tokens.
use anyhow::Result;
use vault_api::TokenRequest;
use vault_client::Client;

use super::{human, output};
use crate::cli::{Global, TokenCommand};

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
