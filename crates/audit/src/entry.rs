//! The entry format (docs/formats.md §6). One JSON object per line; `hash`
//! is the hex SHA-256 of `prev ‖ "\n" ‖ body`, where `body` is the entry's
//! compact JSON with `hash` set to `""` and without `sig` and `keyid`
//! (fields in declaration order, empty optional fields left out). A format
//! constant.

use serde::{Deserialize, Serialize};

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, as the server reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Principal name (`-` when unauthenticated).
    pub principal: String,
    /// Token id used (never the secret).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_id: String,
    /// Action (`pull`, `push`, `token_admin`, `authenticate`, `transfer_out`, …).
    pub action: String,
    /// Resource (artifact reference, namespace, service).
    pub resource: String,
    /// `allow`, `deny`, `error`, `ok`, `alert`, …
    pub outcome: String,
    /// Bytes moved, for transfers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
    /// Request id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// Client address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    /// Free-form detail (reason of a denial, alert text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// How many events one summary entry stands for (a flood held back
    /// from the log); 0 for an entry that records one event.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Event {
    /// An event with the four main fields.
    pub fn new(principal: &str, action: &str, resource: &str, outcome: &str) -> Self {
        Event {
            principal: principal.into(),
            action: action.into(),
            resource: resource.into(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `event` or `checkpoint`.
    pub kind: String,
    /// The event (empty for checkpoints).
    #[serde(flatten)]
    pub event: Event,
    /// Hash of the previous entry ([`GENESIS`] for the first).
    pub prev: String,
    /// This entry's hash.
    #[serde(default)]
    pub hash: String,
    /// Checkpoints: base64 ed25519 signature over `hash`, by `keyid`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
    /// Checkpoints: signer key id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub keyid: String,
}

/// Domain separation for checkpoint signatures. A format constant.
pub(crate) const CHECKPOINT_CONTEXT: &[u8] = b"mlvault-audit-checkpoint-v1\n";

impl Entry {
    /// The hash this entry should carry.
    pub fn compute_hash(&self) -> String {
        let mut body = self.clone();
        body.hash.clear();
        body.sig.clear();
        body.keyid.clear();
        let text = serde_json::to_vec(&body).unwrap_or_default();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(self.prev.as_bytes());
        ctx.update(b"\n");
        ctx.update(&text);
        hex::encode(ctx.finish().as_ref())
    }

    pub(crate) fn checkpoint_message(&self) -> Vec<u8> {
        [CHECKPOINT_CONTEXT, self.hash.as_bytes()].concat()
    }
}
