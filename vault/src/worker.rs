//! The vault's background work, one loop each, so none waits for another:
//!
//! - **deliveries**: the webhook outbox, every few seconds, several
//!   attempts at once ([`Vault::deliver_webhooks`]);
//! - **sweeps**: spent nonces, long-expired machines, the audit log past
//!   its retention, finished deliveries and co-sign requests past theirs,
//!   read counts of days gone by ([`Vault::sweep`]);
//! - **denials**: the counted groups of unverified denials, written once
//!   per interval ([`Vault::flush_denials`]).
//!
//! Started by the server ([`crate::server`]); it imports the pipeline and the
//! services, and neither imports it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::vault::Vault;

/// How often the webhook outbox is drained.
pub const DELIVER_EVERY: Duration = Duration::from_secs(5);
/// How often the store is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often rotation leases and schedules are looked at.
pub const ROTATE_EVERY: Duration = Duration::from_secs(10);

/// The running loops; dropping it stops them.
pub struct Worker {
    vault: Arc<Vault>,
    loops: Vec<JoinHandle<()>>,
}

impl Worker {
    /// Starts every loop on the current runtime.
    pub fn start(vault: Arc<Vault>) -> Self {
        let flush_every = vault.settings().denial_flush_interval;
        let loops = vec![
            every(DELIVER_EVERY, deliver, Arc::clone(&vault)),
            every(SWEEP_EVERY, sweep, Arc::clone(&vault)),
            every(ROTATE_EVERY, rotate, Arc::clone(&vault)),
            every(flush_every, flush, Arc::clone(&vault)),
        ];
        Self { vault, loops }
    }

    /// Stops the loops, then writes the denials counted since the last
    /// flush, so a graceful shutdown loses none.
    pub async fn stop(mut self) {
        for running in self.loops.drain(..) {
            running.abort();
        }
        flush(Arc::clone(&self.vault)).await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        for running in &self.loops {
            running.abort();
        }
    }
}

/// Runs `pass` every `period` (the first after one period), each pass
/// finished before the next starts.
fn every<F, Fut>(period: Duration, pass: F, vault: Arc<Vault>) -> JoinHandle<()>
where
    F: Fn(Arc<Vault>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let period = period.max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            pass(Arc::clone(&vault)).await;
        }
    })
}

async fn deliver(vault: Arc<Vault>) {
    match vault.deliver_webhooks().await {
        Ok(report) if report != Default::default() => {
            tracing::debug!(
                delivered = report.delivered,
                retrying = report.retrying,
                failed = report.failed,
                "webhook deliveries"
            );
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(error = ?error, "webhook delivery pass failed"),
    }
}

async fn sweep(vault: Arc<Vault>) {
    let swept = tokio::task::spawn_blocking(move || vault.sweep(vault.now())).await;
    match swept {
        Ok(Ok(report)) => {
            if report != Default::default() {
                tracing::info!(
                    nonces = report.nonces,
                    machines_deleted = report.machines_deleted.len(),
                    audit_pruned_to = ?report.audit_pruned_to,
                    deliveries = report.deliveries,
                    cosigns = report.cosigns,
                    read_counts = report.read_counts,
                    "swept"
                );
            }
        }
        Ok(Err(error)) => tracing::warn!(error = ?error, "sweep failed"),
        Err(error) => tracing::warn!(error = ?error, "sweep panicked"),
    }
}

/// Fails rotation jobs whose lease ran out and starts the scheduled ones.
async fn rotate(vault: Arc<Vault>) {
    match tokio::task::spawn_blocking(move || vault.sweep_rotations()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(started)) => tracing::info!(started, "scheduled rotations started"),
        Ok(Err(error)) => tracing::warn!(error = ?error, "rotation sweep failed"),
        Err(error) => tracing::warn!(error = ?error, "rotation sweep panicked"),
    }
}

async fn flush(vault: Arc<Vault>) {
    match tokio::task::spawn_blocking(move || vault.flush_denials()).await {
        Ok(Ok(0)) => {}
        Ok(Ok(rows)) => tracing::debug!(rows, "unverified denials audited"),
        Ok(Err(error)) => tracing::error!(
            error = ?error,
            "cannot audit unverified denials; their counts are kept for the next flush"
        ),
        Err(error) => tracing::error!(error = ?error, "auditing unverified denials panicked"),
    }
}
