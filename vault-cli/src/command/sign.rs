//! keygen, publisher and alias commands.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vault_client::Client;
use vault_manifest::SecretKey;

use super::{output, parse_ref, usage};
use crate::cli::{AliasArgs, Global, KeyFormat, KeygenArgs, PublisherCommand};

pub fn load_secret_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read signing key `{}`", path.display()))?;
    SecretKey::from_file_text(&text).map_err(|e| usage(format!("`{}`: {e}", path.display())))
}

fn pub_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

pub fn keygen(g: &Global, a: KeygenArgs) -> Result<()> {
    let key = SecretKey::generate()?;
    let pubp = pub_path(&a.out);
    if pubp.exists() {
        return Err(usage(format!(
            "`{}` exists; refusing to overwrite",
            pubp.display()
        )));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.out)
        .map_err(|e| {
            usage(format!(
                "cannot create `{}`: {e} (keygen never overwrites)",
                a.out.display()
            ))
        })?;
    let (secret, public) = match a.format {
        KeyFormat::Mlvault => (key.to_file_text(), key.public().to_file_text()),
        KeyFormat::Pem => (key.to_pem()?, key.public().to_pem()?),
        KeyFormat::Openssh => (key.to_openssh()?, key.public().to_openssh()?),
    };
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::write(&pubp, public).with_context(|| format!("cannot write `{}`", pubp.display()))?;
    let keyid = key.public().keyid();
    let json = serde_json::json!({"secret_key": a.out, "public_key": pubp, "keyid": keyid});
    output(g, &json, || {
        format!(
            "wrote {} (secret, mode 0600) and {} (public)\nkey id {keyid}",
            a.out.display(),
            pubp.display()
        )
    })
}

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
