//! Signed reads under abuse (`signet-bench abuse`): the readers of the
//! `signet` target run a quiet window, then a window while the same host
//! floods the vault with unauthenticated requests ([`AbuseKind::Flood`]) or
//! holds slow connections ([`AbuseKind::Slow`]). The audit log is read
//! through the admin API before the abuse and after its denial rows are
//! flushed, to show how much one flood adds to it. The flood runs on
//! threads of its own, or (`--flood-via`) in a process of its own started
//! through a wrapper, so that it can come from another network namespace
//! (another source address) with its CPU limited, as an attacker on
//! another host would.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use rand::Rng as _;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use signet_client::identity::Identity;
use signet_client::protocol::{self, IdentityKey};
use signet_client::sdk::{Client, Options};

use crate::cli::{AbuseArgs, AbuseKind, FloodArgs, SignetArgs};
use crate::load::{self, Answer, Endpoint, Plan, Req};
use crate::report::{Report, Run, percentile};
use crate::signet::{self, SignedRead, Work};

/// Both windows and what the abuse did.
#[derive(Debug, Serialize)]
pub struct AbuseReport {
    pub kind: &'static str,
    pub quiet: Report,
    pub abuse: Report,
    /// The abuse window's p99 over the quiet one's.
    pub p99_ratio: Option<f64>,
    /// The abuse window's reads/s over the quiet one's.
    pub reads_ratio: Option<f64>,
    pub flood: Option<FloodStats>,
    pub slow: Option<SlowStats>,
    pub audit: AuditGrowth,
}

impl AbuseReport {
    /// A reader's request refused or failed, in either window.
    pub fn failed(&self) -> bool {
        self.quiet.failed() || self.abuse.failed()
    }
}

