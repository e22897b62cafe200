//! `vault-store` keeps what the vault stores: metadata behind the
//! [`MetaStore`] trait (one adapter today, [`RedbMeta`]) and encrypted blobs in
//! any `object_store` backend through [`BlobStore`], which encrypts on write
//! and verifies on read with `vault-crypto`'s blob formats (v2 written, v1
//! still read). [`NewBlob`] makes a blob's envelope (a fresh DEK wrapped
//! under the current KEK for its context), so no caller handles DEKs.
//!
//! Start with [`RedbMeta::open`] and [`BlobStore::new`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blobs;
mod direct;
mod error;
pub mod kv;
mod meta;
pub mod meta_conformance;
mod new_blob;
#[cfg(feature = "postgres")]
mod pg_meta;
mod records;
mod redb_meta;

pub use blobs::{BlobStore, PlaintextStream};
pub use direct::LocalReads;
pub use error::{Error, Result};
pub use kv::{Journal, LogRow};
pub use meta::MetaStore;
pub use new_blob::{BlobPlan, NewBlob, WrittenBlob, UNKNOWN_DIGEST};
#[cfg(feature = "postgres")]
pub use pg_meta::{may_block, PgKv, PgMeta};
pub use records::*;
pub use redb_meta::{RedbKv, RedbMeta};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
