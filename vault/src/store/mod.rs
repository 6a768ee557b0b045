//! Storage behind one trait. A [`Store`] hands out transactions; everything
//! a request decides (nonce, identity, grant, audit row) happens inside one
//! [`Tx`] and commits together or not at all.
//!
//! The interface is synchronous: the vault runs each transaction on a
//! blocking thread, which suits SQLite's single writer and keeps every
//! backend free of async lifetimes inside a transaction.

mod nonces;
mod postgres;
mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::page::{CreatedKey, DelegationKey, GrantKey, NameKey, Page};
use signet_client::api::{
    AccessPolicy, AuditEntry, JobState, KubernetesBinding, MachineKubernetes, NamespaceRef,
    PasswordPolicy, Provider, RotationTarget, Scope, TimeWindow, TokenConstraints,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgresql")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("the database URL is not a valid postgres:// connection string")]
    DatabaseUrl,
    #[error("cannot set up TLS for the database: {0}")]
    DatabaseTls(String),
    #[error("no database connection became free in time")]
    PoolExhausted,
    #[error("cannot start the database connections' runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot prepare data directory {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "data directory {path} is writable by every user (mode {mode:o}) and not owned by the vault's user, so the vault cannot make it private: remove that permission (chmod o-w {path}) or give the vault a directory of its own"
    )]
    UnsafeDataDir { path: std::path::PathBuf, mode: u32 },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a {0} with that name or key already exists")]
    Duplicate(&'static str),
    #[error("the store's lock was poisoned by a panic")]
    Poisoned,
    #[error("cannot sync the database's write-ahead log to disk")]
    Sync(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// Starts a read-write transaction. Dropping it without
    /// [`Tx::commit`] rolls back.
    fn begin(&self) -> Result<Box<dyn Tx + '_>>;

    /// Starts the writer's batch transaction (see [`crate::writer`]). Unlike
    /// [`Store::begin`], it does not count as a change in [`Store::generation`]
    /// by itself: the writer counts the requests of the batch that may
    /// change state. A commit by any other connection since the last batch
    /// (another process on the same file) counts as one.
    fn begin_batch(&self) -> Result<Box<dyn Tx + '_>>;

    /// Starts a read-only snapshot that neither waits for the writer's
    /// transaction nor holds it up (the list routes read through this
    /// after their decision committed). It sees every transaction that
    /// committed before it started.
    fn read(&self) -> Result<Box<dyn Read + '_>>;

    /// The count of changes, for what is looked up ahead of the writer.
    fn generation(&self) -> &Generation;

    /// Makes every batch committed so far durable. A batch's
    /// [`Tx::commit`] makes it visible but need not wait for the disk, so
    /// the writer can run the next batch while this runs on another
    /// thread; every other transaction is durable when its commit returns.
    fn sync(&self) -> Result<()>;
}

/// Counts the transactions that may change state, so that what a request
/// looked up on a snapshot before the writer can be trusted inside the
/// writer's batch exactly when nothing that may change state ran since.
///
/// A change is `started` before it can write anything and `settled` once
/// its transaction committed or rolled back. A look-ahead takes
/// [`Generation::quiet`] *before* opening its snapshot: when every change
/// started so far has settled, the snapshot sees all of them. In the writer,
/// [`Generation::unchanged_since`] then says whether any change started
/// since; if one did, the request is decided again from the transaction
/// itself. Counting too much only costs speed, never exactness.
#[derive(Debug, Default)]
pub struct Generation {
    started: AtomicU64,
    settled: AtomicU64,
}

impl Generation {
    /// A change is about to write.
    pub fn start(&self) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }

    /// A change [started](Self::start) has committed or rolled back.
    pub fn settle(&self) {
        self.settled.fetch_add(1, Ordering::SeqCst);
    }

    /// The current count when no change is in flight (every one started has
    /// settled), to be taken before a look-ahead opens its snapshot.
    pub fn quiet(&self) -> Option<u64> {
        let started = self.started.load(Ordering::SeqCst);
        (self.settled.load(Ordering::SeqCst) == started).then_some(started)
    }

    /// Whether no change started since [`Generation::quiet`] returned `seen`.
    pub fn unchanged_since(&self, seen: u64) -> bool {
        self.started.load(Ordering::SeqCst) == seen
    }
}

