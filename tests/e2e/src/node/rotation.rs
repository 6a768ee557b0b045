//! What the node test's rotation step needs besides the cluster: the
//! PostgreSQL server of `tests/rotation/start-servers.sh` (127.0.0.1,
//! port `SIGNET_ROTATION_PG_PORT`, default 54329; admin `signet_admin`
//! with `SIGNET_ROTATION_ADMIN_PASSWORD`), a group role, a database and a
//! first login on it, a relay that lets pods reach it, and the time the
//! chart's rotation agent logged a confirmed step.
//!
//! The server listens on loopback only, and the rotation agent runs in a
//! pod: a [`Relay`] on the node's bridge address (which pods reach, as
//! they reach its DNS) forwards to it. PostgreSQL then sees the relay's
//! loopback connections, as it sees the tests of `rotator/tests`.

use std::{
    future::Future,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};

/// The admin user of the rotation servers.
pub const ADMIN_USER: &str = "signet_admin";

/// The PostgreSQL server of `tests/rotation/start-servers.sh`.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `signet_admin`'s password.
    pub admin_password: String,
}

/// A group role holding the privileges, a database, and a first login in
/// the group, as a rotation config's target needs them (docs/rotation.md).
pub struct Database {
    /// The group role (`target.role`), `NOLOGIN`.
    pub group: String,
    /// The database the agent verifies against.
    pub name: String,
    /// The first login and its password: version 1 of the rotated secret.
    pub user: String,
    pub password: String,
}

impl Postgres {
    /// The server, when it answers. Without one: `None` (the caller
    /// skips), or under `CI` an error that says how to start it.
    pub fn find() -> anyhow::Result<Option<Self>> {
        let port = std::env::var("SIGNET_ROTATION_PG_PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(54329);
        let admin_password = std::env::var("SIGNET_ROTATION_ADMIN_PASSWORD")
            .unwrap_or_else(|_| "signet-admin-pw".into());
        let up = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )
        .is_ok();
        match (up, std::env::var_os("CI").is_some()) {
            (true, _) => Ok(Some(Self {
                port,
                admin_password,
            })),
            (false, true) => bail!(
                "PostgreSQL does not answer on 127.0.0.1:{port}: run `bash tests/rotation/start-servers.sh` \
                 before the node test (.ci/run does)"
            ),
            (false, false) => Ok(None),
        }
    }

    /// A fresh group, database and first login, named after the clock so
    /// that runs sharing the server do not collide.
    pub fn create_database(&self) -> anyhow::Result<Database> {
        let suffix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() % 0xffff_ffff);
        let group = format!("node_{suffix:08x}");
        let db = Database {
            name: format!("{group}_db"),
            user: format!("{group}_first"),
            password: format!("first-{suffix:x}-password"),
            group,
        };
        block_on(async {
            let admin = self
                .connect(ADMIN_USER, &self.admin_password, "postgres")
                .await?;
            admin
                .batch_execute(&format!(
                    "CREATE ROLE {g} NOLOGIN; CREATE ROLE {u} LOGIN PASSWORD '{p}' IN ROLE {g}",
                    g = db.group,
                    u = db.user,
                    p = db.password,
                ))
                .await
                .context("creating the group and its first login")?;
            // Not in the batch above: a batch is one transaction, which
            // CREATE DATABASE refuses.
            admin
                .batch_execute(&format!("CREATE DATABASE {}", db.name))
                .await
                .context("creating the database")
        })??;
        Ok(db)
    }

    /// Logs in as `user` to `database` with a fresh connection: the
    /// server's `current_user`, or why it refused.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> anyhow::Result<Result<String, String>> {
        block_on(async {
            let client = match self.connect(user, password, database).await {
                Ok(client) => client,
                Err(error) => return Ok(Err(format!("{error:#}"))),
            };
            let row = client.query_one("SELECT current_user::text", &[]).await?;
            anyhow::Ok(Ok(row.try_get::<_, String>(0)?))
        })?
    }

    async fn connect(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(database)
            .connect_timeout(Duration::from_secs(5));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| {
            // The server's own words (e.g. "password authentication failed").
            anyhow::anyhow!(
                "{}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            )
        })?;
        tokio::spawn(connection);
        Ok(client)
    }
}

