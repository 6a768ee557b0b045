//! The vault's one error type. A [`Error::Denied`] carries the wire code of
//! docs/protocol.md; everything else is an internal failure whose details go to
//! the log, never to the caller.

use signet_client::api::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{code}: {message}")]
    Denied { code: ErrorCode, message: String },
    #[error("storage failed")]
    Store(#[from] crate::store::Error),
    #[error("cryptography failed")]
    Crypto(#[from] crate::crypto::Error),
    #[error("background task failed")]
    Join(#[from] tokio::task::JoinError),
    /// The writer could not commit the request's batch (or is not running):
    /// nothing of the request was kept.
    #[error("the request's batch was not committed")]
    Uncommitted,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A refusal with its code and a human message (never a secret).
    pub fn denied(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Denied {
            code,
            message: message.into(),
        }
    }

    /// The wire code: the denial's own, or `internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Denied { code, .. } => *code,
            Self::Store(crate::store::Error::Duplicate(_)) => ErrorCode::Conflict,
            _ => ErrorCode::Internal,
        }
    }

    /// What the caller is told.
    pub fn public_message(&self) -> String {
        match self {
            Self::Denied { message, .. } => message.clone(),
            Self::Store(crate::store::Error::Duplicate(what)) => {
                format!("a {what} with that name or key already exists")
            }
            _ => "internal error; the vault's log has the details".to_owned(),
        }
    }
}

/// Shorthands for the common refusals.
pub fn not_found(what: impl std::fmt::Display) -> Error {
    Error::denied(ErrorCode::NotFound, format!("{what} does not exist"))
}

pub fn invalid(message: impl Into<String>) -> Error {
    Error::denied(ErrorCode::InvalidRequest, message)
}