/// Identity classes, each in its own table.
#[derive(Clone, Debug)]
pub struct Admin {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub public_key: String,
    pub scopes: Vec<Scope>,
    pub created_at: i64,
    pub disabled_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub token_id: Option<String>,
    pub public_key: String,
    pub hostname: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub disabled_at: Option<i64>,
    /// Restrictions from a bootstrap token, checked on every request.
    pub restrictions: Option<MachineRestrictions>,
    /// Where the machine runs, when it is bound to a cluster namespace.
    pub kubernetes: Option<MachineKubernetes>,
}

/// Per-machine restrictions copied from a temporary bootstrap token.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineRestrictions {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub country_allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

#[derive(Clone, Debug)]
pub struct BootstrapToken {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
    pub locked_at: Option<i64>,
    pub lock_reason: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Secret {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub live_version: u32,
    pub created_at: i64,
    pub policy: Option<AccessPolicy>,
}

#[derive(Clone, Debug)]
pub struct SecretVersion {
    pub secret_id: String,
    pub version: u32,
    pub wrapped_data_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub field_names: Option<Vec<String>>,
    pub created_at: i64,
    pub created_by: String,
}

#[derive(Clone, Debug)]
pub struct EnrollmentToken {
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub secret_hash: Vec<u8>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: i64,
    pub machine_lifetime: i64,
    pub created_at: i64,
    pub created_by: String,
    pub revoked_at: Option<i64>,
    pub constraints: TokenConstraints,
    /// The cluster namespace the token (or attested policy) serves.
    pub kubernetes: Option<KubernetesBinding>,
    /// The first token of a line of renewals; they share one use count.
    pub lineage: String,
}

/// A cluster whose pods may enroll by attestation.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub name: String,
    pub api_url: String,
    pub ca_pem: String,
    pub audience: String,
    /// A TokenReview bearer token sealed under the root key; `None` uses the
    /// vault's own service-account token file.
    pub sealed_reviewer_token: Option<Vec<u8>>,
    pub created_at: i64,
    pub created_by: String,
}

/// What an agent may hand out: one secret (optionally some fields) for one
/// cluster namespace, or for machines outside Kubernetes (`scope: None`).
#[derive(Clone, Debug)]
pub struct Delegation {
    pub id: String,
    pub agent_id: String,
    pub secret_id: String,
    pub fields: Option<Vec<String>>,
    pub scope: Option<NamespaceRef>,
    pub created_at: i64,
    pub created_by: String,
}

/// A delegation joined with the names of what it points at.
#[derive(Clone, Debug)]
pub struct DelegationDetail {
    pub delegation: Delegation,
    pub project_id: String,
    pub project: String,
    pub secret: String,
}

/// A request for one co-signed read of a secret by a machine.
#[derive(Clone, Debug)]
pub struct Cosign {
    pub id: String,
    pub secret_id: String,
    pub machine_id: String,
    pub requested_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub approved_by: Option<String>,
    pub approved_at: Option<i64>,
    pub consumed_at: Option<i64>,
}

/// An outgoing webhook; its HMAC key is sealed under the root key.
#[derive(Clone, Debug)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub sealed_secret: Vec<u8>,
    pub created_at: i64,
    pub created_by: String,
}

/// One queued event for one webhook.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    pub event: String,
    pub body: String,
    pub created_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Counts of a webhook's deliveries by state.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// How one delivery attempt ended.
