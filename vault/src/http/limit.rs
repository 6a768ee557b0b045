//! Two limits checked before a request is read further than its head:
//!
//! - [`budget`]: a source over its budget of unverified denials (see
//!   [`crate::budget`]) is refused `429 rate_limited` with `Retry-After`,
//!   before its body is read or anything is parsed, unless its headers name
//!   a key the vault has verified before (such a request goes on, and its
//!   signature is checked as always). `/healthz`, `/readyz` and `/metrics`
//!   are exempt, so probes and monitoring from a busy address keep working.
//!   The refusal is *tarpitted*: held for `--unverified-tarpit-seconds`
//!   before it is answered, as is a `rate_limited` refusal from the
//!   pipeline (a forgery on a known key id from such a source). Answering
//!   refusals at once would let a flooding connection have thousands a
//!   second, each costing the vault its parsing and its answer; held, a
//!   connection gets about one per delay (HTTP/1.1 sends the next request
//!   only after the answer; HTTP/2 streams wait in their connection's lane,
//!   see [`crate::connections`]), and what the source can open is capped
//!   there. A held refusal holds a timer and its connection's slot, nothing
//!   else: its request is dropped first and it takes no slot in flight.
//!   Signed requests that verify are never held.
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

use crate::connections::Connection;
use crate::vault::{Vault, rate_limited};

/// Routes answered whatever the source's budget.
const UNBUDGETED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The budget middleware (state: the vault).
pub async fn budget(State(vault): State<Arc<Vault>>, request: Request, next: Next) -> Response {
    let over = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| vault.budget().over_address(addr.ip(), vault.now()));
    if UNBUDGETED.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let connection = request.extensions().get::<Arc<Connection>>().cloned();
    let response = if over {
        let (parts, body) = request.into_parts();
        let unread = super::extract::unread(&parts);
        if vault.known_signer(&unread) {
            next.run(Request::from_parts(parts, body)).await
        } else {
            // Counted like any unverified denial; the body is never read.
            drop((parts, body));
            let error = rate_limited();
            vault.deny_early(&unread, "request.budget", &error);
            axum::response::IntoResponse::into_response(error)
        }
    } else {
        next.run(request).await
    };
    if response.extensions().get::<ErrorCode>() == Some(&ErrorCode::RateLimited) {
        tarpit(&vault, connection).await;
    }
    response
}

/// Holds a refusal for the budget for the tarpit's delay, in its
/// connection's lane. The wait runs on a task of its own that keeps the
/// connection counted until it ends, even if the client hangs up first and
/// the request is dropped.
async fn tarpit(vault: &Arc<Vault>, connection: Option<Arc<Connection>>) {
    let delay = vault.settings().limits.unverified_tarpit;
    if delay.is_zero() {
        return;
    }
    let _lane = match &connection {
        Some(connection) => Some(connection.lane().await),
        None => None,
    };
    let vault = Arc::clone(vault);
    let held = tokio::spawn(async move {
        vault.sleep(delay).await;
        drop(connection);
    });
    let _ = held.await;
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
