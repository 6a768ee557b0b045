//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite has one writer at a time and every signed request writes (its
//! nonce), so the store keeps one connection behind a mutex and starts each
//! transaction with `BEGIN IMMEDIATE`: two requests never interleave, which
//! is what makes caps, token uses and canary locks exact.
//!
//! The list routes read on connections of their own ([`Store::read`]),
//! each a deferred read transaction with `query_only` on: in WAL mode a
//! reader sees the last commit and neither waits for the writer nor makes
//! it wait.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use rusqlite::{Connection, OptionalExtension as _, Row, params};
use signet_client::api::{AuditEntry, KubernetesBinding, MachineKubernetes, NamespaceRef, Scope};

use super::nonces::{self, Pending, Spent};
use super::*;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_access.sql"),
    include_str!("../../migrations/0003_attestation.sql"),
    include_str!("../../migrations/0004_keyset_indexes.sql"),
    include_str!("../../migrations/0005_nonce_log.sql"),
    include_str!("../../migrations/0006_rotation.sql"),
];

/// Pages written to the write-ahead log before the writer checkpoints it
/// (about 64 MiB at 4 KiB pages).
const WAL_CHECKPOINT_PAGES: i64 = 16_384;

/// Read-only connections for the list routes.
const READERS: usize = 4;

/// The SQLite backend.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// Connections for [`Store::read`]; a reader takes a free one, or waits
    /// for the next in turn when all are busy.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    path: PathBuf,
    /// The write-ahead log, synced by [`Store::sync`].
    wal: PathBuf,
    generation: Generation,
    /// The writer connection's `PRAGMA data_version` at the last write
    /// transaction: it moves when another connection commits.
    data_version: AtomicI64,
    /// The spent nonces of the log (see [`super::nonces`]); locked only
    /// while holding `conn`.
    spent: Mutex<Spent>,
}

impl SqliteStore {
    /// Opens (creating if needed) `signet.db` in `data_dir`, with the
    /// directory private to this user when it owns it and the database
    /// files private in any case, and runs pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir_err = |source| Error::DataDir {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        let path = data_dir.join("signet.db");
        #[cfg(unix)]
        make_private(data_dir, &path)?;
        let conn = Connection::open(&path)?;
        // Every statement of the request path stays prepared.
        conn.set_prepared_statement_cache_capacity(256);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL: a commit writes the log but does not sync it; the
        // checkpoints and the log's restarts are still synced. A batch is
        // synced by the writer's syncer (`Store::sync`) before anyone is
        // answered, every other transaction by its own commit: the same
        // guarantee as FULL, with the next batch running during the sync.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Every signed read dirties a few pages (the tails of the audit
        // log and of the nonce log); with the default
        // 1,000-page interval the writer checkpointed (rewriting those
        // pages into the database file and syncing it) every few dozen
        // milliseconds. A longer interval writes each hot page back once
        // per checkpoint instead of once per few batches.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        // The log file is truncated back to that size when it restarts.
        conn.pragma_update(None, "journal_size_limit", WAL_CHECKPOINT_PAGES * 4096)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        let data_version = AtomicI64::new(data_version(&conn)?);
        let spent = Mutex::new(Spent::load(&conn)?);
        let readers = (0..READERS)
            .map(|_| open_reader(&path).map(Mutex::new))
            .collect::<Result<_>>()?;
        Ok(Self {
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
            wal: wal_path(&path),
            path,
            generation: Generation::default(),
            data_version,
            spent,
        })
    }

    /// Inside a write transaction that holds the lock: when another
    /// connection committed since the last one, counts that as a change
    /// (what was looked up before may be stale) and reads the nonces it
    /// logged.
    fn observe_others(&self, conn: &Connection) -> Result<()> {
        let version = data_version(conn)?;
        if self.data_version.swap(version, Ordering::SeqCst) != version {
            self.generation.start();
            self.generation.settle();
            lock(&self.spent).catch_up(conn)?;
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// SQLite's write-ahead log of the database at `path`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Syncs the data of the write-ahead log (any descriptor of the file
/// will do: the kernel syncs the file, not the descriptor). No log means
/// nothing is waiting in one.
fn sync_wal(wal: &Path) -> Result<()> {
    match std::fs::File::open(wal) {
        Ok(file) => file.sync_data().map_err(Error::Sync),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(Error::Sync(error)),
    }
}

/// A connection that can only read (opened after the migrations, so it
/// never creates or changes the schema).
fn open_reader(path: &Path) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    // Read-write at the file level so it can share the WAL index with the
    // writer; refused any write at the SQL level.
    conn.pragma_update(None, "query_only", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// Makes the data directory private: mode 0700 when this user owns it.
/// A directory it does not own (a volume's root, owned by root with the
/// pod's fsGroup, mode 2775) cannot be changed and need not be, as long as
/// no other user can write it: the database and its `-wal` and `-shm`
/// files (which SQLite creates with the database's mode) are made 0600.
/// Refused when others can write the directory, since they could replace
/// those files.
#[cfg(unix)]
fn make_private(data_dir: &Path, db: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let dir_err = |source| Error::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let meta = std::fs::metadata(data_dir).map_err(dir_err)?;
    let private = || std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    let owned = match effective_uid() {
        Some(uid) if meta.uid() == uid => private().map(|()| true),
        Some(_) => Ok(false),
        // No way to tell the owner: only the owner (or root) may chmod.
        None => match private() {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(false),
            other => other.map(|()| true),
        },
    }
    .map_err(dir_err)?;
    if !owned && meta.mode() & 0o002 != 0 {
        return Err(Error::UnsafeDataDir {
            path: data_dir.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db)
        .map_err(dir_err)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = db.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::metadata(&file) {
            Ok(m) if m.mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                    .map_err(dir_err)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(dir_err(e)),
        }
    }
    Ok(())
}

/// This process's effective user id: the owner of `/proc/self` (Linux).
#[cfg(unix)]
fn effective_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Changes whenever another connection commits to the database.
fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |r| r.get(0))?)
}

fn migrate(conn: &Connection) -> Result<()> {
    let current: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            index + 1
        ))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn begin(&self) -> Result<Box<dyn Tx + '_>> {
        // Counted before it can write; settled when the transaction ends.
        self.generation.start();
        let conn = match self.conn.lock() {
            Ok(conn) => conn,
            Err(_) => {
                self.generation.settle();
                return Err(Error::Poisoned);
            }
        };
        let tx = SqliteTx {
            conn,
            finished: false,
            settles: Some(&self.generation),
            syncs: Some(&self.wal),
            spent: &self.spent,
            pending: Pending::default(),
            audit_head: None,
        };
        tx.conn.execute_batch("BEGIN IMMEDIATE")?;
        self.observe_others(&tx.conn)?;
        Ok(Box::new(tx))
    }

    fn begin_batch(&self) -> Result<Box<dyn Tx + '_>> {
        let conn = self.conn.lock().map_err(|_| Error::Poisoned)?;
        let tx = SqliteTx {
            conn,
            finished: false,
            settles: None,
            syncs: None,
            spent: &self.spent,
            pending: Pending::default(),
            audit_head: None,
        };
        tx.conn.execute_batch("BEGIN IMMEDIATE")?;
        // Holding the write lock now: a commit by another connection either
        // shows here or comes after this batch.
        self.observe_others(&tx.conn)?;
        Ok(Box::new(tx))
    }

    fn generation(&self) -> &Generation {
        &self.generation
    }

    fn sync(&self) -> Result<()> {
        sync_wal(&self.wal)
    }

    fn read(&self) -> Result<Box<dyn Read + '_>> {
        let free = self
            .readers
            .iter()
            .find_map(|reader| match reader.try_lock() {
                Ok(conn) => Some(Ok(conn)),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Poisoned(_)) => Some(Err(Error::Poisoned)),
            });
        let conn = match free {
            Some(conn) => conn?,
            None => {
                let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                self.readers[turn].lock().map_err(|_| Error::Poisoned)?
            }
        };
        // Deferred: the snapshot is taken at the first read and holds for
        // every statement of the page.
        conn.execute_batch("BEGIN")?;
        Ok(Box::new(SqliteTx {
            conn,
            finished: false,
            settles: None,
            syncs: None,
            spent: &self.spent,
            pending: Pending::default(),
            audit_head: None,
        }))
    }
}

struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    finished: bool,
    /// Settled once this transaction ended (see [`Store::begin`]).
    settles: Option<&'a Generation>,
    /// The log its commit syncs before returning (every transaction but
    /// the writer's batches, which the syncer syncs).
    syncs: Option<&'a Path>,
    /// The store's spent nonces, and what this transaction adds to them
    /// once it commits.
    spent: &'a Mutex<Spent>,
    pending: Pending,
    /// The audit entry this transaction appended last, which is the log's
    /// head until the transaction ends or rolls back to a savepoint: a
    /// batch reads the head from the table once, not once per request.
    audit_head: Option<(u64, String)>,
}

/// The spent nonces, even after a panic elsewhere: each change to them is
/// one map operation, never left half done.
fn lock(spent: &Mutex<Spent>) -> MutexGuard<'_, Spent> {
    spent
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing to report to: the request already failed.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Some(generation) = self.settles {
            generation.settle();
        }
    }
}

fn json_list(list: &Option<Vec<String>>) -> Option<String> {
    list.as_ref()
        .map(|l| serde_json::to_string(l).unwrap_or_else(|_| "[]".into()))
}

fn parse_list(text: Option<String>) -> rusqlite::Result<Option<Vec<String>>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Corrupt(e.to_string()))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    column: usize,
    text: Option<String>,
) -> rusqlite::Result<Option<T>> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                column,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })
    })
    .transpose()
}

fn unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

fn insert(
    conn: &Connection,
    what: &'static str,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<()> {
    // Cached: the same few statements run for every request.
    match conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params))
    {
        Ok(_) => Ok(()),
        Err(e) if unique_violation(&e) => Err(Error::Duplicate(what)),
        Err(e) => Err(e.into()),
    }
}

fn admin_row(r: &Row<'_>) -> rusqlite::Result<Admin> {
    Ok(Admin {
        id: r.get(0)?,
        name: r.get(1)?,
        public_key: r.get(2)?,
        created_at: r.get(3)?,
        disabled_at: r.get(4)?,
    })
}

fn agent_row(r: &Row<'_>) -> rusqlite::Result<Agent> {
    let scopes: String = r.get(3)?;
    let scopes: Vec<Scope> = serde_json::from_str(&scopes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Agent {
        id: r.get(0)?,
        name: r.get(1)?,
        public_key: r.get(2)?,
        scopes,
        created_at: r.get(4)?,
        disabled_at: r.get(5)?,
    })
}

const MACHINE_COLS: &str = "id, name, project_id, token_id, public_key, hostname, metadata, created_at, expires_at, disabled_at, restrictions, k8s_cluster, k8s_namespace, k8s_service_account, k8s_pod_name, k8s_pod_uid, k8s_attested";

fn machine_kubernetes(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<MachineKubernetes>> {
    let cluster: Option<String> = r.get(first)?;
    let namespace: Option<String> = r.get(first + 1)?;
    let (Some(cluster), Some(namespace)) = (cluster, namespace) else {
        return Ok(None);
    };
    Ok(Some(MachineKubernetes {
        cluster,
        namespace,
        service_account: r.get(first + 2)?,
        pod_name: r.get(first + 3)?,
        pod_uid: r.get(first + 4)?,
        attested: r.get::<_, Option<bool>>(first + 5)?.unwrap_or(false),
    }))
}

fn machine_row(r: &Row<'_>) -> rusqlite::Result<Machine> {
    let metadata: String = r.get(6)?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(Machine {
        id: r.get(0)?,
        name: r.get(1)?,
        project_id: r.get(2)?,
        token_id: r.get(3)?,
        public_key: r.get(4)?,
        hostname: r.get(5)?,
        metadata,
        created_at: r.get(7)?,
        expires_at: r.get(8)?,
        disabled_at: r.get(9)?,
        restrictions: parse_json(10, r.get(10)?)?,
        kubernetes: machine_kubernetes(r, 11)?,
    })
}

const PROJECT_COLS: &str = "id, name, wrapped_key, created_at, locked_at, lock_reason";

fn project_row(r: &Row<'_>) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        wrapped_key: r.get(2)?,
        created_at: r.get(3)?,
        locked_at: r.get(4)?,
        lock_reason: r.get(5)?,
    })
}

const SECRET_COLS: &str = "id, project_id, name, live_version, created_at, policy";

fn secret_row(r: &Row<'_>) -> rusqlite::Result<Secret> {
    Ok(Secret {
        id: r.get(0)?,
        project_id: r.get(1)?,
        name: r.get(2)?,
        live_version: r.get(3)?,
        created_at: r.get(4)?,
        policy: parse_json(5, r.get(5)?)?,
    })
}

const VERSION_COLS: &str =
    "secret_id, version, wrapped_data_key, ciphertext, field_names, created_at, created_by";

fn version_row(r: &Row<'_>) -> rusqlite::Result<SecretVersion> {
    Ok(SecretVersion {
        secret_id: r.get(0)?,
        version: r.get(1)?,
        wrapped_data_key: r.get(2)?,
        ciphertext: r.get(3)?,
        field_names: parse_list(r.get(4)?)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
    })
}

const TOKEN_COLS: &str = "id, name, project_id, secret_hash, max_uses, uses, expires_at, machine_lifetime, created_at, created_by, revoked_at, constraints, k8s_cluster, k8s_namespace, k8s_policy, k8s_service_accounts, k8s_raw, lineage";