/// Runs the quiet window, then the abuse window, then reads the audit.
pub async fn run(
    args: &AbuseArgs,
    clients: u32,
    identities: u32,
    threads: u32,
    plan: Plan,
) -> anyhow::Result<AbuseReport> {
    let AbuseArgs {
        admin,
        secret,
        kind,
        flood_requests,
        flood_connections,
        flood_patience,
        flood_max,
        slow_connections,
        slow_interval,
        denial_flush,
        abuse_threads,
        flood_via,
    } = args;
    let signet_args = SignetArgs {
        admin: crate::cli::AdminArgs {
            vault: admin.vault.clone(),
            identity: admin.identity.clone(),
            project: admin.project.clone(),
        },
        secret: secret.clone(),
        extra_secrets: 0,
        extra_projects: 0,
        extra_machines: 0,
        setup_concurrency: 32,
        enroll: false,
        replicas: Vec::new(),
    };
    let setup = signet::setup(&signet_args, identities).await?;
    let Work::Reads { target, machines } = &setup.work else {
        anyhow::bail!("the abuse run reads; it has no enrollment load");
    };
    let readers = || -> anyhow::Result<Vec<SignedRead>> {
        (0..clients as usize)
            .map(|i| {
                SignedRead::new(
                    Arc::clone(&machines[i % machines.len()]),
                    setup.endpoint.host.clone(),
                    target,
                )
            })
            .collect()
    };
    let run = Run {
        target: "signet",
        operation: "read",
        clients,
        identities: u32::try_from(machines.len()).unwrap_or(u32::MAX),
        threads,
        plan,
        extra_secrets: 0,
        extra_machines: 0,
        setup_s: Some(setup.setup_time.as_secs_f64()),
    };

    eprintln!("signet-bench: quiet window");
    let quiet = load::run(&setup.endpoint, readers()?, plan).await?;
    let quiet = Report::new(run, &quiet);

    let audit_client = Client::new(
        &admin.vault,
        Identity::load(&admin.identity)?,
        &Options::default(),
    )?;
    let before = AuditCensus::read(&audit_client, 0).await?;

    let endpoint = setup.endpoint.clone();
    let (abuse, flood, slow) = match kind {
        AbuseKind::Flood => {
            eprintln!(
                "signet-bench: flood of {flood_requests} attempts on {flood_connections} connections"
            );
            let (done_tx, mut done_rx) = watch::channel(false);
            let victim = machines[0].id().clone();
            let flood = match flood_via {
                None => apart(
                    *abuse_threads,
                    flood(
                        endpoint.clone(),
                        target.clone(),
                        victim,
                        FloodPlan {
                            total: *flood_requests,
                            connections: *flood_connections,
                            patience: *flood_patience,
                        },
                        done_tx,
                    ),
                ),
                Some(via) => elsewhere(
                    via,
                    &[
                        "--threads".into(),
                        abuse_threads.to_string(),
                        "--json".into(),
                        "flood".into(),
                        "--vault".into(),
                        admin.vault.clone(),
                        "--target".into(),
                        target.clone(),
                        "--victim".into(),
                        victim.to_str().unwrap_or_default().to_owned(),
                        "--requests".into(),
                        flood_requests.to_string(),
                        "--connections".into(),
                        flood_connections.to_string(),
                        "--patience".into(),
                        flood_patience.as_secs_f64().to_string(),
                    ],
                    done_tx,
                )?,
            };
            let plan = Plan {
                duration: *flood_max,
                ..plan
            };
            let close = async move {
                let _ = done_rx.wait_for(|done| *done).await;
            };
            let outcome = load::run_until(&endpoint, readers()?, plan, close).await?;
            let stats = flood.await.context("the flood failed")?;
            (outcome, Some(stats), None)
        }
        AbuseKind::Slow => {
            eprintln!(
                "signet-bench: {slow_connections} slow connections, a byte every {slow_interval:?}"
            );
            let (stop_tx, stop_rx) = watch::channel(false);
            let opened = Arc::new(AtomicU64::new(0));
            let (addr, count, interval) = (endpoint.addr, *slow_connections, *slow_interval);
            let counter = Arc::clone(&opened);
            let holders = apart(*abuse_threads, async move {
                let mut holders = tokio::task::JoinSet::new();
                for n in 0..count {
                    holders.spawn(slow_loop(
                        addr,
                        n % 2 == 0,
                        interval,
                        stop_rx.clone(),
                        Arc::clone(&counter),
                    ));
                }
                let mut tallies = Vec::new();
                while let Some(joined) = holders.join_next().await {
                    if let Ok(tally) = joined {
                        tallies.push(tally);
                    }
                }
                SlowStats::new(count, interval, &tallies)
            });
            // Every connection open before the readers start.
            let waited = Instant::now();
            while opened.load(Ordering::SeqCst) < u64::from(*slow_connections)
                && waited.elapsed() < Duration::from_secs(10)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let outcome = load::run(&endpoint, readers()?, plan).await?;
            let _ = stop_tx.send(true);
            let stats = holders
                .await
                .context("the slow connections' runtime failed")?;
            (outcome, None, Some(stats))
        }
    };
    let abuse_run = Run {
        plan: Plan {
            duration: abuse.window,
            ..plan
        },
        ..run
    };
    let abuse = Report::new(abuse_run, &abuse);

    // Wait for the flush that carries the refusals (the flood's, or none):
    // the requests refused, and the connections refused or closed (some
    // attempts never reach the vault: a connection that failed for another
    // reason; the wait is bounded).
    let refused = flood
        .as_ref()
        .map_or(0, |f| f.refused + f.closed + f.given_up + f.connect_failed);
    let waited = Instant::now();
    let deadline = waited + *denial_flush + Duration::from_secs(10);
    let mut after = AuditCensus::read(&audit_client, before.last_seq).await?;
    while after.denied_requests < refused && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        after = AuditCensus::read(&audit_client, before.last_seq).await?;
    }
    let audit = AuditGrowth::new(&before, &after, refused, waited.elapsed());

    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0);
    Ok(AbuseReport {
        kind: match kind {
            AbuseKind::Flood => "flood",
            AbuseKind::Slow => "slow",
        },
        p99_ratio: ratio(abuse.p99_ms, quiet.p99_ms).map(|(a, b)| a / b),
        reads_ratio: ratio(Some(abuse.reads_per_s), Some(quiet.reads_per_s)).map(|(a, b)| a / b),
        quiet,
        abuse,
        flood,
        slow,
        audit,
    })
}

