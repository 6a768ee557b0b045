//! The closed loop: each client owns one kept-alive HTTP/1.1 connection,
//! sends a request, reads the whole answer, and sends the next. Requests
//! (reads, or enrollments) that complete inside the measured window count;
//! the warm-up's do not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::cpu;

/// The request every client sends. An empty `Full` is no body at all on
/// the wire (hyper sends no `content-length` for it), as for a read.
pub type Req = Request<Full<Bytes>>;

/// Makes the next request of one client. Called once per request, before
/// its clock starts: keep it cheap.
pub trait MakeRequest: Send + 'static {
    /// The status of a successful answer; any other is an error.
    const SUCCESS: StatusCode = StatusCode::OK;
    fn request(&mut self) -> anyhow::Result<Req>;
}

/// Where the requests go: one socket address, its `Host` header, and the
/// path prefix of the base URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    pub path_prefix: String,
}

impl Endpoint {
    /// Resolves a plain `http://host:port[/prefix]` base URL.
    pub async fn resolve(base: &str) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).with_context(|| format!("invalid URL {base:?}"))?;
        if url.scheme() != "http" {
            bail!(
                "{base}: the load path speaks plain HTTP/1.1 (a loopback benchmark); give an http:// address"
            );
        }
        let host = url.host_str().with_context(|| format!("{base}: no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("cannot resolve {host}"))?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&authority)?,
            path_prefix: url.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub warmup: Duration,
    pub duration: Duration,
    pub server_pid: Option<u32>,
}

/// What came back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of every successful request in the window, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
    /// Non-200 answers and transport failures in the window.
    pub errors: u64,
    /// The same during the warm-up.
    pub warmup_errors: u64,
    pub warmup_reads: u64,
    /// The first few distinct error descriptions.
    pub error_samples: Vec<String>,
    /// The measured window as the clock saw it.
    pub window: Duration,
    /// CPU seconds this process used in the window.
    pub generator_cpu: Option<f64>,
    /// CPU seconds the server process used in the window.
    pub server_cpu: Option<f64>,
}

const MAX_ERROR_SAMPLES: usize = 5;

/// Runs one closed loop per maker until the window closes.
pub async fn run<M: MakeRequest>(
    endpoint: &Endpoint,
    makers: Vec<M>,
    plan: Plan,
) -> anyhow::Result<Outcome> {
    run_until(endpoint, makers, plan, std::future::pending()).await
}

/// [`run`], with a measured window that also closes early when `close`
/// completes (after the warm-up; it then never lasts past `plan`'s end):
/// how a run measures exactly while something else happens.
pub async fn run_until<M: MakeRequest>(
    endpoint: &Endpoint,
    makers: Vec<M>,
    plan: Plan,
    close: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    run_over(std::slice::from_ref(endpoint), makers, plan, close).await
}

/// [`run`] with the clients spread over several endpoints (vault replicas
/// on one database): client i connects, and reconnects, to the
/// (i mod N)th. Its maker must address that endpoint (`Host`, prefix).
pub async fn run_spread<M: MakeRequest>(
    endpoints: &[Endpoint],
    makers: Vec<M>,
    plan: Plan,
) -> anyhow::Result<Outcome> {
    run_over(endpoints, makers, plan, std::future::pending()).await
}

async fn run_over<M: MakeRequest>(
    endpoints: &[Endpoint],
    makers: Vec<M>,
    plan: Plan,
    close: impl std::future::Future<Output = ()>,
) -> anyhow::Result<Outcome> {
    if endpoints.is_empty() {
        bail!("no endpoint to send the requests to");
    }
    // Connect everyone first, so the warm-up starts with every client ready.
    let mut connections = Vec::with_capacity(makers.len());
    for i in 0..makers.len() {
        let endpoint = &endpoints[i % endpoints.len()];
        connections.push((endpoint.addr, connect(endpoint.addr).await?));
    }
    let ticks = cpu::ticks_per_second();
    let start = Instant::now();
    let window = Window {
        warm_end: start + plan.warmup,
        end: start + plan.warmup + plan.duration,
        closed: Arc::new(AtomicBool::new(false)),
    };
    let mut workers = tokio::task::JoinSet::new();
    for (maker, (addr, sender)) in makers.into_iter().zip(connections) {
        workers.spawn(client_loop(addr, sender, maker, window.clone()));
    }

    tokio::time::sleep_until(window.warm_end).await;
    let opened = Instant::now();
    let generator_before = cpu::seconds(None, ticks);
    let server_before = plan
        .server_pid
        .and_then(|pid| cpu::seconds(Some(pid), ticks));
    tokio::select! {
        () = tokio::time::sleep_until(window.end) => {}
        () = close => {}
    }
    let closed = Instant::now();
    window.closed.store(true, Ordering::SeqCst);
    let generator_after = cpu::seconds(None, ticks);
    let server_after = plan
        .server_pid
        .and_then(|pid| cpu::seconds(Some(pid), ticks));

    let mut outcome = Outcome {
        window: closed - opened,
        generator_cpu: generator_after.zip(generator_before).map(|(a, b)| a - b),
        server_cpu: server_after.zip(server_before).map(|(a, b)| a - b),
        ..Outcome::default()
    };
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a client task failed")?;
        outcome.latencies_ns.extend_from_slice(&tally.latencies_ns);
        outcome.errors += tally.errors;
        outcome.warmup_errors += tally.warmup_errors;
        outcome.warmup_reads += tally.warmup_reads;
        for sample in tally.error_samples {
            if outcome.error_samples.len() < MAX_ERROR_SAMPLES
                && !outcome.error_samples.contains(&sample)
            {
                outcome.error_samples.push(sample);
            }
        }
    }
    outcome.latencies_ns.sort_unstable();
    Ok(outcome)
}

