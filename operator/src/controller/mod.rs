//! The controller: reconcilers for EnrollmentToken and SecretGrant, and the
//! garbage collection of machines whose pod is gone, and the rolling
//! restarts of workloads that ask for them ([`restart`]).
//!
//! It talks to the vault as an agent identity (scopes `metadata`, `tokens`,
//! `grants`, `machines`) through [`vault::VaultApi`], so the reconcile logic
//! runs against a fake in unit tests and against the signed SDK client in
//! production.
//!
//! Nothing a tenant can write decides which vault object is touched: the
//! vault tokens of an EnrollmentToken are found by a name carrying the
//! object's UID ([`enrollment_token::vault_token_name`]), never by
//! `status.tokenId`, and machines are revoked by the pod identity the vault
//! attested, never by the metadata a machine reported about itself. The
//! vault itself refuses anything outside what its admin delegated to this
//! agent for a namespace; such refusals become `NotDelegated` conditions.
//!
//! Who owns the token's pre-baked grants: the desired grants of an
//! EnrollmentToken are always the union of every live SecretGrant naming
//! it ([`grants::resolve`]). The EnrollmentToken reconciler seeds a newly
//! issued vault policy with that union, so it is never live without its
//! grants (a renewal copies them); the SecretGrant reconciler converges the
//! grants of the EnrollmentToken's live vault tokens to the same union
//! afterwards ([`grants::converge`]), which covers added, changed and
//! deleted SecretGrants.

pub mod context;
pub mod enrollment_token;
pub mod grants;
pub mod pods;
pub mod restart;
pub mod secret_grant;
pub mod vault;

#[cfg(test)]
mod tests;

use std::{future::Future, path::Path, pin::Pin, sync::Arc};

use futures::{FutureExt as _, StreamExt as _};
use kube::{
    Api, Resource, ResourceExt as _,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};
use signet_client::{
    identity::{Identity, Kind},
    sdk,
};

pub use context::{Context, Settings};

use crate::crd::{EnrollmentToken, SecretGrant};

/// A reconcile (or the controller's set-up) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes api call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A vault call failed.
    #[error("vault call failed: {0}")]
    Vault(#[from] vault::Error),
    /// Adding or removing a finalizer, or the apply/cleanup inside it, failed.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    /// The controller may not manage Secrets in this namespace, which an
    /// EnrollmentToken with `rawToken: true` needs (the chart grants it only
    /// with `operator.rawTokens.enabled`).
    #[error(
        "the operator may not manage Secrets in namespace {0}, which rawToken: true needs; enable operator.rawTokens (for this namespace) in the Helm chart, or use attestation (rawToken: false)"
    )]
    SecretsForbidden(String),
    /// A namespaced resource came without a namespace.
    #[error("the object has no namespace")]
    MissingNamespace,
    /// Something the code relies on was absent (a bug, not bad input).
    #[error("internal inconsistency: missing {0}")]
    Inconsistent(&'static str),
    /// The identity file could not be read.
    #[error("cannot load the vault identity: {0}")]
    Identity(#[from] signet_client::identity::Error),
    /// The identity is not a registered agent (or its id is missing or
    /// contradicts `--agent-id`).
    #[error(
        "the vault identity must be an agent registered with `signet agent create` (pass its id with --agent-id for a `signet keygen` file); got a {0} identity"
    )]
    NotAnAgent(String),
    /// The CA certificate file could not be read.
    #[error("cannot read the CA certificate {path}: {source}")]
    CaCert {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds the signed vault client from an agent identity file.
///
/// The file is either a registered agent identity (kind `agent` with its
/// id) or the key pair `signet keygen` wrote, with the id that
/// `signet agent create` printed passed as `agent_id`.
pub fn connect(
    vault_url: &str,
    identity: &Path,
    agent_id: Option<&str>,
    ca_cert: Option<&Path>,
) -> Result<sdk::Client> {
    let mut identity = Identity::load(identity)?;
    match (identity.kind, identity.id.as_deref(), agent_id) {
        (Kind::Agent, Some(_), None) => {}
        (Kind::Agent, Some(id), Some(given)) if id == given => {}
        (Kind::Unregistered | Kind::Agent, None, Some(given)) => {
            identity.kind = Kind::Agent;
            identity.id = Some(given.to_owned());
        }
        (kind, _, _) => {
            return Err(Error::NotAnAgent(format!("{kind:?}").to_lowercase()));
        }
    }
    let ca_pem = ca_cert
        .map(|path| {
            std::fs::read(path).map_err(|source| Error::CaCert {
                path: path.display().to_string(),
                source,
            })
        })
        .transpose()?;
    let options = sdk::Options {
        ca_pem,
        ..sdk::Options::default()
    };
    Ok(sdk::Client::new(vault_url, identity, &options)?)
}

/// Logs the failure and retries with exponential backoff per object.
pub fn error_policy<K, V>(object: Arc<K>, error: &Error, ctx: Arc<Context<V>>) -> Action
where
    K: Resource<DynamicType = ()>,
    V: vault::VaultApi,
{
    let key = format!(
        "{}/{}/{}",
        K::kind(&()),
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    );
    let delay = ctx.failed(&key);
    tracing::warn!(object = %key, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs both reconcilers, the pod watch and the machine sweep until
/// `shutdown` completes (the reconcilers finish their current work first).
pub async fn run<V: vault::VaultApi>(
    ctx: Arc<Context<V>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(shutdown);
    let shutdown = shutdown.shared();
    let client = ctx.client.clone();
    let config = watcher::Config::default();

    let tokens = Controller::new(Api::<EnrollmentToken>::all(client.clone()), config.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(enrollment_token::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Ok((object, _)) = result {
                tracing::debug!(object = %object, "reconciled EnrollmentToken");
            }
        });

    let grants = Controller::new(Api::<SecretGrant>::all(client.clone()), config.clone());
    let store = grants.store();
    let grants = grants
        .watches(
            Api::<EnrollmentToken>::all(client.clone()),
            config,
            move |token| {
                let namespace = token.namespace();
                let name = token.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|grant| {
                        grant.namespace() == namespace && grant.spec.enrollment_token == name
                    })
                    .map(|grant| ObjectRef::from_obj(&*grant))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(secret_grant::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Ok((object, _)) = result {
                tracing::debug!(object = %object, "reconciled SecretGrant");
            }
        });

    let background = futures::future::join3(
        pods::watch_deletions(ctx.clone()),
        pods::sweep_forever(ctx.clone()),
        restart::restart_forever(ctx.clone()),
    );
    tracing::info!("controller started");
    tokio::select! {
        _ = futures::future::join(tokens, grants) => {}
        _ = background => {}
    }
    tracing::info!("controller stopped");
}