/// Runs `work` on a runtime of its own, on threads of its own, so the
/// readers' tasks never queue behind the abuse's in the generator (they
/// still share the machine's cores with it and with the vault).
fn apart<T: Send + 'static>(
    threads: u32,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> oneshot::Receiver<T> {
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads as usize)
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => {
                let _ = tx.send(runtime.block_on(work));
            }
            Err(error) => eprintln!("signet-bench: cannot start the abuse's runtime: {error}"),
        }
    });
    rx
}

/// Runs this binary with `args` through the wrapper command `via` (its
/// words split on spaces); the flood's figures it prints, then `done`.
fn elsewhere(
    via: &str,
    args: &[String],
    done: watch::Sender<bool>,
) -> anyhow::Result<oneshot::Receiver<FloodStats>> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut words = via.split_whitespace();
    let program = words.next().context("--flood-via is empty")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(words)
        .arg(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start the flood through {via:?}"))?;
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let output = child.wait_with_output().await;
        let _ = done.send(true);
        let parsed = match output {
            Ok(output) if output.status.success() => {
                let text = String::from_utf8_lossy(&output.stdout);
                serde_json::from_str::<FloodStats>(text.lines().last().unwrap_or_default())
                    .map_err(|e| format!("its answer is not the flood's figures: {e}"))
            }
            Ok(output) => Err(format!("it exited with {}", output.status)),
            Err(error) => Err(error.to_string()),
        };
        match parsed {
            Ok(stats) => {
                let _ = tx.send(stats);
            }
            Err(error) => eprintln!("signet-bench: the flood's process failed: {error}"),
        }
    });
    Ok(rx)
}

/// `signet-bench flood`: the flood alone, on this process's runtime.
pub async fn flood_alone(args: &FloodArgs) -> anyhow::Result<FloodStats> {
    let endpoint = Endpoint::resolve(&args.vault).await?;
    let victim = HeaderValue::from_str(&args.victim).context("--victim is not a header value")?;
    let (done, _) = watch::channel(false);
    Ok(flood(
        endpoint,
        args.target.clone(),
        victim,
        FloodPlan {
            total: args.requests,
            connections: args.connections,
            patience: args.patience,
        },
        done,
    )
    .await)
}

impl fmt::Display for FloodStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flood: {} attempts in {:.1} s ({:.0}/s) on {} connections, {} connects: {} answered ({:.0}/s; {:?}), {} closed before an answer, {} given up after {:.2} s, {} connections that failed",
            self.attempts,
            self.seconds,
            self.attempts_per_s,
            self.connections,
            self.connects,
            self.answered,
            self.answered_per_s,
            self.statuses,
            self.closed,
            self.given_up,
            self.patience_s,
            self.connect_failed,
        )
    }
}

/// The flood's figures. An attempt is a request answered, or one whose
/// connection the vault refused or closed before an answer, or one given up
/// after the patience (its connection closed): each is followed by another
/// attempt, on a new connection when needed.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct FloodStats {
    pub connections: u32,
    pub attempts: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answered 4xx: what the vault should audit as denials.
    pub refused: u64,
    /// Requests whose connection was closed or reset before an answer.
    pub closed: u64,
    /// Requests given up after the patience.
    pub given_up: u64,
    /// Connections that could not be opened (reset before they were
    /// reported open, or refused).
    pub connect_failed: u64,
    pub patience_s: f64,
    pub seconds: f64,
    pub attempts_per_s: f64,
    pub answered_per_s: f64,
    /// Answers by status.
    pub statuses: BTreeMap<String, u64>,
    /// The first few distinct answers and failures.
    pub samples: Vec<String>,
    /// Connections opened (more than `connections` when the vault closed some).
    pub connects: u64,
}

/// What the flood does.
#[derive(Clone, Copy, Debug)]
struct FloodPlan {
    /// Attempts.
    total: u64,
    connections: u32,
    patience: Duration,
}

/// One flood connection's count.
#[derive(Debug, Default)]
struct FloodTally {
    statuses: BTreeMap<String, u64>,
    samples: Vec<String>,
    connects: u64,
    closed: u64,
    given_up: u64,
    connect_failed: u64,
}

