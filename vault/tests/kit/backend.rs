//! The backend a test's vault runs on, shared by the vault's and the
//! rotation agent's test kits.

use std::path::Path;
use std::sync::Arc;

use signet_vault::store::{PostgresStore, SqliteStore, Store};

/// The backend the kit's vaults run on: SQLite unless
/// `SIGNET_TEST_BACKEND=postgres`, then PostgreSQL at
/// `SIGNET_TEST_DATABASE_URL` (tests/postgres/start.sh starts one), each
/// data directory mapped to a schema of its own. Asking for PostgreSQL
/// without a URL fails the test rather than quietly testing SQLite.
pub fn postgres_url() -> Option<String> {
    if std::env::var("SIGNET_TEST_BACKEND").as_deref() != Ok("postgres") {
        return None;
    }
    Some(std::env::var("SIGNET_TEST_DATABASE_URL").expect(
        "SIGNET_TEST_BACKEND=postgres needs SIGNET_TEST_DATABASE_URL (tests/postgres/start.sh)",
    ))
}

/// `url` with its connections' `search_path` set to a schema of its own
/// for `dir` (created if missing): the same directory maps to the same
/// schema, so a reopened vault finds its data.
pub fn schema_url(url: &str, dir: &Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    let schema = format!("t_{:016x}", hasher.finish());
    PostgresStore::create_schema(url, &schema).unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// The store of `dir` on the kit's backend (see [`postgres_url`]).
pub fn open_store(dir: &Path) -> Arc<dyn Store> {
    match postgres_url() {
        Some(url) => Arc::new(PostgresStore::connect(&schema_url(&url, dir), None).unwrap()),
        None => Arc::new(SqliteStore::open(dir).unwrap()),
    }
}
