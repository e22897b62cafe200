//! The gate every transferred byte passes: charged to the token's
//! bytes-per-minute budget (the transfer waits when it is spent), and the
//! token checked again at least every second, so revoking or suspending it
//! cuts a transfer that is already running.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::auth::{still_usable, Principal};
use super::{blocking, AppState};

/// How often a running transfer checks its token.
const RECHECK: Duration = Duration::from_secs(1);

pub struct Gate {
    v: AppState,
    role: String,
    token_id: String,
    token_hash: String,
    next_check: Instant,
}

impl Gate {
    pub fn new(v: &AppState, p: &Principal) -> Self {
        Gate {
            v: v.clone(),
            role: p.role.clone(),
            token_id: p.token_id.clone(),
            token_hash: p.token_hash.clone(),
            next_check: Instant::now() + RECHECK,
        }
    }

    /// Let `n` bytes through: waits for the byte budget; `Err` once the
    /// token is no longer usable.
    pub async fn pass(&mut self, n: u64) -> Result<(), String> {
        let chunk = self.v.limits.byte_chunk(&self.role).max(1);
        let mut left = n;
        while left > 0 {
            let part = left.min(chunk);
            match self.v.limits.take_bytes(&self.role, &self.token_id, part) {
                Ok(()) => left -= part,
                Err(wait) => {
                    // Waiting still checks the token on time.
                    tokio::time::sleep(wait.min(RECHECK)).await;
                    self.check().await?;
                }
            }
        }
        self.check().await
    }

    async fn check(&mut self) -> Result<(), String> {
        if Instant::now() < self.next_check {
            return Ok(());
        }
        let (v, hash) = (self.v.clone(), self.token_hash.clone());
        blocking(move || still_usable(v.meta.as_ref(), &hash))
            .await
            .map_err(|e| {
                metrics::counter!("mlvault_transfers_cut_total").increment(1);
                tracing::info!(token = %self.token_id, reason = %e.message, "transfer cut");
                e.message
            })?;
        self.next_check = Instant::now() + RECHECK;
        Ok(())
    }
}

/// `s` with every chunk passed through `gate`; ends with an error when the
/// gate refuses.
pub fn gated<S, E>(
    s: S,
    gate: Gate,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send,
{
    futures_util::stream::unfold(Some((s, gate)), |state| async move {
        let (mut s, mut gate) = state?;
        match s.next().await? {
            Ok(b) => match gate.pass(b.len() as u64).await {
                Ok(()) => Some((Ok(b), Some((s, gate)))),
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            },
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}