impl FloodTally {
    fn sample(&mut self, sample: String) {
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(&sample) {
            self.samples.push(sample);
        }
    }
}

const MAX_SAMPLES: usize = 8;

/// Makes `plan.total` unauthenticated attempts over `plan.connections`
/// connections as fast as the vault answers or refuses them, then says so
/// on `done`.
async fn flood(
    endpoint: Endpoint,
    target: String,
    victim: HeaderValue,
    plan: FloodPlan,
    done: watch::Sender<bool>,
) -> FloodStats {
    let endpoint = Arc::new(endpoint);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let forger = Forger::new(&endpoint, &target, victim.clone());
        senders.spawn(flood_loop(
            Arc::clone(&endpoint),
            forger,
            Arc::clone(&next),
            plan,
        ));
    }
    let mut stats = FloodStats {
        connections: plan.connections,
        patience_s: plan.patience.as_secs_f64(),
        ..FloodStats::default()
    };
    while let Some(joined) = senders.join_next().await {
        let Ok(tally) = joined else { continue };
        for (status, n) in tally.statuses {
            *stats.statuses.entry(status).or_default() += n;
        }
        for sample in tally.samples {
            if stats.samples.len() < MAX_SAMPLES && !stats.samples.contains(&sample) {
                stats.samples.push(sample);
            }
        }
        stats.connects += tally.connects;
        stats.closed += tally.closed;
        stats.given_up += tally.given_up;
        stats.connect_failed += tally.connect_failed;
    }
    stats.seconds = started.elapsed().as_secs_f64();
    let _ = done.send(true);
    stats.answered = stats.statuses.values().sum();
    stats.refused = stats
        .statuses
        .iter()
        .filter(|(status, _)| status.starts_with('4'))
        .map(|(_, n)| n)
        .sum();
    stats.attempts = stats.answered + stats.closed + stats.given_up + stats.connect_failed;
    let seconds = stats.seconds.max(f64::EPSILON);
    stats.attempts_per_s = stats.attempts as f64 / seconds;
    stats.answered_per_s = stats.answered as f64 / seconds;
    stats
}

