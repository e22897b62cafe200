use anyhow::Result;
use vault_client::{Client, PushOptions};

use super::{output, parse_ref, usage};
use crate::cli::{Global, PushArgs};

pub async fn run(g: &Global, c: &Client, a: PushArgs) -> Result<()> {
    let r = parse_ref(&a.reference)?;
    let kind = a.kind.parse().map_err(usage)?;
    for p in &a.parents {
        if !vault_api::valid_digest(p) {
            return Err(usage(format!(
                "--parent `{p}` is not a `sha256:<hex>` digest"
            )));
        }
    }
    let res = c
        .push(
            &r,
            &a.path,
            &PushOptions {
                kind,
                parents: a.parents,
            },
        )
        .await?;
    output(g, &res, || {
        format!(
            "pushed {} ({}): {} files, {} bytes, {} uploaded",
            res.reference, res.digest, res.files, res.bytes, res.uploaded_bytes
        )
    })
}