#[derive(Clone, Debug)]
struct Window {
    warm_end: Instant,
    end: Instant,
    /// Set when the window closed before `end`.
    closed: Arc<AtomicBool>,
}

impl Window {
    fn is_over(&self, now: Instant) -> bool {
        now > self.end || self.closed.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: u64,
    warmup_errors: u64,
    warmup_reads: u64,
    error_samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, measured: bool, describe: impl FnOnce() -> String) {
        if measured {
            self.errors += 1;
        } else {
            self.warmup_errors += 1;
        }
        if self.error_samples.len() < MAX_ERROR_SAMPLES {
            let sample = describe();
            if !self.error_samples.contains(&sample) {
                self.error_samples.push(sample);
            }
        }
    }
}

async fn client_loop<M: MakeRequest>(
    addr: SocketAddr,
    mut sender: SendRequest<Full<Bytes>>,
    mut maker: M,
    window: Window,
) -> Tally {
    let mut tally = Tally {
        latencies_ns: Vec::with_capacity(16 * 1024),
        ..Tally::default()
    };
    loop {
        let request = match maker.request() {
            Ok(request) => request,
            Err(error) => {
                tally.error(true, || format!("cannot build the request: {error}"));
                return tally;
            }
        };
        let sent = Instant::now();
        let result = exchange(&mut sender, request, M::SUCCESS).await;
        let done = Instant::now();
        if window.is_over(done) {
            return tally;
        }
        let measured = done >= window.warm_end;
        match result {
            Ok(Answer::Ok) if measured => {
                let nanos = u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX);
                tally.latencies_ns.push(nanos);
            }
            Ok(Answer::Ok) => tally.warmup_reads += 1,
            Ok(Answer::Refused(status, body)) => {
                tally.error(measured, || format!("HTTP {status}: {body}"));
            }
            Err(error) => {
                tally.error(measured, || format!("transport: {error}"));
                // The connection is gone: make a new one (pausing between
                // attempts so a dead server is not hammered), or give up
                // when the window closes.
                loop {
                    if window.is_over(Instant::now()) {
                        return tally;
                    }
                    match connect(addr).await {
                        Ok(fresh) => {
                            sender = fresh;
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }
    }
}

pub enum Answer {
    Ok,
    Refused(StatusCode, String),
}

/// Sends one request and reads the whole answer (so the connection can
/// carry the next one); keeps the body only when it explains a refusal,
/// that is when the status is not `success`.
pub async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: Req,
    success: StatusCode,
) -> hyper::Result<Answer> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let mut body = response.into_body();
    if status == success {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(Answer::Ok);
    }
    let bytes = body.collect().await?.to_bytes();
    let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
    Ok(Answer::Refused(status, text))
}

/// Whether the connection can carry another request (not once the peer
/// closed it).
pub async fn ready(sender: &mut SendRequest<Full<Bytes>>) -> bool {
    sender.ready().await.is_ok()
}

/// One kept-alive HTTP/1.1 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr} failed"))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the peer closes; a failure
        // shows up on the sender's next request.
        let _ = connection.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints_take_host_port_and_prefix() {
        let e = Endpoint::resolve("http://127.0.0.1:8200/").await.unwrap();
        assert_eq!(e.addr, "127.0.0.1:8200".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:8200");
        assert_eq!(e.path_prefix, "");
        let e = Endpoint::resolve("http://127.0.0.1/vault").await.unwrap();
        assert_eq!(e.addr.port(), 80);
        assert_eq!(e.host, "127.0.0.1");
        assert_eq!(e.path_prefix, "/vault");
        assert!(Endpoint::resolve("https://127.0.0.1:8200").await.is_err());
    }

    /// A plain GET of `/`.
    struct Get;
    impl MakeRequest for Get {
        fn request(&mut self) -> anyhow::Result<Req> {
            Ok(Request::get("/")
                .header(http::header::HOST, "test")
                .body(Full::default())?)
        }
    }

    /// A listener answering every request head with an empty 200, counting
    /// the connections it accepts and the requests it answers.
    async fn server() -> (Endpoint, Arc<[std::sync::atomic::AtomicU64; 2]>) {
        use std::sync::atomic::AtomicU64;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let seen = Arc::clone(&counts);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen[0].fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            buffer.drain(..end + 4);
                            seen[1].fetch_add(1, Ordering::SeqCst);
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                            if stream.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        let endpoint = Endpoint::resolve(&format!("http://{addr}")).await.unwrap();
        (endpoint, counts)
    }

    #[tokio::test]
    async fn spread_clients_go_round_robin_over_the_endpoints() {
        let (a, a_counts) = server().await;
        let (b, b_counts) = server().await;
        let plan = Plan {
            warmup: Duration::ZERO,
            duration: Duration::from_millis(300),
            server_pid: None,
        };
        let outcome = run_spread(&[a, b], vec![Get, Get, Get], plan)
            .await
            .unwrap();
        assert_eq!(outcome.errors, 0, "{:?}", outcome.error_samples);
        // Clients 0 and 2 on the first endpoint, client 1 on the second.
        assert_eq!(a_counts[0].load(Ordering::SeqCst), 2);
        assert_eq!(b_counts[0].load(Ordering::SeqCst), 1);
        assert!(a_counts[1].load(Ordering::SeqCst) > 0);
        assert!(b_counts[1].load(Ordering::SeqCst) > 0);
        assert!(run_spread(&[], vec![Get], plan).await.is_err());
    }
}
