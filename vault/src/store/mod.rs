//! Storage behind one trait. A [`Store`] hands out transactions; everything
//! a request decides (nonce, identity, grant, audit row) happens inside one
//! [`Tx`] and commits together or not at all.
//!
//! The interface is synchronous: the vault runs each transaction on a
//! blocking thread, which suits SQLite's single writer and keeps every
//! backend free of async lifetimes inside a transaction.

mod sqlite;

pub use sqlite::SqliteStore;

use signet_client::api::{AuditEntry, Scope};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("sqlite")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot prepare data directory {path}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("a {0} with that name or key already exists")]
    Duplicate(&'static str),
    #[error("the store's lock was poisoned by a panic")]
    Poisoned,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A storage backend.
pub trait Store: Send + Sync + 'static {
    /// Starts a read-write transaction. Dropping it without
    /// [`Tx::commit`] rolls back.
    fn begin(&self) -> Result<Box<dyn Tx + '_>>;
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

/// One transaction. Methods that change data say so in their name.
pub trait Tx {
    fn commit(self: Box<Self>) -> Result<()>;

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>>;
    fn set_meta(&mut self, key: &str, value: &[u8]) -> Result<()>;

    /// Records `(key_id, nonce)`; false when it was already recorded.
    fn record_nonce(&mut self, key_id: &str, nonce: &str, expires_at: i64) -> Result<bool>;
    /// Forgets nonces whose window has passed; returns how many.
    fn prune_nonces(&mut self, now: i64) -> Result<u64>;

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
    fn projects(&mut self) -> Result<Vec<Project>>;

    fn insert_secret(&mut self, secret: &Secret) -> Result<()>;
    fn secret_by_name(&mut self, project_id: &str, name: &str) -> Result<Option<Secret>>;
    fn secret(&mut self, id: &str) -> Result<Option<Secret>>;
    fn secrets(&mut self, project_id: &str) -> Result<Vec<Secret>>;
    fn set_live_version(&mut self, secret_id: &str, version: u32) -> Result<()>;
    fn delete_secret(&mut self, id: &str) -> Result<bool>;
    fn insert_version(&mut self, version: &SecretVersion) -> Result<()>;
    fn version(&mut self, secret_id: &str, version: u32) -> Result<Option<SecretVersion>>;
    fn versions(&mut self, secret_id: &str) -> Result<Vec<SecretVersion>>;

    fn insert_token(&mut self, token: &EnrollmentToken) -> Result<()>;
    fn token(&mut self, id: &str) -> Result<Option<EnrollmentToken>>;
    fn tokens(&mut self) -> Result<Vec<EnrollmentToken>>;
    /// Counts one use if the token has uses left; false when it has none.
    fn use_token(&mut self, id: &str) -> Result<bool>;
    fn revoke_token(&mut self, id: &str, now: i64) -> Result<bool>;

    fn insert_grant(&mut self, grant: &Grant) -> Result<()>;
    fn grants(&mut self, grantee: Option<&Grantee>) -> Result<Vec<GrantDetail>>;
    /// The grant of `machine_id` on `secret_id`, if any.
    fn machine_grant(&mut self, machine_id: &str, secret_id: &str) -> Result<Option<Grant>>;
    fn delete_grant(&mut self, id: &str) -> Result<bool>;

    /// The newest audit entry's `(seq, hash)`.
    fn audit_head(&mut self) -> Result<Option<(u64, String)>>;
    fn insert_audit(&mut self, entry: &AuditEntry) -> Result<()>;
    fn audit(&mut self, after: u64, limit: u32) -> Result<Vec<AuditEntry>>;
}
