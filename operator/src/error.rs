//! The crate's top-level error, wrapping each module's own.

/// Any failure of the operator's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A duration field did not parse.
    #[error(transparent)]
    Duration(#[from] crate::duration::Error),
    /// The webhook's certificate could not be issued or installed.
    #[error(transparent)]
    Certs(#[from] crate::webhook::certs::Error),
    /// The webhook server failed.
    #[error(transparent)]
    Server(#[from] crate::webhook::server::Error),
}

/// Result with the crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
