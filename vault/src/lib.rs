//! The Signet vault: a server that holds secrets under envelope encryption
//! and serves them only to machines that sign every request.
//!
//! Layout: [`vault`] is the request pipeline (docs/protocol.md's checks, audit),
//! [`service`] the operations, [`store`] the storage trait and its SQLite
//! backend, [`crypto`] the key hierarchy, [`http`] the axum surface,
//! [`server`] the process around it, [`cli`] the `signet-vault` command.

pub mod audit;
pub mod cli;
pub mod clock;
pub mod crypto;
pub mod error;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod server;
pub mod service;
pub mod store;
pub mod vault;
pub mod writer;

pub use error::{Error, Result};
pub use vault::{Config, Vault};
