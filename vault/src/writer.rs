//! Group commit: one writer thread runs every signed request's stateful
//! work, many requests per transaction, one fsync per batch.
//!
//! Requests queue while the previous batch is on its way to disk; the
//! writer then takes every queued request (up to [`MAX_BATCH`]) and runs
//! them one after another in one store transaction, each in a savepoint of
//! its own, so a refusal rolls back only its own work. Because the requests
//! of a batch run in sequence inside one transaction, every rule that must
//! be exact (nonces, token uses, daily caps, canary locks, the audit chain)
//! sees exactly what it would see with one transaction per request; the
//! audit chain's order is the commit order.
//!
//! Nobody is answered before the batch's commit returned: with
//! `synchronous=FULL`, an acknowledged request's nonce and audit row are on
//! disk. If the commit fails, every request of the batch gets an internal
//! error and nothing of the batch is kept.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::store::{Store, Tx};

/// Most requests committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// What a request's work hands back to the writer: whether the batch's
/// transaction is still sound, and what to do once the batch's fate is known.
pub struct Done {
    /// The work could not roll back after itself: the whole batch is void.
    pub broken: bool,
    /// Called once, after the commit, with whether it succeeded.
    pub finish: Finish,
}

/// What to do once a batch committed (`true`) or not.
pub type Finish = Box<dyn FnOnce(bool) + Send>;

/// One request's stateful work, run by the writer inside a batch.
pub type Job = Box<dyn FnOnce(&mut dyn Tx) -> Done + Send>;

/// Counters of the writer, for metrics and tests.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests submitted and not yet taken into a batch.
    pub queued: AtomicUsize,
    /// Batches committed (or rolled back).
    pub batches: AtomicU64,
    /// Requests run in those batches.
    pub requests: AtomicU64,
    /// Signed reads committed with what was looked up before the writer:
    /// only their nonce and audit row were written in the batch.
    pub reads_ahead: AtomicU64,
    /// Signed reads looked up ahead that were decided again in the batch,
    /// because something that may change state ran in between.
    pub reads_rechecked: AtomicU64,
    /// Nanoseconds the writer spent on batches, from taking the first
    /// request to the commit's return (its busy time).
    pub busy_nanos: AtomicU64,
    /// Of those, nanoseconds in the commit itself (mostly the sync to disk).
    pub commit_nanos: AtomicU64,
}

/// The handle to the writer thread. Dropping the last handle stops it once
/// the queue is empty.
pub struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    gate: Arc<Mutex<()>>,
    stats: Arc<Stats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Keeps the writer from starting its next batch while held (tests use it
/// to put several requests in one batch).
pub struct Hold<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

/// The writer thread is gone (it panicked, or the vault is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the vault's writer is not running")]
pub struct Stopped;

impl Writer {
    /// Starts the writer thread over `store`.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let gate = Arc::new(Mutex::new(()));
        let stats = Arc::new(Stats::default());
        let (thread_gate, thread_stats) = (Arc::clone(&gate), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("signet-writer".into())
            .spawn(move || run(store.as_ref(), &receiver, &thread_gate, &thread_stats))?;
        Ok(Self {
            jobs: Mutex::new(Some(sender)),
            gate,
            stats,
            thread: Some(thread),
        })
    }

    /// Queues `job` for the next batch.
    pub fn submit(&self, job: Job) -> Result<(), Stopped> {
        let jobs = self.jobs.lock().map_err(|_| Stopped)?;
        let jobs = jobs.as_ref().ok_or(Stopped)?;
        self.stats.queued.fetch_add(1, Ordering::SeqCst);
        jobs.send(job).map_err(|_| {
            self.stats.queued.fetch_sub(1, Ordering::SeqCst);
            Stopped
        })
    }

    /// Holds the writer before its next batch until the guard is dropped.
    pub fn hold(&self) -> Hold<'_> {
        Hold(
            self.gate
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters, to be read by someone outliving this borrow (metrics).
    pub fn shared_stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

impl Drop for Writer {
    /// Stops the thread once the queue is drained and waits for it, so the
    /// store is closed when the vault is (a restart can reopen it at once).
    /// When the last reference to the vault goes away on the writer thread
    /// itself (inside a finished request), it is not waited for: it stops
    /// right after.
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
            && thread.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

fn run(store: &dyn Store, receiver: &mpsc::Receiver<Job>, gate: &Mutex<()>, stats: &Stats) {
    while let Ok(first) = receiver.recv() {
        // Wait here while a test holds the gate; requests keep queueing.
        drop(gate.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        stats.queued.fetch_sub(jobs.len(), Ordering::SeqCst);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let started = Instant::now();
        let (committed, finishers) = commit_batch(store, jobs, stats);
        add_nanos(&stats.busy_nanos, started);
        for finish in finishers {
            finish(committed);
        }
    }
}

/// Runs `jobs` in one transaction and commits it; returns whether it
/// committed and each job's finisher.
fn commit_batch(store: &dyn Store, jobs: Vec<Job>, stats: &Stats) -> (bool, Vec<Finish>) {
    let mut tx = match store.begin_batch() {
        Ok(tx) => tx,
        Err(error) => {
            tracing::error!(error = ?error, "cannot begin a batch");
            // Each job still needs its answer; run none of them.
            return (false, jobs.into_iter().map(refuse).collect());
        }
    };
    let mut finishers = Vec::with_capacity(jobs.len());
    let mut broken = false;
    for job in jobs {
        if broken {
            finishers.push(refuse(job));
            continue;
        }
        let done = job(tx.as_mut());
        broken |= done.broken;
        finishers.push(done.finish);
    }
    if broken {
        drop(tx);
        return (false, finishers);
    }
    let committing = Instant::now();
    let committed = tx.commit();
    add_nanos(&stats.commit_nanos, committing);
    match committed {
        Ok(()) => (true, finishers),
        Err(error) => {
            tracing::error!(error = ?error, "cannot commit a batch");
            (false, finishers)
        }
    }
}

fn add_nanos(counter: &AtomicU64, since: Instant) {
    let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
    counter.fetch_add(nanos, Ordering::Relaxed);
}

/// A job that will not run: its requester hears the batch failed.
fn refuse(job: Job) -> Finish {
    drop(job);
    Box::new(|_| {})
}
