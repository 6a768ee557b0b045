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
//! Nobody is answered before the batch is on disk. The writer commits a
//! batch (visible to the next batch and to snapshots at once) and hands it
//! to the syncer thread, which makes every batch committed so far durable
//! with one [`Store::sync`] and only then answers their requests; meanwhile
//! the writer already runs the next batch. So the work of batch N+1
//! overlaps the sync of batch N, and a sync covers every batch committed
//! while the one before it ran. An acknowledged request's nonce and audit
//! row are on disk, as with one fsync per commit. If a commit fails, every
//! request of the batch gets an internal error and nothing of the batch is
//! kept; if a sync fails, nothing committed after the last good sync is
//! acknowledged, and the writer refuses every later batch (the kernel may
//! have dropped what it could not write, so no later sync proves anything):
//! the vault answers errors until it is restarted.
//!
//! What a snapshot reads may come from a batch not yet on disk. A route that
//! answers from a snapshot without a batch of its own after it (a list's
//! page, a machine's change list) first waits for [`Durability::wait`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::watch;

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
    /// Of those, nanoseconds in the commit itself.
    pub commit_nanos: AtomicU64,
    /// Syncs to disk, each covering every batch committed before it.
    pub syncs: AtomicU64,
    /// Nanoseconds the syncer spent syncing.
    pub sync_nanos: AtomicU64,
}

/// How far the writer's batches are on disk.
#[derive(Debug)]
pub struct Durability {
    /// The number of batches whose commit has begun (so any state a
    /// snapshot sees comes from a batch counted here).
    begun: AtomicU64,
    /// The number of batches on disk (or given up).
    synced: watch::Sender<u64>,
    /// A sync failed: nothing committed since is durable, ever.
    failed: AtomicBool,
}

impl Default for Durability {
    fn default() -> Self {
        Self {
            begun: AtomicU64::new(0),
            synced: watch::channel(0).0,
            failed: AtomicBool::new(false),
        }
    }
}

impl Durability {
    /// Returns once every batch that had begun to commit when it was called
    /// is on disk, so whatever a snapshot read before the call can be
    /// answered; [`Stopped`] when that can no longer happen.
    pub async fn wait(&self) -> Result<(), Stopped> {
        let through = self.begun.load(Ordering::SeqCst);
        let mut synced = self.synced.subscribe();
        synced
            .wait_for(|synced| *synced >= through)
            .await
            .map_err(|_| Stopped)?;
        if self.failed.load(Ordering::SeqCst) {
            return Err(Stopped);
        }
        Ok(())
    }
}

/// The handle to the writer thread. Dropping the last handle stops it once
/// the queue is empty.
pub struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    gate: Arc<Mutex<()>>,
    stats: Arc<Stats>,
    durability: Arc<Durability>,
    thread: Option<std::thread::JoinHandle<()>>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

/// Keeps the writer from starting its next batch while held (tests use it
/// to put several requests in one batch).
pub struct Hold<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

/// The writer thread is gone (it panicked, or the vault is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the vault's writer is not running")]
pub struct Stopped;

