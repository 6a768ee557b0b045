//! The failures of `signet-init run`, each with its exit code (see the
//! table in the crate docs).
//!
//! SDK errors are boxed: they are large and only travel on the way out.

use signet_client::sdk;

use crate::{config, render, write};

/// Why `signet-init run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error")]
    Config(#[from] config::Error),
    #[error(
        "cannot reach the vault at {url} after {attempts} attempt(s); check SIGNET_VAULT, that the vault Service has ready endpoints, that no NetworkPolicy blocks this pod, and the vault's TLS certificate"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "the vault at {url} refused the enrollment; check the EnrollmentToken (expired, used up, revoked, hostname or source CIDR rules) and its status"
    )]
    EnrollmentRefused {
        url: String,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "the vault at {url} no longer accepts this machine (revoked or expired); restarting re-enrolls it"
    )]
    IdentityRefused {
        url: String,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "secret {secret} is not granted to this machine; check the SecretGrant for it and its status"
    )]
    NoGrant { secret: String },
    #[error("secret {secret} is granted in several projects ({projects}); cannot tell which one")]
    AmbiguousGrant { secret: String, projects: String },
    #[error("the vault at {url} refused secret {project}/{secret}; check the SecretGrant")]
    SecretRefused {
        url: String,
        project: String,
        secret: String,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error("cannot write secret {secret} as asked; check the SecretGrant's fields and format")]
    Render {
        secret: String,
        #[source]
        source: render::Error,
    },
    #[error("cannot write into the mount path; check the volume (size limit, read-only)")]
    Write(#[from] write::Error),
    #[error("stopped by a signal before every file was written")]
    Interrupted,
    #[error("cannot start")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The process exit code of this failure class.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Runtime(_) => 1,
            Self::Config(_) => 2,
            Self::Unreachable { .. } => 3,
            Self::EnrollmentRefused { .. } | Self::IdentityRefused { .. } => 4,
            Self::NoGrant { .. }
            | Self::AmbiguousGrant { .. }
            | Self::SecretRefused { .. }
            | Self::Render { .. } => 5,
            Self::Write(_) => 6,
            Self::Interrupted => 7,
        }
    }
}

/// `error: cause: cause ...` on one line, for the final log message.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
