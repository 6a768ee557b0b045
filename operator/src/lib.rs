//! Signet's Kubernetes operator: the `signet.dev` custom resources, the
//! controller that reconciles them with the vault, the mutating admission
//! webhook that injects `signet-init` into opted-in pods, and the process
//! around both ([`cli`]).

pub mod cli;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod error;
pub mod webhook;

pub use error::{Error, Result};
