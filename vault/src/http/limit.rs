//! Two limits checked before a request is read further than its head:
//!
//! - [`budget`]: a source over its budget of unverified denials (see
//!   [`crate::budget`]) is answered `429 rate_limited` with `Retry-After`
//!   at once, before its body is read or anything is parsed, unless its
//!   headers name a key the vault has verified before (such a request goes
//!   on, and its signature is checked as always). `/healthz`, `/readyz`
//!   and `/metrics` are exempt, so probes and monitoring from a busy
//!   address keep working.
//! - [`limit`]: the global limit of requests in flight: one request over it
//!   is answered `503 overloaded` with `Retry-After` at once, instead of
//!   queueing behind the others (and holding a socket, memory and a task
//!   while it waits). `/healthz` is exempt, so an overloaded vault is not
//!   mistaken for a dead one and restarted.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::http::header::RETRY_AFTER;
use axum::middleware::Next;
use axum::response::Response;
use signet_client::api::ErrorCode;
use tokio::sync::Semaphore;

use crate::vault::{Vault, rate_limited};

/// Routes answered whatever the source's budget.
const UNBUDGETED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The budget middleware (state: the vault).
pub async fn budget(State(vault): State<Arc<Vault>>, request: Request, next: Next) -> Response {
    let over = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| vault.budget().over_address(addr.ip(), vault.now()));
    if !over || UNBUDGETED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let unread = super::extract::unread(&parts);
    if vault.known_signer(&unread) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    // Counted like any unverified denial; the body is never read.
    let error = rate_limited();
    vault.deny_early(&unread, "request.budget", &error);
    axum::response::IntoResponse::into_response(error)
}

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