#[derive(Clone, Debug)]
pub enum Attempt {
    Delivered,
    /// Try again at `next_attempt_at`.
    Retry {
        next_attempt_at: i64,
        error: String,
    },
    /// Give up.
    Failed {
        error: String,
    },
}

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grantee {
    Machine(String),
    Token(String),
}

#[derive(Clone, Debug)]
pub struct Grant {
    pub id: String,
    pub grantee: Grantee,
    pub secret_id: String,
    pub fields: Option<Vec<String>>,
    pub created_at: i64,
}

/// A grant joined with the names of what it points at.
#[derive(Clone, Debug)]
pub struct GrantDetail {
    pub grant: Grant,
    pub project: String,
    pub secret: String,
    pub live_version: u32,
}

/// A co-sign request joined with the names of its secret.
#[derive(Clone, Debug)]
pub struct CosignDetail {
    pub cosign: Cosign,
    pub project: String,
    pub secret: String,
}

/// A rotation config: how one secret is rotated, and by which agent.
#[derive(Clone, Debug)]
pub struct RotationConfig {
    pub id: String,
    pub secret_id: String,
    pub provider: Provider,
    pub target: RotationTarget,
    pub admin_secret_id: String,
    pub agent_machine_id: String,
    pub interval_seconds: Option<i64>,
    pub next_due_at: Option<i64>,
    pub policy: PasswordPolicy,
    pub lease_seconds: i64,
    pub grace_seconds: i64,
    pub created_at: i64,
    pub created_by: String,
}

/// A rotation config with the names a list shows it by.
#[derive(Clone, Debug)]
pub struct ListedRotation {
    pub config: RotationConfig,
    pub project: String,
    pub secret: String,
    pub admin_secret: String,
}

/// One rotation of a secret. `sealed_credential` holds the new credential,
/// sealed under the root key, until it is promoted or discarded.
#[derive(Clone, Debug)]
pub struct RotationJob {
    pub id: String,
    pub config_id: String,
    pub secret_id: String,
    pub state: JobState,
    pub sealed_credential: Option<Vec<u8>>,
    pub from_version: u32,
    pub to_version: Option<u32>,
    pub created_at: i64,
    pub created_by: String,
    pub lease_until: Option<i64>,
    pub retire_after: Option<i64>,
    pub finished_at: Option<i64>,
    pub reason: Option<String>,
}

/// A read-only snapshot: the pages of the list routes, each read in the
/// order of its sort key (see [`crate::page`]) with at most
/// [`Page::fetch`] rows, names joined in the same query.
pub trait Read {
    /// Machines by `(created_at, id)`, each with its project's name.
    fn machines_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(Machine, String)>>;
    /// Enrollment tokens by `(created_at, id)`, each with its project's name.
    fn tokens_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(EnrollmentToken, String)>>;
    fn projects_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Project>>;
    fn secrets_page(&mut self, project_id: &str, page: &Page<NameKey>) -> Result<Vec<Secret>>;
    /// Every version of each of `secret_ids`, by secret then version.
    fn versions_of(&mut self, secret_ids: &[&str]) -> Result<Vec<SecretVersion>>;
    fn clusters_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Cluster>>;
    /// Delegations (optionally one agent's) by `(agent, project, secret, id)`.
    fn delegations_page(
        &mut self,
        agent_id: Option<&str>,
        page: &Page<DelegationKey>,
    ) -> Result<Vec<DelegationDetail>>;
    /// Grants (optionally one grantee's) by `(project, secret, id)`.
    fn grants_page(
        &mut self,
        grantee: Option<&Grantee>,
        page: &Page<GrantKey>,
    ) -> Result<Vec<GrantDetail>>;
    /// Co-sign requests not consumed and not expired at `now`.
    fn cosigns_page(&mut self, now: i64, page: &Page<CreatedKey>) -> Result<Vec<CosignDetail>>;
    fn webhooks_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<Webhook>>;
    /// Rotation configs by `(created_at, id)`, each with the names it is
    /// shown with.
    fn rotations_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<ListedRotation>>;
    /// Delivery counts of each of `webhook_ids` that has deliveries.
    fn delivery_counts_of(&mut self, webhook_ids: &[&str])
    -> Result<Vec<(String, DeliveryCounts)>>;
    /// Audit entries with `after < seq <= through`, by `seq`.
    fn audit_through(&mut self, after: u64, through: u64, limit: u32) -> Result<Vec<AuditEntry>>;
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    /// A machine's grants with each secret's live version, by project,
    /// secret and id.
    fn machine_grants(&mut self, machine_id: &str) -> Result<Vec<GrantDetail>>;
    /// What a read of `project/secret` by machine `machine_id` looks up
    /// (version `version`, or the live one), when all of it exists.
    fn read_view(
        &mut self,
        machine_id: &str,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> Result<Option<ReadView>>;
}

/// Where a look-ahead finds what a read depends on: a snapshot, or views
/// remembered from one taken at the same [`Generation`].
pub trait Lookup {
    /// As [`Read::read_view`].
    fn read_view(
        &mut self,
        machine_id: &str,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> Result<Option<std::sync::Arc<ReadView>>>;
}

/// Everything a machine's read of a secret depends on in the store, as one
/// snapshot saw it.
#[derive(Clone, Debug)]
pub struct ReadView {
    pub machine: Machine,
    pub project: Project,
    pub secret: Secret,
    pub grant: Grant,
    pub version: SecretVersion,
}

/// One transaction. Methods that change data say so in their name.
pub trait Tx {
    fn commit(self: Box<Self>) -> Result<()>;

