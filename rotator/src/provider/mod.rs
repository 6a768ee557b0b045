//! The databases a credential is rotated in, behind one trait. Each
//! provider keeps the live credential working until the vault has promoted
//! the new one, and removes the old one only at the retire step
//! (docs/rotation.md).

pub mod mysql;
pub mod postgres;
pub mod redis;

use std::future::Future;

use signet_client::api::RotationTarget;

/// A username and password, borrowed from a claim.
#[derive(Clone, Copy)]
pub struct Credential<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a database step failed. The text may quote the database; the agent
/// scrubs credentials out of it before reporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the database refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One database's side of a rotation.
pub trait Database {
    /// Creates `new` beside the live credential, which keeps working.
    fn create(
        &self,
        admin: Credential<'_>,
        new: Credential<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Opens a fresh connection as `new` and runs a query with it.
    fn verify(&self, new: Credential<'_>) -> impl Future<Output = Result<()>> + Send;
    /// Removes `new` again (its verify failed): the database is as before.
    fn undo(
        &self,
        admin: Credential<'_>,
        new: Credential<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes the previous credential `old` now that `new` is live.
    fn retire(
        &self,
        admin: Credential<'_>,
        old: Credential<'_>,
        new: Credential<'_>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Identifiers from the vault are already restricted; checked again here
/// so that nothing else ever reaches a statement.
pub(crate) fn check_ident(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "a role, user or database name outside a-z, 0-9, '_'",
        ))
    }
}

/// Passwords are generated from quote-free alphabets; anything else is
/// refused rather than escaped.
pub(crate) fn check_password(password: &str) -> Result<()> {
    let ok = !password.is_empty()
        && password.len() <= 256
        && password
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+=^!*".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid("a password outside the rotation alphabets"))
    }
}

/// The database a target names, for the providers that need one.
pub(crate) fn database(target: &RotationTarget) -> Result<&str> {
    let database = target
        .database
        .as_deref()
        .ok_or(Error::Invalid("the target names no database"))?;
    check_ident(database)?;
    Ok(database)
}
