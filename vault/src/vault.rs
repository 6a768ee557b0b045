//! The request pipeline. Every signed request passes the checks of
//! docs/protocol.md in order, then runs its operation, and the decision is
//! audited: an allowed one in the very transaction that did the work, a
//! denied one in that same transaction after its work was rolled back to
//! the request's savepoint (its nonce is spent either way).
//!
//! A request refused before its signature verified proves nothing about who
//! sent it: its denial is counted in memory ([`crate::denials`]) and audited
//! in groups by the background worker, never on the request path, so a flood
//! of garbage costs neither disk nor writer time. The stateless checks (the
//! headers, the timestamp) run before the writer for the same reason.
//!
//! The expensive stateless part, verifying the Ed25519 signature, runs on
//! the request's own task, in parallel with other requests, against the
//! identity's public key as last seen (an id never changes its key). The
//! stateful part runs on the [`crate::writer`] thread, many requests per
//! transaction (group commit), where the identity is looked up again, so a
//! revoked or disabled identity is refused whatever was verified before.
//!
//! A machine's secret read goes further ([`Vault::handle_read`]): its
//! lookups (machine, project, secret, grant, version) and its decryption
//! run on a read-only snapshot before the writer, and its batch records
//! only the nonce and the audit row. That is exact because the store counts
//! every transaction that may change state ([`crate::store::Generation`]):
//! if one started after the snapshot, the read is decided again inside the
//! batch by the full pipeline, on the state it commits with.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use signet_client::api::{AuditAnchor, ErrorCode, Scope};
use signet_client::protocol::{ENROLL_KEY_ID, IdentityKey, ParsedHeaders, PublicKey};

use crate::audit::{self, Record};
use crate::budget::Budget;
use crate::clock::Clock;
use crate::connections::{Connection, Connections};
use crate::crypto::{ChainKey, RootKey};
use crate::denials::{Denial, Denials};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::outbox;
use crate::policy;
pub use crate::request::{Ahead, Audience, Caller, Ctx, Request};
pub use crate::settings::{Config, Settings};
use crate::store::{Lookup, Read, ReadView, Store, Tx};
use crate::writer::{Done, Writer};

/// Why the vault would not open its store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the root key does not match this data directory (its check value does not open); refusing to start"
    )]
    WrongRootKey,
    #[error("cannot open the store")]
    Store(#[from] crate::store::Error),
    #[error("cannot seal the root key check value")]
    Crypto(#[from] crate::crypto::Error),
    #[error("cannot start the writer thread")]
    Writer(#[source] std::io::Error),
}

/// The `meta` key of the root key's check value.
pub(crate) const ROOT_CHECK: &str = "root_key_check";

/// The `meta` keys of the largest skew in force since the oldest kept
/// nonce was recorded, and of the oldest timestamp accepted since the skew
/// was last raised.
const NONCE_SKEW: &str = "nonce_skew_seconds";
const TIMESTAMP_FLOOR: &str = "timestamp_floor";

/// The vault: store, root key, clock. Shared by every request.
pub struct Vault {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) root: RootKey,
    /// The audit chain's HMAC key, derived from the root key.
    audit_key: ChainKey,
    /// Signs audit checkpoints; derived from the root key.
    pub(crate) checkpoint_key: IdentityKey,
    /// The head of the last checkpoint published on schedule, so an idle
    /// vault does not publish the same one again.
    pub(crate) last_checkpoint: std::sync::Mutex<Option<AuditAnchor>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Config,
    pub(crate) settings: Settings,
    pub(crate) metrics: Metrics,
    /// How long past its timestamp a nonce is kept: the largest skew ever in
    /// force here.
    nonce_skew: i64,
    /// Requests signed before this are refused: when the skew was raised,
    /// their nonces may have been pruned under the smaller one, so they
    /// could otherwise be replayed.
    timestamp_floor: i64,
    writer: Writer,
    /// Denials of unverified requests, until the worker flushes them.
    denials: Denials,
    /// How many more each source may have (see [`crate::budget`]).
    budget: Budget,
    /// Open connections per source (see [`crate::connections`]).
    connections: Arc<Connections>,
    /// Public keys of identities seen by the writer, by id, for verifying
    /// signatures before the writer. Ids are never reused and an identity's
    /// key never changes, so an entry is never wrong, only possibly stale
    /// about whether the identity still exists, which the writer checks.
    keys: RwLock<HashMap<String, PublicKey>>,
    /// What reads looked up ahead, for as long as nothing that may change
    /// state ran (see [`CachedLookup`]).
    views: std::sync::Mutex<Views>,
    /// The signal machines wait on for changes of what they read.
    changes: Arc<crate::changes::Changes>,
}

/// Read views looked up ahead, all valid at one generation of the store.
#[derive(Default)]
struct Views {
    generation: u64,
    views: HashMap<(String, String, String, Option<u32>), Arc<ReadView>>,
}

/// Most read views remembered.
const VIEWS_MAX: usize = 10_000;

/// A look-ahead's lookups at generation `seen` (which was quiet): a view
/// remembered from a snapshot taken at that same generation is what a new
/// snapshot would show, since no change started in between; otherwise a
/// snapshot is read and its view remembered. A change committed by another
/// connection after that is caught in the writer like any change after a
/// snapshot.
struct CachedLookup<'a> {
    vault: &'a Vault,
    seen: u64,
}

