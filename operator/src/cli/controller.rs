//! `signet-operator controller`: connect to the vault as an agent and to the
//! Kubernetes API, then run [`crate::controller::run`].

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use clap::Args;
use signet_init::contract::DEFAULT_CLUSTER;

use super::{Error, parse_cluster_name, parse_duration};
use crate::controller::{self, Context, Settings};

/// Arguments of `signet-operator controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Base URL of the vault.
    #[arg(long, env = "SIGNET_VAULT")]
    pub vault: String,

    /// Agent identity file (`signet keygen`, registered with
    /// `signet agent create --scope metadata --scope tokens --scope grants --scope machines`).
    #[arg(long, env = "SIGNET_IDENTITY")]
    pub identity: PathBuf,

    /// Agent id printed by `signet agent create`, when --identity is the bare
    /// key pair from `signet keygen`.
    #[arg(long, env = "SIGNET_AGENT_ID")]
    pub agent_id: Option<String>,

    /// Extra PEM CA certificate to trust for the vault's TLS.
    #[arg(long, env = "SIGNET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// Re-check period of healthy resources (token uses, vault drift).
    #[arg(long, env = "SIGNET_RESYNC", default_value = "5m", value_parser = parse_duration)]
    pub resync: Duration,

    /// Retry period while a secret or token a SecretGrant needs is missing.
    #[arg(long, env = "SIGNET_WAITING_RETRY", default_value = "1m", value_parser = parse_duration)]
    pub waiting_retry: Duration,

    /// Period of the sweep revoking machines whose pod no longer exists.
    #[arg(long, env = "SIGNET_SWEEP_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// Period of the check that rolls out Deployments and StatefulSets whose
    /// pods ask for `signet.dev/reload: restart` after a secret changed.
    #[arg(long, env = "SIGNET_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// This cluster's name as registered in the vault (`signet cluster add`).
    /// Every policy is bound to it, and only machines the vault attested in
    /// it are revoked when their pod is gone.
    #[arg(long, env = "SIGNET_CLUSTER_NAME", default_value = DEFAULT_CLUSTER, value_parser = parse_cluster_name)]
    pub cluster_name: String,

    /// How long a raw token (`rawToken: true`) stays valid after it is
    /// renewed, while pods pick up the updated Secret.
    #[arg(long, env = "SIGNET_RENEWAL_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub renewal_grace: Duration,
}

/// Runs the controller until `shutdown` completes.
pub(super) async fn run(
    args: ControllerArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let ControllerArgs {
        vault,
        identity,
        agent_id,
        ca_cert,
        resync,
        waiting_retry,
        sweep_interval,
        reload_interval,
        cluster_name,
        renewal_grace,
    } = args;
    let vault = controller::connect(&vault, &identity, agent_id.as_deref(), ca_cert.as_deref())
        .map_err(Error::Vault)?;
    let client = kube::Client::try_default().await.map_err(Error::Kube)?;
    tracing::info!(cluster = %cluster_name, "controller for this cluster");
    let settings = Settings {
        cluster: cluster_name,
        renewal_grace,
        resync,
        waiting_retry,
        sweep_interval,
        reload_interval,
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(client, vault, settings));
    controller::run(ctx, shutdown).await;
    Ok(())
}
