//! PostgreSQL, for several vault replicas on one database, every one of
//! them serving every request.
//!
//! Every rule that must be exact (a nonce used once, token uses, daily
//! caps, a canary's lock, the audit chain) commits in the request's own
//! transaction, so replicas need no leader: they need their writing
//! transactions to run one after another, as SQLite's `BEGIN IMMEDIATE`
//! makes them run in one process. Each writing transaction therefore starts
//! by locking the one row of `signet_state` (`SELECT ... FOR UPDATE`) and
//! runs at READ COMMITTED: every statement after the lock sees every commit
//! before it, and no other replica commits until it ends. The audit chain's
//! order is thus the commit order, with no fork and no gap, whichever
//! replica wrote each entry; a revoked machine is refused by the next
//! transaction of every replica, since identities are looked up in the
//! transaction. The writers of several replicas still batch their requests
//! (group commit), so one lock is taken per batch, not per request.
//!
//! A read looked up ahead of the writer (see [`crate::store::Generation`])
//! must not be trusted when another replica changed state after its
//! snapshot. A transaction that changed anything beyond nonces and audit
//! rows bumps `signet_state.changes` before it commits; a batch reads it
//! under the lock, and when it moved since this process last looked, counts
//! a change in [`Store::generation`], so every read looked up before is
//! decided again in the batch.

mod pool;

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};

use signet_client::api::{AuditEntry, KubernetesBinding, MachineKubernetes, NamespaceRef, Scope};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use self::pool::{Pool, Pooled};
use super::*;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_access.sql"),
    include_str!("../../migrations/postgres/0003_attestation.sql"),
    include_str!("../../migrations/postgres/0004_keyset_indexes.sql"),
    include_str!("../../migrations/postgres/0005_nonce_log.sql"),
    include_str!("../../migrations/postgres/0006_rotation.sql"),
];

/// The session lock replicas take to migrate one at a time.
const MIGRATION_LOCK: i64 = 0x5349_474e_4554; // "SIGNET"

/// Connections per process: the writer's, the list routes' snapshots, the
/// worker's and the readiness probe's.
const CONNECTIONS: usize = 8;

