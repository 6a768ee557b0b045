//! Closing idle connections. A connection that has no request in flight
//! and has not read or written a byte for the idle timeout is closed, so a
//! client cannot hold sockets (before TLS, between requests, on an HTTP/2
//! connection with no stream) for ever. A request in flight is never cut by
//! this: its body has its own timeout, and its handler answers when it can.
//!
//! [`Idle`] wraps the server's acceptor: it wraps each accepted stream in an
//! [`IdleStream`], which keeps the clock, and each connection's service in an
//! [`InFlight`], which tells the stream whether a request is in flight.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An acceptor that closes idle connections, around `inner`.
#[derive(Clone, Debug)]
pub struct Idle<A> {
    inner: A,
    timeout: Duration,
}

impl<A> Idle<A> {
    pub fn new(inner: A, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

impl<A, I, S> axum_server::accept::Accept<I, S> for Idle<A>
where
    A: axum_server::accept::Accept<IdleStream<I>, InFlight<S>>,
{
    type Stream = A::Stream;
    type Service = A::Service;
    type Future = A::Future;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let requests = Arc::new(Requests::new());
        self.inner.accept(
            IdleStream::new(stream, Arc::clone(&requests), self.timeout),
            InFlight {
                inner: service,
                requests,
            },
        )
    }
}

/// The requests of one connection: how many are in flight, and when the
/// last one ended (milliseconds after `start`).
#[derive(Debug)]
struct Requests {
    start: Instant,
    in_flight: AtomicUsize,
    last_end: AtomicU64,
}

impl Requests {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
        }
    }

    fn last_end(&self) -> Instant {
        self.start + Duration::from_millis(self.last_end.load(Ordering::SeqCst))
    }
}

/// Counts a request in flight until dropped.
struct Running(Arc<Requests>);

impl Running {
    fn new(requests: Arc<Requests>) -> Self {
        requests.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(requests)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let since = u64::try_from(self.0.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_end.fetch_max(since, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's service, counting its requests in flight.
#[derive(Clone, Debug)]
pub struct InFlight<S> {
    inner: S,
    requests: Arc<Requests>,
}

impl<S, R> tower::Service<R> for InFlight<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let running = Running::new(Arc::clone(&self.requests));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(running);
            response
        })
    }
}

/// A connection's stream: a read waiting while the connection is idle
/// fails with `TimedOut` once the idle timeout passed, which closes it.
pub struct IdleStream<T> {
    inner: T,
    requests: Arc<Requests>,
    timeout: Duration,
    last_io: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl<T> IdleStream<T> {
    fn new(inner: T, requests: Arc<Requests>, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            inner,
            requests,
            timeout,
            last_io: now,
            deadline: Box::pin(tokio::time::sleep_until(now + timeout)),
        }
    }

    /// `Ready(Err)` once the connection has been idle too long; otherwise
    /// `Pending`, with a wake-up at the deadline.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.requests.in_flight.load(Ordering::SeqCst) > 0 {
            // The request's end or its answer will bring a read again.
            return Poll::Pending;
        }
        let deadline = self.last_io.max(self.requests.last_end()) + self.timeout;
        if self.deadline.deadline() != deadline {
            self.deadline.as_mut().reset(deadline);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_io = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleStream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_io = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
