//! `vault-cli attestor …`, `attest`, `attestations`: signed evidence about
//! a version's exact bytes, from attestors an admin registered.

use anyhow::{Context, Result};
use vault_client::Client;

use super::{human, keygen, output, parse_ref};
use crate::cli::{ApproveArgs, AttestArgs, AttestorCommand, Global, RefArgs};

/// `NAME (KEYID) may attest [TYPES] in [NAMESPACES]`.
fn describe(a: &vault_api::AttestorInfo) -> String {
    format!(
        "`{}` ({}) may attest [{}] in [{}]",
        a.name,
        a.keyid,
        a.predicate_types.join(", "),
        a.namespaces.join(", ")
    )
}

pub async fn attestor(g: &Global, c: &Client, cmd: AttestorCommand) -> Result<()> {
    match cmd {
        AttestorCommand::Add {
            name,
            pubfile,
            predicate_types,
            namespaces,
        } => {
            let text = std::fs::read_to_string(&pubfile)
                .with_context(|| format!("cannot read `{}`", pubfile.display()))?;
            let a = c
                .attestor_add(&vault_api::AttestorRequest {
                    name,
                    public_key: text,
                    predicate_types,
                    namespaces,
                })
                .await?;
            output(g, &a, || format!("attestor {}", describe(&a)))
        }
        AttestorCommand::List => {
            let all = c.attestor_list().await?;
            output(g, &all, || {
                if all.is_empty() {
                    return "no attestors".into();
                }
                all.iter().map(describe).collect::<Vec<_>>().join("\n")
            })
        }
        AttestorCommand::Remove { name } => {
            c.attestor_remove(&name).await?;
            let json = serde_json::json!({"name": name, "removed": true});
            output(g, &json, || format!("attestor `{name}` removed"))
        }
    }
}

pub async fn attest(g: &Global, c: &Client, a: AttestArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let envelope = match (&a.envelope, &a.predicate_type, &a.predicate, &a.sign_key) {
        (Some(path), ..) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read `{}`", path.display()))?,
        (None, Some(pt), Some(pred), Some(key)) => {
            let text = std::fs::read_to_string(pred)
                .with_context(|| format!("cannot read `{}`", pred.display()))?;
            let predicate: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("`{}` is not JSON", pred.display()))?;
            let key = keygen::load_secret_key(key)?;
            // The subject is the exact version the server resolves now.
            let rv = c.resolve(&r).await?;
            let statement = serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{
                    "name": format!("{}:{}", rv.name, rv.version),
                    "digest": {"sha256": rv.digest.trim_start_matches("sha256:")},
                }],
                "predicateType": pt,
                "predicate": predicate,
            });
            let mut env = vault_manifest::Envelope::wrap(&serde_json::to_vec(&statement)?);
            env.sign(&key)?;
            env.to_json()
        }
        _ => anyhow::bail!(
            "attest needs --envelope FILE, or --predicate-type, --predicate and --sign-key"
        ),
    };
    let kept = c.attest(&r, &envelope).await?;
    output(g, &kept, || {
        format!(
            "attested {}: {} by `{}`{} ({})",
            kept.reference,
            kept.predicate_type,
            kept.attestor,
            kept.result
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default(),
            kept.digest
        )
    })
}

pub async fn list(g: &Global, c: &Client, a: RefArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let all = c.attestations(&r).await?;
    output(g, &all, || {
        if all.is_empty() {
            return format!("no attestations about {r}");
        }
        all.iter()
            .map(|x| {
                format!(
                    "{}  {}  by {}{}  attached {} by {}  {}",
                    x.reference,
                    x.predicate_type,
                    x.attestor,
                    x.result
                        .as_deref()
                        .map(|r| format!(" {r}"))
                        .unwrap_or_default(),
                    human::utc(x.added),
                    x.added_by,
                    x.digest
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

pub async fn approve(g: &Global, c: &Client, a: ApproveArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let kept = c.approve(&r, &a.reason).await?;
    output(g, &kept, || {
        format!(
            "approved {} as `{}` ({})",
            kept.reference,
            kept.attestor.trim_start_matches("approval:"),
            kept.digest
        )
    })
}