/// Times a transaction is started again when its connection turned out
/// closed (the server restarted since it was last used).
const BEGIN_ATTEMPTS: usize = 3;

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// The PostgreSQL backend.
pub struct PostgresStore {
    pool: Pool,
    generation: Generation,
    /// `signet_state.changes` as this process last saw or wrote it.
    changes: AtomicI64,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/db?sslmode=...`)
    /// and runs pending migrations. `ca_file` adds trusted roots for TLS.
    pub fn connect(url: &str, ca_file: Option<&Path>) -> Result<Self> {
        let pool = Pool::new(url, ca_file, CONNECTIONS)?;
        migrate(&pool)?;
        let store = Self {
            pool,
            generation: Generation::default(),
            changes: AtomicI64::new(0),
        };
        {
            let mut conn = store.pool.get()?;
            let changes: i64 = conn
                .query_opt("SELECT changes FROM signet_state WHERE id = 1", &[])?
                .ok_or_else(|| Error::Corrupt("signet_state has no row".into()))?
                .try_get(0)?;
            store.changes.store(changes, Ordering::SeqCst);
        }
        Ok(store)
    }

    /// Creates schema `name` if missing, for tests that give each vault a
    /// schema of its own on one database (with `options=-c search_path=name`
    /// in the URL).
    #[doc(hidden)]
    pub fn create_schema(url: &str, name: &str) -> Result<()> {
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(Error::Corrupt("a schema name of [a-z0-9_] only".into()));
        }
        let pool = Pool::new(url, None, 1)?;
        pool.connect()?
            .batch(&format!("CREATE SCHEMA IF NOT EXISTS {name}"))?;
        Ok(())
    }

    /// A connection in a transaction: `begin` is its first statement. A
    /// pooled connection the server closed meanwhile is dropped and another
    /// one tried.
    fn start(&self, begin: &str) -> Result<Pooled<'_>> {
        let mut last = None;
        for _ in 0..BEGIN_ATTEMPTS {
            let mut conn = self.pool.get()?;
            match conn.batch(begin) {
                Ok(()) => return Ok(conn),
                Err(error) if error.is_closed() || error.as_db_error().is_none() => {
                    conn.broken = true;
                    last = Some(error);
                }
                Err(error) => {
                    conn.broken = true;
                    return Err(error.into());
                }
            }
        }
        Err(last.map_or(Error::PoolExhausted, Error::from))
    }

    /// A writing transaction, holding the write lock: returns it and the
    /// change count it read under the lock. Waiting for the lock may time
    /// out (another replica stalled) or, in theory, deadlock: both are
    /// tried again, since nothing ran yet.
    fn begin_writing<'a>(&'a self, settles: Option<&'a Generation>) -> Result<(PgTx<'a>, i64)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conn = self.start("BEGIN ISOLATION LEVEL READ COMMITTED")?;
            let mut tx = PgTx {
                conn,
                finished: false,
                settles: None,
                store: self,
                writes: true,
                dirty: false,
            };
            match tx.one(
                "SELECT changes FROM signet_state WHERE id = 1 FOR UPDATE",
                &[],
                |r| Ok(r.try_get::<_, i64>(0)?),
            ) {
                Ok(Some(changes)) => {
                    tx.settles = settles;
                    return Ok((tx, changes));
                }
                Ok(None) => return Err(Error::Corrupt("signet_state has no row".into())),
                Err(error) if attempt < BEGIN_ATTEMPTS && is_transient(&error) => {
                    tracing::warn!(
                        attempt,
                        "the database's write lock was not granted; trying again"
                    );
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Whether a fresh attempt at the statement may succeed: a serialization
/// failure, a deadlock, or a lock wait that timed out.
fn is_transient(error: &Error) -> bool {
    matches!(error, Error::Postgres(e) if e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
    }))
}

fn migrate(pool: &Pool) -> Result<()> {
    let mut conn = pool.connect()?;
    // Replicas starting together migrate one after another.
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = (|| -> Result<()> {
        conn.batch(
            "CREATE TABLE IF NOT EXISTS signet_migrations (
                 version BIGINT PRIMARY KEY,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )?;
        let current: i64 = conn
            .query_opt(
                "SELECT COALESCE(MAX(version), 0) FROM signet_migrations",
                &[],
            )?
            .ok_or_else(|| Error::Corrupt("no migration count".into()))?
            .try_get(0)?;
        let current = usize::try_from(current).unwrap_or(usize::MAX);
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
            let version = index + 1;
            conn.batch(&format!(
                "BEGIN; {sql}; INSERT INTO signet_migrations (version) VALUES ({version}); COMMIT;"
            ))
            .inspect_err(|_| {
                let _ = conn.batch("ROLLBACK");
            })?;
        }
        Ok(())
    })();
    // Closing the session releases the lock in any case.
    let _ = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result
}

impl Store for PostgresStore {
    fn begin(&self) -> Result<Box<dyn Tx + '_>> {
        // Counted before it can write; settled when the transaction ends.
        self.generation.start();
        match self.begin_writing(Some(&self.generation)) {
            Ok((tx, _)) => Ok(Box::new(tx)),
            Err(error) => {
                self.generation.settle();
                Err(error)
            }
        }
    }

    fn begin_batch(&self) -> Result<Box<dyn Tx + '_>> {
        let (tx, changes) = self.begin_writing(None)?;
        // Holding the write lock now: a change committed by another replica
        // either shows here or comes after this batch.
        if self.changes.swap(changes, Ordering::SeqCst) != changes {
            self.generation.start();
            self.generation.settle();
        }
        Ok(Box::new(tx))
    }

    fn read(&self) -> Result<Box<dyn Read + '_>> {
        let conn = self.start("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
        Ok(Box::new(PgTx {
            conn,
            finished: false,
            settles: None,
            store: self,
            writes: false,
            dirty: false,
        }))
    }

    fn generation(&self) -> &Generation {
        &self.generation
    }

    /// A PostgreSQL commit returns once the server has it on disk.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

struct PgTx<'a> {
    conn: Pooled<'a>,
    finished: bool,
    /// Settled once this transaction ended (see [`Store::begin`]).
    settles: Option<&'a Generation>,
    store: &'a PostgresStore,
    /// Holds the write lock (not a read-only snapshot).
    writes: bool,
    /// Changed something besides nonces and audit rows.
    dirty: bool,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.finished && self.conn.batch("ROLLBACK").is_err() {
            // A connection that cannot roll back is not given back.
            self.conn.broken = true;
        }
        if let Some(generation) = self.settles {
            generation.settle();
        }
    }
}

/// Whether `error` is a constraint violation (SQLSTATE class 23).
fn integrity_violation(error: &tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| code.code().starts_with("23"))
}

fn json_list(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()))
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| Error::Corrupt(e.to_string())))
        .transpose()
}

fn int(value: u32) -> i64 {
    i64::from(value)
}

fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u32_at(r: &Row, i: usize) -> Result<u32> {
    let v: i64 = r.try_get(i)?;
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("column {i} out of range")))
}

fn opt_u32_at(r: &Row, i: usize) -> Result<Option<u32>> {
    let v: Option<i64> = r.try_get(i)?;
    v.map(|v| u32::try_from(v).map_err(|_| Error::Corrupt(format!("column {i} out of range"))))
        .transpose()
}

fn u64_at(r: &Row, i: usize) -> Result<u64> {
    let v: i64 = r.try_get(i)?;
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("column {i} out of range")))
}

fn admin_row(r: &Row) -> Result<Admin> {
    Ok(Admin {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        public_key: r.try_get(2)?,
        created_at: r.try_get(3)?,
        disabled_at: r.try_get(4)?,
    })
}

fn agent_row(r: &Row) -> Result<Agent> {
    let scopes: Vec<Scope> = parse_json(Some(r.try_get(3)?))?.unwrap_or_default();
    Ok(Agent {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        public_key: r.try_get(2)?,
        scopes,
        created_at: r.try_get(4)?,
        disabled_at: r.try_get(5)?,
    })
}

const MACHINE_COLS: &str = "id, name, project_id, token_id, public_key, hostname, metadata, created_at, expires_at, disabled_at, restrictions, k8s_cluster, k8s_namespace, k8s_service_account, k8s_pod_name, k8s_pod_uid, k8s_attested";

fn machine_kubernetes(r: &Row, first: usize) -> Result<Option<MachineKubernetes>> {
    let cluster: Option<String> = r.try_get(first)?;
    let namespace: Option<String> = r.try_get(first + 1)?;
    let (Some(cluster), Some(namespace)) = (cluster, namespace) else {
        return Ok(None);
    };
    Ok(Some(MachineKubernetes {
        cluster,
        namespace,
        service_account: r.try_get(first + 2)?,
        pod_name: r.try_get(first + 3)?,
        pod_uid: r.try_get(first + 4)?,
        attested: r.try_get::<_, Option<bool>>(first + 5)?.unwrap_or(false),
    }))
}

fn machine_row(r: &Row) -> Result<Machine> {
    Ok(Machine {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        project_id: r.try_get(2)?,
        token_id: r.try_get(3)?,
        public_key: r.try_get(4)?,
        hostname: r.try_get(5)?,
        metadata: parse_json(Some(r.try_get(6)?))?.unwrap_or_default(),
        created_at: r.try_get(7)?,
        expires_at: r.try_get(8)?,
        disabled_at: r.try_get(9)?,
        restrictions: parse_json(r.try_get(10)?)?,
        kubernetes: machine_kubernetes(r, 11)?,
    })
}

const PROJECT_COLS: &str = "id, name, wrapped_key, created_at, locked_at, lock_reason";

fn project_row(r: &Row) -> Result<Project> {
    Ok(Project {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        wrapped_key: r.try_get(2)?,
        created_at: r.try_get(3)?,
        locked_at: r.try_get(4)?,
        lock_reason: r.try_get(5)?,
    })
}

const SECRET_COLS: &str = "id, project_id, name, live_version, created_at, policy";

fn secret_row(r: &Row) -> Result<Secret> {
    Ok(Secret {
        id: r.try_get(0)?,
        project_id: r.try_get(1)?,
        name: r.try_get(2)?,
        live_version: u32_at(r, 3)?,
        created_at: r.try_get(4)?,
        policy: parse_json(r.try_get(5)?)?,
    })
}

const VERSION_COLS: &str =
    "secret_id, version, wrapped_data_key, ciphertext, field_names, created_at, created_by";

fn version_row(r: &Row) -> Result<SecretVersion> {
    Ok(SecretVersion {
        secret_id: r.try_get(0)?,
        version: u32_at(r, 1)?,
        wrapped_data_key: r.try_get(2)?,
        ciphertext: r.try_get(3)?,
        field_names: parse_json(r.try_get(4)?)?,
        created_at: r.try_get(5)?,
        created_by: r.try_get(6)?,
    })
}

const TOKEN_COLS: &str = "id, name, project_id, secret_hash, max_uses, uses, expires_at, machine_lifetime, created_at, created_by, revoked_at, constraints, k8s_cluster, k8s_namespace, k8s_policy, k8s_service_accounts, k8s_raw, lineage";

fn token_binding(r: &Row, first: usize) -> Result<Option<KubernetesBinding>> {
    let cluster: Option<String> = r.try_get(first)?;
    let namespace: Option<String> = r.try_get(first + 1)?;
    let policy: Option<String> = r.try_get(first + 2)?;
    let (Some(cluster), Some(namespace), Some(policy)) = (cluster, namespace, policy) else {
        return Ok(None);
    };
    Ok(Some(KubernetesBinding {
        cluster,
        namespace,
        policy,
        service_accounts: parse_json(r.try_get(first + 3)?)?.unwrap_or_default(),
        raw_token: r.try_get::<_, Option<bool>>(first + 4)?.unwrap_or(false),
    }))
}

fn token_row(r: &Row) -> Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        project_id: r.try_get(2)?,
        secret_hash: r.try_get(3)?,
        max_uses: opt_u32_at(r, 4)?,
        uses: u32_at(r, 5)?,
        expires_at: r.try_get(6)?,
        machine_lifetime: r.try_get(7)?,
        created_at: r.try_get(8)?,
        created_by: r.try_get(9)?,
        revoked_at: r.try_get(10)?,
        constraints: parse_json(r.try_get(11)?)?.unwrap_or_default(),
        kubernetes: token_binding(r, 12)?,
        lineage: r.try_get(17)?,
    })
}

const CLUSTER_COLS: &str =
    "name, api_url, ca_pem, audience, sealed_reviewer_token, created_at, created_by";

fn cluster_row(r: &Row) -> Result<Cluster> {
    Ok(Cluster {
        name: r.try_get(0)?,
        api_url: r.try_get(1)?,
        ca_pem: r.try_get(2)?,
        audience: r.try_get(3)?,
        sealed_reviewer_token: r.try_get(4)?,
        created_at: r.try_get(5)?,
        created_by: r.try_get(6)?,
    })
}

const DELEGATION_COLS: &str =
    "id, agent_id, secret_id, fields, k8s_cluster, k8s_namespace, created_at, created_by";
const DELEGATION_COLS_D: &str = "d.id, d.agent_id, d.secret_id, d.fields, d.k8s_cluster, d.k8s_namespace, d.created_at, d.created_by";

fn delegation_row(r: &Row) -> Result<Delegation> {
    let cluster: Option<String> = r.try_get(4)?;
    let namespace: Option<String> = r.try_get(5)?;
    Ok(Delegation {
        id: r.try_get(0)?,
        agent_id: r.try_get(1)?,
        secret_id: r.try_get(2)?,
        fields: parse_json(r.try_get(3)?)?,
        scope: cluster
            .zip(namespace)
            .map(|(cluster, namespace)| NamespaceRef { cluster, namespace }),
        created_at: r.try_get(6)?,
        created_by: r.try_get(7)?,
    })
}

const GRANT_COLS: &str = "g.id, g.machine_id, g.token_id, g.secret_id, g.fields, g.created_at";

fn grant_row(r: &Row) -> Result<Grant> {
    let machine: Option<String> = r.try_get(1)?;
    let token: Option<String> = r.try_get(2)?;
    let grantee = match (machine, token) {
        (Some(m), _) => Grantee::Machine(m),
        (None, Some(t)) => Grantee::Token(t),
        (None, None) => return Err(Error::Corrupt("a grant without a grantee".into())),
    };
    Ok(Grant {
        id: r.try_get(0)?,
        grantee,
        secret_id: r.try_get(3)?,
        fields: parse_json(r.try_get(4)?)?,
        created_at: r.try_get(5)?,
    })
}

fn grant_detail(r: &Row) -> Result<GrantDetail> {
    Ok(GrantDetail {
        grant: grant_row(r)?,
        project: r.try_get(6)?,
        secret: r.try_get(7)?,
        live_version: u32_at(r, 8)?,
    })
}

const AUDIT_COLS: &str =
    "seq, at, actor, action, target, outcome, reason, source_ip, prev_hash, hash";

fn audit_row(r: &Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: u64_at(r, 0)?,
        at: r.try_get(1)?,
        actor: r.try_get(2)?,
        action: r.try_get(3)?,
        target: r.try_get(4)?,
        outcome: r.try_get(5)?,
        reason: r.try_get(6)?,
        source_ip: r.try_get(7)?,
        prev_hash: r.try_get(8)?,
        hash: r.try_get(9)?,
    })
}

const COSIGN_COLS: &str = "id, secret_id, machine_id, requested_by, created_at, expires_at, approved_by, approved_at, consumed_at";

fn cosign_row(r: &Row) -> Result<Cosign> {
    Ok(Cosign {
        id: r.try_get(0)?,
        secret_id: r.try_get(1)?,
        machine_id: r.try_get(2)?,
        requested_by: r.try_get(3)?,
        created_at: r.try_get(4)?,
        expires_at: r.try_get(5)?,
        approved_by: r.try_get(6)?,
        approved_at: r.try_get(7)?,
        consumed_at: r.try_get(8)?,
    })
}

const ROTATION_COLS: &str = "id, secret_id, provider, target, admin_secret_id, agent_machine_id, interval_seconds, next_due_at, policy, lease_seconds, grace_seconds, created_at, created_by";

/// A unit enum stored as its serde name (`"postgresql"`, `"claimed"`).
fn parse_name<T: serde::de::DeserializeOwned>(name: String) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|e| Error::Corrupt(e.to_string()))
}

fn rotation_row(r: &Row) -> Result<RotationConfig> {
    Ok(RotationConfig {
        id: r.try_get(0)?,
        secret_id: r.try_get(1)?,
        provider: parse_name(r.try_get(2)?)?,
        target: parse_json(r.try_get(3)?)?
            .ok_or_else(|| Error::Corrupt("rotation config without a target".into()))?,
        admin_secret_id: r.try_get(4)?,
        agent_machine_id: r.try_get(5)?,
        interval_seconds: r.try_get(6)?,
        next_due_at: r.try_get(7)?,
        policy: parse_json(r.try_get(8)?)?
            .ok_or_else(|| Error::Corrupt("rotation config without a policy".into()))?,
        lease_seconds: r.try_get(9)?,
        grace_seconds: r.try_get(10)?,
        created_at: r.try_get(11)?,
        created_by: r.try_get(12)?,
    })
}

const JOB_COLS: &str = "id, config_id, secret_id, state, sealed_credential, from_version, to_version, created_at, created_by, lease_until, retire_after, finished_at, reason";

fn job_row(r: &Row) -> Result<RotationJob> {
    Ok(RotationJob {
        id: r.try_get(0)?,
        config_id: r.try_get(1)?,
        secret_id: r.try_get(2)?,
        state: parse_name(r.try_get(3)?)?,
        sealed_credential: r.try_get(4)?,
        from_version: u32_at(r, 5)?,
        to_version: opt_u32_at(r, 6)?,
        created_at: r.try_get(7)?,
        created_by: r.try_get(8)?,
        lease_until: r.try_get(9)?,
        retire_after: r.try_get(10)?,
        finished_at: r.try_get(11)?,
        reason: r.try_get(12)?,
    })
}

const WEBHOOK_COLS: &str = "id, url, events, sealed_secret, created_at, created_by";

fn webhook_row(r: &Row) -> Result<Webhook> {
    Ok(Webhook {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        events: parse_json(r.try_get(2)?)?.unwrap_or_default(),
        sealed_secret: r.try_get(3)?,
        created_at: r.try_get(4)?,
        created_by: r.try_get(5)?,
    })
}

const DELIVERY_COLS: &str = "id, webhook_id, event, body, created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error";

fn delivery_row(r: &Row) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get(0)?,
        webhook_id: r.try_get(1)?,
        event: r.try_get(2)?,
        body: r.try_get(3)?,
        created_at: r.try_get(4)?,
        attempts: u32_at(r, 5)?,
        next_attempt_at: r.try_get(6)?,
        delivered_at: r.try_get(7)?,
        failed_at: r.try_get(8)?,
        last_error: r.try_get(9)?,
    })
}

fn counts_at(r: &Row, first: usize) -> Result<DeliveryCounts> {
    Ok(DeliveryCounts {
        pending: u64_at(r, first)?,
        delivered: u64_at(r, first + 1)?,
        failed: u64_at(r, first + 2)?,
    })
}

const DELIVERY_COUNTS: &str = "COUNT(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL),
     COUNT(*) FILTER (WHERE delivered_at IS NOT NULL),
     COUNT(*) FILTER (WHERE failed_at IS NOT NULL)";

/// `cols` ("a, b") with each column qualified by `table` ("t.a, t.b").
fn qualified(cols: &str, table: &str) -> String {
    cols.split(", ")
        .map(|col| format!("{table}.{col}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$1, $2, ... $n`
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PgTx<'_> {
    fn one<T>(
        &mut self,
        sql: &str,
        params: &Params<'_>,
        map: impl FnOnce(&Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let row = self.conn.query_opt(sql, params)?;
        row.as_ref().map(map).transpose()
    }

    fn many<T>(
        &mut self,
        sql: &str,
        params: &Params<'_>,
        map: impl FnMut(&Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let rows = self.conn.query(sql, params)?;
        rows.iter().map(map).collect()
    }

    /// Runs a statement that changes state; returns the rows it touched.
    fn change(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        self.dirty = true;
        self.neutral(sql, params)
    }

    /// Runs a statement that changes nothing a look-ahead depends on
    /// (nonces, audit rows).
    fn neutral(&mut self, sql: &str, params: &Params<'_>) -> Result<u64> {
        Ok(self.conn.execute(sql, params)?)
    }

    fn changed(&mut self, sql: &str, params: &Params<'_>) -> Result<bool> {
        Ok(self.change(sql, params)? > 0)
    }

    fn insert(&mut self, what: &'static str, sql: &str, params: &Params<'_>) -> Result<()> {
        self.dirty = true;
        match self.conn.execute(sql, params) {
            Ok(_) => Ok(()),
            Err(e) if integrity_violation(&e) => Err(Error::Duplicate(what)),
            Err(e) => Err(e.into()),
        }
    }

    fn simple(&mut self, sql: &str) -> Result<()> {
        Ok(self.conn.batch(sql)?)
    }
}

impl Tx for PgTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        if self.writes && self.dirty {
            let changes: i64 = self
                .one(
                    "UPDATE signet_state SET changes = changes + 1 WHERE id = 1 RETURNING changes",
                    &[],
                    |r| Ok(r.try_get(0)?),
                )?
                .ok_or_else(|| Error::Corrupt("signet_state has no row".into()))?;
            self.simple("COMMIT")?;
            self.finished = true;
            // This process's own change: the lock was held from the read of
            // the count to here, so no other replica's change is skipped.
            // A batch that changed something counted it in the generation
            // through its requests already.
            let _ = self.store.changes.compare_exchange(
                changes - 1,
                changes,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return Ok(());
        }
        self.simple("COMMIT")?;
        self.finished = true;
        Ok(())
    }

    fn savepoint(&mut self) -> Result<()> {
        self.simple("SAVEPOINT request")
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.simple("ROLLBACK TO SAVEPOINT request")
    }

    fn release_savepoint(&mut self) -> Result<()> {
        self.simple("RELEASE SAVEPOINT request")
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.one("SELECT value FROM meta WHERE key = $1", &[&key], |r| {
            Ok(r.try_get(0)?)
        })
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.change(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )?;
        Ok(())
    }

    fn record_nonce(&mut self, key_id: &str, nonce: &str, expires_at: i64) -> Result<bool> {
        // The primary key refuses a nonce any replica recorded: the second
        // insert waits for the first's commit, then finds the row.
        Ok(self.neutral(
            "INSERT INTO nonces (key_id, nonce, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&key_id, &nonce, &expires_at],
        )? > 0)
    }

    fn prune_nonces(&mut self, now: i64) -> Result<u64> {
        self.neutral("DELETE FROM nonces WHERE expires_at < $1", &[&now])
    }

    fn extend_nonces(&mut self, seconds: i64) -> Result<u64> {
        self.neutral(
            "UPDATE nonces SET expires_at = expires_at + $1",
            &[&seconds],
        )
    }

    fn insert_admin(&mut self, a: &Admin) -> Result<()> {
        self.insert(
            "admin",
            "INSERT INTO admins (id, name, public_key, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5)",
            &[&a.id, &a.name, &a.public_key, &a.created_at, &a.disabled_at],
        )
    }

    fn admin(&mut self, id: &str) -> Result<Option<Admin>> {
        self.one(
            "SELECT id, name, public_key, created_at, disabled_at FROM admins WHERE id = $1",
            &[&id],
            admin_row,
        )
    }

    fn admin_count(&mut self) -> Result<u64> {
        Ok(self
            .one("SELECT COUNT(*) FROM admins", &[], |r| u64_at(r, 0))?
            .unwrap_or(0))
    }

    fn insert_bootstrap_token(&mut self, t: &BootstrapToken) -> Result<()> {
        self.insert(
            "bootstrap token",
            "INSERT INTO admin_bootstrap_tokens (id, secret_hash, expires_at, used_at) VALUES ($1, $2, $3, $4)",
            &[&t.id, &t.secret_hash, &t.expires_at, &t.used_at],
        )
    }

    fn bootstrap_token(&mut self, id: &str) -> Result<Option<BootstrapToken>> {
        self.one(
            "SELECT id, secret_hash, expires_at, used_at FROM admin_bootstrap_tokens WHERE id = $1",
            &[&id],
            |r| {
                Ok(BootstrapToken {
                    id: r.try_get(0)?,
                    secret_hash: r.try_get(1)?,
                    expires_at: r.try_get(2)?,
                    used_at: r.try_get(3)?,
                })
            },
        )
    }

    fn use_bootstrap_token(&mut self, id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE admin_bootstrap_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL",
            &[&id, &now],
        )
    }