async fn flood_loop(
    endpoint: Arc<Endpoint>,
    mut forger: Forger,
    next: Arc<AtomicU64>,
    plan: FloodPlan,
) -> FloodTally {
    let mut tally = FloodTally::default();
    let mut sender = None;
    loop {
        // A connection ready to send first, so a request the vault closed
        // the connection after is not counted as a failure of the next.
        let ready = match sender.as_mut() {
            Some(s) => load::ready(s).await,
            None => false,
        };
        if !ready {
            sender = None;
            match load::connect(endpoint.addr).await {
                Ok(fresh) => {
                    tally.connects += 1;
                    sender = Some(fresh);
                }
                Err(error) => {
                    // Refused or reset before it was reported open: an
                    // attempt too.
                    if next.fetch_add(1, Ordering::SeqCst) >= plan.total {
                        return tally;
                    }
                    tally.connect_failed += 1;
                    let reset = error.chain().any(|e| {
                        e.downcast_ref::<std::io::Error>()
                            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
                    });
                    tally.sample(format!("connect: {error:#}"));
                    if !reset {
                        // Not the vault refusing: do not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    continue;
                }
            }
        }
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= plan.total {
            return tally;
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = forger.request(n);
        let answer = tokio::time::timeout(
            plan.patience,
            load::exchange(s, request, StatusCode::UNAUTHORIZED),
        )
        .await;
        match answer {
            Ok(Ok(Answer::Ok)) => {
                *tally
                    .statuses
                    .entry(StatusCode::UNAUTHORIZED.as_u16().to_string())
                    .or_default() += 1;
            }
            Ok(Ok(Answer::Refused(status, body))) => {
                let status = status.as_u16().to_string();
                tally.sample(format!("{status}: {body}"));
                *tally.statuses.entry(status).or_default() += 1;
            }
            Ok(Err(error)) => {
                sender = None;
                tally.closed += 1;
                tally.sample(format!("closed: {error}"));
            }
            Err(_) => {
                // Dropping the sender closes the connection.
                sender = None;
                tally.given_up += 1;
            }
        }
    }
}

/// Makes the flood's requests, four kinds in turn: no signature headers;
/// garbage in all four; a well-formed request signed by a random key for a
/// key id nobody holds; the same claiming a real machine's id (a forgery).
struct Forger {
    uri: Uri,
    target: String,
    host: HeaderValue,
    victim: HeaderValue,
    key: IdentityKey,
}

/// Crockford's base 32, the alphabet of the vault's ULID ids.
const ULID_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl Forger {
    fn new(endpoint: &Endpoint, target: &str, victim: HeaderValue) -> Self {
        Self {
            uri: target.parse().unwrap_or_default(),
            target: target.to_owned(),
            host: endpoint.host.clone(),
            victim,
            key: IdentityKey::generate(),
        }
    }

    fn request(&mut self, n: u64) -> Req {
        let mut request = Request::new(Full::<Bytes>::default());
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        let signed = match n % 4 {
            0 => return request,
            1 => {
                for (name, value) in [
                    (protocol::HEADER_KEY, "not a key id"),
                    (protocol::HEADER_TIMESTAMP, "soon"),
                    (protocol::HEADER_NONCE, "!!"),
                    (protocol::HEADER_SIGNATURE, "%%%%"),
                ] {
                    headers.insert(name, HeaderValue::from_static(value));
                }
                return request;
            }
            2 => {
                let mut rng = rand::thread_rng();
                let mut id = String::from("m_");
                id.push(char::from(ULID_ALPHABET[rng.gen_range(0..8)]));
                for _ in 0..25 {
                    id.push(char::from(ULID_ALPHABET[rng.gen_range(0..32)]));
                }
                protocol::sign_now(&self.key, &id, "GET", &self.target, b"")
            }
            _ => protocol::sign_now(
                &self.key,
                self.victim.to_str().unwrap_or_default(),
                "GET",
                &self.target,
                b"",
            ),
        };
        for (name, value) in signed.pairs() {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name, value);
            }
        }
        request
    }
}

/// The slow connections' figures.
#[derive(Debug, Default, Serialize)]
pub struct SlowStats {
    /// Kept open at once (half trickling, half silent).
    pub connections: u32,
    pub byte_interval_s: f64,
    /// Connections opened in all (a closed one is opened again).
    pub opened: u64,
    pub connect_failures: u64,
    /// Closed by the vault while the abuse ran, per kind.
    pub trickle_closed: u64,
    pub silent_closed: u64,
    /// Of those, answered with some bytes before the close.
    pub answered: u64,
    /// Still open when the abuse stopped.
    pub open_at_end: u64,
    /// How long the vault let a connection live, seconds (nearest rank).
    pub trickle_life_p50_s: Option<f64>,
    pub trickle_life_max_s: Option<f64>,
    pub silent_life_p50_s: Option<f64>,
    pub silent_life_max_s: Option<f64>,
    pub bytes_sent: u64,
}

impl SlowStats {
    fn new(connections: u32, interval: Duration, tallies: &[SlowTally]) -> Self {
        let mut stats = Self {
            connections,
            byte_interval_s: interval.as_secs_f64(),
            ..Self::default()
        };
        let (mut trickle, mut silent) = (Vec::new(), Vec::new());
        for t in tallies {
            stats.opened += t.opened;
            stats.connect_failures += t.connect_failures;
            stats.answered += t.answered;
            stats.open_at_end += t.open_at_end;
            stats.bytes_sent += t.bytes_sent;
            if t.trickle {
                trickle.extend_from_slice(&t.lives_ms);
            } else {
                silent.extend_from_slice(&t.lives_ms);
            }
        }
        trickle.sort_unstable();
        silent.sort_unstable();
        let s = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1e3);
        stats.trickle_closed = trickle.len() as u64;
        stats.silent_closed = silent.len() as u64;
        stats.trickle_life_p50_s = s(percentile(&trickle, 0.5));
        stats.trickle_life_max_s = s(trickle.last().copied());
        stats.silent_life_p50_s = s(percentile(&silent, 0.5));
        stats.silent_life_max_s = s(silent.last().copied());
        stats
    }
}

