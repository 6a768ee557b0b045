//! The mutating admission webhook that injects `signet-init` into pods.

pub mod certs;
pub mod contract;
pub mod lookup;
pub mod mutate;
pub mod reload;
pub mod server;
pub mod vault_ca;
