//! `vault-server dev`: a first try in one command. Not for production.

use std::fs;

use anyhow::{Context, Result};

use crate::cli::{DevArgs, RunArgs, UnsealArgs};
use crate::exit::{fail, ExitStatus};
use crate::vault::{self, Layout};

pub fn run(a: DevArgs) -> Result<()> {
    if !a.listen.ip().is_loopback() {
        return Err(fail(ExitStatus::Usage, "dev mode serves on loopback only"));
    }
    let layout = Layout::new(&a.data_dir);
    let unseal = UnsealArgs {
        unseal_identity: None,
        passphrase_env: None,
    };
    let token_file = a.data_dir.join("dev-admin.token");
    let trainer_file = a.data_dir.join("dev-trainer.token");
    if !layout.marker().exists() {
        let token = vault::init(&a.data_dir, &unseal, &Default::default())?;
        vault::write_secret_file(&token_file, format!("{token}\n").as_bytes())?;
        eprintln!("initialized a new dev vault in `{}`", a.data_dir.display());
    } else if vault::check_tree_private(&a.data_dir).is_err() {
        // A dev vault made by an earlier release (before data directories
        // were created private): dev made it, so dev closes it.
        vault::close_to_others(&a.data_dir)?;
        eprintln!(
            "closed `{}` to group and others (it was made by an earlier release)",
            a.data_dir.display()
        );
    }
    if !trainer_file.exists() {
        let t = vault::add_token(&a.data_dir, "dev-trainer", "trainer", &["demo".to_owned()])?;
        vault::write_secret_file(&trainer_file, format!("{t}\n").as_bytes())?;
    }
    let token = fs::read_to_string(&token_file)
        .with_context(|| format!("cannot read `{}`", token_file.display()))?;
    let token = token.trim();
    let trainer = fs::read_to_string(&trainer_file)
        .with_context(|| format!("cannot read `{}`", trainer_file.display()))?;
    let trainer = trainer.trim();
    eprintln!(
        "WARNING: dev mode is not a production setup: the unseal identity and the admin token\n\
         sit in `{dir}` beside the data, and there is no TLS.\n\n\
         admin token:   {token}   (tokens, keys, policies; reads no artifact)\n\
         trainer token: {trainer}   (push/pull in namespace `demo`)\n\
         (also in `{tf}` and `{trf}`)\n\n\
         next, in another terminal:\n  \
         export MLVAULT_ADDR=http://<address printed below> MLVAULT_TOKEN={trainer}\n  \
         vault-cli push demo/model ./my-model-dir\n  \
         vault-cli pull demo/model --to ./pulled\n  \
         vault-cli ls\n",
        dir = a.data_dir.display(),
        tf = token_file.display(),
        trf = trainer_file.display(),
    );
    super::run::run(RunArgs {
        data_dir: a.data_dir,
        listen: a.listen,
        unseal,
        insecure_http: false,
        policies: None,
        header_timeout_secs: None,
        body_timeout_secs: None,
        config: None,
        tls_cert: None,
        tls_key: None,
        alias_ttl: 7 * 86400,
        no_alias_renewal: false,
        segment_size: vault_crypto::DEFAULT_SEGMENT_SIZE,
        reseal_audit: None,
    })
}
