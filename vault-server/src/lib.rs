//! The mlvault server as a library: the HTTP API ([`api::app`] builds the
//! router apart from any socket, so tests drive it in process), the domain
//! operations under it ([`domain`]), the vault they work on
//! ([`vault::Vault`]), the commands of the `vault-server` binary
//! ([`command`]) and what they share. `src/main.rs` only parses arguments.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit_chain;
pub mod cache;
pub mod cli;
pub mod command;
pub mod config;
pub mod conn;
pub mod domain;
pub mod exit;
pub mod guard;
pub mod metrics_setup;
pub mod storage;
pub mod tokens;
pub mod vault;
