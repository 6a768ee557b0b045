//! The global limit of requests in flight: one request over it is answered
//! `503 overloaded` with `Retry-After` at once, instead of queueing behind
//! the others (and holding a socket, memory and a task while it waits).
//! `/healthz` is exempt, so an overloaded vault is not mistaken for a dead
//! one and restarted.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;
use axum::middleware::Next;
use axum::response::Response;
use signet_client::api::ErrorCode;
use tokio::sync::Semaphore;

use crate::vault::Vault;

/// The permits and the vault (for its metrics and `Retry-After`).
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    vault: Arc<Vault>,
}

impl InFlight {
    pub fn new(vault: Arc<Vault>) -> Self {
        let permits = Arc::new(Semaphore::new(vault.settings().limits.max_in_flight.max(1)));
        Self { permits, vault }
    }
}

/// The middleware.
pub async fn limit(State(limit): State<InFlight>, request: Request, next: Next) -> Response {
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match Arc::clone(&limit.permits).try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            limit.vault.metrics().overloaded();
            let seconds = limit.vault.settings().limits.retry_after_seconds;
            let mut response = super::error::body(
                ErrorCode::Overloaded,
                format!("the vault is at its limit of requests in flight; retry in {seconds} s"),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}
