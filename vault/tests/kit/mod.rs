//! The one test kit for the vault (`mod kit;` in each test file): a vault
//! over a fresh SQLite directory, a clock the test moves instead of
//! sleeping, the real router driven with `oneshot`, and a first admin
//! already in place. Requests come from [`LOCAL_IP`] unless a test names
//! another source address.

// Each test binary uses part of the kit, and its helpers may unwrap: a panic
// here is a failed assertion of the test that called it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use signet_client::api::{AuditEntry, AuditVerification};
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::{Clock as _, ManualClock};
use signet_vault::crypto::RootKey;
use signet_vault::ids;
use signet_vault::service::enroll::create_bootstrap_token;
use signet_vault::store::Admin;
use signet_vault::vault::{Config, OpenError, Settings, Vault};
use tower::ServiceExt as _;

/// Monday 2024-06-03 10:00:00 UTC: the time rules (windows, caps, expiry)
/// are written against it.
pub const START: i64 = 1_717_408_800;
/// The source address requests come from unless a test says otherwise.
pub const LOCAL_IP: &str = "10.1.2.3";

/// One identity that signs requests: an admin, an agent or a machine.
pub struct Signer {
    pub id: String,
    pub key: IdentityKey,
}

/// A response: its status and its JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    /// The `error.code` of the body, or `""` when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

mod backend;
pub use backend::*;

/// Opens a vault over `dir` with `root`, as `serve` does at start.
pub fn open_vault(
    dir: &Path,
    root: RootKey,
    clock: Arc<ManualClock>,
    config: Config,
    settings: Settings,
) -> Result<Vault, OpenError> {
    let store = open_store(dir);
    Ok(Vault::open(store, root, clock, config)?.with_settings(settings))
}