impl Lookup for CachedLookup<'_> {
    fn read_view(
        &mut self,
        machine_id: &str,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> crate::store::Result<Option<Arc<ReadView>>> {
        let key = (
            machine_id.to_owned(),
            project.to_owned(),
            secret.to_owned(),
            version,
        );
        if let Ok(views) = self.vault.views.lock()
            && views.generation == self.seen
            && let Some(view) = views.views.get(&key)
        {
            return Ok(Some(Arc::clone(view)));
        }
        let mut snapshot = self.vault.store.read()?;
        let view = snapshot
            .read_view(machine_id, project, secret, version)?
            .map(Arc::new);
        drop(snapshot);
        if let Some(view) = &view
            && let Ok(mut views) = self.vault.views.lock()
        {
            if views.generation != self.seen || views.views.len() >= VIEWS_MAX {
                views.views.clear();
                views.generation = self.seen;
            }
            views.views.insert(key, Arc::clone(view));
        }
        Ok(view)
    }
}

/// Most public keys remembered for verification outside the writer.
const KEY_CACHE_MAX: usize = 100_000;

impl Vault {
    /// Opens the vault over `store`, checking the root key against the value
    /// stored beside the data (or recording one on first start).
    pub fn open(
        store: Arc<dyn Store>,
        root: RootKey,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Result<Self, OpenError> {
        let audit_key = root.audit_chain_key();
        let (nonce_skew, timestamp_floor) = {
            let mut tx = store.begin()?;
            match tx.meta(ROOT_CHECK)? {
                Some(check) if root.matches(&check) => {}
                Some(_) => return Err(OpenError::WrongRootKey),
                None => tx.set_meta(ROOT_CHECK, &root.check_value()?)?,
            }
            audit::ensure_keyed(tx.as_mut(), &audit_key, clock.now())?;
            let kept = keep_nonces_for(tx.as_mut(), config.skew_seconds, clock.now())?;
            tx.commit()?;
            kept
        };
        let writer = Writer::start(Arc::clone(&store)).map_err(OpenError::Writer)?;
        let metrics = Metrics::default().with_writer(writer.shared_stats());
        Ok(Self {
            store,
            checkpoint_key: root.audit_checkpoint_key(),
            audit_key,
            last_checkpoint: std::sync::Mutex::new(None),
            root,
            clock,
            config,
            denials: Denials::new(Settings::default().denial_groups_max),
            budget: Budget::new(Settings::default().limits.unverified),
            connections: Arc::default(),
            settings: Settings::default(),
            metrics,
            nonce_skew,
            timestamp_floor,
            writer,
            keys: RwLock::new(HashMap::new()),
            views: std::sync::Mutex::new(Views::default()),
            changes: Arc::default(),
        })
    }

    /// Replaces the access settings (retention, webhook allowlist).
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.denials = Denials::new(settings.denial_groups_max);
        self.budget = Budget::new(settings.limits.unverified);
        self.settings = settings;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The change signal of `GET /v1/machine/changes`.
    pub fn changes(&self) -> &Arc<crate::changes::Changes> {
        &self.changes
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Waits `duration` on the vault's clock.
    pub fn sleep(&self, duration: std::time::Duration) -> crate::clock::Sleep<'_> {
        self.clock.sleep(duration)
    }

    /// The key every audit entry's hash is keyed with: pass it to
    /// [`audit::append`].
    pub fn audit_key(&self) -> &ChainKey {
        &self.audit_key
    }

    /// Runs `op` inside one store transaction, without a request (admin
    /// tooling on the server side, sweepers). Nothing is audited here unless
    /// `op` appends it.
    pub fn with_tx<T>(&self, op: impl FnOnce(&mut dyn Tx, i64) -> Result<T>) -> Result<T> {
        let mut tx = self.store.begin()?;
        let value = op(tx.as_mut(), self.clock.now())?;
        tx.commit()?;
        Ok(value)
    }

    /// Verifies `request`, runs `op` for `audience`, audits the decision.
    /// Answers once the decision is on disk.
    pub async fn handle<T, F>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T> + Send + 'static,
    {
        self.submit(request, action, target, audience, op, Effect::Change)
            .await
    }

    /// [`Vault::handle`] for a request whose `op` only reads (a list, a
    /// machine's own grants): it writes nothing but its nonce and audit row
    /// (or a denial's), which no read looked up ahead depends on, so it is
    /// not counted as a change ([`crate::store::Generation`]) and the reads
    /// in flight beside it keep what they looked up. `op` must not write.
    pub async fn handle_query<T, F>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T> + Send + 'static,
    {
        self.submit(request, action, target, audience, op, Effect::Query)
            .await
    }

    /// [`Vault::handle`] for a request whose commit may change what some
    /// machine reads (a secret's live version, a grant): once its batch
    /// committed, the requests waiting on `GET /v1/machine/changes` look
    /// again. The writer announces it, so a client that hangs up after
    /// sending does not keep a committed change from being announced.
    pub async fn handle_change<T, F>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T> + Send + 'static,
    {
        self.submit(request, action, target, audience, op, Effect::Announced)
            .await
    }

    async fn submit<T, F>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        op: F,
        effect: Effect,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T> + Send + 'static,
    {
        // Checks 1 and 2 need no store: a request failing them never takes
        // the writer's time.
        if let Err(error) = self.fresh_headers(&request, self.clock.now()) {
            self.deny_unverified(&request, action, &target, &error);
            return Err(error);
        }
        let verified = self.verify_ahead(&request, audience);
        // From a source over its budget, only what verified ahead may take
        // the writer's time (see [`crate::budget`]).
        if verified.is_none() && self.budget.over(&request.source_ip, self.clock.now()) {
            let error = rate_limited();
            self.deny_unverified(&request, action, &target, &error);
            return Err(error);
        }
        let (answer, answered) = tokio::sync::oneshot::channel();
        let vault = Arc::clone(self);
        self.writer
            .submit(Box::new(move |tx: &mut dyn Tx| {
                vault.decide_in_batch(
                    tx, request, action, target, audience, verified, op, answer, effect,
                )
            }))
            .map_err(|_| Error::Uncommitted)?;
        answered.await.map_err(|_| Error::Uncommitted)?
    }

    /// A machine's request that can be decided on a snapshot before the
    /// writer, such as a secret read: `look` decides it there (and does
    /// the expensive work, decryption) on the request's own task, and the
    /// writer's batch only records its nonce and audit row, after checking
    /// that nothing that may change state ran since the snapshot (see
    /// [`crate::store::Generation`]) and that the machine is still active
    /// at the writer's clock. Whenever `look` declines (a refusal, a
    /// policy to enforce) or something may have changed, `op` decides the
    /// request in the writer's transaction exactly as [`Vault::handle`]
    /// would. `look` answers `None` for anything it does not allow.
    pub async fn handle_read<T, L, F>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        look: L,
        op: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        L: FnOnce(&mut dyn Lookup, &RootKey, &str, &str) -> Result<Option<Ahead<T>>>,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T> + Send + 'static,
    {
        let headers = match self.fresh_headers(&request, self.clock.now()) {
            Ok(headers) => headers,
            Err(error) => {
                self.deny_unverified(&request, action, &target, &error);
                return Err(error);
            }
        };
        // From a source over its budget, a signature that does not verify
        // against a key already known is refused here, after one
        // verification and before any lookup (see [`crate::budget`]).
        if self.budget.over(&request.source_ip, self.clock.now())
            && self.verify_ahead(&request, Audience::Machine).is_none()
        {
            let error = rate_limited();
            self.deny_unverified(&request, action, &target, &error);
            return Err(error);
        }
        let Some((seen, key, ahead)) = self.look_ahead(&request, &headers, look) else {
            return self
                .handle(request, action, target, Audience::Machine, op)
                .await;
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let vault = Arc::clone(self);
        self.writer
            .submit(Box::new(move |tx: &mut dyn Tx| {
                if vault.store.generation().unchanged_since(seen) {
                    match vault.commit_ahead(tx, &request, &headers, action, &ahead) {
                        Settled::Committed => {
                            vault
                                .writer
                                .stats()
                                .reads_ahead
                                .fetch_add(1, Ordering::Relaxed);
                            let value = ahead.value;
                            return Done {
                                broken: false,
                                finish: Box::new(move |committed| {
                                    let _ = answer.send(if committed {
                                        Ok(value)
                                    } else {
                                        Err(Error::Uncommitted)
                                    });
                                }),
                            };
                        }
                        Settled::Broken => {
                            return Done {
                                broken: true,
                                finish: Box::new(move |_| {
                                    let _ = answer.send(Err(Error::Uncommitted));
                                }),
                            };
                        }
                        Settled::Again => {}
                    }
                }
                vault
                    .writer
                    .stats()
                    .reads_rechecked
                    .fetch_add(1, Ordering::Relaxed);
                let audience = Audience::Machine;
                vault.decide_in_batch(
                    tx,
                    request,
                    action,
                    target,
                    audience,
                    Some(key),
                    op,
                    answer,
                    Effect::Change,
                )
            }))
            .map_err(|_| Error::Uncommitted)?;
        answered.await.map_err(|_| Error::Uncommitted)?
    }

    /// Runs `look` on what the store holds now (a fresh snapshot, or the
    /// views remembered from one at the same generation) and verifies the
    /// signature against the machine it found: the generation the lookups
    /// are valid for, the key, and the decision. `None` when anything is
    /// missing or refused; the pipeline then decides the request in the
    /// writer from scratch.
    fn look_ahead<T, L>(
        &self,
        request: &Request,
        headers: &ParsedHeaders,
        look: L,
    ) -> Option<(u64, PublicKey, Ahead<T>)>
    where
        L: FnOnce(&mut dyn Lookup, &RootKey, &str, &str) -> Result<Option<Ahead<T>>>,
    {
        // Taken before the snapshot opens, so the snapshot holds every
        // change counted so far.
        let seen = self.store.generation().quiet()?;
        let ahead = {
            let mut lookup = CachedLookup { vault: self, seen };
            match look(&mut lookup, &self.root, &headers.key_id, &request.target) {
                Ok(ahead) => ahead?,
                Err(error) => {
                    tracing::debug!(error = ?error, "look-ahead failed; deciding in the writer");
                    return None;
                }
            }
        };
        if ahead.machine.id != headers.key_id {
            return None;
        }
        let cached = self
            .keys
            .read()
            .ok()
            .and_then(|keys| keys.get(&headers.key_id).copied());
        let key = match cached {
            Some(key) => key,
            None => {
                let key = PublicKey::parse(&ahead.machine.public_key).ok()?;
                self.remember_key(&headers.key_id, key);
                key
            }
        };
        headers
            .verify(&key, &request.method, &request.target, &request.body)
            .ok()?;
        Some((seen, key, ahead))
    }

    /// Inside the batch, for a request decided ahead on a snapshot that is
    /// still current: the checks that depend on the clock, the nonce and
    /// the audit row. Anything short of a clean allow is decided again.
    fn commit_ahead<T>(
        &self,
        tx: &mut dyn Tx,
        request: &Request,
        headers: &ParsedHeaders,
        action: &'static str,
        ahead: &Ahead<T>,
    ) -> Settled {
        let now = self.clock.now();
        let machine = &ahead.machine;
        let active = machine.disabled_at.is_none() && machine.expires_at > now;
        if !active
            || self.fresh_timestamp(headers, now).is_err()
            || policy::check_machine(
                machine,
                now,
                &request.source_ip,
                self.settings.countries.as_deref(),
            )
            .is_err()
        {
            return Settled::Again;
        }
        let timestamp = i64::try_from(headers.timestamp).unwrap_or(i64::MAX);
        let nonce_expiry = timestamp.saturating_add(self.nonce_skew) + 1;
        match tx.record_nonce(&headers.key_id, &headers.nonce, nonce_expiry) {
            Ok(true) => {}
            // A replay: refused and audited by the full pipeline.
            Ok(false) => return Settled::Again,
            Err(error) => {
                tracing::error!(error = ?error, "cannot record a nonce");
                return Settled::Broken;
            }
        }
        let record = Record {
            actor: machine.id.clone(),
            action: action.to_owned(),
            target: ahead.audit_target.clone(),
            allowed: true,
            reason: String::new(),
            source_ip: request.source_ip.clone(),
            committed: false,
        };
        // Without a savepoint, a nonce recorded without its audit row
        // cannot be undone alone: the whole batch is void instead.
        if let Err(error) = audit::append(tx, &self.audit_key, now, &record) {
            tracing::error!(error = ?error, "cannot append an audit entry");
            return Settled::Broken;
        }
        self.metrics.decision(action, "allow", None);
        Settled::Committed
    }

    /// The full pipeline for one request inside the writer's batch, counted
    /// as a change (see [`crate::store::Generation`]) from before it runs
    /// until its batch is settled unless it is a [`Effect::Query`];
    /// `answer` hears the outcome after that, and for
    /// [`Effect::Announced`], waiting machines hear of a committed success
    /// just before (see [`crate::changes`]).
    #[allow(clippy::too_many_arguments)]
    fn decide_in_batch<T, F>(
        self: &Arc<Self>,
        tx: &mut dyn Tx,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        verified: Option<PublicKey>,
        op: F,
        answer: tokio::sync::oneshot::Sender<Result<T>>,
        effect: Effect,
    ) -> Done
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T>,
    {
        let counted = effect != Effect::Query;
        if counted {
            self.store.generation().start();
        }
        let (result, broken) =
            self.run_in_batch(tx, request, action, target, audience, verified, op);
        let vault = Arc::clone(self);
        Done {
            broken,
            finish: Box::new(move |committed| {
                if counted {
                    vault.store.generation().settle();
                }
                // After the commit, before the answer: whoever heard the
                // answer may count on the waiting machines having heard too.
                if effect == Effect::Announced && committed && result.is_ok() {
                    vault.changes.notify();
                }
                // Let go of the vault before answering, so that whoever
                // heard the answer can drop the last reference and close it.
                drop(vault);
                let _ = answer.send(if committed {
                    result
                } else {
                    Err(Error::Uncommitted)
                });
            }),
        }
    }

    /// A list route: `decide` runs in the pipeline like any request (the
    /// checks, the nonce, the audit row, committed by the writer), and
    /// once that decision is on disk, `read` runs on a read-only snapshot
    /// of its own, which sees that commit and everything before it. A long
    /// list thus never holds the writer, while the authorization is exactly
    /// that of [`Vault::handle`]. `decide` does everything that can refuse
    /// (parsing the page, finding the project) so the audit row says what
    /// was answered; `read` only reads, with what `decide` handed it.
    pub async fn list<D, T, F, R>(
        self: &Arc<Self>,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        decide: F,
        read: R,
    ) -> Result<T>
    where
        D: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<D> + Send + 'static,
        R: FnOnce(&mut dyn Read, D) -> Result<T> + Send + 'static,
    {
        let decided = self
            .handle_query(request, action, target, audience, decide)
            .await?;
        let vault = Arc::clone(self);
        let page = tokio::task::spawn_blocking(move || {
            let mut snapshot = vault.store.read()?;
            read(snapshot.as_mut(), decided)
        })
        .await??;
        // The snapshot may have seen a batch that is not on disk yet.
        self.writer
            .durability()
            .wait()
            .await
            .map_err(|_| Error::Uncommitted)?;
        Ok(page)
    }

    /// Whether `request` passes checks 1 to 4 and the route's authorization
    /// now, without spending its nonce or writing anything: for work a
    /// route does before the pipeline (a DNS lookup), so that only a caller
    /// who proved who they are can make the vault do it. The identity is
    /// looked up on the writer, like every read of state. The pipeline
    /// checks everything again.
    pub async fn authenticated(self: &Arc<Self>, request: &Request, audience: Audience) -> bool {
        let Ok(headers) = self.fresh_headers(request, self.clock.now()) else {
            return false;
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let vault = Arc::clone(self);
        let submitted = self.writer.submit(Box::new(move |tx: &mut dyn Tx| {
            let caller = vault.identify(tx, vault.clock.now(), &headers, audience);
            Done {
                broken: false,
                finish: Box::new(move |_| {
                    let _ = answer.send((caller, headers));
                }),
            }
        }));
        if submitted.is_err() {
            return false;
        }
        let Ok((Ok(caller), headers)) = answered.await else {
            return false;
        };
        let verifies = caller_key(&caller).is_ok_and(|key| {
            headers
                .verify(&key, &request.method, &request.target, &request.body)
                .is_ok()
        });
        verifies
            && match audience {
                Audience::Management(scope) => authorize(&caller, scope).is_ok(),
                Audience::Machine | Audience::Enroll(_) => true,
            }
    }

    /// The writer's counters (queue, batches, requests).
    /// How far the writer's batches are on disk.
    pub fn durability(&self) -> Arc<crate::writer::Durability> {
        self.writer.durability()
    }

    pub fn writer_stats(&self) -> &crate::writer::Stats {
        self.writer.stats()
    }

    /// Holds the writer before its next batch while the guard lives, so the
    /// requests sent meanwhile commit together (batch-boundary tests).
    #[doc(hidden)]
    pub fn hold_writer(&self) -> crate::writer::Hold<'_> {
        self.writer.hold()
    }

    /// The public key the signature of `request` verified against, if it
    /// could be checked before the writer (a known identity, or the key an
    /// enrollment carries). Checks nothing else for good: the pipeline
    /// repeats every check in order.
    fn verify_ahead(&self, request: &Request, audience: Audience) -> Option<PublicKey> {
        let headers = ParsedHeaders::parse(
            request.key_id.as_deref(),
            request.timestamp.as_deref(),
            request.nonce.as_deref(),
            request.signature.as_deref(),
        )
        .ok()?;
        let key = match audience {
            Audience::Enroll(key) => key,
            _ => *self.keys.read().ok()?.get(&headers.key_id)?,
        };
        headers
            .verify(&key, &request.method, &request.target, &request.body)
            .ok()
            .map(|()| key)
    }

    fn remember_key(&self, id: &str, key: PublicKey) {
        if let Ok(mut keys) = self.keys.write() {
            if keys.len() >= KEY_CACHE_MAX {
                keys.clear();
            }
            keys.insert(id.to_owned(), key);
        }
    }

    /// One request inside the writer's batch: its own savepoint, its work,
    /// its audit row. Returns the answer and whether the batch's transaction
    /// can no longer be trusted.
    #[allow(clippy::too_many_arguments)]
    fn run_in_batch<T>(
        &self,
        tx: &mut dyn Tx,
        request: Request,
        action: &'static str,
        target: String,
        audience: Audience,
        verified: Option<PublicKey>,
        op: impl FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T>,
    ) -> (Result<T>, bool) {
        if let Err(error) = tx.savepoint() {
            tracing::error!(error = ?error, "cannot open a request savepoint");
            return (Err(error.into()), true);
        }
        let now = self.clock.now();
        let mut record = Record {
            actor: claimed_actor(&request),
            action: action.to_owned(),
            target,
            allowed: true,
            reason: String::new(),
            source_ip: request.source_ip.clone(),
            committed: false,
        };
        let mut spent = None;
        let mut authenticated = false;
        let result = self.verify_and_run(
            tx,
            now,
            &request,
            audience,
            verified,
            &mut record,
            (&mut spent, &mut authenticated),
            op,
        );
        let settled = match &result {
            Ok(_) => {
                self.metrics.decision(action, "allow", None);
                tx.release_savepoint()
            }
            Err(error)
                if !authenticated && !record.committed && error.code() != ErrorCode::Internal =>
            {
                // Nothing of it is kept: no nonce (the signature never
                // verified), no row of its own.
                self.deny_unverified(&request, action, &record.target, error);
                tx.rollback_to_savepoint()
                    .and_then(|()| tx.release_savepoint())
            }
            Err(error) => {
                let code = error.code();
                if code == ErrorCode::Internal {
                    tracing::error!(action, error = ?error, "request failed");
                } else {
                    tracing::info!(action, code = code.as_str(), actor = %record.actor, "request denied");
                }
                self.metrics.decision(action, "deny", Some(code));
                if record.committed {
                    // Audited with the work it had to keep (a canary lock).
                    tx.release_savepoint()
                } else {
                    record.allowed = false;
                    record.reason = format!("{}: {}", code.as_str(), error.public_message());
                    // The work is undone; the nonce of a verified request is
                    // spent all the same, so a refused request cannot succeed
                    // when replayed later (after a grant, an approval, or the
                    // opening of a time window).
                    tx.rollback_to_savepoint()
                        .and_then(|()| tx.release_savepoint())
                        .map_err(Error::from)
                        .and_then(|()| {
                            if let Some(n) = &spent {
                                tx.record_nonce(&n.key_id, &n.nonce, n.expires_at)?;
                            }
                            record_denial(tx, &self.audit_key, now, &record, code)
                        })
                        .map_err(|e| match e {
                            Error::Store(store) => store,
                            other => crate::store::Error::Corrupt(other.to_string()),
                        })
                }
            }
        };
        match settled {
            Ok(()) => (result, false),
            Err(error) => {
                tracing::error!(error = ?error, "cannot settle a request in its batch");
                (Err(error.into()), true)
            }
        }
    }

    /// Whether an enrollment request is well formed, fresh and signed by
    /// `key`, without touching the store. The pipeline checks all of it
    /// again; this only keeps a forged or stale request from making the
    /// vault call a cluster's TokenReview API.
    pub fn enroll_signature_holds(&self, request: &Request, key: &PublicKey) -> bool {
        let fresh = request
            .timestamp
            .as_deref()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| {
                self.clock.now().abs_diff(t) <= self.config.skew_seconds.unsigned_abs()
            });
        fresh
            && request.key_id.as_deref() == Some(ENROLL_KEY_ID)
            && self.verify_ahead(request, Audience::Enroll(*key)).is_some()
    }

    /// The per-source budget of unverified denials.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Open connections per source.
    pub fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    /// Admits a connection just accepted from `ip`, or refuses it (`None`):
    /// its source is over budget and holds as many connections as it may
    /// (see [`crate::connections`]). A refusal is counted for the grouped
    /// audit rows and in metrics.
    pub fn admit(&self, ip: IpAddr) -> Option<Arc<Connection>> {
        let now = self.clock.now();
        let over = self.budget.over_address(ip, now);
        let admitted =
            self.connections
                .admit(ip, over, self.settings.limits.unverified_connections_max);
        if admitted.is_none() {
            let source_ip = ip.to_string();
            tracing::debug!(source = %source_ip, "connection refused for the budget");
            let counted = self.denials.record(
                now,
                Denial {
                    source_ip: &source_ip,
                    code: ErrorCode::RateLimited,
                    action: CONNECTION_REFUSED,
                    message: "too many connections from an address over its budget of requests that failed before their signature verified".into(),
                    claimed: None,
                    target: "",
                },
            );
            self.metrics
                .connection_refused(counted == crate::denials::Counted::Overflow);
        }
        admitted
    }

    /// Whether `request`'s headers are well formed and fresh and name a key
    /// whose signature the vault has verified before: a request that may be
    /// served even from a source over its budget (its signature is checked
    /// as always). Reads nothing but memory.
    pub fn known_signer(&self, request: &Request) -> bool {
        self.fresh_headers(request, self.clock.now())
            .is_ok_and(|headers| {
                self.keys
                    .read()
                    .is_ok_and(|keys| keys.contains_key(&headers.key_id))
            })
    }

    /// Denies a request that never reached the pipeline (for example a body
    /// over the size limit). Its signature never verified: the denial is
    /// counted for the next grouped audit row, not written now.
    pub fn deny_early(&self, request: &Request, action: &str, error: &Error) {
        self.deny_unverified(request, action, &request.target, error);
    }

    /// Counts the denial of a request whose signature did not verify (see
    /// [`crate::denials`]): metrics now, an audit row with the next flush.
    fn deny_unverified(&self, request: &Request, action: &str, target: &str, error: &Error) {
        let code = error.code();
        tracing::debug!(action, code = code.as_str(), source = %request.source_ip, "unverified request denied");
        self.metrics.decision(action, "deny", Some(code));
        // A refusal for the budget takes none of it: a source that keeps
        // sending gets its refill's worth through, no more.
        if code != ErrorCode::RateLimited {
            self.budget.spend(&request.source_ip, self.clock.now());
        }
        let counted = self.denials.record(
            self.clock.now(),
            Denial {
                source_ip: &request.source_ip,
                code,
                action,
                message: error.public_message(),
                claimed: request.key_id.as_deref(),
                target,
            },
        );
        self.metrics
            .unverified_denial(code, counted == crate::denials::Counted::Overflow);
    }

    /// Writes the groups of unverified denials counted since the last flush,
    /// one audit row each, in one transaction. Returns how many rows. The
    /// background worker calls this every interval and at shutdown.
    pub fn flush_denials(&self) -> Result<usize> {
        // On failure the groups stay counted for the next flush.
        let rows = self.denials.flush(|records| {
            self.with_tx(|tx, now| {
                for record in records {
                    audit::append(tx, &self.audit_key, now, record)?;
                }
                Ok(())
            })
        })?;
        self.metrics.unverified_rows(rows as u64);
        Ok(rows)
    }

    /// Checks 1 and 2: the four headers are well formed and the timestamp
    /// is within the skew window at `now`.
    fn fresh_headers(&self, request: &Request, now: i64) -> Result<ParsedHeaders> {
        let headers = ParsedHeaders::parse(
            request.key_id.as_deref(),
            request.timestamp.as_deref(),
            request.nonce.as_deref(),
            request.signature.as_deref(),
        )
        .map_err(|e| Error::denied(ErrorCode::BadSignatureHeaders, e.to_string()))?;
        self.fresh_timestamp(&headers, now)?;
        Ok(headers)
    }

    /// Check 2 alone, for headers parsed already.
    fn fresh_timestamp(&self, headers: &ParsedHeaders, now: i64) -> Result<()> {
        let timestamp = i64::try_from(headers.timestamp).unwrap_or(i64::MAX);
        if timestamp < self.timestamp_floor {
            return Err(Error::denied(
                ErrorCode::TimestampSkew,
                "timestamp is older than the vault accepts since its skew was raised",
            ));
        }
        if now.abs_diff(timestamp) > self.config.skew_seconds.unsigned_abs() {
            return Err(Error::denied(
                ErrorCode::TimestampSkew,
                format!(
                    "timestamp is more than {} s away from the vault's clock",
                    self.config.skew_seconds
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn verify_and_run<T>(
        &self,
        tx: &mut dyn Tx,
        now: i64,
        request: &Request,
        audience: Audience,
        verified: Option<PublicKey>,
        record: &mut Record,
        (spent, authenticated): (&mut Option<SpentNonce>, &mut bool),
        op: impl FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T>,
    ) -> Result<T> {
        // 1. Headers present and well formed; 2. timestamp within the skew
        // window (also checked before the writer, at an earlier now).
        let headers = self.fresh_headers(request, now)?;
        let timestamp = i64::try_from(headers.timestamp).unwrap_or(i64::MAX);

        // 3. and 4. The key names an active identity of the route's class,
        // and the signature verifies with its public key.
        // A signature verified ahead against this very key need not be
        // verified again.
        let caller = self.identify(tx, now, &headers, audience)?;
        // The key verified ahead is the stored one when its text matches,
        // which spares decoding (decompressing) the stored key again.
        let key = match (verified, stored_key_text(&caller)) {
            (Some(ahead), Some(text)) if ahead.encode() == text => ahead,
            _ => caller_key(&caller)?,
        };
        if verified != Some(key) {
            headers
                .verify(&key, &request.method, &request.target, &request.body)
                .map_err(|_| {
                    Error::denied(
                        ErrorCode::BadSignature,
                        "signature does not verify over this method, target, body, timestamp, nonce and key",
                    )
                })?;
            if !matches!(caller, Caller::Enrolling(_)) {
                self.remember_key(&headers.key_id, key);
            }
        }
        *authenticated = true;

        // 5. The nonce is fresh; recorded in this transaction.
        let nonce_expiry = timestamp.saturating_add(self.nonce_skew) + 1;
        if !tx.record_nonce(&headers.key_id, &headers.nonce, nonce_expiry)? {
            return Err(Error::denied(
                ErrorCode::NonceReplayed,
                "this nonce was already used: every request needs a fresh one",
            ));
        }
        *spent = Some(SpentNonce {
            key_id: headers.key_id.clone(),
            nonce: headers.nonce.clone(),
            expires_at: nonce_expiry,
        });

        // 6. Authorization (scopes are checked only after the signature, so a
        // forged request learns nothing about them) and the work itself.
        record.actor = caller.id();
        if let Audience::Management(scope) = audience {
            authorize(&caller, scope)?;
        }
        if let Caller::Machine(machine) = &caller {
            policy::check_machine(
                machine,
                now,
                &request.source_ip,
                self.settings.countries.as_deref(),
            )?;
        }
        let mut ctx = Ctx {
            caller,
            now,
            body: &request.body,
            target: &request.target,
            source_ip: &request.source_ip,
            root: &self.root,
            settings: &self.settings,
            audit: record,
            commit_denial: false,
        };
        match op(&mut ctx, tx) {
            Ok(value) => {
                audit::append(tx, &self.audit_key, now, ctx.audit)?;
                Ok(value)
            }
            Err(error) if ctx.commit_denial => {
                let code = error.code();
                let record = ctx.audit;
                record.allowed = false;
                record.reason = format!("{}: {}", code.as_str(), error.public_message());
                record_denial(tx, &self.audit_key, now, record, code)?;
                record.committed = true;
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    fn identify(
        &self,
        tx: &mut dyn Tx,
        now: i64,
        headers: &ParsedHeaders,
        audience: Audience,
    ) -> Result<Caller> {
        let key_id = headers.key_id.as_str();
        let unknown = || {
            Error::denied(
                ErrorCode::UnknownKey,
                "the key id names no identity this route serves",
            )
        };
        let disabled = || {
            Error::denied(
                ErrorCode::IdentityDisabled,
                "this identity is disabled or expired",
            )
        };
        match audience {
            Audience::Enroll(public_key) => {
                if key_id != ENROLL_KEY_ID {
                    return Err(Error::denied(
                        ErrorCode::BadSignatureHeaders,
                        "enrollment is signed with Signet-Key: enroll",
                    ));
                }
                Ok(Caller::Enrolling(public_key))
            }
            Audience::Machine => {
                if key_id.starts_with(crate::ids::ADMIN) || key_id.starts_with(crate::ids::AGENT) {
                    return Err(Error::denied(
                        ErrorCode::NotAMachine,
                        "secret values are served to machines only; admins and agents cannot read them",
                    ));
                }
                let machine = tx.machine(key_id)?.ok_or_else(unknown)?;
                if machine.disabled_at.is_some() || machine.expires_at <= now {
                    return Err(disabled());
                }
                Ok(Caller::Machine(Box::new(machine)))
            }
            Audience::Management(_) => {
                if key_id.starts_with(crate::ids::ADMIN) {
                    let admin = tx.admin(key_id)?.ok_or_else(unknown)?;
                    if admin.disabled_at.is_some() {
                        return Err(disabled());
                    }
                    Ok(Caller::Admin(admin))
                } else if key_id.starts_with(crate::ids::AGENT) {
                    let agent = tx.agent(key_id)?.ok_or_else(unknown)?;
                    if agent.disabled_at.is_some() {
                        return Err(disabled());
                    }
                    Ok(Caller::Agent(agent))
                } else if key_id.starts_with(crate::ids::MACHINE) {
                    Err(Error::denied(
                        ErrorCode::Forbidden,
                        "machines cannot use management routes",
                    ))
                } else {
                    Err(unknown())
                }
            }
        }
    }
}

/// What a request's work may do to state, as far as the reads looked up
/// ahead of the writer are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// It may change state: counted as a change.
    Change,
    /// As [`Effect::Change`], and machines waiting for changes hear of its
    /// commit.
    Announced,
    /// It only reads: not counted.
    Query,
}

/// How a request decided ahead fared in its batch.
enum Settled {
    /// Its nonce and audit row are in the batch.
    Committed,
    /// The batch's transaction can no longer be trusted.
    Broken,
    /// To be decided again by the full pipeline.
    Again,
}

/// The nonce of a request whose signature verified, to be recorded even
/// when the request is refused after that.
struct SpentNonce {
    key_id: String,
    nonce: String,
    expires_at: i64,
}

/// Keeps nonces for the largest skew ever in force: when `skew` is larger
/// than the stored one, every recorded nonce is kept that much longer, and
/// requests signed more than the old skew before `now` are refused from now
/// on, since their nonces may already be pruned. Returns the skew nonces
/// are kept for and the oldest timestamp accepted.
///
/// A store from before the skew was stored is taken to have run with the
/// current one (its nonces are still kept the whole skew longer).
fn keep_nonces_for(
    tx: &mut dyn Tx,
    skew: i64,
    now: i64,
) -> Result<(i64, i64), crate::store::Error> {
    let mut number = |key: &str| -> Result<Option<i64>, crate::store::Error> {
        Ok(tx
            .meta(key)?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<i64>().ok()))
    };
    let (stored, mut floor) = (
        number(NONCE_SKEW)?,
        number(TIMESTAMP_FLOOR)?.unwrap_or(i64::MIN),
    );
    let kept = stored.unwrap_or(0);
    if skew > kept {
        tx.extend_nonces(skew - kept)?;
        if stored.is_some() {
            floor = floor.max(now.saturating_sub(kept));
            tx.set_meta(TIMESTAMP_FLOOR, floor.to_string().as_bytes())?;
        }
    }
    let largest = skew.max(kept);
    if stored != Some(largest) {
        tx.set_meta(NONCE_SKEW, largest.to_string().as_bytes())?;
    }
    Ok((largest, floor))
}

/// The key id a request claims, as the audit row's actor until the
/// signature proves it: `unknown` when it is absent or longer than any id
/// the protocol accepts, so a client cannot write what it likes into the log.
/// The audit action of connections refused for the budget.
pub const CONNECTION_REFUSED: &str = "connection.budget";

/// The refusal of a request from a source over its budget.
pub fn rate_limited() -> Error {
    Error::denied(
        ErrorCode::RateLimited,
        format!(
            "too many requests from this address failed before their signature verified; retry in {} s",
            crate::budget::RETRY_AFTER_SECONDS
        ),
    )
}

fn claimed_actor(request: &Request) -> String {
    request
        .key_id
        .as_deref()
        .filter(|k| k.len() <= signet_client::protocol::KEY_ID_MAX_LEN)
        .unwrap_or("unknown")
        .to_owned()
}

/// Audits a denial and, for a policy refusal, queues the `policy.denied`
/// webhook event in the same transaction.
fn record_denial(
    tx: &mut dyn Tx,
    key: &ChainKey,
    now: i64,
    record: &Record,
    code: ErrorCode,
) -> Result<()> {
    audit::append(tx, key, now, record)?;
    if policy::is_policy_denial(code) {
        outbox::enqueue(
            tx,
            now,
            outbox::POLICY_DENIED,
            serde_json::json!({
                "code": code.as_str(),
                "actor": record.actor,
                "action": record.action,
                "target": record.target,
                "source_ip": record.source_ip,
            }),
        )?;
    }
    Ok(())
}

/// The stored text of the caller's public key (none for an enrolling key).
fn stored_key_text(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Machine(m) => Some(&m.public_key),
        Caller::Admin(a) => Some(&a.public_key),
        Caller::Agent(a) => Some(&a.public_key),
        Caller::Enrolling(_) => None,
    }
}

fn caller_key(caller: &Caller) -> Result<PublicKey> {
    match (caller, stored_key_text(caller)) {
        (Caller::Enrolling(key), _) => Ok(*key),
        (_, Some(text)) => PublicKey::parse(text)
            .map_err(|_| crate::store::Error::Corrupt("stored public key".into()).into()),
        (_, None) => Err(crate::store::Error::Corrupt("identity without a key".into()).into()),
    }
}

/// Checks that the verified caller may use a management route.
pub fn authorize(caller: &Caller, scope: Option<Scope>) -> Result<()> {
    match (caller, scope) {
        (Caller::Admin(_), _) => Ok(()),
        (Caller::Agent(agent), Some(scope)) if agent.scopes.contains(&scope) => Ok(()),
        (Caller::Agent(_), Some(scope)) => Err(Error::denied(
            ErrorCode::Forbidden,
            format!("this agent lacks the {scope:?} scope").to_lowercase(),
        )),
        _ => Err(Error::denied(
            ErrorCode::Forbidden,
            "only admins may do this",
        )),
    }
}
