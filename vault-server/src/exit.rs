//! Exit codes of docs/cli.md, shared by both binaries' contracts.

pub use vault_api::ExitStatus;

/// A failure with a documented exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub status: ExitStatus,
    pub message: String,
}

pub fn fail(status: ExitStatus, message: impl Into<String>) -> anyhow::Error {
    Exit {
        status,
        message: message.into(),
    }
    .into()
}

pub fn code_for(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<Exit>().map(|x| x.status))
        .unwrap_or(ExitStatus::Failure)
        .code()
}
