//! `vault-server init`.

use anyhow::Result;

use crate::cli::InitArgs;
use crate::vault::{self, write_secret_file};

pub fn run(a: InitArgs) -> Result<()> {
    let config = crate::config::ServerConfig::load(a.config.as_deref())?;
    if a.join {
        vault::join(&a.data_dir, &a.unseal, &config.metadata)?;
        println!(
            "joined the vault in the metadata database: replica data directory `{}`",
            a.data_dir.display()
        );
        return Ok(());
    }
    let token = vault::init(&a.data_dir, &a.unseal, &config.metadata)?;
    match &a.admin_token_file {
        Some(path) => {
            write_secret_file(path, format!("{token}\n").as_bytes())?;
            println!(
                "initialized vault in `{}`; admin token written to `{}`",
                a.data_dir.display(),
                path.display()
            );
        }
        None => {
            println!("initialized vault in `{}`", a.data_dir.display());
            println!("admin token (shown once, store it now): {token}");
        }
    }
    Ok(())
}
