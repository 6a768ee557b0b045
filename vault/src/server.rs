//! The process around the router: listening (plain or TLS), background
//! sweeping, graceful shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load TLS certificate or key")]
    Tls(#[source] std::io::Error),
    #[error("server failed")]
    Serve(#[source] std::io::Error),
}

/// PEM files for HTTPS.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN: Duration = Duration::from_secs(10);
/// How often expired nonces, long-expired machines and old audit entries
/// are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often the webhook outbox is drained.
const DELIVER_EVERY: Duration = Duration::from_secs(5);

/// Binds `addr` (so a caller learns the real port before serving).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Serves until SIGTERM or Ctrl-C, then drains.
pub async fn serve(
    vault: Arc<Vault>,
    listener: TcpListener,
    tls: Option<Tls>,
) -> Result<(), Error> {
    serve_until(vault, listener, tls, signet_client::shutdown::signal()).await
}

/// Serves until `shutdown` resolves, then drains. Callers that announce
/// readiness before serving create the signal
/// ([`signet_client::shutdown::signal`])
/// first, so a SIGTERM right after the announcement is handled.
pub async fn serve_until(
    vault: Arc<Vault>,
    listener: TcpListener,
    tls: Option<Tls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let sweeper = tokio::spawn(sweep(Arc::clone(&vault)));
    let app = crate::http::router(vault).into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve),
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(Error::Tls)?;
            let handle = axum_server::Handle::new();
            let draining = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                draining.graceful_shutdown(Some(DRAIN));
            });
            let std_listener = listener.into_std().map_err(Error::Serve)?;
            axum_server::from_tcp_rustls(std_listener, config)
                .map_err(Error::Serve)?
                .handle(handle)
                .serve(app)
                .await
                .map_err(Error::Serve)
        }
    };
    sweeper.abort();
    tracing::info!("vault stopped");
    result
}

async fn sweep(vault: Arc<Vault>) {
    let mut every = tokio::time::interval(DELIVER_EVERY);
    let mut last_sweep = std::time::Instant::now();
    loop {
        every.tick().await;
        match vault.deliver_webhooks().await {
            Ok(report) if report != Default::default() => {
                tracing::debug!(
                    delivered = report.delivered,
                    retrying = report.retrying,
                    failed = report.failed,
                    "webhook deliveries"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = ?error, "webhook delivery pass failed"),
        }
        if last_sweep.elapsed() < SWEEP_EVERY {
            continue;
        }
        last_sweep = std::time::Instant::now();
        let sweeper = Arc::clone(&vault);
        let swept = tokio::task::spawn_blocking(move || sweeper.sweep(sweeper.now())).await;
        match swept {
            Ok(Ok(report)) => {
                if report.nonces > 0
                    || !report.machines_deleted.is_empty()
                    || report.audit_pruned_to.is_some()
                {
                    tracing::info!(
                        nonces = report.nonces,
                        machines_deleted = report.machines_deleted.len(),
                        audit_pruned_to = ?report.audit_pruned_to,
                        "swept"
                    );
                }
            }
            Ok(Err(error)) => tracing::warn!(error = ?error, "sweep failed"),
            Err(error) => tracing::warn!(error = ?error, "sweep panicked"),
        }
    }
}
