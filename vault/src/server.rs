//! The process around the router: listening (plain or TLS) within the
//! limits of [`crate::settings::Limits`] (connections of a source over its
//! budget, [`crate::connections`]; header, body and idle timeouts;
//! requests in flight, in the router), the background [`Worker`], audit
//! checkpoints, graceful shutdown on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::accept::DefaultAcceptor;
use axum_server::tls_rustls::RustlsAcceptor;
use tokio::net::TcpListener;

use crate::connections::Admit;
use crate::idle::Idle;

use crate::service::audit::Trigger;
use crate::vault::Vault;
use crate::worker::Worker;

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
    let worker = Worker::start(Arc::clone(&vault));
    let checkpoints = vault
        .settings()
        .audit_checkpoint_every
        .map(|every| tokio::spawn(checkpoint_every(Arc::clone(&vault), every)));
    let limits = vault.settings().limits.clone();
    let app =
        crate::http::router(Arc::clone(&vault)).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    let waiters = Arc::clone(vault.changes());
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(DRAIN));
        // After the listener stopped taking requests: the ones waiting for
        // changes answer now instead of holding the drain up to a minute.
        waiters.close();
    });
    let std_listener = listener.into_std().map_err(Error::Serve)?;
    let mut server = axum_server::from_tcp(std_listener)
        .map_err(Error::Serve)?
        .handle(handle)
        // Also bounds protocol detection and an HTTP/2 preface.
        .first_request_timeout(limits.header_read_timeout);
    // hyper starts this clock whenever it waits for a request head, so it
    // bounds a slow header and an HTTP/1 connection idle between requests.
    server
        .http_builder()
        .http1()
        .header_read_timeout(limits.header_read_timeout);
    let idle = limits.idle_timeout;
    // Admitted first: a refused connection is closed before any read or TLS.
    let admit = Admit::new(Idle::new(DefaultAcceptor, idle), Arc::clone(&vault));
    let result = match tls {
        None => server.acceptor(admit).serve(app).await,
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(Error::Tls)?;
            // The idle clock runs under TLS: a silent handshake is idle too.
            let acceptor = RustlsAcceptor::new(config).acceptor(admit);
            server.acceptor(acceptor).serve(app).await
        }
    }
    .map_err(Error::Serve);
    worker.stop().await;
    if let Some(checkpoints) = checkpoints {
        checkpoints.abort();
    }
    // The last word on the log before the vault goes: its final head.
    publish_checkpoint(vault, Trigger::Shutdown).await;
    tracing::info!("vault stopped");
    result
}

/// Publishes a checkpoint every `every` while the audit chain's head moves.
async fn checkpoint_every(vault: Arc<Vault>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // The first tick is immediate: a checkpoint of the head at start.
    loop {
        ticks.tick().await;
        publish_checkpoint(Arc::clone(&vault), Trigger::Periodic).await;
    }
}

async fn publish_checkpoint(vault: Arc<Vault>, trigger: Trigger) {
    match tokio::task::spawn_blocking(move || vault.publish_checkpoint(trigger)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(error = ?error, "cannot publish an audit checkpoint"),
        Err(error) => tracing::warn!(error = ?error, "audit checkpoint panicked"),
    }
}