    fn insert_agent(&mut self, a: &Agent) -> Result<()> {
        let scopes = json_text(&a.scopes)?;
        self.insert(
            "agent",
            "INSERT INTO agents (id, name, public_key, scopes, created_at, disabled_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &a.id,
                &a.name,
                &a.public_key,
                &scopes,
                &a.created_at,
                &a.disabled_at,
            ],
        )
    }

    fn agent(&mut self, id: &str) -> Result<Option<Agent>> {
        self.one(
            "SELECT id, name, public_key, scopes, created_at, disabled_at FROM agents WHERE id = $1",
            &[&id],
            agent_row,
        )
    }

    fn insert_machine(&mut self, m: &Machine) -> Result<()> {
        let metadata = json_text(&m.metadata)?;
        let restrictions = m.restrictions.as_ref().map(json_text).transpose()?;
        let k = m.kubernetes.as_ref();
        self.insert(
            "machine",
            &format!(
                "INSERT INTO machines ({MACHINE_COLS}) VALUES ({})",
                placeholders(17)
            ),
            &[
                &m.id,
                &m.name,
                &m.project_id,
                &m.token_id,
                &m.public_key,
                &m.hostname,
                &metadata,
                &m.created_at,
                &m.expires_at,
                &m.disabled_at,
                &restrictions,
                &k.map(|k| &k.cluster),
                &k.map(|k| &k.namespace),
                &k.and_then(|k| k.service_account.as_ref()),
                &k.and_then(|k| k.pod_name.as_ref()),
                &k.and_then(|k| k.pod_uid.as_ref()),
                &k.map(|k| k.attested),
            ],
        )
    }

    fn machine(&mut self, id: &str) -> Result<Option<Machine>> {
        self.one(
            &format!("SELECT {MACHINE_COLS} FROM machines WHERE id = $1"),
            &[&id],
            machine_row,
        )
    }

    fn machines(&mut self) -> Result<Vec<Machine>> {
        self.many(
            &format!("SELECT {MACHINE_COLS} FROM machines ORDER BY created_at, id"),
            &[],
            machine_row,
        )
    }

    fn delete_machine(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM machines WHERE id = $1", &[&id])
    }

    fn insert_project(&mut self, p: &Project) -> Result<()> {
        self.insert(
            "project",
            &format!(
                "INSERT INTO projects ({PROJECT_COLS}) VALUES ({})",
                placeholders(6)
            ),
            &[
                &p.id,
                &p.name,
                &p.wrapped_key,
                &p.created_at,
                &p.locked_at,
                &p.lock_reason,
            ],
        )
    }

    fn project_by_name(&mut self, name: &str) -> Result<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE name = $1"),
            &[&name],
            project_row,
        )
    }

    fn project(&mut self, id: &str) -> Result<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE id = $1"),
            &[&id],
            project_row,
        )
    }

    fn insert_secret(&mut self, s: &Secret) -> Result<()> {
        let policy = s.policy.as_ref().map(json_text).transpose()?;
        self.insert(
            "secret",
            &format!(
                "INSERT INTO secrets ({SECRET_COLS}) VALUES ({})",
                placeholders(6)
            ),
            &[
                &s.id,
                &s.project_id,
                &s.name,
                &int(s.live_version),
                &s.created_at,
                &policy,
            ],
        )
    }

    fn secret_by_name(&mut self, project_id: &str, name: &str) -> Result<Option<Secret>> {
        self.one(
            &format!("SELECT {SECRET_COLS} FROM secrets WHERE project_id = $1 AND name = $2"),
            &[&project_id, &name],
            secret_row,
        )
    }

    fn secret(&mut self, id: &str) -> Result<Option<Secret>> {
        self.one(
            &format!("SELECT {SECRET_COLS} FROM secrets WHERE id = $1"),
            &[&id],
            secret_row,
        )
    }

    fn set_live_version(&mut self, secret_id: &str, version: u32) -> Result<()> {
        self.change(
            "UPDATE secrets SET live_version = $2 WHERE id = $1",
            &[&secret_id, &int(version)],
        )?;
        Ok(())
    }

    fn delete_secret(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM secrets WHERE id = $1", &[&id])
    }

    fn insert_version(&mut self, v: &SecretVersion) -> Result<()> {
        self.insert(
            "secret version",
            &format!(
                "INSERT INTO secret_versions ({VERSION_COLS}) VALUES ({})",
                placeholders(7)
            ),
            &[
                &v.secret_id,
                &int(v.version),
                &v.wrapped_data_key,
                &v.ciphertext,
                &json_list(&v.field_names),
                &v.created_at,
                &v.created_by,
            ],
        )
    }

    fn version(&mut self, secret_id: &str, version: u32) -> Result<Option<SecretVersion>> {
        self.one(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = $1 AND version = $2"
            ),
            &[&secret_id, &int(version)],
            version_row,
        )
    }

    fn versions(&mut self, secret_id: &str) -> Result<Vec<SecretVersion>> {
        self.many(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = $1 ORDER BY version"
            ),
            &[&secret_id],
            version_row,
        )
    }

    fn insert_token(&mut self, t: &EnrollmentToken) -> Result<()> {
        let constraints = (!t.constraints.is_empty())
            .then(|| json_text(&t.constraints))
            .transpose()?;
        let k = t.kubernetes.as_ref();
        let accounts = k.map(|k| json_text(&k.service_accounts)).transpose()?;
        self.insert(
            "enrollment token",
            &format!(
                "INSERT INTO enrollment_tokens ({TOKEN_COLS}) VALUES ({})",
                placeholders(18)
            ),
            &[
                &t.id,
                &t.name,
                &t.project_id,
                &t.secret_hash,
                &t.max_uses.map(int),
                &int(t.uses),
                &t.expires_at,
                &t.machine_lifetime,
                &t.created_at,
                &t.created_by,
                &t.revoked_at,
                &constraints,
                &k.map(|k| &k.cluster),
                &k.map(|k| &k.namespace),
                &k.map(|k| &k.policy),
                &accounts,
                &k.map(|k| k.raw_token),
                &t.lineage,
            ],
        )
    }

    fn token(&mut self, id: &str) -> Result<Option<EnrollmentToken>> {
        self.one(
            &format!("SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE id = $1"),
            &[&id],
            token_row,
        )
    }

    fn use_token(&mut self, id: &str) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE lineage = (SELECT lineage FROM enrollment_tokens WHERE id = $1)
               AND (max_uses IS NULL OR uses < max_uses)",
            &[&id],
        )
    }

    fn revoke_token(&mut self, id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[&id, &now],
        )
    }

    fn shorten_token(&mut self, id: &str, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET expires_at = LEAST(expires_at, $2) WHERE id = $1",
            &[&id, &expires_at],
        )
    }

    fn policy(
        &mut self,
        cluster: &str,
        namespace: &str,
        policy: &str,
        now: i64,
    ) -> Result<Option<EnrollmentToken>> {
        self.one(
            &format!(
                "SELECT {TOKEN_COLS} FROM enrollment_tokens
                 WHERE k8s_cluster = $1 AND k8s_namespace = $2 AND k8s_policy = $3
                   AND k8s_raw = false AND revoked_at IS NULL AND expires_at > $4
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            ),
            &[&cluster, &namespace, &policy, &now],
            token_row,
        )
    }

    fn machines_of_pod(&mut self, cluster: &str, pod_uid: &str) -> Result<Vec<Machine>> {
        self.many(
            &format!(
                "SELECT {MACHINE_COLS} FROM machines
                 WHERE k8s_cluster = $1 AND k8s_pod_uid = $2 AND k8s_attested = true
                 ORDER BY created_at, id"
            ),
            &[&cluster, &pod_uid],
            machine_row,
        )
    }

    fn insert_cluster(&mut self, c: &Cluster) -> Result<()> {
        self.insert(
            "cluster",
            &format!(
                "INSERT INTO clusters ({CLUSTER_COLS}) VALUES ({})",
                placeholders(7)
            ),
            &[
                &c.name,
                &c.api_url,
                &c.ca_pem,
                &c.audience,
                &c.sealed_reviewer_token,
                &c.created_at,
                &c.created_by,
            ],
        )
    }

    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>> {
        self.one(
            &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE name = $1"),
            &[&name],
            cluster_row,
        )
    }

    fn delete_cluster(&mut self, name: &str) -> Result<bool> {
        self.changed("DELETE FROM clusters WHERE name = $1", &[&name])
    }

    fn insert_delegation(&mut self, d: &Delegation) -> Result<()> {
        let scope = d.scope.as_ref();
        self.insert(
            "delegation",
            &format!(
                "INSERT INTO delegations ({DELEGATION_COLS}) VALUES ({})",
                placeholders(8)
            ),
            &[
                &d.id,
                &d.agent_id,
                &d.secret_id,
                &json_list(&d.fields),
                &scope.map(|s| &s.cluster),
                &scope.map(|s| &s.namespace),
                &d.created_at,
                &d.created_by,
            ],
        )
    }

    fn delegations_on(&mut self, agent_id: &str, secret_id: &str) -> Result<Vec<Delegation>> {
        self.many(
            &format!(
                "SELECT {DELEGATION_COLS_D} FROM delegations d
                 WHERE d.agent_id = $1 AND d.secret_id = $2 ORDER BY d.id"
            ),
            &[&agent_id, &secret_id],
            delegation_row,
        )
    }

    fn delegated_in_project(
        &mut self,
        agent_id: &str,
        project_id: &str,
        scope: Option<&NamespaceRef>,
    ) -> Result<bool> {
        let found = self.one(
            "SELECT 1 FROM delegations d JOIN secrets s ON s.id = d.secret_id
             WHERE d.agent_id = $1 AND s.project_id = $2
               AND d.k8s_cluster IS NOT DISTINCT FROM $3::TEXT
               AND d.k8s_namespace IS NOT DISTINCT FROM $4::TEXT LIMIT 1",
            &[
                &agent_id,
                &project_id,
                &scope.map(|s| &s.cluster),
                &scope.map(|s| &s.namespace),
            ],
            |_| Ok(()),
        )?;
        Ok(found.is_some())
    }

    fn delete_delegation(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM delegations WHERE id = $1", &[&id])
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<()> {
        let (machine, token) = match &g.grantee {
            Grantee::Machine(m) => (Some(m.as_str()), None),
            Grantee::Token(t) => (None, Some(t.as_str())),
        };
        self.insert(
            "grant",
            "INSERT INTO grants (id, machine_id, token_id, secret_id, fields, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &g.id,
                &machine,
                &token,
                &g.secret_id,
                &json_list(&g.fields),
                &g.created_at,
            ],
        )
    }

    fn grants(&mut self, grantee: Option<&Grantee>) -> Result<Vec<GrantDetail>> {
        let (machine, token) = match grantee {
            Some(Grantee::Machine(m)) => (Some(m.as_str()), None),
            Some(Grantee::Token(t)) => (None, Some(t.as_str())),
            None => (None, None),
        };
        self.many(
            &format!(
                "SELECT {GRANT_COLS}, p.name, s.name, s.live_version FROM grants g
                 JOIN secrets s ON s.id = g.secret_id JOIN projects p ON p.id = s.project_id
                 WHERE ($1::TEXT IS NULL OR g.machine_id = $1) AND ($2::TEXT IS NULL OR g.token_id = $2)
                 ORDER BY p.name, s.name, g.id"
            ),
            &[&machine, &token],
            grant_detail,
        )
    }

    fn machine_grant(&mut self, machine_id: &str, secret_id: &str) -> Result<Option<Grant>> {
        self.one(
            &format!(
                "SELECT {GRANT_COLS} FROM grants g WHERE g.machine_id = $1 AND g.secret_id = $2"
            ),
            &[&machine_id, &secret_id],
            grant_row,
        )
    }

    fn delete_grant(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM grants WHERE id = $1", &[&id])
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        // Under the write lock: the head is the last one committed by any
        // replica, and no other replica appends until this one commits.
        self.one(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            &[],
            |r| Ok((u64_at(r, 0)?, r.try_get(1)?)),
        )
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
        match self.conn.execute(
            &format!(
                "INSERT INTO audit ({AUDIT_COLS}) VALUES ({})",
                placeholders(10)
            ),
            &[
                &big(e.seq),
                &e.at,
                &e.actor,
                &e.action,
                &e.target,
                &e.outcome,
                &e.reason,
                &e.source_ip,
                &e.prev_hash,
                &e.hash,
            ],
        ) {
            Ok(_) => Ok(()),
            Err(e) if integrity_violation(&e) => Err(Error::Duplicate("audit entry")),
            Err(e) => Err(e.into()),
        }
    }

    fn audit(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.many(
            &format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"),
            &[&big(after), &int(limit)],
            audit_row,
        )
    }

    fn prune_audit(&mut self, before: i64) -> Result<Option<(u64, String)>> {
        let last: Option<(u64, String)> = self.one(
            "SELECT seq, hash FROM audit
             WHERE at < $1 AND seq < (SELECT MAX(seq) FROM audit)
             ORDER BY seq DESC LIMIT 1",
            &[&before],
            |r| Ok((u64_at(r, 0)?, r.try_get(1)?)),
        )?;
        if let Some((seq, _)) = &last {
            self.neutral("DELETE FROM audit WHERE seq <= $1", &[&big(*seq)])?;
        }
        Ok(last)
    }

    fn set_machine_disabled(&mut self, id: &str, disabled_at: Option<i64>) -> Result<bool> {
        self.changed(
            "UPDATE machines SET disabled_at = $2 WHERE id = $1",
            &[&id, &disabled_at],
        )
    }

    fn set_machine_expiry(&mut self, id: &str, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE machines SET expires_at = $2 WHERE id = $1",
            &[&id, &expires_at],
        )
    }

    fn machines_expired_before(&mut self, before: i64) -> Result<Vec<Machine>> {
        self.many(
            &format!(
                "SELECT {MACHINE_COLS} FROM machines WHERE expires_at <= $1 ORDER BY expires_at, id"
            ),
            &[&before],
            machine_row,
        )
    }

    fn set_secret_policy(&mut self, secret_id: &str, policy: Option<&AccessPolicy>) -> Result<()> {
        let policy = policy.map(json_text).transpose()?;
        self.change(
            "UPDATE secrets SET policy = $2 WHERE id = $1",
            &[&secret_id, &policy],
        )?;
        Ok(())
    }

    fn lock_project(&mut self, id: &str, now: i64, reason: &str) -> Result<bool> {
        self.changed(
            "UPDATE projects SET locked_at = $2, lock_reason = $3 WHERE id = $1 AND locked_at IS NULL",
            &[&id, &now, &reason],
        )
    }

    fn unlock_project(&mut self, id: &str) -> Result<bool> {
        self.changed(
            "UPDATE projects SET locked_at = NULL, lock_reason = NULL WHERE id = $1 AND locked_at IS NOT NULL",
            &[&id],
        )
    }

    fn count_read(&mut self, secret_id: &str, day: &str, cap: u32) -> Result<bool> {
        // One statement: insert the first read of the day, or count one more
        // only while under the cap.
        self.changed(
            "INSERT INTO read_counts (secret_id, day, count) SELECT $1, $2, 1 WHERE $3::BIGINT > 0
             ON CONFLICT (secret_id, day) DO UPDATE SET count = read_counts.count + 1
             WHERE read_counts.count < $3::BIGINT",
            &[&secret_id, &day, &int(cap)],
        )
    }

    fn prune_read_counts(&mut self, day: &str) -> Result<u64> {
        self.change("DELETE FROM read_counts WHERE day < $1", &[&day])
    }

    fn insert_rotation(&mut self, c: &RotationConfig) -> Result<()> {
        self.insert(
            "rotation config for this secret",
            &format!(
                "INSERT INTO rotation_configs ({ROTATION_COLS}) VALUES ({})",
                placeholders(13)
            ),
            &[
                &c.id,
                &c.secret_id,
                &c.provider.as_str(),
                &json_text(&c.target)?,
                &c.admin_secret_id,
                &c.agent_machine_id,
                &c.interval_seconds,
                &c.next_due_at,
                &json_text(&c.policy)?,
                &c.lease_seconds,
                &c.grace_seconds,
                &c.created_at,
                &c.created_by,
            ],
        )
    }

    fn rotation(&mut self, id: &str) -> Result<Option<RotationConfig>> {
        self.one(
            &format!("SELECT {ROTATION_COLS} FROM rotation_configs WHERE id = $1"),
            &[&id],
            rotation_row,
        )
    }

    fn rotations(&mut self) -> Result<Vec<RotationConfig>> {
        self.many(
            &format!("SELECT {ROTATION_COLS} FROM rotation_configs ORDER BY created_at, id"),
            &[],
            rotation_row,
        )
    }

    fn rotations_due(&mut self, now: i64) -> Result<Vec<RotationConfig>> {
        self.many(
            &format!(
                "SELECT {ROTATION_COLS} FROM rotation_configs
                 WHERE next_due_at IS NOT NULL AND next_due_at <= $1 ORDER BY next_due_at, id"
            ),
            &[&now],
            rotation_row,
        )
    }

    fn set_rotation_due(&mut self, id: &str, next_due_at: Option<i64>) -> Result<()> {
        self.change(
            "UPDATE rotation_configs SET next_due_at = $2 WHERE id = $1",
            &[&id, &next_due_at],
        )
        .map(drop)
    }

    fn insert_rotation_job(&mut self, j: &RotationJob) -> Result<()> {
        self.insert(
            "running rotation of this secret",
            &format!(
                "INSERT INTO rotation_jobs ({JOB_COLS}) VALUES ({})",
                placeholders(13)
            ),
            &[
                &j.id,
                &j.config_id,
                &j.secret_id,
                &j.state.as_str(),
                &j.sealed_credential,
                &int(j.from_version),
                &j.to_version.map(int),
                &j.created_at,
                &j.created_by,
                &j.lease_until,
                &j.retire_after,
                &j.finished_at,
                &j.reason,
            ],
        )
    }

    fn rotation_job(&mut self, id: &str) -> Result<Option<RotationJob>> {
        self.one(
            &format!("SELECT {JOB_COLS} FROM rotation_jobs WHERE id = $1"),
            &[&id],
            job_row,
        )
    }

    fn update_rotation_job(&mut self, j: &RotationJob) -> Result<()> {
        // Through `insert`: the only way the update can fail on a
        // constraint is a second running rotation of the secret.
        self.insert(
            "running rotation of this secret",
            "UPDATE rotation_jobs SET state = $2, sealed_credential = $3, to_version = $4,
             lease_until = $5, retire_after = $6, finished_at = $7, reason = $8 WHERE id = $1",
            &[
                &j.id,
                &j.state.as_str(),
                &j.sealed_credential,
                &j.to_version.map(int),
                &j.lease_until,
                &j.retire_after,
                &j.finished_at,
                &j.reason,
            ],
        )
    }

    fn rotation_jobs(&mut self, config_id: &str, limit: u32) -> Result<Vec<RotationJob>> {
        self.many(
            &format!(
                "SELECT {JOB_COLS} FROM rotation_jobs WHERE config_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
            &[&config_id, &int(limit)],
            job_row,
        )
    }

    fn rotation_jobs_expired(&mut self, now: i64) -> Result<Vec<RotationJob>> {
        self.many(
            &format!(
                "SELECT {JOB_COLS} FROM rotation_jobs
                 WHERE state = 'claimed' AND lease_until <= $1 ORDER BY lease_until, id"
            ),
            &[&now],
            job_row,
        )
    }

    fn rotation_job_to_claim(&mut self, machine_id: &str, now: i64) -> Result<Option<RotationJob>> {
        self.one(
            &format!(
                "SELECT {} FROM rotation_jobs j JOIN rotation_configs c ON c.id = j.config_id
                 WHERE c.agent_machine_id = $1
                   AND (j.state = 'pending'
                        OR (j.state = 'promoted' AND j.retire_after <= $2
                            AND (j.lease_until IS NULL OR j.lease_until <= $2)))
                 ORDER BY j.created_at, j.id LIMIT 1",
                qualified(JOB_COLS, "j")
            ),
            &[&machine_id, &now],
            job_row,
        )
    }

    fn insert_cosign(&mut self, c: &Cosign) -> Result<()> {
        self.insert(
            "co-sign request",
            &format!(
                "INSERT INTO cosign_requests ({COSIGN_COLS}) VALUES ({})",
                placeholders(9)
            ),
            &[
                &c.id,
                &c.secret_id,
                &c.machine_id,
                &c.requested_by,
                &c.created_at,
                &c.expires_at,
                &c.approved_by,
                &c.approved_at,
                &c.consumed_at,
            ],
        )
    }

    fn cosign(&mut self, id: &str) -> Result<Option<Cosign>> {
        self.one(
            &format!("SELECT {COSIGN_COLS} FROM cosign_requests WHERE id = $1"),
            &[&id],
            cosign_row,
        )
    }

    fn approve_cosign(&mut self, id: &str, by: &str, now: i64, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE cosign_requests SET approved_by = $2, approved_at = $3, expires_at = $4
             WHERE id = $1 AND approved_at IS NULL AND consumed_at IS NULL AND expires_at > $3
               AND requested_by <> $2",
            &[&id, &by, &now, &expires_at],
        )
    }

    fn consume_cosign(&mut self, secret_id: &str, machine_id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE cosign_requests SET consumed_at = $3 WHERE id = (
                 SELECT id FROM cosign_requests
                 WHERE secret_id = $1 AND machine_id = $2 AND approved_at IS NOT NULL
                   AND approved_by IS NOT NULL AND approved_by <> requested_by
                   AND consumed_at IS NULL AND expires_at > $3
                 ORDER BY approved_at LIMIT 1)",
            &[&secret_id, &machine_id, &now],
        )
    }

    fn prune_cosigns(&mut self, before: i64) -> Result<u64> {
        self.change(
            "DELETE FROM cosign_requests
             WHERE (consumed_at IS NOT NULL AND consumed_at < $1) OR expires_at < $1",
            &[&before],
        )
    }

    fn insert_webhook(&mut self, w: &Webhook) -> Result<()> {
        let events = json_text(&w.events)?;
        self.insert(
            "webhook",
            &format!(
                "INSERT INTO webhooks ({WEBHOOK_COLS}) VALUES ({})",
                placeholders(6)
            ),
            &[
                &w.id,
                &w.url,
                &events,
                &w.sealed_secret,
                &w.created_at,
                &w.created_by,
            ],
        )
    }

    fn webhook(&mut self, id: &str) -> Result<Option<Webhook>> {
        self.one(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE id = $1"),
            &[&id],
            webhook_row,
        )
    }

    fn webhooks(&mut self) -> Result<Vec<Webhook>> {
        self.many(
            &format!("SELECT {WEBHOOK_COLS} FROM webhooks ORDER BY created_at, id"),
            &[],
            webhook_row,
        )
    }

    fn delete_webhook(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM webhooks WHERE id = $1", &[&id])
    }

    fn delivery_counts(&mut self, webhook_id: &str) -> Result<DeliveryCounts> {
        Ok(self
            .one(
                &format!("SELECT {DELIVERY_COUNTS} FROM webhook_deliveries WHERE webhook_id = $1"),
                &[&webhook_id],
                |r| counts_at(r, 0),
            )?
            .unwrap_or_default())
    }

    fn enqueue_delivery(
        &mut self,
        webhook_id: &str,
        event: &str,
        body: &str,
        now: i64,
    ) -> Result<()> {
        self.change(
            "INSERT INTO webhook_deliveries (webhook_id, event, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $4)",
            &[&webhook_id, &event, &body, &now],
        )?;
        Ok(())
    }

    fn claim_deliveries(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        // Under the write lock, so replicas never claim one delivery twice.
        let due = self.many(
            &format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $2"
            ),
            &[&now, &int(limit)],
            delivery_row,
        )?;
        for delivery in &due {
            self.change(
                "UPDATE webhook_deliveries SET next_attempt_at = $2 WHERE id = $1",
                &[&delivery.id, &lease_until],
            )?;
        }
        Ok(due)
    }

    fn finish_delivery(&mut self, id: i64, attempt: &Attempt, now: i64) -> Result<()> {
        match attempt {
            Attempt::Delivered => self.change(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $2, last_error = NULL
                 WHERE id = $1",
                &[&id, &now],
            )?,
            Attempt::Retry {
                next_attempt_at,
                error,
            } => self.change(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3
                 WHERE id = $1",
                &[&id, next_attempt_at, error],
            )?,
            Attempt::Failed { error } => self.change(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, failed_at = $2, last_error = $3
                 WHERE id = $1",
                &[&id, &now, error],
            )?,
        };
        Ok(())
    }

    fn deliveries(&mut self, webhook_id: &str) -> Result<Vec<Delivery>> {
        self.many(
            &format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id"
            ),
            &[&webhook_id],
            delivery_row,
        )
    }

    fn prune_deliveries(&mut self, before: i64) -> Result<u64> {
        self.change(
            "DELETE FROM webhook_deliveries
             WHERE (delivered_at IS NOT NULL AND delivered_at < $1)
                OR (failed_at IS NOT NULL AND failed_at < $1)",
            &[&before],
        )
    }
}

