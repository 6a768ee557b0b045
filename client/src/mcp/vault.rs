//! The only door from the MCP tools to the vault: what an agent may do,
//! and nothing that carries a secret value.
//!
//! [`AgentVault`] is deliberately narrow. The SDK's [`Client`] can read and
//! write values (a machine reads, an admin writes); this trait has no such
//! method, so no tool can call one, whatever identity signs. Every type it
//! returns is a metadata type of the API (names, versions, field names,
//! policies, ids); the one that can hold a credential, [`CreatedToken`], is
//! stripped here (see [`AgentVault::create_token`]).

use std::future::Future;

use crate::api::{
    AccessPolicy, AuditPage, AuditVerification, CreateGrant, CreateToken, DelegationView,
    GrantRecord, MachineView, ProjectView, SecretMeta, TokenView,
};
use crate::sdk::{Client, Error, Result};

/// What the MCP tools may ask of the vault, signed as the agent.
pub trait AgentVault: Send + Sync + 'static {
    /// Projects (names, ids, lock state).
    fn projects(&self) -> impl Future<Output = Result<Vec<ProjectView>>> + Send;
    /// Secrets of `project`: names, versions, field names and policies.
    fn secrets(&self, project: &str) -> impl Future<Output = Result<Vec<SecretMeta>>> + Send;
    /// Enrolled machines.
    fn machines(&self) -> impl Future<Output = Result<Vec<MachineView>>> + Send;
    /// Enrollment tokens and attested enrollment policies.
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenView>>> + Send;
    /// This agent's own delegations: what it may hand out, and where.
    fn delegations(&self) -> impl Future<Output = Result<Vec<DelegationView>>> + Send;
    /// Grants, optionally of one machine or one token.
    fn grants(
        &self,
        machine_id: Option<&str>,
        token_id: Option<&str>,
    ) -> impl Future<Output = Result<Vec<GrantRecord>>> + Send;
    /// Creates an enrollment policy; the vault checks it against the
    /// agent's delegations. Never answers a raw token: see the impl.
    fn create_token(&self, body: &CreateToken) -> impl Future<Output = Result<TokenView>> + Send;
    fn create_grant(&self, body: &CreateGrant) -> impl Future<Output = Result<GrantRecord>> + Send;
    fn delete_grant(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn set_policy(
        &self,
        project: &str,
        secret: &str,
        policy: &AccessPolicy,
    ) -> impl Future<Output = Result<SecretMeta>> + Send;
    /// Audit entries with `seq > after`, at most `limit`.
    fn audit(&self, after: u64, limit: u32) -> impl Future<Output = Result<AuditPage>> + Send;
    fn verify_audit(&self) -> impl Future<Output = Result<AuditVerification>> + Send;
}

/// Refuses a raw enrollment token coming back to the assistant.
fn raw_token_refused(id: &str) -> Error {
    Error::Decode {
        status: 201,
        reason: format!(
            "the vault issued a raw enrollment token ({id}); the MCP server never hands one \
             to an assistant (whoever holds it can enroll a machine and read), so it revoked it"
        ),
    }
}

impl AgentVault for Client {
    async fn projects(&self) -> Result<Vec<ProjectView>> {
        Ok(Client::projects(self).await?.projects)
    }

    async fn secrets(&self, project: &str) -> Result<Vec<SecretMeta>> {
        Ok(Client::secrets(self, project).await?.secrets)
    }

    async fn machines(&self) -> Result<Vec<MachineView>> {
        Ok(Client::machines(self).await?.machines)
    }

    async fn tokens(&self) -> Result<Vec<TokenView>> {
        Ok(Client::tokens(self).await?.tokens)
    }

    async fn delegations(&self) -> Result<Vec<DelegationView>> {
        Ok(Client::delegations(self, None).await?.delegations)
    }

    async fn grants(
        &self,
        machine_id: Option<&str>,
        token_id: Option<&str>,
    ) -> Result<Vec<GrantRecord>> {
        Ok(self.list_grants(machine_id, token_id).await?.grants)
    }

    /// The assistant is not where a credential belongs: a raw token in its
    /// context could enroll a machine that reads. The tool only asks for
    /// attested Kubernetes policies (which have no raw token); should the
    /// vault answer one all the same, it is revoked at once and the call
    /// fails, so the token is dead before anyone could use it.
    async fn create_token(&self, body: &CreateToken) -> Result<TokenView> {
        let created = Client::create_token(self, body).await?;
        if created.token.is_some() {
            drop(created.token);
            self.revoke_token(&created.view.id).await?;
            return Err(raw_token_refused(&created.view.id));
        }
        Ok(created.view)
    }

    async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord> {
        Client::create_grant(self, body).await
    }

    async fn delete_grant(&self, id: &str) -> Result<()> {
        Client::delete_grant(self, id).await
    }

    async fn set_policy(
        &self,
        project: &str,
        secret: &str,
        policy: &AccessPolicy,
    ) -> Result<SecretMeta> {
        Client::set_policy(self, project, secret, policy).await
    }

    async fn audit(&self, after: u64, limit: u32) -> Result<AuditPage> {
        Client::audit(self, after, limit).await
    }

    async fn verify_audit(&self) -> Result<AuditVerification> {
        Client::verify_audit(self).await
    }
}
