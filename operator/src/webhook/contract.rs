//! The contract between the webhook and `signet-init`: environment variables
//! and the `SIGNET_FILES` document.
//!
//! It lives in the kube-free `signet-init` crate (built here without its
//! runtime), so the side that writes the environment and the side that
//! reads it share one definition; see [`signet_init::contract`] for the
//! table of variables.

pub use signet_init::contract::*;
