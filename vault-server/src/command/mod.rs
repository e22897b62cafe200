//! One module per verb.

mod audit;
mod dev;
mod fsck;
mod init;
mod migrate;
mod policy;
mod run;

use anyhow::Result;

use crate::cli::{Cli, Command};

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MLVAULT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_ansi(false).init();
    } else {
        builder.init();
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init(a) => init::run(a),
        Command::Run(a) => run::run(a),
        Command::Dev(a) => dev::run(a),
        Command::Fsck(a) => fsck::run(a),
        Command::Migrate(a) => migrate::run(a),
        Command::Audit(crate::cli::AuditCommand::Verify(a)) => audit::verify(a),
        Command::Policy(crate::cli::PolicyCommand::Check { dir, json }) => {
            policy::check(&dir, json)
        }
    }
}