fn token_binding(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<KubernetesBinding>> {
    let cluster: Option<String> = r.get(first)?;
    let namespace: Option<String> = r.get(first + 1)?;
    let policy: Option<String> = r.get(first + 2)?;
    let (Some(cluster), Some(namespace), Some(policy)) = (cluster, namespace, policy) else {
        return Ok(None);
    };
    Ok(Some(KubernetesBinding {
        cluster,
        namespace,
        policy,
        service_accounts: parse_list(r.get(first + 3)?)?.unwrap_or_default(),
        raw_token: r.get::<_, Option<bool>>(first + 4)?.unwrap_or(false),
    }))
}

fn token_row(r: &Row<'_>) -> rusqlite::Result<EnrollmentToken> {
    Ok(EnrollmentToken {
        id: r.get(0)?,
        name: r.get(1)?,
        project_id: r.get(2)?,
        secret_hash: r.get(3)?,
        max_uses: r.get(4)?,
        uses: r.get(5)?,
        expires_at: r.get(6)?,
        machine_lifetime: r.get(7)?,
        created_at: r.get(8)?,
        created_by: r.get(9)?,
        revoked_at: r.get(10)?,
        constraints: parse_json(11, r.get(11)?)?.unwrap_or_default(),
        kubernetes: token_binding(r, 12)?,
        lineage: r.get(17)?,
    })
}

const CLUSTER_COLS: &str =
    "name, api_url, ca_pem, audience, sealed_reviewer_token, created_at, created_by";

fn cluster_row(r: &Row<'_>) -> rusqlite::Result<Cluster> {
    Ok(Cluster {
        name: r.get(0)?,
        api_url: r.get(1)?,
        ca_pem: r.get(2)?,
        audience: r.get(3)?,
        sealed_reviewer_token: r.get(4)?,
        created_at: r.get(5)?,
        created_by: r.get(6)?,
    })
}

const DELEGATION_COLS: &str =
    "id, agent_id, secret_id, fields, k8s_cluster, k8s_namespace, created_at, created_by";
const DELEGATION_COLS_D: &str = "d.id, d.agent_id, d.secret_id, d.fields, d.k8s_cluster, d.k8s_namespace, d.created_at, d.created_by";

fn delegation_row(r: &Row<'_>) -> rusqlite::Result<Delegation> {
    let cluster: Option<String> = r.get(4)?;
    let namespace: Option<String> = r.get(5)?;
    Ok(Delegation {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        secret_id: r.get(2)?,
        fields: parse_list(r.get(3)?)?,
        scope: cluster
            .zip(namespace)
            .map(|(cluster, namespace)| NamespaceRef { cluster, namespace }),
        created_at: r.get(6)?,
        created_by: r.get(7)?,
    })
}

const GRANT_COLS: &str = "g.id, g.machine_id, g.token_id, g.secret_id, g.fields, g.created_at";

fn grant_row(r: &Row<'_>) -> rusqlite::Result<Grant> {
    let machine: Option<String> = r.get(1)?;
    let token: Option<String> = r.get(2)?;
    let grantee = match (machine, token) {
        (Some(m), _) => Grantee::Machine(m),
        (None, Some(t)) => Grantee::Token(t),
        (None, None) => {
            return Err(rusqlite::Error::InvalidColumnType(
                1,
                "machine_id".into(),
                rusqlite::types::Type::Null,
            ));
        }
    };
    Ok(Grant {
        id: r.get(0)?,
        grantee,
        secret_id: r.get(3)?,
        fields: parse_list(r.get(4)?)?,
        created_at: r.get(5)?,
    })
}

const AUDIT_COLS: &str =
    "seq, at, actor, action, target, outcome, reason, source_ip, prev_hash, hash";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        outcome: r.get(5)?,
        reason: r.get(6)?,
        source_ip: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

impl SqliteTx<'_> {
    fn one<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        // Cached: the same few statements run for every request, and
        // parsing SQL is a real share of a signed read.
        let mut stmt = self.conn.prepare_cached(sql)?;
        Ok(stmt.query_row(params, map).optional()?)
    }

    fn many<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, map)?;
        Ok(rows.collect::<rusqlite::Result<Vec<T>>>()?)
    }

    fn changed(&self, sql: &str, params: impl rusqlite::Params) -> Result<bool> {
        Ok(self.conn.prepare_cached(sql)?.execute(params)? > 0)
    }
}