    /// Opens the savepoint of one request inside a batch.
    fn savepoint(&mut self) -> Result<()>;
    /// Undoes everything since [`Tx::savepoint`] (the savepoint stays open).
    fn rollback_to_savepoint(&mut self) -> Result<()>;
    /// Closes the savepoint, keeping its work in the transaction.
    fn release_savepoint(&mut self) -> Result<()>;

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;

    /// Records `(key_id, nonce)`; false when it was already recorded.
    fn record_nonce(&mut self, key_id: &str, nonce: &str, expires_at: i64) -> Result<bool>;
    /// Forgets nonces whose window has passed; returns how many.
    fn prune_nonces(&mut self, now: i64) -> Result<u64>;
    /// Keeps every recorded nonce `seconds` longer (the skew was raised).
    fn extend_nonces(&mut self, seconds: i64) -> Result<u64>;

    fn insert_admin(&mut self, admin: &Admin) -> Result<()>;
    fn admin(&mut self, id: &str) -> Result<Option<Admin>>;
    fn admin_count(&mut self) -> Result<u64>;
    fn insert_bootstrap_token(&mut self, token: &BootstrapToken) -> Result<()>;
    fn bootstrap_token(&mut self, id: &str) -> Result<Option<BootstrapToken>>;
    /// Marks a bootstrap token used; false when it was used already.
    fn use_bootstrap_token(&mut self, id: &str, now: i64) -> Result<bool>;

    fn insert_agent(&mut self, agent: &Agent) -> Result<()>;
    fn agent(&mut self, id: &str) -> Result<Option<Agent>>;

    fn insert_machine(&mut self, machine: &Machine) -> Result<()>;
    fn machine(&mut self, id: &str) -> Result<Option<Machine>>;
    fn machines(&mut self) -> Result<Vec<Machine>>;
    /// Deletes a machine and its grants; false when there was none.
    fn delete_machine(&mut self, id: &str) -> Result<bool>;

    fn insert_project(&mut self, project: &Project) -> Result<()>;
    fn project_by_name(&mut self, name: &str) -> Result<Option<Project>>;
    fn project(&mut self, id: &str) -> Result<Option<Project>>;