#[derive(Debug, Default)]
struct SlowTally {
    trickle: bool,
    opened: u64,
    connect_failures: u64,
    answered: u64,
    open_at_end: u64,
    bytes_sent: u64,
    /// Lifetimes of the connections the vault closed, milliseconds.
    lives_ms: Vec<u64>,
}

/// The head a trickling connection never finishes: after it, one more
/// header value byte at a time.
const SLOW_HEAD: &[u8] = b"GET /v1/secrets/slow/loris HTTP/1.1\r\nHost: vault\r\nX-Slow: ";

/// Holds one slow connection at a time until `stop`: opens it, trickles a
/// byte every `interval` (or sends nothing), and when the vault closes it
/// notes how long it lived and opens the next.
async fn slow_loop(
    addr: std::net::SocketAddr,
    trickle: bool,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    opened: Arc<AtomicU64>,
) -> SlowTally {
    let mut tally = SlowTally {
        trickle,
        ..SlowTally::default()
    };
    let mut buf = [0u8; 1024];
    while !*stop.borrow() {
        let Ok(stream) = TcpStream::connect(addr).await else {
            tally.connect_failures += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.opened += 1;
        opened.fetch_add(1, Ordering::SeqCst);
        let since = Instant::now();
        let (mut rx, mut tx) = stream.into_split();
        let mut ticks = tokio::time::interval(interval);
        let mut sent = 0usize;
        let mut answered = false;
        let closed = loop {
            tokio::select! {
                _ = stop.changed() => break false,
                read = rx.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => answered = true,
                },
                _ = ticks.tick(), if trickle => {
                    let byte = SLOW_HEAD.get(sent).copied().unwrap_or(b'a');
                    if tx.write_all(&[byte]).await.is_err() {
                        break true;
                    }
                    sent += 1;
                    tally.bytes_sent += 1;
                }
            }
        };
        if closed {
            let ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX);
            tally.lives_ms.push(ms);
            tally.answered += u64::from(answered);
        } else {
            tally.open_at_end += 1;
        }
    }
    tally
}

/// The audit log as the admin API shows it, from one sequence number on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditCensus {
    pub rows: u64,
    pub last_seq: u64,
    /// Rows of requests denied before their signature verified (actor
    /// `unverified...`), and the requests they carry (their counts).
    pub denial_rows: u64,
    pub denied_requests: u64,
    /// The same by `action code`.
    pub groups: BTreeMap<String, Group>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Group {
    pub rows: u64,
    pub requests: u64,
}

/// Largest page of `GET /v1/audit`.
const AUDIT_PAGE: u32 = 5000;

impl AuditCensus {
    /// Reads every entry with `seq > after`, up to the head of the log when
    /// the reading starts (each page read is audited too: paging until an
    /// empty page would never end).
    async fn read(client: &Client, after: u64) -> anyhow::Result<Self> {
        let head = client
            .audit_checkpoint()
            .await
            .context("cannot read the audit head (GET /v1/audit/checkpoint)")?
            .seq;
        let mut census = Self {
            last_seq: after,
            ..Self::default()
        };
        while census.last_seq < head {
            let page = client
                .audit(census.last_seq, AUDIT_PAGE)
                .await
                .context("cannot read the audit log (GET /v1/audit)")?;
            let Some(last) = page.entries.last() else {
                return Ok(census);
            };
            census.last_seq = last.seq.min(head);
            for entry in page.entries.iter().filter(|e| e.seq <= head) {
                census.rows += 1;
                if !entry.actor.starts_with("unverified") {
                    continue;
                }
                let (code, count) = denial_reason(&entry.reason);
                census.denial_rows += 1;
                census.denied_requests += count;
                let group = census
                    .groups
                    .entry(format!("{} {code}", entry.action))
                    .or_default();
                group.rows += 1;
                group.requests += count;
            }
        }
        Ok(census)
    }
}

/// The code and count of a denial row's reason,
/// `<code>: <message> (unverified, <from> to <to>, count <n>)`; a reason
/// without a count stands for one request.
fn denial_reason(reason: &str) -> (&str, u64) {
    let code = reason.split(':').next().unwrap_or_default();
    let count = reason
        .rsplit_once("count ")
        .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
        .unwrap_or(1);
    (code, count)
}