impl Tx for SqliteTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.finished = true;
        if !self.pending.is_empty() {
            lock(self.spent).apply(&self.pending);
        }
        match self.syncs {
            Some(wal) => sync_wal(wal),
            None => Ok(()),
        }
    }

    fn savepoint(&mut self) -> Result<()> {
        self.conn.execute_batch("SAVEPOINT request")?;
        self.pending.savepoint();
        Ok(())
    }

    fn rollback_to_savepoint(&mut self) -> Result<()> {
        self.conn.execute_batch("ROLLBACK TO request")?;
        self.pending.rollback_to_savepoint();
        self.audit_head = None;
        Ok(())
    }

    fn release_savepoint(&mut self) -> Result<()> {
        self.conn.execute_batch("RELEASE request")?;
        self.pending.release_savepoint();
        Ok(())
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.one("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
    }

    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn record_nonce(&mut self, key_id: &str, nonce: &str, expires_at: i64) -> Result<bool> {
        let spent = lock(self.spent);
        nonces::record(
            &self.conn,
            &spent,
            &mut self.pending,
            (key_id, nonce, expires_at),
        )
    }

    fn prune_nonces(&mut self, now: i64) -> Result<u64> {
        nonces::prune(&self.conn, &mut self.pending, now)
    }

    fn extend_nonces(&mut self, seconds: i64) -> Result<u64> {
        nonces::extend(&self.conn, &mut self.pending, seconds)
    }

    fn insert_admin(&mut self, a: &Admin) -> Result<()> {
        insert(
            &self.conn,
            "admin",
            "INSERT INTO admins (id, name, public_key, created_at, disabled_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![a.id, a.name, a.public_key, a.created_at, a.disabled_at],
        )
    }

    fn admin(&mut self, id: &str) -> Result<Option<Admin>> {
        self.one(
            "SELECT id, name, public_key, created_at, disabled_at FROM admins WHERE id = ?1",
            [id],
            admin_row,
        )
    }

    fn admin_count(&mut self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM admins", [], |r| r.get(0))?)
    }

    fn insert_bootstrap_token(&mut self, t: &BootstrapToken) -> Result<()> {
        insert(
            &self.conn,
            "bootstrap token",
            "INSERT INTO admin_bootstrap_tokens (id, secret_hash, expires_at, used_at) VALUES (?1, ?2, ?3, ?4)",
            params![t.id, t.secret_hash, t.expires_at, t.used_at],
        )
    }

    fn bootstrap_token(&mut self, id: &str) -> Result<Option<BootstrapToken>> {
        self.one(
            "SELECT id, secret_hash, expires_at, used_at FROM admin_bootstrap_tokens WHERE id = ?1",
            [id],
            |r| {
                Ok(BootstrapToken {
                    id: r.get(0)?,
                    secret_hash: r.get(1)?,
                    expires_at: r.get(2)?,
                    used_at: r.get(3)?,
                })
            },
        )
    }

    fn use_bootstrap_token(&mut self, id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE admin_bootstrap_tokens SET used_at = ?2 WHERE id = ?1 AND used_at IS NULL",
            params![id, now],
        )
    }

    fn insert_agent(&mut self, a: &Agent) -> Result<()> {
        let scopes = serde_json::to_string(&a.scopes).map_err(|e| Error::Corrupt(e.to_string()))?;
        insert(
            &self.conn,
            "agent",
            "INSERT INTO agents (id, name, public_key, scopes, created_at, disabled_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                a.id,
                a.name,
                a.public_key,
                scopes,
                a.created_at,
                a.disabled_at
            ],
        )
    }

    fn agent(&mut self, id: &str) -> Result<Option<Agent>> {
        self.one(
            "SELECT id, name, public_key, scopes, created_at, disabled_at FROM agents WHERE id = ?1",
            [id],
            agent_row,
        )
    }

    fn insert_machine(&mut self, m: &Machine) -> Result<()> {
        let metadata =
            serde_json::to_string(&m.metadata).map_err(|e| Error::Corrupt(e.to_string()))?;
        let restrictions = m.restrictions.as_ref().map(json_text).transpose()?;
        let k = m.kubernetes.as_ref();
        insert(
            &self.conn,
            "machine",
            &format!(
                "INSERT INTO machines ({MACHINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
            ),
            params![
                m.id,
                m.name,
                m.project_id,
                m.token_id,
                m.public_key,
                m.hostname,
                metadata,
                m.created_at,
                m.expires_at,
                m.disabled_at,
                restrictions,
                k.map(|k| &k.cluster),
                k.map(|k| &k.namespace),
                k.and_then(|k| k.service_account.as_ref()),
                k.and_then(|k| k.pod_name.as_ref()),
                k.and_then(|k| k.pod_uid.as_ref()),
                k.map(|k| k.attested),
            ],
        )
    }

    fn machine(&mut self, id: &str) -> Result<Option<Machine>> {
        self.one(
            &format!("SELECT {MACHINE_COLS} FROM machines WHERE id = ?1"),
            [id],
            machine_row,
        )
    }

    fn machines(&mut self) -> Result<Vec<Machine>> {
        self.many(
            &format!("SELECT {MACHINE_COLS} FROM machines ORDER BY created_at, id"),
            [],
            machine_row,
        )
    }

    fn delete_machine(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM machines WHERE id = ?1", [id])
    }

    fn insert_project(&mut self, p: &Project) -> Result<()> {
        insert(
            &self.conn,
            "project",
            &format!("INSERT INTO projects ({PROJECT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                p.id,
                p.name,
                p.wrapped_key,
                p.created_at,
                p.locked_at,
                p.lock_reason
            ],
        )
    }

    fn project_by_name(&mut self, name: &str) -> Result<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE name = ?1"),
            [name],
            project_row,
        )
    }

    fn project(&mut self, id: &str) -> Result<Option<Project>> {
        self.one(
            &format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1"),
            [id],
            project_row,
        )
    }

    fn insert_secret(&mut self, s: &Secret) -> Result<()> {
        let policy = s.policy.as_ref().map(json_text).transpose()?;
        insert(
            &self.conn,
            "secret",
            &format!("INSERT INTO secrets ({SECRET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                s.id,
                s.project_id,
                s.name,
                s.live_version,
                s.created_at,
                policy
            ],
        )
    }

    fn secret_by_name(&mut self, project_id: &str, name: &str) -> Result<Option<Secret>> {
        self.one(
            &format!("SELECT {SECRET_COLS} FROM secrets WHERE project_id = ?1 AND name = ?2"),
            [project_id, name],
            secret_row,
        )
    }

    fn secret(&mut self, id: &str) -> Result<Option<Secret>> {
        self.one(
            &format!("SELECT {SECRET_COLS} FROM secrets WHERE id = ?1"),
            [id],
            secret_row,
        )
    }

    fn set_live_version(&mut self, secret_id: &str, version: u32) -> Result<()> {
        self.conn.execute(
            "UPDATE secrets SET live_version = ?2 WHERE id = ?1",
            params![secret_id, version],
        )?;
        Ok(())
    }

    fn delete_secret(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM secrets WHERE id = ?1", [id])
    }

    fn insert_version(&mut self, v: &SecretVersion) -> Result<()> {
        insert(
            &self.conn,
            "secret version",
            &format!(
                "INSERT INTO secret_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                v.secret_id,
                v.version,
                v.wrapped_data_key,
                v.ciphertext,
                json_list(&v.field_names),
                v.created_at,
                v.created_by
            ],
        )
    }

    fn version(&mut self, secret_id: &str, version: u32) -> Result<Option<SecretVersion>> {
        self.one(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = ?1 AND version = ?2"
            ),
            params![secret_id, version],
            version_row,
        )
    }

    fn versions(&mut self, secret_id: &str) -> Result<Vec<SecretVersion>> {
        self.many(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = ?1 ORDER BY version"
            ),
            [secret_id],
            version_row,
        )
    }

    fn insert_token(&mut self, t: &EnrollmentToken) -> Result<()> {
        let constraints = (!t.constraints.is_empty())
            .then(|| json_text(&t.constraints))
            .transpose()?;
        let k = t.kubernetes.as_ref();
        let accounts = k.map(|k| json_text(&k.service_accounts)).transpose()?;
        insert(
            &self.conn,
            "enrollment token",
            &format!(
                "INSERT INTO enrollment_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
            ),
            params![
                t.id,
                t.name,
                t.project_id,
                t.secret_hash,
                t.max_uses,
                t.uses,
                t.expires_at,
                t.machine_lifetime,
                t.created_at,
                t.created_by,
                t.revoked_at,
                constraints,
                k.map(|k| &k.cluster),
                k.map(|k| &k.namespace),
                k.map(|k| &k.policy),
                accounts,
                k.map(|k| k.raw_token),
                t.lineage,
            ],
        )
    }

    fn token(&mut self, id: &str) -> Result<Option<EnrollmentToken>> {
        self.one(
            &format!("SELECT {TOKEN_COLS} FROM enrollment_tokens WHERE id = ?1"),
            [id],
            token_row,
        )
    }

    fn use_token(&mut self, id: &str) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE lineage = (SELECT lineage FROM enrollment_tokens WHERE id = ?1)
               AND (max_uses IS NULL OR uses < max_uses)",
            [id],
        )
    }

    fn shorten_token(&mut self, id: &str, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET expires_at = MIN(expires_at, ?2) WHERE id = ?1",
            params![id, expires_at],
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
                 WHERE k8s_cluster = ?1 AND k8s_namespace = ?2 AND k8s_policy = ?3
                   AND k8s_raw = 0 AND revoked_at IS NULL AND expires_at > ?4
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            ),
            params![cluster, namespace, policy, now],
            token_row,
        )
    }

    fn machines_of_pod(&mut self, cluster: &str, pod_uid: &str) -> Result<Vec<Machine>> {
        self.many(
            &format!(
                "SELECT {MACHINE_COLS} FROM machines
                 WHERE k8s_cluster = ?1 AND k8s_pod_uid = ?2 AND k8s_attested = 1
                 ORDER BY created_at, id"
            ),
            [cluster, pod_uid],
            machine_row,
        )
    }

    fn insert_cluster(&mut self, c: &Cluster) -> Result<()> {
        insert(
            &self.conn,
            "cluster",
            &format!("INSERT INTO clusters ({CLUSTER_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                c.name,
                c.api_url,
                c.ca_pem,
                c.audience,
                c.sealed_reviewer_token,
                c.created_at,
                c.created_by
            ],
        )
    }

    fn cluster(&mut self, name: &str) -> Result<Option<Cluster>> {
        self.one(
            &format!("SELECT {CLUSTER_COLS} FROM clusters WHERE name = ?1"),
            [name],
            cluster_row,
        )
    }

    fn delete_cluster(&mut self, name: &str) -> Result<bool> {
        self.changed("DELETE FROM clusters WHERE name = ?1", [name])
    }

    fn insert_delegation(&mut self, d: &Delegation) -> Result<()> {
        let scope = d.scope.as_ref();
        insert(
            &self.conn,
            "delegation",
            &format!(
                "INSERT INTO delegations ({DELEGATION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ),
            params![
                d.id,
                d.agent_id,
                d.secret_id,
                json_list(&d.fields),
                scope.map(|s| &s.cluster),
                scope.map(|s| &s.namespace),
                d.created_at,
                d.created_by
            ],
        )
    }

    fn delegations_on(&mut self, agent_id: &str, secret_id: &str) -> Result<Vec<Delegation>> {
        self.many(
            &format!(
                "SELECT {DELEGATION_COLS_D} FROM delegations d
                 WHERE d.agent_id = ?1 AND d.secret_id = ?2 ORDER BY d.id"
            ),
            [agent_id, secret_id],
            delegation_row,
        )
    }

    fn delegated_in_project(
        &mut self,
        agent_id: &str,
        project_id: &str,
        scope: Option<&NamespaceRef>,
    ) -> Result<bool> {
        let found: Option<i64> = self.one(
            "SELECT 1 FROM delegations d JOIN secrets s ON s.id = d.secret_id
             WHERE d.agent_id = ?1 AND s.project_id = ?2
               AND d.k8s_cluster IS ?3 AND d.k8s_namespace IS ?4 LIMIT 1",
            params![
                agent_id,
                project_id,
                scope.map(|s| &s.cluster),
                scope.map(|s| &s.namespace)
            ],
            |r| r.get(0),
        )?;
        Ok(found.is_some())
    }

    fn delete_delegation(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM delegations WHERE id = ?1", [id])
    }

    fn revoke_token(&mut self, id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now],
        )
    }

    fn insert_grant(&mut self, g: &Grant) -> Result<()> {
        let (machine, token) = match &g.grantee {
            Grantee::Machine(m) => (Some(m.as_str()), None),
            Grantee::Token(t) => (None, Some(t.as_str())),
        };
        insert(
            &self.conn,
            "grant",
            "INSERT INTO grants (id, machine_id, token_id, secret_id, fields, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                g.id,
                machine,
                token,
                g.secret_id,
                json_list(&g.fields),
                g.created_at
            ],
        )
    }

    fn grants(&mut self, grantee: Option<&Grantee>) -> Result<Vec<GrantDetail>> {
        let (filter, value) = match grantee {
            Some(Grantee::Machine(m)) => ("WHERE g.machine_id = ?1", m.as_str()),
            Some(Grantee::Token(t)) => ("WHERE g.token_id = ?1", t.as_str()),
            None => ("WHERE ?1 = ?1", ""),
        };
        self.many(
            &format!(
                "SELECT {GRANT_COLS}, p.name, s.name, s.live_version FROM grants g
                 JOIN secrets s ON s.id = g.secret_id JOIN projects p ON p.id = s.project_id
                 {filter} ORDER BY p.name, s.name, g.id"
            ),
            [value],
            |r| {
                Ok(GrantDetail {
                    grant: grant_row(r)?,
                    project: r.get(6)?,
                    secret: r.get(7)?,
                    live_version: r.get(8)?,
                })
            },
        )
    }

    fn machine_grant(&mut self, machine_id: &str, secret_id: &str) -> Result<Option<Grant>> {
        self.one(
            &format!(
                "SELECT {GRANT_COLS} FROM grants g WHERE g.machine_id = ?1 AND g.secret_id = ?2"
            ),
            [machine_id, secret_id],
            grant_row,
        )
    }

    fn delete_grant(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM grants WHERE id = ?1", [id])
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
        if let Some(head) = &self.audit_head {
            return Ok(Some(head.clone()));
        }
        self.one(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn insert_audit(&mut self, e: &AuditEntry) -> Result<()> {
        insert(
            &self.conn,
            "audit entry",
            &format!(
                "INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ),
            params![
                e.seq,
                e.at,
                e.actor,
                e.action,
                e.target,
                e.outcome,
                e.reason,
                e.source_ip,
                e.prev_hash,
                e.hash
            ],
        )?;
        self.audit_head = Some((e.seq, e.hash.clone()));
        Ok(())
    }

    fn audit(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.many(
            &format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            params![after, limit],
            audit_row,
        )
    }

    fn prune_audit(&mut self, before: i64) -> Result<Option<(u64, String)>> {
        self.audit_head = None;
        let last: Option<(u64, String)> = self.one(
            "SELECT seq, hash FROM audit
             WHERE at < ?1 AND seq < (SELECT MAX(seq) FROM audit)
             ORDER BY seq DESC LIMIT 1",
            [before],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some((seq, _)) = &last {
            self.conn
                .execute("DELETE FROM audit WHERE seq <= ?1", [seq])?;
        }
        Ok(last)
    }

    fn set_machine_disabled(&mut self, id: &str, disabled_at: Option<i64>) -> Result<bool> {
        self.changed(
            "UPDATE machines SET disabled_at = ?2 WHERE id = ?1",
            params![id, disabled_at],
        )
    }

    fn set_machine_expiry(&mut self, id: &str, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE machines SET expires_at = ?2 WHERE id = ?1",
            params![id, expires_at],
        )
    }

    fn machines_expired_before(&mut self, before: i64) -> Result<Vec<Machine>> {
        self.many(
            &format!(
                "SELECT {MACHINE_COLS} FROM machines WHERE expires_at <= ?1 ORDER BY expires_at, id"
            ),
            [before],
            machine_row,
        )
    }

    fn set_secret_policy(&mut self, secret_id: &str, policy: Option<&AccessPolicy>) -> Result<()> {
        let policy = policy.map(json_text).transpose()?;
        self.conn.execute(
            "UPDATE secrets SET policy = ?2 WHERE id = ?1",
            params![secret_id, policy],
        )?;
        Ok(())
    }

    fn lock_project(&mut self, id: &str, now: i64, reason: &str) -> Result<bool> {
        self.changed(
            "UPDATE projects SET locked_at = ?2, lock_reason = ?3 WHERE id = ?1 AND locked_at IS NULL",
            params![id, now, reason],
        )
    }

    fn unlock_project(&mut self, id: &str) -> Result<bool> {
        self.changed(
            "UPDATE projects SET locked_at = NULL, lock_reason = NULL WHERE id = ?1 AND locked_at IS NOT NULL",
            [id],
        )
    }

    fn count_read(&mut self, secret_id: &str, day: &str, cap: u32) -> Result<bool> {
        // One statement: insert the first read of the day, or count one more
        // only while under the cap.
        self.changed(
            "INSERT INTO read_counts (secret_id, day, count) SELECT ?1, ?2, 1 WHERE ?3 > 0
             ON CONFLICT (secret_id, day) DO UPDATE SET count = count + 1 WHERE count < ?3",
            params![secret_id, day, cap],
        )
    }

    fn prune_read_counts(&mut self, day: &str) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached("DELETE FROM read_counts WHERE day < ?1")?
            .execute([day])? as u64)
    }

    fn prune_cosigns(&mut self, before: i64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM cosign_requests
                 WHERE (consumed_at IS NOT NULL AND consumed_at < ?1) OR expires_at < ?1",
            )?
            .execute([before])? as u64)
    }

    fn prune_deliveries(&mut self, before: i64) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(
                "DELETE FROM webhook_deliveries
                 WHERE (delivered_at IS NOT NULL AND delivered_at < ?1)
                    OR (failed_at IS NOT NULL AND failed_at < ?1)",
            )?
            .execute([before])? as u64)
    }

    fn insert_rotation(&mut self, c: &RotationConfig) -> Result<()> {
        insert(
            &self.conn,
            "rotation config for this secret",
            &format!(
                "INSERT INTO rotation_configs ({ROTATION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                c.id,
                c.secret_id,
                c.provider.as_str(),
                json_text(&c.target)?,
                c.admin_secret_id,
                c.agent_machine_id,
                c.interval_seconds,
                c.next_due_at,
                json_text(&c.policy)?,
                c.lease_seconds,
                c.grace_seconds,
                c.created_at,
                c.created_by
            ],
        )
    }

    fn rotation(&mut self, id: &str) -> Result<Option<RotationConfig>> {
        self.one(
            &format!("SELECT {ROTATION_COLS} FROM rotation_configs WHERE id = ?1"),
            [id],
            rotation_row,
        )
    }

    fn rotations(&mut self) -> Result<Vec<RotationConfig>> {
        self.many(
            &format!("SELECT {ROTATION_COLS} FROM rotation_configs ORDER BY created_at, id"),
            [],
            rotation_row,
        )
    }

    fn rotations_due(&mut self, now: i64) -> Result<Vec<RotationConfig>> {
        self.many(
            &format!(
                "SELECT {ROTATION_COLS} FROM rotation_configs
                 WHERE next_due_at IS NOT NULL AND next_due_at <= ?1 ORDER BY next_due_at, id"
            ),
            [now],
            rotation_row,
        )
    }

    fn set_rotation_due(&mut self, id: &str, next_due_at: Option<i64>) -> Result<()> {
        self.changed(
            "UPDATE rotation_configs SET next_due_at = ?2 WHERE id = ?1",
            params![id, next_due_at],
        )
        .map(drop)
    }

    fn insert_rotation_job(&mut self, j: &RotationJob) -> Result<()> {
        insert(
            &self.conn,
            "running rotation of this secret",
            &format!(
                "INSERT INTO rotation_jobs ({JOB_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            params![
                j.id,
                j.config_id,
                j.secret_id,
                j.state.as_str(),
                j.sealed_credential,
                j.from_version,
                j.to_version,
                j.created_at,
                j.created_by,
                j.lease_until,
                j.retire_after,
                j.finished_at,
                j.reason
            ],
        )
    }

    fn rotation_job(&mut self, id: &str) -> Result<Option<RotationJob>> {
        self.one(
            &format!("SELECT {JOB_COLS} FROM rotation_jobs WHERE id = ?1"),
            [id],
            job_row,
        )
    }

    fn update_rotation_job(&mut self, j: &RotationJob) -> Result<()> {
        let sql = "UPDATE rotation_jobs SET state = ?2, sealed_credential = ?3, to_version = ?4,
                   lease_until = ?5, retire_after = ?6, finished_at = ?7, reason = ?8 WHERE id = ?1";
        match self.conn.prepare_cached(sql).and_then(|mut stmt| {
            stmt.execute(params![
                j.id,
                j.state.as_str(),
                j.sealed_credential,
                j.to_version,
                j.lease_until,
                j.retire_after,
                j.finished_at,
                j.reason
            ])
        }) {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => {
                Err(Error::Duplicate("running rotation of this secret"))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn rotation_jobs(&mut self, config_id: &str, limit: u32) -> Result<Vec<RotationJob>> {
        self.many(
            &format!(
                "SELECT {JOB_COLS} FROM rotation_jobs WHERE config_id = ?1
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ),
            params![config_id, limit],
            job_row,
        )
    }

    fn rotation_jobs_expired(&mut self, now: i64) -> Result<Vec<RotationJob>> {
        self.many(
            &format!(
                "SELECT {JOB_COLS} FROM rotation_jobs
                 WHERE state = 'claimed' AND lease_until <= ?1 ORDER BY lease_until, id"
            ),
            [now],
            job_row,
        )
    }

    fn rotation_job_to_claim(&mut self, machine_id: &str, now: i64) -> Result<Option<RotationJob>> {
        self.one(
            &format!(
                "SELECT {} FROM rotation_jobs j JOIN rotation_configs c ON c.id = j.config_id
                 WHERE c.agent_machine_id = ?1
                   AND (j.state = 'pending'
                        OR (j.state = 'promoted' AND j.retire_after <= ?2
                            AND (j.lease_until IS NULL OR j.lease_until <= ?2)))
                 ORDER BY j.created_at, j.id LIMIT 1",
                qualified(JOB_COLS, "j")
            ),
            params![machine_id, now],
            job_row,
        )
    }

    fn insert_cosign(&mut self, c: &Cosign) -> Result<()> {
        insert(
            &self.conn,
            "co-sign request",
            &format!(
                "INSERT INTO cosign_requests ({COSIGN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                c.id,
                c.secret_id,
                c.machine_id,
                c.requested_by,
                c.created_at,
                c.expires_at,
                c.approved_by,
                c.approved_at,
                c.consumed_at
            ],
        )
    }

    fn cosign(&mut self, id: &str) -> Result<Option<Cosign>> {
        self.one(
            &format!("SELECT {COSIGN_COLS} FROM cosign_requests WHERE id = ?1"),
            [id],
            cosign_row,
        )
    }

    fn approve_cosign(&mut self, id: &str, by: &str, now: i64, expires_at: i64) -> Result<bool> {
        self.changed(
            "UPDATE cosign_requests SET approved_by = ?2, approved_at = ?3, expires_at = ?4
             WHERE id = ?1 AND approved_at IS NULL AND consumed_at IS NULL AND expires_at > ?3
               AND requested_by <> ?2",
            params![id, by, now, expires_at],
        )
    }

    fn consume_cosign(&mut self, secret_id: &str, machine_id: &str, now: i64) -> Result<bool> {
        self.changed(
            "UPDATE cosign_requests SET consumed_at = ?3 WHERE id = (
                 SELECT id FROM cosign_requests
                 WHERE secret_id = ?1 AND machine_id = ?2 AND approved_at IS NOT NULL
                   AND approved_by IS NOT NULL AND approved_by <> requested_by
                   AND consumed_at IS NULL AND expires_at > ?3
                 ORDER BY approved_at LIMIT 1)",
            params![secret_id, machine_id, now],
        )
    }

    fn insert_webhook(&mut self, w: &Webhook) -> Result<()> {
        let events = json_text(&w.events)?;
        insert(
            &self.conn,
            "webhook",
            "INSERT INTO webhooks (id, url, events, sealed_secret, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                w.id,
                w.url,
                events,
                w.sealed_secret,
                w.created_at,
                w.created_by
            ],
        )
    }

    fn webhook(&mut self, id: &str) -> Result<Option<Webhook>> {
        self.one(
            "SELECT id, url, events, sealed_secret, created_at, created_by FROM webhooks WHERE id = ?1",
            [id],
            webhook_row,
        )
    }

    fn webhooks(&mut self) -> Result<Vec<Webhook>> {
        self.many(
            "SELECT id, url, events, sealed_secret, created_at, created_by FROM webhooks ORDER BY created_at, id",
            [],
            webhook_row,
        )
    }

    fn delete_webhook(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM webhooks WHERE id = ?1", [id])
    }

    fn delivery_counts(&mut self, webhook_id: &str) -> Result<DeliveryCounts> {
        Ok(self.conn.query_row(
            "SELECT
                 COALESCE(SUM(delivered_at IS NULL AND failed_at IS NULL), 0),
                 COALESCE(SUM(delivered_at IS NOT NULL), 0),
                 COALESCE(SUM(failed_at IS NOT NULL), 0)
             FROM webhook_deliveries WHERE webhook_id = ?1",
            [webhook_id],
            |r| {
                Ok(DeliveryCounts {
                    pending: r.get(0)?,
                    delivered: r.get(1)?,
                    failed: r.get(2)?,
                })
            },
        )?)
    }

    fn enqueue_delivery(
        &mut self,
        webhook_id: &str,
        event: &str,
        body: &str,
        now: i64,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event, body, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
            params![webhook_id, event, body, now],
        )?;
        Ok(())
    }

    fn claim_deliveries(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let due = self.many(
            &format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ?1
                 ORDER BY next_attempt_at, id LIMIT ?2"
            ),
            params![now, limit],
            delivery_row,
        )?;
        for delivery in &due {
            self.conn.execute(
                "UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE id = ?1",
                params![delivery.id, lease_until],
            )?;
        }
        Ok(due)
    }

    fn finish_delivery(&mut self, id: i64, attempt: &Attempt, now: i64) -> Result<()> {
        match attempt {
            Attempt::Delivered => self.conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = ?2, last_error = NULL
                 WHERE id = ?1",
                params![id, now],
            )?,
            Attempt::Retry {
                next_attempt_at,
                error,
            } => self.conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, next_attempt_at, error],
            )?,
            Attempt::Failed { error } => self.conn.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, failed_at = ?2, last_error = ?3
                 WHERE id = ?1",
                params![id, now, error],
            )?,
        };
        Ok(())
    }

    fn deliveries(&mut self, webhook_id: &str) -> Result<Vec<Delivery>> {
        self.many(
            &format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id = ?1 ORDER BY id"
            ),
            [webhook_id],
            delivery_row,
        )
    }
}

