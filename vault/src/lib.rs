//! The Signet vault: a server that holds secrets under envelope encryption
//! and serves them only to machines that sign every request.
//!
//! Layout, in the direction data flows: [`http`] (the axum surface) →
//! [`vault`] (the request pipeline: docs/protocol.md's checks, audit) and
//! [`writer`] (group commit) → [`service`] (the operations) → [`store`]
//! (the storage trait and its SQLite backend) and [`crypto`] (the key
//! hierarchy). [`request`] and [`settings`] hold the types the pipeline and
//! the services share, [`policy`] the pure access rules, [`outbox`] the
//! webhook events queued in a request's transaction; none of them imports
//! the pipeline or a service; [`denials`] counts the denials of unverified
//! requests, [`budget`] and [`connections`] bound what one source may
//! cost, and [`dns`] bounds name lookups, for the same layers; [`page`]
//! is the cursor pagination of the list routes, [`changes`] the change
//! signal machines wait on. [`server`]
//! is the process around it, [`worker`] its background loops (sweeps,
//! webhook deliveries, the grouped denials), [`cli`] the `signet-vault`
//! command.

pub mod audit;
pub mod budget;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod connections;
pub mod crypto;
pub mod denials;
pub mod dns;
pub mod error;
pub mod geoip;
pub mod http;
pub mod idle;
pub mod ids;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod policy;
pub mod request;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod vault;
pub mod worker;
pub mod writer;

pub use error::{Error, Result};
pub use vault::{Config, Vault};
