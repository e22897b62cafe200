//! `vault-cli keygen`, and reading signing key files.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vault_manifest::SecretKey;

use super::{output, usage};
use crate::cli::{Global, KeyFormat, KeygenArgs};

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