    fn insert_secret(&mut self, secret: &Secret) -> Result<()>;
    fn secret_by_name(&mut self, project_id: &str, name: &str) -> Result<Option<Secret>>;
    fn secret(&mut self, id: &str) -> Result<Option<Secret>>;
    fn set_live_version(&mut self, secret_id: &str, version: u32) -> Result<()>;
    fn delete_secret(&mut self, id: &str) -> Result<bool>;
    fn insert_version(&mut self, version: &SecretVersion) -> Result<()>;
    fn version(&mut self, secret_id: &str, version: u32) -> Result<Option<SecretVersion>>;
    fn versions(&mut self, secret_id: &str) -> Result<Vec<SecretVersion>>;

    fn insert_token(&mut self, token: &EnrollmentToken) -> Result<()>;
    fn token(&mut self, id: &str) -> Result<Option<EnrollmentToken>>;
    /// Counts one use on the token's whole lineage if it has uses left;
    /// false when it has none.
    fn use_token(&mut self, id: &str) -> Result<bool>;
    fn revoke_token(&mut self, id: &str, now: i64) -> Result<bool>;
    /// Moves a token's expiry (never later than it was).
    fn shorten_token(&mut self, id: &str, expires_at: i64) -> Result<bool>;
    /// The newest live attested policy `policy` of `cluster`/`namespace`.
    fn policy(
        &mut self,
        cluster: &str,
        namespace: &str,
        policy: &str,
        now: i64,
    ) -> Result<Option<EnrollmentToken>>;
    /// Machines attested as running in pod `pod_uid` of `cluster`.
    fn machines_of_pod(&mut self, cluster: &str, pod_uid: &str) -> Result<Vec<Machine>>;

    fn insert_cluster(&mut self, cluster: &Cluster) -> Result<()>;
    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>>;
    fn delete_cluster(&mut self, name: &str) -> Result<bool>;

    fn insert_delegation(&mut self, delegation: &Delegation) -> Result<()>;
    /// The delegations of `agent_id` on `secret_id`, whatever their scope.
    fn delegations_on(&mut self, agent_id: &str, secret_id: &str) -> Result<Vec<Delegation>>;
    /// Whether `agent_id` holds any delegation in `project_id` for `scope`.
    fn delegated_in_project(
        &mut self,
        agent_id: &str,
        project_id: &str,
        scope: Option<&NamespaceRef>,
    ) -> Result<bool>;
    fn delete_delegation(&mut self, id: &str) -> Result<bool>;

    fn insert_grant(&mut self, grant: &Grant) -> Result<()>;
    fn grants(&mut self, grantee: Option<&Grantee>) -> Result<Vec<GrantDetail>>;
    /// The grant of `machine_id` on `secret_id`, if any.
    fn machine_grant(&mut self, machine_id: &str, secret_id: &str) -> Result<Option<Grant>>;
    fn delete_grant(&mut self, id: &str) -> Result<bool>;

