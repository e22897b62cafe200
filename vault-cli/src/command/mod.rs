//! One file per verb group; `run` wires the client and dispatches.

mod aliases;
mod attest;
mod audit;
mod config;
mod human;
pub use human::terminal_safe;
mod jobs;
mod keygen;
mod keys;
mod policy;
mod progress;
mod publishers;
mod pull;
mod push;
mod read;
mod scan;
mod tokens;

use anyhow::{Context, Result};
use vault_api::Reference;
use vault_client::Client;

use crate::cli::{Cli, Command, Global};

pub use vault_api::ExitStatus;

/// A failure with a documented exit status, for errors raised here.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub status: ExitStatus,
    pub message: String,
}

/// A failure with `status`.
pub fn fail(status: ExitStatus, message: impl Into<String>) -> anyhow::Error {
    Exit {
        status,
        message: message.into(),
    }
    .into()
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    fail(ExitStatus::Usage, message)
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(x) = c.downcast_ref::<Exit>() {
            return x.status.code();
        }
        if let Some(x) = c.downcast_ref::<vault_client::Error>() {
            return x.exit_code();
        }
    }
    ExitStatus::Failure.code()
}

pub fn parse_ref(s: &str) -> Result<Reference> {
    s.parse()
        .map_err(|e: vault_api::NameError| usage(e.to_string()))
}

fn client(g: &Global) -> Result<Client> {
    let token = match (&g.token, &g.token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token file `{}`", f.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Ok(Client::new(&g.addr, token, g.ca_cert.as_deref())?.with_retries(g.retries))
}

/// Print `value` as JSON (with --json) or `human` (unless --quiet).
pub fn output<T: serde::Serialize>(
    g: &Global,
    value: &T,
    human: impl FnOnce() -> String,
) -> Result<()> {
    if g.json {
        outln!("{}", serde_json::to_string_pretty(value)?);
    } else if !g.quiet {
        outln!("{}", human::terminal_safe(&human()));
    }
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let g = cli.global;
    rt.block_on(async move {
        let cfg = config::load(&g)?;
        match cli.command {
            Command::Verify(a) => read::verify(&g, &cfg, a),
            Command::Cache(a) => read::cache(&g, a),
            Command::Keygen(a) => keygen::keygen(&g, a),
            Command::Scan(a) => scan::scan(&g, a),
            cmd => {
                let c = client(&g)?;
                match cmd {
                    Command::Push(a) => push::run(&g, &cfg, &c, a).await,
                    Command::Pull(a) => pull::run(&g, &cfg, &c, a).await,
                    Command::Alias(a) => aliases::alias(&g, &c, a).await,
                    Command::Publisher(p) => publishers::publisher(&g, &c, p).await,
                    Command::Ls(a) => read::ls(&g, &c, a).await,
                    Command::Show(a) => read::show(&g, &c, a).await,
                    Command::Delete(a) => read::delete(&g, &c, a).await,
                    Command::Key(k) => keys::run(&g, &c, k).await,
                    Command::Token(t) => tokens::token(&g, &c, t).await,
                    Command::Policy(_) => policy::policy_reload(&g, &c).await,
                    Command::Audit(a) => audit::audit(&g, &c, a).await,
                    Command::Anonymize(a) => jobs::anonymize(&g, &c, a).await,
                    Command::Job(j) => jobs::job(&g, &c, j).await,
                    Command::ScanAllow(a) => scan::allow(&g, &c, a).await,
                    Command::Attestor(a) => attest::attestor(&g, &c, a).await,
                    Command::Attest(a) => attest::attest(&g, &c, a).await,
                    Command::Attestations(a) => attest::list(&g, &c, a).await,
                    Command::Approve(a) => attest::approve(&g, &c, a).await,
                    Command::Verify(_)
                    | Command::Keygen(_)
                    | Command::Cache(_)
                    | Command::Scan(_) => {
                        unreachable!("handled above")
                    }
                }
            }
        }
    })
}
