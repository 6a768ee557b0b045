//! Signet's client side: the wire protocol (shared with the vault), the API
//! types, the audit chain, and with the `sdk` feature an async client.

pub mod api;
pub mod audit;
pub mod protocol;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "sdk")]
pub mod identity;
#[cfg(feature = "sdk")]
pub mod sdk;