    /// The newest audit entry's `(seq, hash)`.
    fn audit_head(&mut self) -> Result<Option<(u64, String)>>;
    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    fn audit(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Deletes entries older than `before`, always keeping the newest one;
    /// returns the last deleted `(seq, hash)`, if any.
    fn prune_audit(&mut self, before: i64) -> Result<Option<(u64, String)>>;

    // Machine lifecycle.
    fn set_machine_disabled(&mut self, id: &str, disabled_at: Option<i64>) -> Result<bool>;
    fn set_machine_expiry(&mut self, id: &str, expires_at: i64) -> Result<bool>;
    /// Machines whose expiry is at or before `before`.
    fn machines_expired_before(&mut self, before: i64) -> Result<Vec<Machine>>;

    // Policies and canaries.
    fn set_secret_policy(&mut self, secret_id: &str, policy: Option<&AccessPolicy>) -> Result<()>;
    /// Locks a project; false when it was locked already.
    fn lock_project(&mut self, id: &str, now: i64, reason: &str) -> Result<bool>;
    /// Unlocks a project; false when it was not locked.
    fn unlock_project(&mut self, id: &str) -> Result<bool>;
    /// Counts one read of `secret_id` on `day` if fewer than `cap` were
    /// counted; false when the cap is reached.
    fn count_read(&mut self, secret_id: &str, day: &str, cap: u32) -> Result<bool>;
    /// Forgets the read counts of days before `day` (`YYYY-MM-DD`).
    fn prune_read_counts(&mut self, day: &str) -> Result<u64>;

    // Co-sign.
    fn insert_cosign(&mut self, cosign: &Cosign) -> Result<()>;
    fn cosign(&mut self, id: &str) -> Result<Option<Cosign>>;
    /// Approves a pending, unexpired request by someone other than its
    /// requester; false when it is not one.
    fn approve_cosign(&mut self, id: &str, by: &str, now: i64, expires_at: i64) -> Result<bool>;
    /// Consumes one approved, unexpired request of this machine on this
    /// secret, approved by someone other than its requester; false when
    /// there is none.
    fn consume_cosign(&mut self, secret_id: &str, machine_id: &str, now: i64) -> Result<bool>;
    /// Deletes co-sign requests used, or expired, before `before`; returns
    /// how many.
    fn prune_cosigns(&mut self, before: i64) -> Result<u64>;

    // Webhooks and their outbox.
    fn insert_webhook(&mut self, webhook: &Webhook) -> Result<()>;
    fn webhook(&mut self, id: &str) -> Result<Option<Webhook>>;
    fn webhooks(&mut self) -> Result<Vec<Webhook>>;
    fn delete_webhook(&mut self, id: &str) -> Result<bool>;
    fn delivery_counts(&mut self, webhook_id: &str) -> Result<DeliveryCounts>;
    fn enqueue_delivery(
        &mut self,
        webhook_id: &str,
        event: &str,
        body: &str,
        now: i64,
    ) -> Result<()>;
    /// Due deliveries, leased until `lease_until` so a concurrent worker
    /// skips them.
    fn claim_deliveries(&mut self, now: i64, lease_until: i64, limit: u32)
    -> Result<Vec<Delivery>>;
    fn finish_delivery(&mut self, id: i64, attempt: &Attempt, now: i64) -> Result<()>;
    fn deliveries(&mut self, webhook_id: &str) -> Result<Vec<Delivery>>;
    /// Deletes deliveries delivered or given up before `before`; returns
    /// how many.
    fn prune_deliveries(&mut self, before: i64) -> Result<u64>;

    // Rotation.
    fn insert_rotation(&mut self, config: &RotationConfig) -> Result<()>;
    fn rotation(&mut self, id: &str) -> Result<Option<RotationConfig>>;
    /// Every config, oldest first.
    fn rotations(&mut self) -> Result<Vec<RotationConfig>>;
    /// Configs whose schedule is due at `now`.
    fn rotations_due(&mut self, now: i64) -> Result<Vec<RotationConfig>>;
    fn set_rotation_due(&mut self, id: &str, next_due_at: Option<i64>) -> Result<()>;
    /// Inserts a job; [`Error::Duplicate`] when a job of the same secret is
    /// still running (pending, claimed or promoted).
    fn insert_rotation_job(&mut self, job: &RotationJob) -> Result<()>;
    fn rotation_job(&mut self, id: &str) -> Result<Option<RotationJob>>;
    /// Writes the job's state, credential, versions, times and reason.
    fn update_rotation_job(&mut self, job: &RotationJob) -> Result<()>;
    /// A config's jobs, newest first, at most `limit`.
    fn rotation_jobs(&mut self, config_id: &str, limit: u32) -> Result<Vec<RotationJob>>;
    /// Claimed jobs whose lease ended at or before `now`.
    fn rotation_jobs_expired(&mut self, now: i64) -> Result<Vec<RotationJob>>;
    /// The oldest job agent `machine_id` may claim at `now`: a pending one,
    /// or a promoted one past its grace whose retire lease is not held.
    fn rotation_job_to_claim(&mut self, machine_id: &str, now: i64) -> Result<Option<RotationJob>>;
}
