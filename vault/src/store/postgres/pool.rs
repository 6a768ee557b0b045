//! A small bounded pool of PostgreSQL connections. Each connection keeps
//! the statements it prepared, so the few statements of the request path
//! are parsed once per connection, as SQLite's statement cache does.
//!
//! The connections run on a small tokio runtime of the pool's own; callers
//! block on each statement's answer with [`futures::executor::block_on`],
//! which needs no runtime on the calling thread. That keeps the store's
//! interface synchronous, as the trait wants, and lets it be called from the
//! writer thread, blocking tasks and async tasks alike (the `postgres`
//! crate's blocking client would panic inside a runtime).
//!
//! A connection that broke (the server restarted, the network dropped) is
//! not returned to the pool; the next caller connects anew, so the vault
//! recovers by itself once the database is back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::super::{Error, Result};

/// How long a caller waits for a free connection before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to open a connection when the URL sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Set on every connection: no statement, lock wait or idle transaction
/// holds the vault (or another replica) for long. A replica that stalls
/// inside a transaction gives up the write lock after the idle timeout.
const SESSION: &str = "SET statement_timeout = '10s';
     SET lock_timeout = '10s';
     SET idle_in_transaction_session_timeout = '60s';
     SET default_transaction_isolation = 'read committed'";

pub(in crate::store) struct Pool {
    /// Drives the connections; shut down in the background on drop (the
    /// pool may be dropped on an async task).
    runtime: Option<tokio::runtime::Runtime>,
    config: Config,
    tls: MakeRustlsConnect,
    max: usize,
    state: Mutex<State>,
    freed: Condvar,
}

struct State {
    idle: Vec<Conn>,
    /// Connections open or being opened, idle or not.
    open: usize,
}

/// One connection and the statements it prepared.
pub(in crate::store) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

impl Conn {
    /// `sql` prepared on this connection (once).
    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = block_on(self.client.prepare(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub(in crate::store) fn query_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>> {
        let statement = self.statement(sql)?;
        Ok(block_on(self.client.query_opt(&statement, params))?)
    }

    pub(in crate::store) fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
        let statement = self.statement(sql)?;
        Ok(block_on(self.client.query(&statement, params))?)
    }

    pub(in crate::store) fn execute(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = match self.statements.get(sql) {
            Some(statement) => statement.clone(),
            None => {
                let statement = block_on(self.client.prepare(sql))?;
                self.statements.insert(sql.to_owned(), statement.clone());
                statement
            }
        };
        block_on(self.client.execute(&statement, params))
    }

    /// Runs `sql` (one or more statements, no parameters) unprepared.
    pub(in crate::store) fn batch(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        block_on(self.client.batch_execute(sql))
    }

    pub(in crate::store) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

impl Pool {
    /// A pool of at most `max` connections to `url`. TLS is used as the
    /// URL's `sslmode` says (`prefer` by default), verified against the
    /// system's roots and `ca_file`'s certificates.
    pub(in crate::store) fn new(url: &str, ca_file: Option<&Path>, max: usize) -> Result<Self> {
        let config = config(url)?;
        Self::with_config(config, ca_file, max)
    }

    fn with_config(mut config: Config, ca_file: Option<&Path>, max: usize) -> Result<Self> {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("signet-vault");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("signet-postgres")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        Ok(Self {
            runtime: Some(runtime),
            config,
            tls: tls(ca_file)?,
            max: max.max(1),
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// Opens a connection outside the pool (the migrations hold one for
    /// their session lock).
    pub(in crate::store) fn connect(&self) -> Result<Conn> {
        let handle = self
            .runtime
            .as_ref()
            .map(|runtime| runtime.handle().clone())
            .ok_or(Error::PoolExhausted)?;
        let (config, tls) = (self.config.clone(), self.tls.clone());
        let spawner = handle.clone();
        let connecting = handle.spawn(async move {
            let (client, connection) = config.connect(tls).await?;
            spawner.spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(error = %error, "a database connection ended");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = block_on(connecting).map_err(|_| Error::PoolExhausted)??;
        let mut conn = Conn {
            client,
            statements: HashMap::new(),
        };
        conn.batch(SESSION)?;
        Ok(conn)
    }

    /// A connection: an idle one, a new one while fewer than `max` are
    /// open, or the next one given back.
    pub(in crate::store) fn get(&self) -> Result<Pooled<'_>> {
        let deadline = Instant::now() + ACQUIRE_TIMEOUT;
        let mut state = self.state.lock().map_err(|_| Error::Poisoned)?;
        loop {
            if let Some(conn) = state.idle.pop() {
                if conn.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    conn: Some(conn),
                    pool: self,
                    broken: false,
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match self.connect() {
                    Ok(conn) => Ok(Pooled {
                        conn: Some(conn),
                        pool: self,
                        broken: false,
                    }),
                    Err(error) => {
                        self.release(None);
                        Err(error)
                    }
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::PoolExhausted);
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .map_err(|_| Error::Poisoned)?
                .0;
        }
    }

    /// Takes back a connection, or (`None`) one that was closed.
    fn release(&self, conn: Option<Conn>) {
        if let Ok(mut state) = self.state.lock() {
            match conn {
                Some(conn) => state.idle.push(conn),
                None => state.open = state.open.saturating_sub(1),
            }
        }
        self.freed.notify_one();
    }
}

/// A connection borrowed from the pool, given back when dropped unless it
/// broke.
pub(in crate::store) struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    /// Set when the connection cannot be trusted any more.
    pub(in crate::store) broken: bool,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        // Present from creation until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        self.conn.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let conn = self
            .conn
            .take()
            .filter(|conn| !self.broken && !conn.is_closed());
        self.pool.release(conn);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            // Closing the clients ends their connection tasks.
            state.idle.clear();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The connection settings of `url`. TLS is required unless the URL says
/// otherwise (`sslmode=disable` or `prefer`): libpq's default, `prefer`,
/// would let anyone on the path strip TLS. libpq's `verify-ca` and
/// `verify-full` are accepted as `require`, which with rustls always
/// verifies the certificate chain and the host name (verify-full).
fn config(url: &str) -> Result<Config> {
    let url = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    // The parse error never quotes the URL: it may hold a password.
    let mut config: Config = url.parse().map_err(|_| Error::DatabaseUrl)?;
    if !url.contains("sslmode=") {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    Ok(config)
}

/// rustls with the ring provider (as the rest of the vault), trusting the
/// system's roots and the certificates of `ca_file`.
fn tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    // Certificates the system store cannot parse are skipped, as browsers do.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let tls_err =
            |message: String| Error::DatabaseTls(format!("{}: {message}", path.display()));
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| tls_err(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert.map_err(|e| tls_err(e.to_string()))?)
                .map_err(|e| tls_err(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::DatabaseTls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio_postgres::config::SslMode;

    use super::config;

    #[test]
    fn tls_is_required_unless_the_url_says_otherwise() {
        let mode = |url: &str| config(url).unwrap().get_ssl_mode();
        assert_eq!(mode("postgres://u:p@db/signet"), SslMode::Require);
        assert_eq!(
            mode("postgres://u@db/signet?sslmode=verify-full"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://u@db/signet?sslmode=verify-ca"),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://u@db/signet?sslmode=disable"),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://u@db/signet?sslmode=prefer"),
            SslMode::Prefer
        );
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let error = config("postgres://u:hunter2@db/signet?sslmode=bogus")
            .err()
            .unwrap();
        assert!(!error.to_string().contains("hunter2"));
    }
}
