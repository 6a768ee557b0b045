//! The operator process. Only wiring lives here; the logic is in the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use signet_init::contract::{DEFAULT_AUDIENCE, DEFAULT_CLUSTER};
use signet_operator::controller;
use signet_operator::webhook::{
    certs,
    lookup::KubeGrants,
    mutate::InjectConfig,
    server::{self, AppState},
    vault_ca,
};
use tracing_subscriber::EnvFilter;

/// How long a self-signed serving certificate is valid. The operator issues a
/// new one at every start.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Parser)]
#[command(version, about = "Signet Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating admission webhook that injects signet-init.
    Webhook(WebhookArgs),
    /// Run the controller: EnrollmentToken and SecretGrant reconcilers and
    /// the revocation of machines whose pod is gone.
    Controller(ControllerArgs),
}

#[derive(Args)]
struct ControllerArgs {
    /// Base URL of the vault.
    #[arg(long, env = "SIGNET_VAULT")]
    vault: String,

    /// Agent identity file (`signet keygen`, registered with
    /// `signet agent create --scope metadata --scope tokens --scope grants --scope machines`).
    #[arg(long, env = "SIGNET_IDENTITY")]
    identity: PathBuf,

    /// Agent id printed by `signet agent create`, when --identity is the bare
    /// key pair from `signet keygen`.
    #[arg(long, env = "SIGNET_AGENT_ID")]
    agent_id: Option<String>,

    /// Extra PEM CA certificate to trust for the vault's TLS.
    #[arg(long, env = "SIGNET_CA_CERT")]
    ca_cert: Option<PathBuf>,

    /// Re-check period of healthy resources (token uses, vault drift).
    #[arg(long, env = "SIGNET_RESYNC", default_value = "5m", value_parser = parse_duration)]
    resync: Duration,

    /// Retry period while a secret or token a SecretGrant needs is missing.
    #[arg(long, env = "SIGNET_WAITING_RETRY", default_value = "1m", value_parser = parse_duration)]
    waiting_retry: Duration,

    /// Period of the sweep revoking machines whose pod no longer exists.
    #[arg(long, env = "SIGNET_SWEEP_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    sweep_interval: Duration,

    /// This cluster's name as registered in the vault (`signet cluster add`).
    /// Every policy is bound to it, and only machines the vault attested in
    /// it are revoked when their pod is gone.
    #[arg(long, env = "SIGNET_CLUSTER_NAME", default_value = DEFAULT_CLUSTER, value_parser = parse_cluster_name)]
    cluster_name: String,

    /// How long a raw token (`rawToken: true`) stays valid after it is
    /// renewed, while pods pick up the updated Secret.
    #[arg(long, env = "SIGNET_RENEWAL_GRACE", default_value = "10m", value_parser = parse_duration)]
    renewal_grace: Duration,
}

/// A cluster name as the vault registers it: 1 to 63 characters of a-z,
/// 0-9, '.', '_', '-'.
fn parse_cluster_name(input: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(input.to_owned())
    } else {
        Err("1 to 63 characters of a-z, 0-9, '.', '_', '-' (the name given to `signet cluster add`)".to_owned())
    }
}

fn parse_duration(input: &str) -> Result<Duration, String> {
    signet_operator::duration::parse(input).map_err(|e| e.to_string())
}

#[derive(Args)]
#[command(group(
    clap::ArgGroup::new("tls").required(true).args(["tls_cert", "self_signed_service"])
))]
struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "SIGNET_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// PEM certificate chain to serve (for example issued by cert-manager).
    #[arg(long, env = "SIGNET_WEBHOOK_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SIGNET_WEBHOOK_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Issue a self-signed certificate for this Service at startup and
    /// install its CA in the webhook configuration.
    #[arg(
        long,
        env = "SIGNET_WEBHOOK_SERVICE",
        conflicts_with = "tls_cert",
        requires_all = ["namespace", "webhook_config_name"]
    )]
    self_signed_service: Option<String>,

    /// Extra name for the self-signed certificate (repeat, or comma-separate
    /// in the environment variable): the host of a `clientConfig.url` when
    /// the API server calls the webhook by URL. IP addresses become IP SANs.
    #[arg(
        long = "self-signed-extra-name",
        env = "SIGNET_WEBHOOK_EXTRA_NAMES",
        value_delimiter = ',',
        requires = "self_signed_service"
    )]
    self_signed_extra_names: Vec<String>,

    /// Namespace of that Service.
    #[arg(long, env = "SIGNET_NAMESPACE")]
    namespace: Option<String>,

    /// MutatingWebhookConfiguration whose caBundle receives the CA.
    #[arg(long, env = "SIGNET_WEBHOOK_CONFIG_NAME")]
    webhook_config_name: Option<String>,

    /// Vault URL that injected signet-init containers connect to.
    #[arg(long, env = "SIGNET_VAULT_URL")]
    vault_url: String,

    /// Image of signet-init.
    #[arg(long, env = "SIGNET_INIT_IMAGE")]
    init_image: String,

    /// Pull policy of the signet-init image (cluster default when unset).
    #[arg(long, env = "SIGNET_INIT_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    init_image_pull_policy: Option<String>,

    /// Size limit of the in-memory secrets volume.
    #[arg(
        long,
        alias = "sizelimit",
        env = "SIGNET_SECRETS_SIZE_LIMIT",
        default_value = "1Mi"
    )]
    size_limit: String,

    /// PEM CA certificate(s) that injected signet-init containers trust for
    /// the vault's HTTPS (a private CA), passed to them as SIGNET_CA_PEM.
    /// Read once at start; at most 64 KiB, certificates only.
    #[arg(long, env = "SIGNET_VAULT_CA_FILE")]
    vault_ca_file: Option<PathBuf>,

    /// This cluster's name as registered in the vault, passed to pods that
    /// enroll by attestation (SIGNET_CLUSTER).
    #[arg(long, env = "SIGNET_CLUSTER_NAME", default_value = DEFAULT_CLUSTER, value_parser = parse_cluster_name)]
    cluster_name: String,

    /// Audience of the projected service-account token mounted into
    /// signet-init; must equal the audience of the cluster registered in the
    /// vault.
    #[arg(long, env = "SIGNET_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    token_audience: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let Cli { command } = Cli::parse();
    match command {
        Command::Webhook(args) => webhook(args).await,
        Command::Controller(args) => controller(args).await,
    }
}

