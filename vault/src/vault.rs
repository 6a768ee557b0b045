//! The request pipeline. Every signed request passes the checks of
//! docs/protocol.md in order, then runs its operation, and the decision is
//! audited: an allowed one in the very transaction that did the work, a
//! denied one in that same transaction after its work was rolled back to
//! the request's savepoint (its nonce is spent either way).
//!
//! The expensive stateless part, verifying the Ed25519 signature, runs on
//! the request's own task, in parallel with other requests, against the
//! identity's public key as last seen (an id never changes its key). The
//! stateful part runs on the [`crate::writer`] thread, many requests per
//! transaction (group commit), where the identity is looked up again, so a
//! revoked or disabled identity is refused whatever was verified before.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use signet_client::api::{ErrorCode, Scope};
use signet_client::protocol::{ENROLL_KEY_ID, ParsedHeaders, PublicKey};

use crate::audit::{self, Record};
use crate::clock::Clock;
use crate::crypto::RootKey;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::outbox;
use crate::policy;
pub use crate::request::{Audience, Caller, Ctx, Request};
pub use crate::settings::{Config, Settings};
use crate::store::{Store, Tx};
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

const ROOT_CHECK: &str = "root_key_check";

/// The vault: store, root key, clock. Shared by every request.
pub struct Vault {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) root: RootKey,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: Config,
    pub(crate) settings: Settings,
    pub(crate) metrics: Metrics,
    writer: Writer,
    /// Public keys of identities seen by the writer, by id, for verifying
    /// signatures before the writer. Ids are never reused and an identity's
    /// key never changes, so an entry is never wrong, only possibly stale
    /// about whether the identity still exists, which the writer checks.
    keys: RwLock<HashMap<String, PublicKey>>,
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
        {
            let mut tx = store.begin()?;
            match tx.meta(ROOT_CHECK)? {
                Some(check) if root.matches(&check) => {}
                Some(_) => return Err(OpenError::WrongRootKey),
                None => {
                    tx.set_meta(ROOT_CHECK, &root.check_value()?)?;
                    tx.commit()?;
                }
            }
        }
        let writer = Writer::start(Arc::clone(&store)).map_err(OpenError::Writer)?;
        Ok(Self {
            store,
            root,
            clock,
            config,
            settings: Settings::default(),
            metrics: Metrics::default(),
            writer,
            keys: RwLock::new(HashMap::new()),
        })
    }

    /// Replaces the access settings (retention, webhook allowlist).
    pub fn with_settings(mut self, settings: Settings) -> Self {
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

    pub fn now(&self) -> i64 {
        self.clock.now()
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
        let verified = self.verify_ahead(&request, audience);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let vault = Arc::clone(self);
        self.writer
            .submit(Box::new(move |tx: &mut dyn Tx| {
                let (result, broken) =
                    vault.run_in_batch(tx, request, action, target, audience, verified, op);
                Done {
                    broken,
                    finish: Box::new(move |committed| {
                        let _ = answer.send(if committed {
                            result
                        } else {
                            Err(Error::Uncommitted)
                        });
                    }),
                }
            }))
            .map_err(|_| Error::Uncommitted)?;
        answered.await.map_err(|_| Error::Uncommitted)?
    }

    /// The writer's counters (queue, batches, requests).
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
        let result = self.verify_and_run(
            tx,
            now,
            &request,
            audience,
            verified,
            &mut record,
            &mut spent,
            op,
        );
        let settled = match &result {
            Ok(_) => {
                self.metrics.decision(action, "allow", None);
                tx.release_savepoint()
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
                            record_denial(tx, now, &record, code)
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

    /// Denies a request that never reached the pipeline (for example a body
    /// over the size limit), with an audit entry.
    pub fn deny_early(&self, request: &Request, action: &str, error: &Error) {
        let now = self.clock.now();
        let code = error.code();
        self.metrics.decision(action, "deny", Some(code));
        let record = Record {
            actor: claimed_actor(request),
            action: action.to_owned(),
            target: request.target.chars().take(TARGET_MAX).collect(),
            allowed: false,
            reason: format!("{}: {}", code.as_str(), error.public_message()),
            source_ip: request.source_ip.clone(),
            committed: false,
        };
        if let Err(audit_error) = self.with_tx(|tx, _| Ok(audit::append(tx, now, &record)?)) {
            tracing::error!(error = ?audit_error, "cannot audit a denial");
        }
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
        spent: &mut Option<SpentNonce>,
        op: impl FnOnce(&mut Ctx<'_>, &mut dyn Tx) -> Result<T>,
    ) -> Result<T> {
        // 1. Headers present and well formed.
        let headers = ParsedHeaders::parse(
            request.key_id.as_deref(),
            request.timestamp.as_deref(),
            request.nonce.as_deref(),
            request.signature.as_deref(),
        )
        .map_err(|e| Error::denied(ErrorCode::BadSignatureHeaders, e.to_string()))?;

        // 2. Timestamp within the skew window.
        let timestamp = i64::try_from(headers.timestamp).unwrap_or(i64::MAX);
        if now.abs_diff(timestamp) > self.config.skew_seconds.unsigned_abs() {
            return Err(Error::denied(
                ErrorCode::TimestampSkew,
                format!(
                    "timestamp is more than {} s away from the vault's clock",
                    self.config.skew_seconds
                ),
            ));
        }

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

        // 5. The nonce is fresh; recorded in this transaction.
        let nonce_expiry = timestamp.saturating_add(self.config.skew_seconds) + 1;
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
            policy::check_machine(machine, now, &request.source_ip)?;
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
                audit::append(tx, now, ctx.audit)?;
                Ok(value)
            }
            Err(error) if ctx.commit_denial => {
                let code = error.code();
                let record = ctx.audit;
                record.allowed = false;
                record.reason = format!("{}: {}", code.as_str(), error.public_message());
                record_denial(tx, now, record, code)?;
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

/// Audits a denial and, for a policy refusal, queues the `policy.denied`
/// webhook event in the same transaction.
/// The nonce of a request whose signature verified, to be recorded even
/// when the request is refused after that.
struct SpentNonce {
    key_id: String,
    nonce: String,
    expires_at: i64,
}

/// Longest request target kept in an audit row.
const TARGET_MAX: usize = 256;

/// The key id a request claims, as the audit row's actor until the
/// signature proves it: `unknown` when it is absent or longer than any id
/// the protocol accepts, so a client cannot write what it likes into the log.
fn claimed_actor(request: &Request) -> String {
    request
        .key_id
        .as_deref()
        .filter(|k| k.len() <= signet_client::protocol::KEY_ID_MAX_LEN)
        .unwrap_or("unknown")
        .to_owned()
}

fn record_denial(tx: &mut dyn Tx, now: i64, record: &Record, code: ErrorCode) -> Result<()> {
    audit::append(tx, now, record)?;
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