/// How the audit log grew with the abuse window.
#[derive(Debug, Serialize)]
pub struct AuditGrowth {
    /// Rows before the abuse (all of them) and after (all of them).
    pub rows_before: u64,
    pub rows_after: u64,
    pub rows_added: u64,
    /// Added rows of unverified denials, and the requests they carry.
    pub denial_rows_added: u64,
    pub denied_requests_carried: u64,
    /// Requests the flood saw refused (4xx).
    pub refused_seen: u64,
    /// Added rows of anything else (the readers' reads, the admin's reads
    /// of the audit).
    pub other_rows_added: u64,
    /// Seconds waited after the abuse for the flush.
    pub flush_wait_s: f64,
    pub groups: BTreeMap<String, Group>,
}

impl AuditGrowth {
    fn new(before: &AuditCensus, added: &AuditCensus, refused: u64, waited: Duration) -> Self {
        Self {
            rows_before: before.rows,
            rows_after: before.rows + added.rows,
            rows_added: added.rows,
            denial_rows_added: added.denial_rows,
            denied_requests_carried: added.denied_requests,
            refused_seen: refused,
            other_rows_added: added.rows - added.denial_rows,
            flush_wait_s: waited.as_secs_f64(),
            groups: added.groups.clone(),
        }
    }
}

impl fmt::Display for AbuseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let x = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}x"));
        writeln!(f, "quiet    {}", self.quiet)?;
        writeln!(f, "{:<8} {}", self.kind, self.abuse)?;
        writeln!(
            f,
            "under {}: p99 {}, reads/s {} of quiet",
            self.kind,
            x(self.p99_ratio),
            x(self.reads_ratio)
        )?;
        if let Some(flood) = &self.flood {
            writeln!(f, "{flood}")?;
        }
        if let Some(slow) = &self.slow {
            let s = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} s"));
            writeln!(
                f,
                "slow: {} held, {} opened; closed by the vault: {} trickling (life p50 {}, max {}), {} silent (p50 {}, max {}); {} open at the end",
                slow.connections,
                slow.opened,
                slow.trickle_closed,
                s(slow.trickle_life_p50_s),
                s(slow.trickle_life_max_s),
                slow.silent_closed,
                s(slow.silent_life_p50_s),
                s(slow.silent_life_max_s),
                slow.open_at_end
            )?;
        }
        let a = &self.audit;
        write!(
            f,
            "audit: {} rows before, {} after: {} denial rows carrying {} requests ({} refused seen), {} other rows",
            a.rows_before,
            a.rows_after,
            a.denial_rows_added,
            a.denied_requests_carried,
            a.refused_seen,
            a.other_rows_added
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_reason_gives_its_code_and_count() {
        assert_eq!(
            denial_reason(
                "bad_signature: no (unverified, 2024-01-01T00:00:00Z to 2024-01-01T00:00:09Z, count 2500)"
            ),
            ("bad_signature", 2500)
        );
        assert_eq!(denial_reason("unknown_key: who"), ("unknown_key", 1));
    }

    #[test]
    fn the_forger_takes_four_kinds_in_turn() {
        let endpoint = Endpoint {
            addr: "127.0.0.1:8200".parse().unwrap(),
            host: HeaderValue::from_static("127.0.0.1:8200"),
            path_prefix: String::new(),
        };
        let victim = HeaderValue::from_static("m_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        let mut forger = Forger::new(&endpoint, "/v1/secrets/p/s", victim.clone());
        let mut key = |n| {
            forger
                .request(n)
                .headers()
                .get(protocol::HEADER_KEY)
                .cloned()
        };
        assert_eq!(key(0), None);
        assert_eq!(key(1).unwrap(), "not a key id");
        let unknown = key(2).unwrap();
        assert!(unknown.to_str().unwrap().starts_with("m_"));
        assert_eq!(unknown.len(), victim.len());
        assert_ne!(unknown, victim);
        assert_eq!(key(3).unwrap(), victim);
    }
}
