//! What a source over its budget (see [`crate::budget`]) may hold of the
//! server: its connections.
//!
//! Every accepted connection is counted against its source (an IPv4
//! address, an IPv6 /64, as the budget groups them) until it closes. While a
//! source is over budget, a new connection that would take it past
//! `--unverified-connections-max` is closed as soon as it is accepted,
//! before anything is read from it or a TLS handshake starts, with a reset
//! (no `TIME_WAIT` left behind). Each such refusal is counted in the grouped
//! denial rows (action `connection.budget`, code `rate_limited`) and in
//! `signet_connections_refused_total`, never one audit row per connection.
//!
//! A request refused for the budget is held for the tarpit's delay before
//! its answer (see [`crate::http::limit`]); the held refusal keeps its
//! connection counted until the delay is over, even when the client hangs up
//! first, so closing and reopening does not buy a source more connections.
//! Each connection has one lane for such refusals: on HTTP/2, a
//! connection's refused streams wait for each other, as HTTP/1.1 requests
//! on one connection do anyway.
//!
//! [`Admit`] is the acceptor that does this, around the rest of the
//! server's acceptors; [`WithConnection`] hands each request its
//! [`Connection`].

use std::collections::HashMap;
use std::future::Ready;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::future::Either;
use tokio::net::TcpStream;

use crate::budget::Source;
use crate::vault::Vault;

/// Open connections per source.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<Source, usize>>,
}

impl Connections {
    fn open(&self) -> MutexGuard<'_, HashMap<Source, usize>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `ip`, unless its source is `over` its
    /// budget and already holds `max` (0: no cap); `None` when refused.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, over: bool, max: usize) -> Option<Arc<Connection>> {
        let source = Source::from(ip);
        let mut open = self.open();
        let count = open.entry(source).or_default();
        if over && max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Arc::new(Connection {
            source: Some(source),
            registry: Arc::clone(self),
            lane: Arc::new(tokio::sync::Mutex::new(())),
        }))
    }

    /// A connection whose source is unknown: never counted, never refused.
    pub fn uncounted(self: &Arc<Self>) -> Arc<Connection> {
        Arc::new(Connection {
            source: None,
            registry: Arc::clone(self),
            lane: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Connections open now from `ip`'s source (for tests and metrics).
    pub fn from_source(&self, ip: IpAddr) -> usize {
        self.open().get(&Source::from(ip)).copied().unwrap_or(0)
    }

    /// Sources with a connection open now.
    pub fn sources(&self) -> usize {
        self.open().len()
    }
}

/// One accepted connection, counted against its source until the last
/// holder (the connection's service, its requests, a held refusal) drops it.
#[derive(Debug)]
pub struct Connection {
    source: Option<Source>,
    registry: Arc<Connections>,
    lane: Arc<tokio::sync::Mutex<()>>,
}

impl Connection {
    /// Waits for this connection's lane of held refusals.
    pub async fn lane(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.lane).lock_owned().await
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(source) = self.source else { return };
        let mut open = self.registry.open();
        if let Some(count) = open.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&source);
            }
        }
    }
}

/// The acceptor that admits or refuses each connection, around `inner`.
#[derive(Clone)]
pub struct Admit<A> {
    inner: A,
    vault: Arc<Vault>,
}

impl<A> Admit<A> {
    pub fn new(inner: A, vault: Arc<Vault>) -> Self {
        Self { inner, vault }
    }
}

impl<A, S> axum_server::accept::Accept<TcpStream, S> for Admit<A>
where
    A: axum_server::accept::Accept<TcpStream, WithConnection<S>>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = Either<A::Future, Ready<io::Result<(A::Stream, A::Service)>>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let connection = match stream.peer_addr() {
            Ok(peer) => self.vault.admit(peer.ip()),
            Err(_) => Some(self.vault.connections().uncounted()),
        };
        let Some(connection) = connection else {
            // A reset, not a FIN: the vault keeps no TIME_WAIT for it.
            let _ = stream.set_zero_linger();
            drop(stream);
            return Either::Right(std::future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "too many connections from a source over its budget",
            ))));
        };
        Either::Left(self.inner.accept(
            stream,
            WithConnection {
                inner: service,
                connection,
            },
        ))
    }
}

/// A connection's service: puts its [`Connection`] in every request.
#[derive(Clone, Debug)]
pub struct WithConnection<S> {
    inner: S,
    connection: Arc<Connection>,
}

impl<S, B> tower::Service<axum::http::Request<B>> for WithConnection<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(Arc::clone(&self.connection));
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse()
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn a_source_over_budget_gets_no_connection_past_the_cap() {
        let c = Arc::new(Connections::default());
        let held: Vec<_> = (0..3)
            .filter_map(|_| c.admit(ip("192.0.2.1"), false, 2))
            .collect();
        // Within budget, the cap does not apply.
        assert_eq!(held.len(), 3);
        assert!(c.admit(ip("192.0.2.1"), true, 3).is_none());
        // Another source, and the same one once a connection closed.
        assert!(c.admit(ip("192.0.2.2"), true, 3).is_some());
        drop(held);
        assert_eq!(c.from_source(ip("192.0.2.1")), 0);
        let again = c.admit(ip("192.0.2.1"), true, 1);
        assert!(again.is_some());
        assert!(c.admit(ip("192.0.2.1"), true, 1).is_none());
        // No cap at all.
        assert!(c.admit(ip("192.0.2.1"), true, 0).is_some());
        drop(again);
        assert_eq!(c.sources(), 0);
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        let c = Arc::new(Connections::default());
        let first = c.admit(ip("2001:db8:1:2::1"), true, 1);
        assert!(first.is_some());
        assert!(c.admit(ip("2001:db8:1:2::ffff"), true, 1).is_none());
        assert!(c.admit(ip("2001:db8:1:3::1"), true, 1).is_some());
    }
}