const ROTATION_COLS: &str = "id, secret_id, provider, target, admin_secret_id, agent_machine_id, interval_seconds, next_due_at, policy, lease_seconds, grace_seconds, created_at, created_by";
const JOB_COLS: &str = "id, config_id, secret_id, state, sealed_credential, from_version, to_version, created_at, created_by, lease_until, retire_after, finished_at, reason";

const COSIGN_COLS: &str = "id, secret_id, machine_id, requested_by, created_at, expires_at, approved_by, approved_at, consumed_at";

/// `cols` ("a, b") with each column qualified by `table` ("t.a, t.b").
fn qualified(cols: &str, table: &str) -> String {
    cols.split(", ")
        .map(|col| format!("{table}.{col}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The JSON array of `ids`, bound to `json_each(?)` so a whole page's ids
/// go to one prepared statement.
fn json_ids(ids: &[&str]) -> Result<String> {
    json_text(&ids)
}

/// The conditions of a list query that apply (a filter given, a cursor past
/// the first page) and their values, in order, with `?` placeholders. One
/// that does not apply is left out of the statement rather than written as
/// `?n IS NULL OR ...`, which would keep SQLite from seeking an index.
#[derive(Default)]
struct Filter<'a> {
    conditions: Vec<&'static str>,
    values: Vec<&'a dyn rusqlite::ToSql>,
}

impl<'a> Filter<'a> {
    fn when(
        mut self,
        applies: bool,
        condition: &'static str,
        values: &[&'a dyn rusqlite::ToSql],
    ) -> Self {
        if applies {
            self.conditions.push(condition);
            self.values.extend_from_slice(values);
        }
        self
    }

    /// `WHERE ...` (or nothing) for the statement.
    fn clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// The values, then `last` (the page's row count).
    fn values(mut self, last: &'a dyn rusqlite::ToSql) -> Vec<&'a dyn rusqlite::ToSql> {
        self.values.push(last);
        self.values
    }
}

impl Read for SqliteTx<'_> {
    fn machine_grants(&mut self, machine_id: &str) -> Result<Vec<GrantDetail>> {
        Tx::grants(self, Some(&Grantee::Machine(machine_id.to_owned())))
    }

    fn machines_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(Machine, String)>> {
        let (at, id) = page.after.clone().unzip();
        let fetch = page.fetch();
        let filter =
            Filter::default().when(at.is_some(), "(m.created_at, m.id) > (?, ?)", &[&at, &id]);
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, '') FROM machines m
                 LEFT JOIN projects p ON p.id = m.project_id {}
                 ORDER BY m.created_at, m.id LIMIT ?",
                qualified(MACHINE_COLS, "m"),
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| Ok((machine_row(r)?, r.get(17)?)),
        )
    }

    fn tokens_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<(EnrollmentToken, String)>> {
        let (at, id) = page.after.clone().unzip();
        let fetch = page.fetch();
        let filter =
            Filter::default().when(at.is_some(), "(t.created_at, t.id) > (?, ?)", &[&at, &id]);
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, '') FROM enrollment_tokens t
                 LEFT JOIN projects p ON p.id = t.project_id {}
                 ORDER BY t.created_at, t.id LIMIT ?",
                qualified(TOKEN_COLS, "t"),
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| Ok((token_row(r)?, r.get(18)?)),
        )
    }

    fn projects_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Project>> {
        let fetch = page.fetch();
        let filter = Filter::default().when(page.after.is_some(), "name > ?", &[&page.after]);
        self.many(
            &format!(
                "SELECT {PROJECT_COLS} FROM projects {} ORDER BY name LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            project_row,
        )
    }

    fn secrets_page(&mut self, project_id: &str, page: &Page<NameKey>) -> Result<Vec<Secret>> {
        let fetch = page.fetch();
        let filter = Filter::default()
            .when(true, "project_id = ?", &[&project_id])
            .when(page.after.is_some(), "name > ?", &[&page.after]);
        self.many(
            &format!(
                "SELECT {SECRET_COLS} FROM secrets {} ORDER BY name LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            secret_row,
        )
    }

    fn versions_of(&mut self, secret_ids: &[&str]) -> Result<Vec<SecretVersion>> {
        self.many(
            &format!(
                "SELECT {VERSION_COLS} FROM secret_versions
                 WHERE secret_id IN (SELECT value FROM json_each(?1))
                 ORDER BY secret_id, version"
            ),
            [json_ids(secret_ids)?],
            version_row,
        )
    }

    fn clusters_page(&mut self, page: &Page<NameKey>) -> Result<Vec<Cluster>> {
        let fetch = page.fetch();
        let filter = Filter::default().when(page.after.is_some(), "name > ?", &[&page.after]);
        self.many(
            &format!(
                "SELECT {CLUSTER_COLS} FROM clusters {} ORDER BY name LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
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
        let fetch = page.fetch();
        let filter = Filter::default()
            .when(agent_id.is_some(), "d.agent_id = ?", &[&agent_id])
            .when(
                agent.is_some(),
                "(d.agent_id, p.name, s.name, d.id) > (?, ?, ?, ?)",
                &[&agent, &project, &secret, &id],
            );
        self.many(
            &format!(
                "SELECT {DELEGATION_COLS_D}, p.id, p.name, s.name FROM delegations d
                 JOIN secrets s ON s.id = d.secret_id JOIN projects p ON p.id = s.project_id {}
                 ORDER BY d.agent_id, p.name, s.name, d.id LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| {
                Ok(DelegationDetail {
                    delegation: delegation_row(r)?,
                    project_id: r.get(8)?,
                    project: r.get(9)?,
                    secret: r.get(10)?,
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
        let fetch = page.fetch();
        let filter = Filter::default()
            .when(machine.is_some(), "g.machine_id = ?", &[&machine])
            .when(token.is_some(), "g.token_id = ?", &[&token])
            .when(
                project.is_some(),
                "(p.name, s.name, g.id) > (?, ?, ?)",
                &[&project, &secret, &id],
            );
        self.many(
            &format!(
                "SELECT {GRANT_COLS}, p.name, s.name, s.live_version FROM grants g
                 JOIN secrets s ON s.id = g.secret_id JOIN projects p ON p.id = s.project_id {}
                 ORDER BY p.name, s.name, g.id LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| {
                Ok(GrantDetail {
                    grant: grant_row(r)?,
                    project: r.get(6)?,
                    secret: r.get(7)?,
                    live_version: r.get(8)?,
                })
            },
        )
    }

    fn cosigns_page(&mut self, now: i64, page: &Page<CreatedKey>) -> Result<Vec<CosignDetail>> {
        let (at, id) = page.after.clone().unzip();
        let fetch = page.fetch();
        let filter = Filter::default()
            .when(true, "c.consumed_at IS NULL AND c.expires_at > ?", &[&now])
            .when(at.is_some(), "(c.created_at, c.id) > (?, ?)", &[&at, &id]);
        self.many(
            &format!(
                "SELECT {}, COALESCE(p.name, ''), COALESCE(s.name, '') FROM cosign_requests c
                 LEFT JOIN secrets s ON s.id = c.secret_id
                 LEFT JOIN projects p ON p.id = s.project_id {}
                 ORDER BY c.created_at, c.id LIMIT ?",
                qualified(COSIGN_COLS, "c"),
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| {
                Ok(CosignDetail {
                    cosign: cosign_row(r)?,
                    project: r.get(9)?,
                    secret: r.get(10)?,
                })
            },
        )
    }

    fn webhooks_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<Webhook>> {
        let (at, id) = page.after.clone().unzip();
        let fetch = page.fetch();
        let filter = Filter::default().when(at.is_some(), "(created_at, id) > (?, ?)", &[&at, &id]);
        self.many(
            &format!(
                "SELECT id, url, events, sealed_secret, created_at, created_by FROM webhooks {}
                 ORDER BY created_at, id LIMIT ?",
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            webhook_row,
        )
    }

    fn rotations_page(&mut self, page: &Page<CreatedKey>) -> Result<Vec<ListedRotation>> {
        let (at, id) = page.after.clone().unzip();
        let fetch = page.fetch();
        let filter =
            Filter::default().when(at.is_some(), "(c.created_at, c.id) > (?, ?)", &[&at, &id]);
        self.many(
            &format!(
                "SELECT {}, p.name, s.name, a.name FROM rotation_configs c
                 JOIN secrets s ON s.id = c.secret_id
                 JOIN projects p ON p.id = s.project_id
                 JOIN secrets a ON a.id = c.admin_secret_id {}
                 ORDER BY c.created_at, c.id LIMIT ?",
                qualified(ROTATION_COLS, "c"),
                filter.clause()
            ),
            filter.values(&fetch).as_slice(),
            |r| {
                Ok(ListedRotation {
                    config: rotation_row(r)?,
                    project: r.get(13)?,
                    secret: r.get(14)?,
                    admin_secret: r.get(15)?,
                })
            },
        )
    }

    fn delivery_counts_of(
        &mut self,
        webhook_ids: &[&str],
    ) -> Result<Vec<(String, DeliveryCounts)>> {
        self.many(
            "SELECT webhook_id,
                 COALESCE(SUM(delivered_at IS NULL AND failed_at IS NULL), 0),
                 COALESCE(SUM(delivered_at IS NOT NULL), 0),
                 COALESCE(SUM(failed_at IS NOT NULL), 0)
             FROM webhook_deliveries WHERE webhook_id IN (SELECT value FROM json_each(?1))
             GROUP BY webhook_id",
            [json_ids(webhook_ids)?],
            |r| {
                Ok((
                    r.get(0)?,
                    DeliveryCounts {
                        pending: r.get(1)?,
                        delivered: r.get(2)?,
                        failed: r.get(3)?,
                    },
                ))
            },
        )
    }

    fn audit_through(&mut self, after: u64, through: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.many(
            &format!(
                "SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
            ),
            params![after, through, limit],
            audit_row,
        )
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        self.one("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
    }

    fn read_view(
        &mut self,
        machine_id: &str,
        project: &str,
        secret: &str,
        version: Option<u32>,
    ) -> Result<Option<ReadView>> {
        // Point queries on primary keys and unique indexes, each prepared
        // once per connection.
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

fn cosign_row(r: &Row<'_>) -> rusqlite::Result<Cosign> {
    Ok(Cosign {
        id: r.get(0)?,
        secret_id: r.get(1)?,
        machine_id: r.get(2)?,
        requested_by: r.get(3)?,
        created_at: r.get(4)?,
        expires_at: r.get(5)?,
        approved_by: r.get(6)?,
        approved_at: r.get(7)?,
        consumed_at: r.get(8)?,
    })
}

fn webhook_row(r: &Row<'_>) -> rusqlite::Result<Webhook> {
    Ok(Webhook {
        id: r.get(0)?,
        url: r.get(1)?,
        events: parse_json(2, r.get(2)?)?.unwrap_or_default(),
        sealed_secret: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
    })
}

const DELIVERY_COLS: &str = "id, webhook_id, event, body, created_at, attempts, next_attempt_at, delivered_at, failed_at, last_error";

fn delivery_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        webhook_id: r.get(1)?,
        event: r.get(2)?,
        body: r.get(3)?,
        created_at: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        delivered_at: r.get(7)?,
        failed_at: r.get(8)?,
        last_error: r.get(9)?,
    })
}

fn rotation_row(r: &Row<'_>) -> rusqlite::Result<RotationConfig> {
    let provider: String = r.get(2)?;
    Ok(RotationConfig {
        id: r.get(0)?,
        secret_id: r.get(1)?,
        provider: parse_json(2, Some(format!("{provider:?}")))?.ok_or(
            rusqlite::Error::InvalidColumnType(2, "provider".into(), rusqlite::types::Type::Text),
        )?,
        target: parse_json(3, r.get(3)?)?.ok_or(rusqlite::Error::InvalidColumnType(
            3,
            "target".into(),
            rusqlite::types::Type::Null,
        ))?,
        admin_secret_id: r.get(4)?,
        agent_machine_id: r.get(5)?,
        interval_seconds: r.get(6)?,
        next_due_at: r.get(7)?,
        policy: parse_json(8, r.get(8)?)?.ok_or(rusqlite::Error::InvalidColumnType(
            8,
            "policy".into(),
            rusqlite::types::Type::Null,
        ))?,
        lease_seconds: r.get(9)?,
        grace_seconds: r.get(10)?,
        created_at: r.get(11)?,
        created_by: r.get(12)?,
    })
}

fn job_row(r: &Row<'_>) -> rusqlite::Result<RotationJob> {
    let state: String = r.get(3)?;
    Ok(RotationJob {
        id: r.get(0)?,
        config_id: r.get(1)?,
        secret_id: r.get(2)?,
        state: parse_json(3, Some(format!("{state:?}")))?.ok_or(
            rusqlite::Error::InvalidColumnType(3, "state".into(), rusqlite::types::Type::Text),
        )?,
        sealed_credential: r.get(4)?,
        from_version: r.get(5)?,
        to_version: r.get(6)?,
        created_at: r.get(7)?,
        created_by: r.get(8)?,
        lease_until: r.get(9)?,
        retire_after: r.get(10)?,
        finished_at: r.get(11)?,
        reason: r.get(12)?,
    })
}