async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    // Destructured in full so that a new flag cannot be silently ignored.
    let ControllerArgs {
        vault,
        identity,
        agent_id,
        ca_cert,
        resync,
        waiting_retry,
        sweep_interval,
        cluster_name,
        renewal_grace,
    } = args;
    let vault = controller::connect(&vault, &identity, agent_id.as_deref(), ca_cert.as_deref())
        .context("connecting to the vault")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    tracing::info!(cluster = %cluster_name, "controller for this cluster");
    let settings = controller::Settings {
        cluster: cluster_name,
        renewal_grace,
        resync,
        waiting_retry,
        sweep_interval,
        ..controller::Settings::default()
    };
    let ctx = Arc::new(controller::Context::new(client, vault, settings));
    controller::run(ctx, shutdown_signal()).await;
    Ok(())
}

async fn webhook(args: WebhookArgs) -> anyhow::Result<()> {
    // Destructured in full so that a new flag cannot be silently ignored.
    let WebhookArgs {
        listen,
        tls_cert,
        tls_key,
        self_signed_service,
        self_signed_extra_names,
        namespace,
        webhook_config_name,
        vault_url,
        init_image,
        init_image_pull_policy,
        size_limit,
        vault_ca_file,
        cluster_name,
        token_audience,
    } = args;
    if token_audience.trim().is_empty() {
        anyhow::bail!("--token-audience must not be empty");
    }

    // Before anything else, so a bad CA file fails the start at once.
    let vault_ca_pem = vault_ca_file
        .as_deref()
        .map(|path| {
            let pem = vault_ca::load(path)?;
            tracing::info!(
                path = %path.display(),
                certificates = pem.matches("-----BEGIN CERTIFICATE-----").count(),
                "injected containers will trust this vault CA"
            );
            Ok::<_, vault_ca::Error>(pem)
        })
        .transpose()?;

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let (lookup, watches) = KubeGrants::watch(client.clone());
    tokio::spawn(watches);

    let tls = match (
        tls_cert,
        tls_key,
        self_signed_service,
        namespace,
        webhook_config_name,
    ) {
        (Some(cert), Some(key), None, _, _) => {
            let cert_pem = tokio::fs::read(&cert)
                .await
                .with_context(|| format!("reading {}", cert.display()))?;
            let key_pem = tokio::fs::read(&key)
                .await
                .with_context(|| format!("reading {}", key.display()))?;
            server::tls_config(&cert_pem, &key_pem)?
        }
        (None, None, Some(service), Some(namespace), Some(config_name)) => {
            let issued = certs::generate(
                &service,
                &namespace,
                &self_signed_extra_names,
                std::time::SystemTime::now(),
                SELF_SIGNED_VALIDITY,
            )?;
            certs::patch_ca_bundle(client, &config_name, &issued.ca_pem).await?;
            tracing::info!(%service, %namespace, webhook = %config_name, "installed self-signed webhook CA");
            server::tls_config(issued.cert_pem.as_bytes(), issued.key_pem().as_bytes())?
        }
        // clap's groups make every other combination unreachable.
        _ => anyhow::bail!(
            "pass either --tls-cert/--tls-key or --self-signed-service/--namespace/--webhook-config-name"
        ),
    };

    let state = AppState {
        config: Arc::new(InjectConfig {
            vault_url,
            image: init_image,
            image_pull_policy: init_image_pull_policy,
            size_limit: Quantity(size_limit),
            vault_ca_pem,
            cluster: cluster_name,
            audience: token_audience,
        }),
        lookup: Arc::new(lookup),
    };
    server::serve(listen, tls, state, shutdown_signal()).await?;
    tracing::info!("webhook stopped");
    Ok(())
}

/// Completes on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
