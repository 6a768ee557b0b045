//! The HTTPS server around [`mutate`]: parse the
//! AdmissionReview, answer it, nothing else.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tower_http::trace::TraceLayer;

use super::{
    lookup::GrantLookup,
    mutate::{InjectConfig, mutate},
};

/// Largest AdmissionReview accepted. A pod is far smaller; the apiserver's
/// own limit on objects is 1.5 MiB.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long in-flight reviews get to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The server failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The certificate or key is unusable.
    #[error("loading the serving certificate")]
    Tls(#[from] rustls::Error),
    /// The PEM could not be parsed.
    #[error("parsing the serving certificate or key PEM")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// Binding or serving failed.
    #[error("serving HTTPS")]
    Io(#[from] std::io::Error),
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Injection settings.
    pub config: Arc<InjectConfig>,
    /// Tokens and grants.
    pub lookup: Arc<dyn GrantLookup>,
}

/// The webhook's routes: `POST /mutate`, `GET /healthz`, `GET /readyz`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn ready_handler(State(state): State<AppState>) -> StatusCode {
    if state.lookup.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn mutate_handler(State(state): State<AppState>, body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => return invalid(format!("malformed AdmissionReview: {error}")),
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => return invalid("AdmissionReview has no request".to_owned()),
    };
    Json(admit(&request, &state.config, state.lookup.as_ref()).into_review()).into_response()
}

/// A body we cannot answer (there is no request uid to answer to): 400, with
/// an AdmissionReview explaining why for whoever is debugging.
fn invalid(reason: String) -> Response {
    tracing::warn!(%reason, "rejected an admission request");
    (
        StatusCode::BAD_REQUEST,
        Json(AdmissionResponse::invalid(reason).into_review()),
    )
        .into_response()
}

/// Answers one admission request: the pod unchanged, patched, or denied.
pub fn admit(
    request: &AdmissionRequest<DynamicObject>,
    config: &InjectConfig,
    lookup: &dyn GrantLookup,
) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    // The webhook configuration only sends pod CREATEs; anything else is a
    // misconfiguration that must not block the cluster.
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    if request.operation != Operation::Create || !is_pod || request.sub_resource.is_some() {
        return response;
    }
    let Some(object) = &request.object else {
        return response.deny("the admission request carries no pod");
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(pod) => pod,
        Err(error) => return response.deny(format!("the pod could not be read: {error}")),
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    let pod_name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    match mutate(&pod, namespace, config, lookup) {
        Ok(None) => response,
        Ok(Some(patch)) => {
            tracing::info!(namespace, pod = pod_name, uid = %request.uid, "injecting signet-init");
            match response.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(error) => response.deny(format!("could not encode the patch: {error}")),
            }
        }
        Err(denial) => {
            tracing::info!(namespace, pod = pod_name, uid = %request.uid, %denial, "denying pod");
            response.deny(denial)
        }
    }
}

/// TLS settings for the server from a PEM certificate chain and key, using
/// the ring provider.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, Error> {
    let certs = CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Serves [`app`] over HTTPS on `listen` until `shutdown` completes, then
/// gives in-flight requests a short grace period.
pub async fn serve(
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    tracing::info!(%listen, "webhook listening");
    axum_server::bind_rustls(listen, RustlsConfig::from_config(Arc::new(tls)))
        .handle(handle)
        .serve(app(state).into_make_service())
        .await?;
    Ok(())
}