/// A vault under test and the first admin, who signs as `admin`.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub root_hex: String,
    pub clock: Arc<ManualClock>,
    pub vault: Arc<Vault>,
    pub app: Router,
    pub admin: Signer,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> Self {
        Self::with_config(Config::default(), settings)
    }

    /// A vault with pipeline tunables of its own (skew, body size).
    pub fn with_config(config: Config, settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate();
        let root_hex = root.to_hex().to_string();
        let clock = Arc::new(ManualClock::new(START));
        let vault =
            Arc::new(open_vault(dir.path(), root, clock.clone(), config, settings).unwrap());
        let key = IdentityKey::generate();
        let (id, public_key) = (ids::new(ids::ADMIN), key.public_key());
        let admin_id = id.clone();
        vault
            .with_tx(move |tx, now| {
                Ok(tx.insert_admin(&Admin {
                    id: admin_id,
                    name: "first".into(),
                    public_key,
                    created_at: now,
                    disabled_at: None,
                })?)
            })
            .unwrap();
        Self {
            app: signet_vault::http::router(vault.clone()),
            dir,
            root_hex,
            clock,
            vault,
            admin: Signer { id, key },
        }
    }

    /// Stops the vault and starts it again over the same directory with the
    /// same root key, clock and first admin.
    pub fn reopen(self, settings: Settings) -> Self {
        let config = self.vault.config().clone();
        self.reopen_with(config, settings)
    }

    /// [`reopen`](Self::reopen) with other pipeline tunables (a new skew).
    pub fn reopen_with(self, config: Config, settings: Settings) -> Self {
        let Self {
            dir,
            root_hex,
            clock,
            vault,
            app,
            admin,
        } = self;
        drop(app);
        let root = RootKey::parse(root_hex.as_bytes()).unwrap();
        drop(vault);
        let vault =
            Arc::new(open_vault(dir.path(), root, clock.clone(), config, settings).unwrap());
        Self {
            app: signet_vault::http::router(vault.clone()),
            dir,
            root_hex,
            clock,
            vault,
            admin,
        }
    }

    // Requests.

    /// The signed request `key_id` would send now.
    pub fn signed(
        &self,
        key: &IdentityKey,
        key_id: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Request<Body> {
        let headers = protocol::sign(
            key,
            key_id,
            method,
            target,
            body,
            u64::try_from(self.clock.now()).unwrap(),
            &protocol::fresh_nonce(),
        );
        let mut builder = Request::builder().method(method).uri(target);
        for (name, value) in headers.pairs() {
            builder = builder.header(name, value);
        }
        if !body.is_empty() {
            builder = builder.header("content-type", "application/json");
        }
        builder.body(Body::from(body.to_vec())).unwrap()
    }

    /// Sends `requests` so that they commit in one batch, in this order,
    /// and returns their replies in the same order: the writer is held
    /// until every one of them waits in its queue (a read has then been
    /// looked up ahead, before any of them ran).
    pub async fn in_one_batch(&self, requests: Vec<Request<Body>>) -> Vec<Reply> {
        use std::sync::atomic::Ordering;
        let count = requests.len();
        let stats = self.vault.writer_stats();
        let batches = stats.batches.load(Ordering::SeqCst);
        let hold = self.vault.hold_writer();
        let replies = futures::future::join_all(requests.into_iter().map(|r| self.raw(r)));
        let release = async {
            while stats.queued.load(Ordering::SeqCst) < count {
                tokio::task::yield_now().await;
            }
            drop(hold);
        };
        let (replies, ()) = tokio::join!(replies, release);
        assert_eq!(
            stats.batches.load(Ordering::SeqCst) - batches,
            1,
            "the requests did not commit as one batch"
        );
        replies
    }

    /// Sends `request` through the router as it is, from [`LOCAL_IP`].
    pub async fn raw(&self, request: Request<Body>) -> Reply {
        self.raw_from(request, LOCAL_IP).await
    }

    /// Sends `request` through the router as it is, from `source_ip`.
    pub async fn raw_from(&self, mut request: Request<Body>, source_ip: &str) -> Reply {
        let ip: IpAddr = source_ip.parse().unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        let (status, bytes) = self.respond(request).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                );
            })
        };
        Reply { status, body }
    }

    /// `method uri` with no signature and no body, from `source_ip`: the
    /// status and the body's `error.message` (`""` when it has none, such
    /// as the text of `/healthz`).
    pub async fn probe(&self, method: &str, uri: &str, source_ip: &str) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let ip: IpAddr = source_ip.parse().unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        let (status, bytes) = self.respond(request).await;
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        (status, message)
    }

    /// `GET uri` with no signature; the status and the body as text.
    pub async fn text(&self, uri: &str) -> (StatusCode, String) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let (status, bytes) = self.respond(request).await;
        (status, String::from_utf8(bytes).unwrap())
    }

    /// Drives the router with one request; the status and the whole body.
    async fn respond(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, bytes.to_vec())
    }

    /// One request signed now by `signer`, from `source_ip`.
    pub async fn call_from(
        &self,
        signer: &Signer,
        method: &str,
        target: &str,
        body: Option<Value>,
        source_ip: &str,
    ) -> Reply {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let request = self.signed(&signer.key, &signer.id, method, target, &body);
        self.raw_from(request, source_ip).await
    }

    /// One request signed now by `signer`, from [`LOCAL_IP`].
    pub async fn call(
        &self,
        signer: &Signer,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Reply {
        self.call_from(signer, method, target, body, LOCAL_IP).await
    }

    /// One request as the first admin.
    pub async fn admin(&self, method: &str, target: &str, body: Option<Value>) -> Reply {
        self.call(&self.admin, method, target, body).await
    }

    /// Every item of the list route `target` (which may carry filters),
    /// `limit` at a time as the first admin, following `next_cursor` until
    /// it is null; returns the items of `field` and the number of pages.
    /// Fails on a page larger than `limit` or a cursor seen twice.
    pub async fn pages(&self, target: &str, field: &str, limit: u32) -> (Vec<Value>, usize) {
        let join = if target.contains('?') { '&' } else { '?' };
        let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
        let mut seen = std::collections::HashSet::new();
        loop {
            let mut page = format!("{target}{join}limit={limit}");
            if let Some(cursor) = &cursor {
                page.push_str(&format!("&cursor={cursor}"));
            }
            let reply = self.admin("GET", &page, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{page}: {:?}", reply.body);
            let batch = reply.body[field].as_array().unwrap().clone();
            assert!(
                batch.len() <= limit as usize,
                "{page}: {} items",
                batch.len()
            );
            items.extend(batch);
            pages += 1;
            match reply.body["next_cursor"].as_str() {
                Some(next) => {
                    assert!(
                        seen.insert(next.to_owned()),
                        "{target}: cursor {next} twice"
                    );
                    cursor = Some(next.to_owned());
                }
                None => {
                    assert!(reply.body["next_cursor"].is_null(), "{:?}", reply.body);
                    return (items, pages);
                }
            }
        }
    }

    // Identities.

    /// A new admin, enrolled with a bootstrap token (an audited enrollment,
    /// unlike the first admin's).
    pub async fn bootstrap_admin(&self) -> Signer {
        let token = self
            .vault
            .with_tx(|tx, now| create_bootstrap_token(tx, now))
            .unwrap();
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({
            "token": token.as_str(), "public_key": key.public_key(), "hostname": "alice"
        }))
        .unwrap();
        let request = self.signed(
            &key,
            protocol::ENROLL_KEY_ID,
            "POST",
            "/v1/admin/enroll",
            &body,
        );
        let reply = self.raw(request).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        Signer {
            id: reply.body["admin_id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// Registers an agent holding `scopes`, signing with a fresh key.
    pub async fn agent(&self, scopes: &[&str]) -> Signer {
        let key = IdentityKey::generate();
        let r = self
            .admin(
                "POST",
                "/v1/agents",
                Some(json!({"name": "agent", "public_key": key.public_key(), "scopes": scopes})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        Signer {
            id: r.body["id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// A second admin, registered by the first.
    pub async fn second_admin(&self) -> Signer {
        let key = IdentityKey::generate();
        let reply = self
            .admin(
                "POST",
                "/v1/admins",
                Some(json!({"name": "second", "public_key": key.public_key()})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        Signer {
            id: reply.body["id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// Enrolls a fresh key with `token`; the signer is set when it worked.
    pub async fn enroll(
        &self,
        token: &str,
        hostname: &str,
        metadata: Value,
        source_ip: &str,
    ) -> (Reply, Option<Signer>) {
        let fields = json!({"token": token, "hostname": hostname, "metadata": metadata});
        self.enroll_with(fields, source_ip).await
    }

    /// Sends `POST /v1/enroll` with `fields` and the `public_key` of a fresh
    /// key that signs it; the signer is set when a machine was enrolled.
    pub async fn enroll_with(&self, mut fields: Value, source_ip: &str) -> (Reply, Option<Signer>) {
        let key = IdentityKey::generate();
        fields["public_key"] = json!(key.public_key());
        let body = serde_json::to_vec(&fields).unwrap();
        let request = self.signed(&key, protocol::ENROLL_KEY_ID, "POST", "/v1/enroll", &body);
        let reply = self.raw_from(request, source_ip).await;
        let signer = reply.body["machine_id"].as_str().map(|id| Signer {
            id: id.to_owned(),
            key,
        });
        (reply, signer)
    }

    /// Creates an enrollment token as the first admin; returns the raw token.
    pub async fn token(&self, body: Value) -> String {
        let reply = self
            .admin("POST", "/v1/enrollment-tokens", Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// A machine enrolled in `project` with whole-secret grants on `secrets`;
    /// it lives one day.
    pub async fn machine(&self, project: &str, secrets: &[&str]) -> Signer {
        let grants: Vec<Value> = secrets.iter().map(|s| json!({"secret": s})).collect();
        self.machine_granted(project, json!(grants)).await
    }

    /// A machine of a [`seed`](Self::seed)ed `project`, granted the whole
    /// `api-key` and the `user` field of `db`; it lives one day.
    pub async fn seeded_machine(&self, project: &str) -> Signer {
        let grants = json!([{"secret": "api-key"}, {"secret": "db", "fields": ["user"]}]);
        self.machine_granted(project, grants).await
    }

    async fn machine_granted(&self, project: &str, grants: Value) -> Signer {
        let token = self
            .token(json!({
                "project": project, "max_uses": 1, "ttl_seconds": 3600,
                "machine_lifetime_seconds": 86_400, "grants": grants,
            }))
            .await;
        let (reply, signer) = self.enroll(&token, "host-1", json!({}), LOCAL_IP).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        signer.unwrap()
    }

    // Projects and secrets, as the first admin.

    /// Creates a project.
    pub async fn project(&self, name: &str) {
        let reply = self
            .admin("POST", "/v1/projects", Some(json!({"name": name})))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    /// Writes a plain secret value.
    pub async fn write(&self, project: &str, secret: &str, value: &str) {
        let target = format!("/v1/projects/{project}/secrets/{secret}");
        let reply = self
            .admin("PUT", &target, Some(json!({"value": value})))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }

    /// Writes a structured secret value.
    pub async fn write_fields(&self, project: &str, secret: &str, fields: Value) {
        let target = format!("/v1/projects/{project}/secrets/{secret}");
        let reply = self
            .admin("PUT", &target, Some(json!({ "fields": fields })))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }

    /// Creates `project` with a plain secret `api-key` and a structured
    /// secret `db` (fields `user`, `password`).
    pub async fn seed(&self, project: &str) {
        self.project(project).await;
        self.write(project, "api-key", "sk_live_plain_value").await;
        self.write_fields(
            project,
            "db",
            json!({"user": "app_user", "password": "pg_password_value"}),
        )
        .await;
    }

    /// Sets the access policy of `project/secret`.
    pub async fn policy(&self, project: &str, secret: &str, policy: Value) -> Reply {
        let target = format!("/v1/projects/{project}/secrets/{secret}/policy");
        self.admin("PUT", &target, Some(policy)).await
    }

    /// A machine reads `project/secret`.
    pub async fn read(&self, machine: &Signer, project: &str, secret: &str) -> Reply {
        self.read_from(machine, project, secret, LOCAL_IP).await
    }

    /// A machine reads `project/secret` from `source_ip`.
    pub async fn read_from(
        &self,
        machine: &Signer,
        project: &str,
        secret: &str,
        source_ip: &str,
    ) -> Reply {
        let target = format!("/v1/secrets/{project}/{secret}");
        self.call_from(machine, "GET", &target, None, source_ip)
            .await
    }

    // What was stored.

    /// Every audit entry, read straight from the store.
    /// Denials of requests whose signature never verified are counted in
    /// memory until the worker writes them; this writes them first, as the
    /// worker would.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.vault.flush_denials().unwrap();
        self.vault
            .with_tx(|tx, _| Ok(tx.audit(0, 100_000)?))
            .unwrap()
    }

    /// The vault's own check of the audit chain (every entry's HMAC and
    /// link), over the database file as it is now.
    pub fn verify_audit(&self) -> AuditVerification {
        let store = open_store(self.dir.path());
        let root = RootKey::parse(self.root_hex.as_bytes()).unwrap();
        signet_vault::audit::verify(store.as_ref(), &root.audit_chain_key()).unwrap()
    }

    /// A connection of its own to the vault's database file, for a test
    /// that plays someone editing it behind the vault's back.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("signet.db")).unwrap()
    }

    /// The newest audit entry.
    pub fn last_audit(&self) -> AuditEntry {
        self.audit().pop().unwrap()
    }

    /// Denied audit entries whose reason starts with `code`.
    pub fn denials(&self, code: &str) -> Vec<AuditEntry> {
        self.audit()
            .into_iter()
            .filter(|e| e.outcome == "deny" && e.reason.starts_with(&format!("{code}:")))
            .collect()
    }

    /// How many requests were denied with `code`: an unverified denial's
    /// row counts the requests it stands for (`count N` at its end).
    pub fn denied_requests(&self, code: &str) -> u64 {
        self.denials(code).iter().map(requests_of).sum()
    }

    /// Every row of every table but the audit log and the nonces, as text:
    /// equal snapshots mean a request changed no stored data.
    pub fn snapshot(&self) -> String {
        if let Some(url) = postgres_url() {
            return pg_snapshot(&schema_url(&url, self.dir.path()));
        }
        let conn = rusqlite::Connection::open(self.dir.path().join("signet.db")).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('audit', 'nonce_log') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut out = String::new();
        for table in tables {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .or_else(|_| conn.prepare(&format!("SELECT * FROM {table}")))
                .unwrap();
            let columns = stmt.column_count();
            let rows = stmt
                .query_map([], |row| {
                    let mut cells = Vec::new();
                    for i in 0..columns {
                        let v: rusqlite::types::Value = row.get(i)?;
                        cells.push(format!("{v:?}"));
                    }
                    Ok(cells.join("|"))
                })
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            out.push_str(&format!("{table}:\n{}\n", rows.join("\n")));
        }
        out
    }
}

/// Rows of `sql`'s first (text) column on the database at `url`, on a
/// thread and runtime of their own (the caller may be inside one).
pub fn pg_text(url: &str, sql: &str) -> Vec<String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            client
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect()
        })
    })
    .join()
    .unwrap()
}

/// [`Harness::snapshot`] on PostgreSQL: every row of every table of the
/// vault's schema but the audit log, the nonces and the change counter.
fn pg_snapshot(url: &str) -> String {
    let tables = pg_text(
        url,
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema()
           AND table_name NOT IN ('audit', 'nonces', 'signet_state', 'signet_migrations')
         ORDER BY table_name",
    );
    let mut out = String::new();
    for table in tables {
        let rows = pg_text(url, &format!("SELECT t::text FROM {table} t ORDER BY 1"));
        out.push_str(&format!("{table}:\n{}\n", rows.join("\n")));
    }
    out
}

/// How many requests an audit row stands for: the `count N` of a row of
/// unverified denials, 1 for any other.
pub fn requests_of(row: &AuditEntry) -> u64 {
    row.reason
        .rsplit_once("count ")
        .and_then(|(_, n)| n.strip_suffix(')'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}
