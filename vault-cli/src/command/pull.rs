use anyhow::Result;
use vault_client::{Client, PullOptions};

use super::{output, parse_ref};
use crate::cli::{Global, PullArgs};

pub async fn run(g: &Global, c: &Client, a: PullArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let res = c
        .pull(
            &r,
            &a.to,
            &PullOptions {
                allow_downgrade: a.allow_downgrade,
            },
        )
        .await?;
    output(g, &res, || {
        format!(
            "pulled {} ({}) into {}: {} files, {} bytes verified, {} downloaded",
            res.reference,
            res.digest,
            a.to.display(),
            res.files,
            res.bytes,
            res.downloaded_bytes
        )
    })
}
