//! The audit chain that replicas share: entries in the metadata database,
//! appended under its head's row lock (see `PgMeta::log_append`).

use std::sync::Arc;

use vault_audit::{Build, Chain, Checkpoint, Entry};
use vault_store::{LogRow, PgMeta};

/// The audit chain in a PostgreSQL metadata database.
pub struct PgChain {
    meta: Arc<PgMeta>,
}

impl PgChain {
    pub fn new(meta: Arc<PgMeta>) -> Self {
        Self { meta }
    }
}

fn store_error(e: vault_store::Error) -> vault_audit::Error {
    vault_audit::Error::Io {
        path: "the metadata database".into(),
        cause: std::io::Error::other(e.to_string()),
    }
}

impl Chain for PgChain {
    fn append(&self, build: &mut Build<'_>) -> Result<(), String> {
        // An entry that cannot be written as a line appends nothing of the
        // batch: a chain with a hole would not verify.
        let mut unserializable = None;
        let res = self.meta.log_append(&mut |seq, head| {
            let entries = build(seq, head);
            let mut rows = Vec::with_capacity(entries.len());
            for e in entries {
                match serde_json::to_string(&e) {
                    Ok(line) => rows.push(LogRow {
                        seq: e.seq,
                        hash: e.hash,
                        line,
                    }),
                    Err(err) => {
                        unserializable = Some(err.to_string());
                        return Vec::new();
                    }
                }
            }
            unserializable = None;
            rows
        });
        if let Some(e) = unserializable {
            return Err(format!("an audit entry cannot be written: {e}"));
        }
        res.map_err(|e| format!("the shared audit chain cannot be written: {e}"))
    }

    fn scan(&self, visit: &mut (dyn FnMut(&[u8]) -> bool + Send)) -> vault_audit::Result<()> {
        self.meta.log_scan(visit).map_err(store_error)
    }

    fn tail(&self, n: usize) -> vault_audit::Result<Vec<Entry>> {
        Ok(self
            .meta
            .log_tail(n)
            .map_err(store_error)?
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    fn head(&self) -> vault_audit::Result<Option<Checkpoint>> {
        let (size, hash) = self.meta.log_head().map_err(store_error)?;
        Ok((size > 0).then_some(Checkpoint { size, hash }))
    }

    fn describe(&self) -> String {
        "the shared audit chain in the metadata database".into()
    }

    fn kept_by_metadata(&self) -> bool {
        true
    }
}