fn block_on<T>(future: impl Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

/// Forwards every TCP connection to `listen` to `target`, both ways, until
/// dropped.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Listens on `listen` (e.g. the node's bridge address and a port).
    pub fn start(listen: &str, target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = incoming else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) {
                    std::thread::spawn(move || pipe(client, server2));
                    std::thread::spawn(move || pipe(server, client2));
                }
            }
        });
        Ok(Self { addr, stop })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing half.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// When (Unix milliseconds) the rotation agent logged that it did `job`'s
/// step with outcome `outcome` (e.g. `Confirmed`), from its log: the line
/// `rotation step done` it writes after the step and before it reports.
/// The vault acts on the report (promotes on `Confirmed`) after this time.
pub fn step_logged_ms(log: &str, job: &str, outcome: &str) -> anyhow::Result<Option<u128>> {
    let job = format!("job={job}");
    let outcome = format!("outcome={outcome}");
    let Some(line) = log.lines().find(|line| {
        line.contains("rotation step done") && line.contains(&job) && line.contains(&outcome)
    }) else {
        return Ok(None);
    };
    // tracing's default format starts with an RFC 3339 UTC time.
    let stamp = line
        .split_whitespace()
        .next()
        .with_context(|| format!("no time in the agent's line {line:?}"))?;
    let at = humantime::parse_rfc3339(stamp)
        .with_context(|| format!("no RFC 3339 time at the start of {line:?}"))?;
    Ok(Some(at.duration_since(UNIX_EPOCH)?.as_millis()))
}

/// `name`'s value in an env file as signet-init writes it (`name='value'`;
/// the rotated passwords are alphanumeric, so never escaped).
pub fn env_value(file: &str, name: &str) -> Option<String> {
    file.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix("='")?
                .strip_suffix('\'')
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_confirmed_step_is_read_from_the_agent_log() {
        let log = "2026-12-02T11:40:42.302037Z  INFO signet_rotator::agent: rotation step done job=rj_2 step=Apply outcome=VerifyFailed\n\
                   2026-12-02T11:40:43.250500Z  INFO signet_rotator::agent: rotation step done job=rj_1 step=Apply outcome=Confirmed\n";
        assert_eq!(
            step_logged_ms(log, "rj_1", "Confirmed").unwrap(),
            Some(1_796_211_643_250)
        );
        assert_eq!(step_logged_ms(log, "rj_2", "Confirmed").unwrap(), None);
        assert_eq!(step_logged_ms(log, "rj_3", "Confirmed").unwrap(), None);
    }

    #[test]
    fn env_values_are_read_as_signet_init_writes_them() {
        let file = "password='Abc123'\nusername='node_1_x'\n";
        assert_eq!(env_value(file, "password").as_deref(), Some("Abc123"));
        assert_eq!(env_value(file, "username").as_deref(), Some("node_1_x"));
        assert_eq!(env_value(file, "user"), None);
    }

    #[test]
    fn the_relay_forwards_both_ways() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = server.accept().unwrap();
            let mut line = [0u8; 4];
            conn.read_exact(&mut line).unwrap();
            conn.write_all(&line.map(|b| b.to_ascii_uppercase()))
                .unwrap();
        });
        let relay = Relay::start("127.0.0.1:0", target).unwrap();
        let mut client = TcpStream::connect(relay.addr()).unwrap();
        client.write_all(b"ping").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "PING");
    }

    /// Against the rotation PostgreSQL (skipped without it, failed under
    /// `CI`): a fresh database's first login works, a wrong password is
    /// refused with the server's words.
    #[test]
    fn a_fresh_database_has_a_working_first_login() {
        let Some(pg) = Postgres::find().unwrap() else {
            eprintln!("SKIPPED: no PostgreSQL (tests/rotation/start-servers.sh starts it)");
            return;
        };
        let db = pg.create_database().unwrap();
        assert_eq!(
            pg.login(&db.user, &db.password, &db.name).unwrap(),
            Ok(db.user.clone())
        );
        let wrong = pg.login(&db.user, "wrong", &db.name).unwrap();
        assert!(
            wrong
                .as_ref()
                .is_err_and(|e| e.contains("password authentication failed")),
            "{wrong:?}"
        );
    }
}
