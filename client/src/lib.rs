//! Signet's client side: the wire protocol (shared with the vault), the API
//! types, the audit chain, and with the `sdk` feature an async client. The
//! `shutdown` feature adds the signal handling every Signet process shares.

pub mod api;
pub mod audit;
pub mod protocol;

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "sdk")]
pub mod identity;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "sdk")]
pub mod sdk;
#[cfg(feature = "shutdown")]
pub mod shutdown;
