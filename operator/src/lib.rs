//! Signet's Kubernetes operator: the `signet.dev` custom resources and the
//! mutating admission webhook that injects `signet-init` into opted-in pods.

pub mod controller;
pub mod crd;
pub mod duration;
pub mod error;
pub mod webhook;

pub use error::{Error, Result};
