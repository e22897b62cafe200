//! Changes and their audit entries, made together: every change the vault
//! records runs here, in one metadata transaction with the entries that
//! record it, so no change is ever made without its entry.
//!
//! Where the audit chain lives in the metadata database (replicas on
//! PostgreSQL), the transaction locks the chain's head first, chains the
//! entries on it and inserts them with the change. Where it is this
//! server's own file (redb), the entries are appended and made durable
//! while the transaction is open, and it commits after them.

use std::sync::Mutex;

use vault_audit::Event;
use vault_store::{LogRow, MetaStore};

use super::{Error, Result};
use crate::vault::Vault;

impl Vault {
    /// Make `change` (calls on the metadata it is given, one transaction)
    /// and record what `events` says of its result in the audit log, in
    /// that same transaction. `events` may return none (the change found
    /// nothing to do). A log that cannot be written fails the change
    /// ([`Error::Audit`]) and nothing is made. Both closures may run again
    /// when the database retries the transaction.
    pub fn change<R: Send>(
        &self,
        mut change: impl FnMut(&dyn MetaStore) -> vault_store::Result<R> + Send,
        events: impl Fn(&R) -> Vec<Event> + Send + Sync,
    ) -> Result<R> {
        let made: Mutex<Option<R>> = Mutex::new(None);
        let entries = Mutex::new(0usize);
        let res = self.meta.journaled(
            &mut |m| {
                let r = change(m)?;
                *made.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                Ok(())
            },
            &mut |head| {
                let evs = {
                    let guard = made.lock().unwrap_or_else(|p| p.into_inner());
                    let Some(r) = guard.as_ref() else {
                        return Err(vault_store::Error::Meta(
                            "a journal ran before its change".into(),
                        ));
                    };
                    events(r)
                };
                if evs.is_empty() {
                    return Ok(Vec::new());
                }
                let built = self
                    .audit
                    .journal(&evs, head)
                    .map_err(vault_store::Error::Journal)?;
                *entries.lock().unwrap_or_else(|p| p.into_inner()) = evs.len();
                built
                    .into_iter()
                    .map(|e| {
                        let line = serde_json::to_string(&e).map_err(|err| {
                            vault_store::Error::Journal(format!(
                                "an audit entry cannot be written: {err}"
                            ))
                        })?;
                        Ok(LogRow {
                            seq: e.seq,
                            hash: e.hash,
                            line,
                        })
                    })
                    .collect()
            },
        );
        match res {
            Err(vault_store::Error::Journal(e)) => return Err(Error::Audit(e)),
            other => other?,
        }
        self.audit
            .journaled(entries.into_inner().unwrap_or_else(|p| p.into_inner()));
        made.into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or_else(|| Error::Task("a change ended without its result".into()))
    }
}