impl Writer {
    /// Starts the writer and syncer threads over `store`.
    pub fn start(store: Arc<dyn Store>) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let (to_syncer, committed) = mpsc::channel::<Committed>();
        let gate = Arc::new(Mutex::new(()));
        let stats = Arc::new(Stats::default());
        let durability = Arc::new(Durability::default());
        let syncer = {
            let (store, stats, durability) = (
                Arc::clone(&store),
                Arc::clone(&stats),
                Arc::clone(&durability),
            );
            std::thread::Builder::new()
                .name("signet-syncer".into())
                .spawn(move || sync(store.as_ref(), &committed, &stats, &durability))?
        };
        let writer = Batches {
            gate: Arc::clone(&gate),
            stats: Arc::clone(&stats),
            durability: Arc::clone(&durability),
            to_syncer,
        };
        let thread = std::thread::Builder::new()
            .name("signet-writer".into())
            .spawn(move || writer.run(store.as_ref(), &receiver))?;
        Ok(Self {
            jobs: Mutex::new(Some(sender)),
            gate,
            stats,
            durability,
            thread: Some(thread),
            syncer: Some(syncer),
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

    /// How far the batches are on disk, for routes that answer from a
    /// snapshot.
    pub fn durability(&self) -> Arc<Durability> {
        Arc::clone(&self.durability)
    }
}

impl Drop for Writer {
    /// Stops the threads once the queue is drained and waits for them, so
    /// the store is closed when the vault is (a restart can reopen it at
    /// once). When the last reference to the vault goes away on the writer
    /// or the syncer thread itself (inside a finished request), neither is
    /// waited for: they stop right after.
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let current = std::thread::current().id();
        let ours = [&self.thread, &self.syncer]
            .iter()
            .any(|thread| thread.as_ref().is_some_and(|t| t.thread().id() == current));
        if ours {
            return;
        }
        // The writer first: it hands its last batch to the syncer, then
        // lets it go.
        for (thread, name) in [
            (self.thread.take(), "writer"),
            (self.syncer.take(), "syncer"),
        ] {
            if let Some(thread) = thread
                && thread.join().is_err()
            {
                tracing::error!(thread = name, "a thread of the writer panicked");
            }
        }
    }
}

/// A batch committed (or not) and waiting for the syncer to answer it.
struct Committed {
    /// Its place in [`Durability::begun`].
    number: u64,
    committed: bool,
    finishers: Vec<Finish>,
}

/// What the writer thread owns.
struct Batches {
    gate: Arc<Mutex<()>>,
    stats: Arc<Stats>,
    durability: Arc<Durability>,
    to_syncer: mpsc::Sender<Committed>,
}

impl Batches {
    fn run(self, store: &dyn Store, receiver: &mpsc::Receiver<Job>) {
        let stats = self.stats.as_ref();
        while let Ok(first) = receiver.recv() {
            // Wait here while a test holds the gate; requests keep queueing.
            drop(
                self.gate
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
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
            // Counted before anything of the batch can be seen.
            let number = self.durability.begun.fetch_add(1, Ordering::SeqCst) + 1;
            let (committed, finishers) = if self.durability.failed.load(Ordering::SeqCst) {
                (false, jobs.into_iter().map(refuse).collect())
            } else {
                commit_batch(store, jobs, stats)
            };
            add_nanos(&stats.busy_nanos, started);
            let batch = Committed {
                number,
                committed,
                finishers,
            };
            if let Err(mpsc::SendError(batch)) = self.to_syncer.send(batch) {
                // The syncer is gone (it panicked): nothing is acknowledged.
                for finish in batch.finishers {
                    finish(false);
                }
            }
        }
    }
}

/// The syncer thread: takes every batch committed so far, makes them all
/// durable with one sync, then answers their requests in commit order.
fn sync(
    store: &dyn Store,
    batches: &mpsc::Receiver<Committed>,
    stats: &Stats,
    durability: &Durability,
) {
    while let Ok(first) = batches.recv() {
        let mut ready = vec![first];
        while let Ok(batch) = batches.try_recv() {
            ready.push(batch);
        }
        let durable = if !ready.iter().any(|batch| batch.committed) {
            true
        } else if durability.failed.load(Ordering::SeqCst) {
            false
        } else {
            let started = Instant::now();
            let synced = store.sync();
            add_nanos(&stats.sync_nanos, started);
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            match synced {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(
                        error = ?error,
                        "cannot sync the store to disk: refusing every request until the vault is restarted"
                    );
                    durability.failed.store(true, Ordering::SeqCst);
                    false
                }
            }
        };
        let mut last = 0;
        for batch in ready {
            last = batch.number;
            for finish in batch.finishers {
                finish(batch.committed && durable);
            }
        }
        durability.synced.send_replace(last);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc::{Receiver, channel};

    use super::*;
    use crate::store::{Generation, Read, Result as StoreResult, SqliteStore};

    /// SQLite whose syncs wait while a test holds `gate`, and fail on
    /// demand: the disk under the writer, slowed or broken at will.
    struct Disk {
        sqlite: SqliteStore,
        gate: Mutex<()>,
        broken: AtomicBool,
    }

    impl Store for Disk {
        fn begin(&self) -> StoreResult<Box<dyn Tx + '_>> {
            self.sqlite.begin()
        }
        fn begin_batch(&self) -> StoreResult<Box<dyn Tx + '_>> {
            self.sqlite.begin_batch()
        }
        fn read(&self) -> StoreResult<Box<dyn Read + '_>> {
            self.sqlite.read()
        }
        fn generation(&self) -> &Generation {
            self.sqlite.generation()
        }
        fn sync(&self) -> StoreResult<()> {
            let _held = self.gate.lock().unwrap();
            if self.broken.load(Ordering::SeqCst) {
                return Err(crate::store::Error::Sync(std::io::Error::other(
                    "disk gone",
                )));
            }
            self.sqlite.sync()
        }
    }

    fn disk() -> (tempfile::TempDir, Arc<Disk>) {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(dir.path()).unwrap();
        let disk = Arc::new(Disk {
            sqlite,
            gate: Mutex::new(()),
            broken: AtomicBool::new(false),
        });
        (dir, disk)
    }

    /// Submits a job that writes `key`; returns (ran in the writer, answered
    /// with whether it is durable).
    fn write(writer: &Writer, key: &'static str) -> (Receiver<()>, Receiver<bool>) {
        let (ran, ran_rx) = channel();
        let (answer, answer_rx) = channel();
        writer
            .submit(Box::new(move |tx: &mut dyn Tx| {
                tx.set_meta(key, b"x").unwrap();
                ran.send(()).unwrap();
                Done {
                    broken: false,
                    finish: Box::new(move |durable| answer.send(durable).unwrap()),
                }
            }))
            .unwrap();
        (ran_rx, answer_rx)
    }

    #[test]
    fn nobody_is_answered_before_the_sync_and_the_next_batch_runs_meanwhile() {
        let (_dir, disk) = disk();
        let writer = Writer::start(Arc::clone(&disk) as Arc<dyn Store>).unwrap();
        let durability = writer.durability();
        let syncing = disk.gate.lock().unwrap();
        let (first_ran, first) = write(&writer, "first");
        first_ran.recv().unwrap();
        // The first batch committed; its sync waits on the disk. The next
        // batch runs all the same, and sees the first one's write.
        let (second_ran, second) = write(&writer, "second");
        second_ran.recv().unwrap();
        assert_eq!(
            disk.sqlite
                .read()
                .unwrap()
                .meta("first")
                .unwrap()
                .as_deref(),
            Some(&b"x"[..])
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let waited = runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(50), durability.wait()).await
        });
        assert!(waited.is_err(), "durable before the sync");
        assert!(first.try_recv().is_err(), "answered before the sync");
        assert!(second.try_recv().is_err(), "answered before the sync");
        drop(syncing);
        assert!(first.recv().unwrap(), "the first batch is durable");
        assert!(second.recv().unwrap(), "the second batch is durable");
        runtime.block_on(durability.wait()).unwrap();
        assert!(writer.stats().syncs.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn dropping_the_writer_waits_for_its_last_batch_and_lets_go_of_the_store() {
        let (_dir, disk) = disk();
        let store = Arc::clone(&disk) as Arc<dyn Store>;
        let writer = Writer::start(Arc::clone(&store)).unwrap();
        // A batch still running when the writer is dropped.
        let (release, released) = channel::<()>();
        let (answer, answered) = channel();
        writer
            .submit(Box::new(move |_: &mut dyn Tx| {
                released.recv().unwrap();
                Done {
                    broken: false,
                    finish: Box::new(move |durable| answer.send(durable).unwrap()),
                }
            }))
            .unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            release.send(()).unwrap();
        });
        drop(writer);
        // The batch was answered, and both threads are gone with their
        // hold on the store: a restart can open it again at once.
        assert_eq!(answered.try_recv(), Ok(true));
        assert_eq!(Arc::strong_count(&store), 2, "the store is still held");
        releaser.join().unwrap();
    }

    #[test]
    fn after_a_failed_sync_nothing_is_acknowledged_until_a_restart() {
        let (_dir, disk) = disk();
        let writer = Writer::start(Arc::clone(&disk) as Arc<dyn Store>).unwrap();
        disk.broken.store(true, Ordering::SeqCst);
        let (ran, answer) = write(&writer, "lost");
        ran.recv().unwrap();
        assert!(!answer.recv().unwrap(), "acknowledged without a sync");
        // The disk comes back, but what the kernel could not write may be
        // gone: no later batch runs, none is acknowledged.
        disk.broken.store(false, Ordering::SeqCst);
        let (ran, answer) = write(&writer, "later");
        // Refused unrun: its answer is dropped, which its requester hears
        // as a failure.
        assert!(
            !matches!(answer.recv(), Ok(true)),
            "acknowledged after a failed sync"
        );
        assert!(ran.try_recv().is_err(), "a batch ran after a failed sync");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(runtime.block_on(writer.durability().wait()).is_err());
    }
}
