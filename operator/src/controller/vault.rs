//! The vault calls the controller makes, behind a trait so reconcile logic
//! can be driven by a fake in tests.
//!
//! The real implementation is the signed SDK client acting as an agent
//! identity (scopes `metadata`, `tokens`, `grants`, `machines`); the agent
//! never reads a secret value.

use std::future::Future;

use signet_client::{
    api::{
        CreateGrant, CreateToken, CreatedToken, GrantRecord, MachineView, RenewToken, SecretMeta,
        TokenView,
    },
    sdk::{self, Client},
};

/// A failed vault call: the SDK's error, which carries the vault's code.
pub type Error = sdk::Error;

/// Whether a vault error means "no such object" (idempotent deletes treat it
/// as success).
pub fn is_not_found(error: &Error) -> bool {
    error.code() == Some("not_found") || matches!(error, Error::Api { status: 404, .. })
}

/// The vault's code when the agent acted outside what an admin delegated to
/// it (`ErrorCode::NotDelegated`).
pub const NOT_DELEGATED: &str = "not_delegated";

/// The vault's own message when it refused because nothing was delegated:
/// it names the missing (namespace, secret, field), which is what the
/// resource's author and the vault's admin need to see.
pub fn not_delegated(error: &Error) -> Option<&str> {
    match error {
        Error::Api { code, message, .. } if code == NOT_DELEGATED => Some(message),
        _ => None,
    }
}

/// What the controller asks of the vault.
pub trait VaultApi: Send + Sync + 'static {
    /// `POST /v1/enrollment-tokens`; the answer holds the raw token, unless
    /// the body binds it to a namespace without `raw_token` (an attested
    /// policy).
    fn create_token(
        &self,
        body: &CreateToken,
    ) -> impl Future<Output = Result<CreatedToken, Error>> + Send;
    /// `POST /v1/enrollment-tokens/{id}/renew`: a successor sharing the
    /// remaining uses, grants, constraints and binding of `id`, which stays
    /// valid for the grace period.
    fn renew_token(
        &self,
        id: &str,
        body: &RenewToken,
    ) -> impl Future<Output = Result<CreatedToken, Error>> + Send;
    /// `DELETE /v1/enrollment-tokens/{id}`.
    fn revoke_token(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Every enrollment token the vault knows.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenView>, Error>> + Send;
    /// Metadata (names, versions, field names; never values) of one secret.
    fn secret_meta(
        &self,
        project: &str,
        secret: &str,
    ) -> impl Future<Output = Result<SecretMeta, Error>> + Send;
    /// `POST /v1/grants`.
    fn create_grant(
        &self,
        body: &CreateGrant,
    ) -> impl Future<Output = Result<GrantRecord, Error>> + Send;
    /// Grants of one machine or one token.
    fn grants_of(
        &self,
        grantee: Grantee<'_>,
    ) -> impl Future<Output = Result<Vec<GrantRecord>, Error>> + Send;
    /// `DELETE /v1/grants/{id}`.
    fn delete_grant(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Every machine the vault knows.
    fn machines(&self) -> impl Future<Output = Result<Vec<MachineView>, Error>> + Send;
    /// `DELETE /v1/machines/{id}`.
    fn revoke_machine(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Whose grants to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee<'a> {
    /// A machine, by id.
    Machine(&'a str),
    /// An enrollment token, by id.
    Token(&'a str),
}

impl VaultApi for Client {
    async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken, Error> {
        Client::create_token(self, body).await
    }

    async fn renew_token(&self, id: &str, body: &RenewToken) -> Result<CreatedToken, Error> {
        Client::renew_token(self, id, body).await
    }

    async fn revoke_token(&self, id: &str) -> Result<(), Error> {
        Client::revoke_token(self, id).await
    }

    async fn tokens(&self) -> Result<Vec<TokenView>, Error> {
        Ok(Client::tokens(self).await?.tokens)
    }

    async fn secret_meta(&self, project: &str, secret: &str) -> Result<SecretMeta, Error> {
        Client::secret_meta(self, project, secret).await
    }

    async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord, Error> {
        Client::create_grant(self, body).await
    }

    async fn grants_of(&self, grantee: Grantee<'_>) -> Result<Vec<GrantRecord>, Error> {
        let list = match grantee {
            Grantee::Machine(id) => self.list_grants(Some(id), None).await?,
            Grantee::Token(id) => self.list_grants(None, Some(id)).await?,
        };
        Ok(list.grants)
    }

    async fn delete_grant(&self, id: &str) -> Result<(), Error> {
        Client::delete_grant(self, id).await
    }

    async fn machines(&self) -> Result<Vec<MachineView>, Error> {
        Ok(Client::machines(self).await?.machines)
    }

    async fn revoke_machine(&self, id: &str) -> Result<(), Error> {
        Client::revoke_machine(self, id).await
    }
}
