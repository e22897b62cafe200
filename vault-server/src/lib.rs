//! The mlvault server as a library: the HTTP API ([`api::app`] builds the
//! router apart from any socket, so tests drive it in process), the vault
//! it serves ([`vault::Vault`]), the commands of the `vault-server` binary
//! ([`command`]) and what they share. `src/main.rs` only parses arguments.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod command;
pub mod config;
pub mod conn;
pub mod exit;
pub mod guard;
pub mod jobs;
pub mod metrics_setup;
pub mod storage;
pub mod tokens;
pub mod vault;
