//! The optional client configuration file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::cli::Global;

/// `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Publisher public keys trusted for manifests.
    #[serde(default)]
    pub trust: Vec<PathBuf>,
    /// The server's alias-signing public key.
    pub server_key: Option<PathBuf>,
    /// Signing key for pushes.
    pub sign_key: Option<PathBuf>,
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mlvault/config.toml"))
}

/// Load the config named by --config / MLVAULT_CONFIG (must exist), else the
/// default file when present.
pub fn load(g: &Global) -> Result<Config> {
    let (path, required) = match &g.config {
        Some(p) => (p.clone(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(Config::default()),
        },
    };
    if !required && !path.exists() {
        return Ok(Config::default());
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read config `{}`", path.display()))?;
    let mut c: Config = toml::from_str(&text)
        .map_err(|e| super::usage(format!("config `{}`: {e}", path.display())))?;
    // Relative paths are relative to the config file.
    let dir = path.parent().unwrap_or(Path::new("."));
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    c.trust.iter_mut().for_each(fix);
    c.server_key.as_mut().map(fix);
    c.sign_key.as_mut().map(fix);
    Ok(c)
}
