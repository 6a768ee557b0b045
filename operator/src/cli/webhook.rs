//! `signet-operator webhook`: choose the serving certificate, then serve
//! [`crate::webhook::server`] with the grants the cluster holds.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use clap::Args;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use signet_init::contract::{DEFAULT_AUDIENCE, DEFAULT_CLUSTER};

use super::{Error, parse_cluster_name};
use crate::webhook::{
    certs,
    lookup::KubeGrants,
    mutate::InjectConfig,
    server::{self, AppState},
    vault_ca,
};

/// How long a self-signed serving certificate is valid. The operator issues a
/// new one at every start, so this only has to outlive one pod.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Arguments of `signet-operator webhook`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("tls").required(true).args(["tls_cert", "self_signed_service"])
))]
pub struct WebhookArgs {
    /// Address to serve HTTPS on.
    #[arg(long, env = "SIGNET_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// PEM certificate chain to serve (for example issued by cert-manager).
    #[arg(long, env = "SIGNET_WEBHOOK_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SIGNET_WEBHOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Issue a self-signed certificate for this Service at startup and
    /// install its CA in the webhook configuration.
    #[arg(
        long,
        env = "SIGNET_WEBHOOK_SERVICE",
        conflicts_with = "tls_cert",
        requires_all = ["namespace", "webhook_config_name"]
    )]
    pub self_signed_service: Option<String>,

    /// Extra name for the self-signed certificate (repeat, or comma-separate
    /// in the environment variable): the host of a `clientConfig.url` when
    /// the API server calls the webhook by URL. IP addresses become IP SANs.
    #[arg(
        long = "self-signed-extra-name",
        env = "SIGNET_WEBHOOK_EXTRA_NAMES",
        value_delimiter = ',',
        requires = "self_signed_service"
    )]
    pub self_signed_extra_names: Vec<String>,

    /// Namespace of that Service.
    #[arg(long, env = "SIGNET_NAMESPACE")]
    pub namespace: Option<String>,

    /// MutatingWebhookConfiguration whose caBundle receives the CA.
    #[arg(long, env = "SIGNET_WEBHOOK_CONFIG_NAME")]
    pub webhook_config_name: Option<String>,

    /// Vault URL that injected signet-init containers connect to.
    #[arg(long, env = "SIGNET_VAULT_URL")]
    pub vault_url: String,

    /// Image of signet-init.
    #[arg(long, env = "SIGNET_INIT_IMAGE")]
    pub init_image: String,

    /// Pull policy of the signet-init image (cluster default when unset).
    #[arg(long, env = "SIGNET_INIT_IMAGE_PULL_POLICY", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub init_image_pull_policy: Option<String>,

    /// Size limit of the in-memory secrets volume.
    #[arg(
        long,
        alias = "sizelimit",
        env = "SIGNET_SECRETS_SIZE_LIMIT",
        default_value = "1Mi"
    )]
    pub size_limit: String,

    /// PEM CA certificate(s) that injected signet-init containers trust for
    /// the vault's HTTPS (a private CA), passed to them as SIGNET_CA_PEM.
    /// Read once at start; at most 64 KiB, certificates only.
    #[arg(long, env = "SIGNET_VAULT_CA_FILE")]
    pub vault_ca_file: Option<PathBuf>,

    /// This cluster's name as registered in the vault, passed to pods that
    /// enroll by attestation (SIGNET_CLUSTER).
    #[arg(long, env = "SIGNET_CLUSTER_NAME", default_value = DEFAULT_CLUSTER, value_parser = parse_cluster_name)]
    pub cluster_name: String,

    /// Audience of the projected service-account token mounted into
    /// signet-init; must equal the audience of the cluster registered in the
    /// vault.
    #[arg(long, env = "SIGNET_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub token_audience: String,
}

/// Where the serving certificate comes from: the two shapes the `tls`
/// argument group allows, as a type so the rest cannot mix them.
enum CertSource {
    /// Files mounted into the pod (cert-manager, or the operator's own).
    Files { cert: PathBuf, key: PathBuf },
    /// Issued at start for a Service, its CA installed in the webhook
    /// configuration.
    SelfSigned {
        service: String,
        namespace: String,
        config_name: String,
        extra_names: Vec<String>,
    },
}

impl CertSource {
    fn from_args(
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        self_signed_service: Option<String>,
        namespace: Option<String>,
        webhook_config_name: Option<String>,
        self_signed_extra_names: Vec<String>,
    ) -> Result<Self, Error> {
        match (
            tls_cert,
            tls_key,
            self_signed_service,
            namespace,
            webhook_config_name,
        ) {
            (Some(cert), Some(key), None, _, _) => Ok(Self::Files { cert, key }),
            (None, None, Some(service), Some(namespace), Some(config_name)) => {
                Ok(Self::SelfSigned {
                    service,
                    namespace,
                    config_name,
                    extra_names: self_signed_extra_names,
                })
            }
            _ => Err(Error::TlsFlags),
        }
    }

    /// The server's TLS settings. A self-signed certificate is issued now
    /// and its CA patched into the webhook configuration, so the API server
    /// trusts this very process.
    async fn tls_config(self, client: kube::Client) -> Result<rustls::ServerConfig, Error> {
        match self {
            Self::Files { cert, key } => {
                let cert_pem = read(&cert).await?;
                let key_pem = read(&key).await?;
                Ok(server::tls_config(&cert_pem, &key_pem)?)
            }
            Self::SelfSigned {
                service,
                namespace,
                config_name,
                extra_names,
            } => {
                let issued = certs::generate(
                    &service,
                    &namespace,
                    &extra_names,
                    SystemTime::now(),
                    SELF_SIGNED_VALIDITY,
                )?;
                certs::patch_ca_bundle(client, &config_name, &issued.ca_pem).await?;
                tracing::info!(%service, %namespace, webhook = %config_name, "installed self-signed webhook CA");
                Ok(server::tls_config(
                    issued.cert_pem.as_bytes(),
                    issued.key_pem().as_bytes(),
                )?)
            }
        }
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, Error> {
    tokio::fs::read(path).await.map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Serves the webhook until `shutdown` completes.
pub(super) async fn run(
    args: WebhookArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
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
        return Err(Error::EmptyAudience);
    }
    let cert_source = CertSource::from_args(
        tls_cert,
        tls_key,
        self_signed_service,
        namespace,
        webhook_config_name,
        self_signed_extra_names,
    )?;

    // Before connecting to anything, so a bad CA file fails the start at once.
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

    let client = kube::Client::try_default().await.map_err(Error::Kube)?;
    let (lookup, watches) = KubeGrants::watch(client.clone());
    tokio::spawn(watches);
    let tls = cert_source.tls_config(client).await?;

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
    server::serve(listen, tls, state, shutdown).await?;
    tracing::info!("webhook stopped");
    Ok(())
}