impl Read for PgTx<'_> {
    fn machine_grants(&mut self, machine_id: &str) -> Result<Vec<GrantDetail>> {
        Tx::grants(self, Some(&Grantee::Machine(machine_id.to_owned())))
    }

    fn machines_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(Machine, String)>> {
        let (at, id) = page.after.clone().unzip();
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, '') FROM machines m
                 LEFT JOIN projects p ON p.id = m.project_id
                 WHERE $1::BIGINT IS NULL OR (m.created_at, m.id) > ($1::BIGINT, $2::TEXT)
                 ORDER BY m.created_at, m.id LIMIT $3",
                qualified(MACHINE_COLS, "m")
            ),
            &[&at, &id, &int(page.fetch())],
            |r| Ok((machine_row(r)?, r.try_get(17)?)),
        )
    }

    fn tokens_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(EnrollmentToken, String)>> {
        let (at, id) = page.after.clone().unzip();
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, '') FROM enrollment_tokens t
                 LEFT JOIN projects p ON p.id = t.project_id
                 WHERE $1::BIGINT IS NULL OR (t.created_at, t.id) > ($1::BIGINT, $2::TEXT)
                 ORDER BY t.created_at, t.id LIMIT $3",
                qualified(TOKEN_COLS, "t")
            ),
            &[&at, &id, &int(page.fetch())],
            |r| Ok((token_row(r)?, r.try_get(18)?)),
        )
    }

    fn projects_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Project>> {
        self.many(
            &format!(
                "SELECT {PROJECT_COLS} FROM projects WHERE $1::TEXT IS NULL OR name > $1::TEXT
                 ORDER BY name LIMIT $2"
            ),
            &[&page.after, &int(page.fetch())],
            project_row,
        )
    }

    fn secrets_page(&mut self, project_id: &str, page: &Page<NameKey>) -> Result<Vec<Secret>> {
        self.many(
            &format!(
                "SELECT {SECRET_COLS} FROM secrets
                 WHERE project_id = $1 AND ($2::TEXT IS NULL OR name > $2::TEXT)
                 ORDER BY name LIMIT $3"
            ),
            &[&project_id, &page.after, &int(page.fetch())],
            secret_row,
        )
    }

    fn versions_of(&mut self, secret_ids: &[&str]) -> Result<Vec<SecretVersion>> {
        self.many(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions
                 WHERE secret_id = ANY($1) ORDER BY secret_id, version"
            ),
            &[&secret_ids],
            version_row,
        )
    }

    fn clusters_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Cluster>> {
        self.many(
            &format!(
                "SELECT {CLUSTER_COLS} FROM clusters WHERE $1::TEXT IS NULL OR name > $1::TEXT
                 ORDER BY name LIMIT $2"
            ),
            &[&page.after, &int(page.fetch())],
            cluster_row,
        )
    }

    fn delegations_page(
        &mut self,
        agent_id: Option<&str>,
        page: &Page<DelegationKey>,
    ) -> Result<Vec<DelegationDetail>> {
        let (agent, project, secret, id) = match &page.after {
            Some((a, p, s, i)) => (Some(a), Some(p), Some(s), Some(i)),
            None => (None, None, None, None),
        };
        self.many(
            &format!(
                "SELECT {DELEGATION_COLS_D}, p.id, p.name, s.name FROM delegations d
                 JOIN secrets s ON s.id = d.secret_id JOIN projects p ON p.id = s.project_id
                 WHERE ($1::TEXT IS NULL OR d.agent_id = $1::TEXT)
                   AND ($2::TEXT IS NULL OR (d.agent_id, p.name, s.name, d.id) > ($2::TEXT, $3::TEXT, $4::TEXT, $5::TEXT))
                 ORDER BY d.agent_id, p.name, s.name, d.id LIMIT $6"
            ),
            &[&agent_id, &agent, &project, &secret, &id, &int(page.fetch())],
            |r| {
                Ok(DelegationDetail {
                    delegation: delegation_row(r)?,
                    project_id: r.try_get(8)?,
                    project: r.try_get(9)?,
                    secret: r.try_get(10)?,
                })
            },
        )
    }

    fn grants_page(
        &mut self,
        grantee: Option<&Grantee>,
        page: &Page<GrantKey>,
    ) -> Result<Vec<GrantDetail>> {
        let (machine, token) = match grantee {
            Some(Grantee::Machine(m)) => (Some(m.as_str()), None),
            Some(Grantee::Token(t)) => (None, Some(t.as_str())),
            None => (None, None),
        };
        let (project, secret, id) = match &page.after {
            Some((p, s, i)) => (Some(p), Some(s), Some(i)),
            None => (None, None, None),
        };
        self.many(
            &format!(
                "SELECT {GRANT_COLS}, p.name, s.name, s.live_version FROM grants g
                 JOIN secrets s ON s.id = g.secret_id JOIN projects p ON p.id = s.project_id
                 WHERE ($1::TEXT IS NULL OR g.machine_id = $1::TEXT) AND ($2::TEXT IS NULL OR g.token_id = $2::TEXT)
                   AND ($3::TEXT IS NULL OR (p.name, s.name, g.id) > ($3::TEXT, $4::TEXT, $5::TEXT))
                 ORDER BY p.name, s.name, g.id LIMIT $6"
            ),
            &[&machine, &token, &project, &secret, &id, &int(page.fetch())],
            grant_detail,
        )
    }

    fn cosigns_page(&mut self, now: i64, page: &Page<CreatedKey>) -> Result<Vec<CosignDetail>> {
        let (at, id) = page.after.clone().unzip();
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, ''), COALESCE(s.name, '') FROM cosign_requests c
                 LEFT JOIN secrets s ON s.id = c.secret_id
                 LEFT JOIN projects p ON p.id = s.project_id
                 WHERE c.consumed_at IS NULL AND c.expires_at > $1
                   AND ($2::BIGINT IS NULL OR (c.created_at, c.id) > ($2::BIGINT, $3::TEXT))
                 ORDER BY c.created_at, c.id LIMIT $4",
                qualified(COSIGN_COLS, "c")
            ),
            &[&now, &at, &id, &int(page.fetch())],
            |r| {
                Ok(CosignDetail {
                    cosign: cosign_row(r)?,
                    project: r.try_get(9)?,
                    secret: r.try_get(10)?,
                })
            },
        )
    }

    fn webhooks_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<Webhook>> {
        let (at, id) = page.after.clone().unzip();
        self.many(
            &format!(
                "SELECT {WEBHOOK_COLS} FROM webhooks
                 WHERE $1::BIGINT IS NULL OR (created_at, id) > ($1::BIGINT, $2::TEXT)
                 ORDER BY created_at, id LIMIT $3"
            ),
            &[&at, &id, &int(page.fetch())],
            webhook_row,
        )
    }

    fn rotations_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<ListedRotation>> {
        let (at, id) = page.after.clone().unzip();
        self.many(
            &format!(
                "SELECT {}, p.name, s.name, a.name FROM rotation_configs c
                 JOIN secrets s ON s.id = c.secret_id
                 JOIN projects p ON p.id = s.project_id
                 JOIN secrets a ON a.id = c.admin_secret_id
                 WHERE $1::BIGINT IS NULL OR (c.created_at, c.id) > ($1::BIGINT, $2::TEXT)
                 ORDER BY c.created_at, c.id LIMIT $3",
                qualified(ROTATION_COLS, "c")
            ),
            &[&at, &id, &int(page.fetch())],
            |r| {
                Ok(ListedRotation {
                    config: rotation_row(r)?,
                    project: r.try_get(13)?,
                    secret: r.try_get(14)?,
                    admin_secret: r.try_get(15)?,
                })
            },
        )
    }

    fn delivery_counts_of(
        &mut self,
        webhook_ids: &[&str],
    ) -> Result<Vec<(String, DeliveryCounts)>> {
        self.many(
            &format!(
                "SELECT webhook_id, {DELIVERY_COUNTS}
                 FROM webhook_deliveries WHERE webhook_id = ANY($1)
                 GROUP BY webhook_id"
            ),
            &[&webhook_ids],
            |r| Ok((r.try_get(0)?, counts_at(r, 1)?)),
        )
    }

    fn audit_through(&mut self, after: u64, through: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.many(
            &format!(
                "SELECT {AUDIT_COLS} FROM audit WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            ),
            &[&big(after), &big(through), &int(limit)],
            audit_row,
        )
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        Tx::meta(self, key)
    }

    fn read_view(
        &mut self,
        machine_id: &str,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> Result<Option<ReadView>> {
        let Some(machine) = Tx::machine(self, machine_id)? else {
            return Ok(None);
        };
        let Some(project) = self.project_by_name(project)? else {
            return Ok(None);
        };
        let Some(secret) = self.secret_by_name(&project.id, secret)? else {
            return Ok(None);
        };
        let Some(grant) = self.machine_grant(&machine.id, &secret.id)? else {
            return Ok(None);
        };
        let Some(version) = self.version(&secret.id, version.unwrap_or(secret.live_version))?
        else {
            return Ok(None);
        };
        Ok(Some(ReadView {
            machine,
            project,
            secret,
            grant,
            version,
        }))
    }
}
