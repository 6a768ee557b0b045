//! The embedded default: one SQLite file in WAL mode.
//!
//! SQLite has one writer at a time and every signed request writes (its
//! nonce), so the store keeps one connection behind a mutex and starts each
//! transaction with `BEGIN IMMEDIATE`: two requests never interleave, which
//! is what makes caps, token uses and canary locks exact.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension as _, Row, params};
use signet_client::api::{AuditEntry, Scope};

use super::*;

const MIGRATIONS: &[&str] = &[include_str!("../../migrations/0001_init.sql")];

/// The SQLite backend.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) `signet.db` in `data_dir`, with the
    /// directory private to this user, and runs pending migrations.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir_err = |source| Error::DataDir {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(dir_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(dir_err)?;
        }
        let path = data_dir.join("signet.db");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
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
        let conn = self.conn.lock().map_err(|_| Error::Poisoned)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Box::new(SqliteTx {
            conn,
            finished: false,
        }))
    }
}

struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    finished: bool,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing to report to: the request already failed.
            let _ = self.conn.execute_batch("ROLLBACK");
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

fn unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation
    )
}

fn insert(conn: &Connection, what: &'static str, sql: &str, params: impl rusqlite::Params) -> Result<()> {
    match conn.execute(sql, params) {
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

const MACHINE_COLS: &str = "id, name, project_id, token_id, public_key, hostname, metadata, created_at, expires_at, disabled_at";

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

const SECRET_COLS: &str = "id, project_id, name, live_version, created_at";

fn secret_row(r: &Row<'_>) -> rusqlite::Result<Secret> {
    Ok(Secret {
        id: r.get(0)?,
        project_id: r.get(1)?,
        name: r.get(2)?,
        live_version: r.get(3)?,
        created_at: r.get(4)?,
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

const TOKEN_COLS: &str = "id, name, project_id, secret_hash, max_uses, uses, expires_at, machine_lifetime, created_at, created_by, revoked_at";

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

const AUDIT_COLS: &str = "seq, at, actor, action, target, outcome, reason, source_ip, prev_hash, hash";

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
        Ok(self.conn.query_row(sql, params, map).optional()?)
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
        Ok(self.conn.execute(sql, params)? > 0)
    }
}

impl Tx for SqliteTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn.execute_batch("COMMIT")?;
        self.finished = true;
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
        self.changed(
            "INSERT INTO nonces (key_id, nonce, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            params![key_id, nonce, expires_at],
        )
    }

    fn prune_nonces(&mut self, now: i64) -> Result<u64> {
        Ok(self
            .conn
            .execute("DELETE FROM nonces WHERE expires_at < ?1", [now])? as u64)
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
            params![a.id, a.name, a.public_key, scopes, a.created_at, a.disabled_at],
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
        insert(
            &self.conn,
            "machine",
            &format!("INSERT INTO machines ({MACHINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
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
                m.disabled_at
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
            params![p.id, p.name, p.wrapped_key, p.created_at, p.locked_at, p.lock_reason],
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

    fn projects(&mut self) -> Result<Vec<Project>> {
        self.many(
            &format!("SELECT {PROJECT_COLS} FROM projects ORDER BY name"),
            [],
            project_row,
        )
    }

    fn insert_secret(&mut self, s: &Secret) -> Result<()> {
        insert(
            &self.conn,
            "secret",
            &format!("INSERT INTO secrets ({SECRET_COLS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
            params![s.id, s.project_id, s.name, s.live_version, s.created_at],
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

    fn secrets(&mut self, project_id: &str) -> Result<Vec<Secret>> {
        self.many(
            &format!("SELECT {SECRET_COLS} FROM secrets WHERE project_id = ?1 ORDER BY name"),
            [project_id],
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
            &format!("INSERT INTO secret_versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
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
            &format!("SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = ?1 AND version = ?2"),
            params![secret_id, version],
            version_row,
        )
    }

    fn versions(&mut self, secret_id: &str) -> Result<Vec<SecretVersion>> {
        self.many(
            &format!("SELECT {VERSION_COLS} FROM secret_versions WHERE secret_id = ?1 ORDER BY version"),
            [secret_id],
            version_row,
        )
    }

    fn insert_token(&mut self, t: &EnrollmentToken) -> Result<()> {
        insert(
            &self.conn,
            "enrollment token",
            &format!("INSERT INTO enrollment_tokens ({TOKEN_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
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
                t.revoked_at
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

    fn tokens(&mut self) -> Result<Vec<EnrollmentToken>> {
        self.many(
            &format!("SELECT {TOKEN_COLS} FROM enrollment_tokens ORDER BY created_at, id"),
            [],
            token_row,
        )
    }

    fn use_token(&mut self, id: &str) -> Result<bool> {
        self.changed(
            "UPDATE enrollment_tokens SET uses = uses + 1
             WHERE id = ?1 AND (max_uses IS NULL OR uses < max_uses)",
            [id],
        )
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
            params![g.id, machine, token, g.secret_id, json_list(&g.fields), g.created_at],
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
            &format!("SELECT {GRANT_COLS} FROM grants g WHERE g.machine_id = ?1 AND g.secret_id = ?2"),
            [machine_id, secret_id],
            grant_row,
        )
    }

    fn delete_grant(&mut self, id: &str) -> Result<bool> {
        self.changed("DELETE FROM grants WHERE id = ?1", [id])
    }

    fn audit_head(&mut self) -> Result<Option<(u64, String)>> {
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
            &format!("INSERT INTO audit ({AUDIT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
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
        )
    }

    fn audit(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>> {
        self.many(
            &format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            params![after, limit],
            audit_row,
        )
    }
}
