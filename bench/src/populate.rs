//! Extra data before a measurement: secrets written through the admin SDK
//! and machines enrolled with fresh keys, `concurrency` requests in flight
//! so the vault's group commit writes many per transaction. Progress goes
//! to stderr.
//!
//! Each extra secret is one upsert found by its project's unique name index
//! and each machine one insert plus its token's grant copied, so the setup
//! time grows linearly with the counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::task::JoinSet;

use signet_client::api::WriteSecret;

use crate::enroll::SignedEnroll;
use crate::load::{self, Answer, MakeRequest as _};
use crate::signet::Admin;

/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Writes `count` secrets `extra-<n>` (32 random bytes each): into the
/// admin's project, or spread in turn over `projects` new projects
/// `<project>-x<k>`.
pub async fn secrets(
    admin: &Admin,
    count: u32,
    projects: u32,
    concurrency: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let mut targets = Vec::new();
    for k in 0..projects {
        let name = format!("{}-x{k}", admin.project);
        admin
            .client
            .create_project(&name)
            .await
            .with_context(|| format!("cannot create project {name}"))?;
        targets.push(name);
    }
    if targets.is_empty() {
        targets.push(admin.project.clone());
    }
    let targets = Arc::new(targets);
    let progress = Progress::start("extra secrets", count);
    let mut writers = JoinSet::new();
    for _ in 0..concurrency.min(count as usize) {
        let (client, targets, progress) = (
            Arc::clone(&admin.client),
            Arc::clone(&targets),
            Arc::clone(&progress),
        );
        writers.spawn(async move {
            while let Some(n) = progress.claim() {
                let project = &targets[n as usize % targets.len()];
                let name = format!("extra-{n}");
                let body = WriteSecret {
                    value: Some(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())),
                    fields: None,
                };
                client
                    .write_secret(project, &name, &body)
                    .await
                    .with_context(|| format!("cannot write extra secret {project}/{name}"))?;
                progress.done();
            }
            anyhow::Ok(())
        });
    }
    join_all(writers).await?;
    progress.finish();
    Ok(())
}

/// Enrolls `count` machines with fresh keys through a token of their own
/// granting `secret`, each writer on one kept-alive connection.
pub async fn machines(
    admin: &Admin,
    secret: &str,
    count: u32,
    concurrency: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let token = admin
        .token(
            "signet-bench-extra",
            std::slice::from_ref(&secret.to_owned()),
            Some(count),
        )
        .await?;
    let progress = Progress::start("extra machines", count);
    let mut enrollers = JoinSet::new();
    for writer in 0..concurrency.min(count as usize) {
        let endpoint = admin.endpoint.clone();
        let progress = Arc::clone(&progress);
        let mut enroll = SignedEnroll::new(
            &token,
            endpoint.host.clone(),
            &endpoint.path_prefix,
            format!("signet-bench-extra-{writer}"),
        )?;
        enrollers.spawn(async move {
            let mut sender = load::connect(endpoint.addr).await?;
            while progress.claim().is_some() {
                let request = enroll.request()?;
                match load::exchange(&mut sender, request, SignedEnroll::SUCCESS).await {
                    Ok(Answer::Ok) => progress.done(),
                    Ok(Answer::Refused(status, body)) => {
                        bail!("an extra machine's enrollment was refused: HTTP {status}: {body}")
                    }
                    Err(error) => bail!("an extra machine's enrollment failed: {error}"),
                }
            }
            Ok(())
        });
    }
    join_all(enrollers).await?;
    progress.finish();
    Ok(())
}

async fn join_all(mut tasks: JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    while let Some(joined) = tasks.join_next().await {
        joined.context("a setup task failed")??;
    }
    Ok(())
}

/// Work handed out by number, and a line on stderr every few seconds.
struct Progress {
    what: &'static str,
    total: u32,
    claimed: AtomicU32,
    done: AtomicU32,
    started: Instant,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(what: &'static str, total: u32) -> Arc<Self> {
        Arc::new_cyclic(|weak: &std::sync::Weak<Self>| {
            let weak = weak.clone();
            let ticker = tokio::spawn(async move {
                let mut every = tokio::time::interval(PROGRESS_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    let Some(progress) = weak.upgrade() else {
                        return;
                    };
                    progress.print("");
                }
            });
            Self {
                what,
                total,
                claimed: AtomicU32::new(0),
                done: AtomicU32::new(0),
                started: Instant::now(),
                ticker,
            }
        })
    }

    /// The next item's number, or `None` when all are handed out.
    fn claim(&self) -> Option<u32> {
        let n = self.claimed.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }

    fn done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    fn print(&self, suffix: &str) {
        let done = self.done.load(Ordering::Relaxed);
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!(
            "signet-bench: {} {done}/{} in {seconds:.1} s ({:.0}/s){suffix}",
            self.what,
            self.total,
            f64::from(done) / seconds.max(f64::EPSILON),
        );
    }

    fn finish(&self) {
        self.ticker.abort();
        self.print(", done");
    }
}
