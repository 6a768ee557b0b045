//! Test harness: a vault over a fresh SQLite directory with a clock the test
//! moves, driven through the real router, and signed clients for it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use signet_client::api::AuditEntry;
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::ManualClock;
use signet_vault::crypto::RootKey;
use signet_vault::service::enroll::create_bootstrap_token;
use signet_vault::store::{SqliteStore, Store};
use signet_vault::{Config, Vault};
use tower::ServiceExt as _;

pub const START: i64 = 1_800_000_000;

/// A key pair and the id the vault gave it.
pub struct Actor {
    pub id: String,
    pub key: IdentityKey,
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    pub vault: Arc<Vault>,
    pub app: Router,
    pub root_hex: String,
}

/// A response: status and JSON body (`Value::Null` when empty or not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Harness {
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    pub fn with_config(config: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate();
        let root_hex = root.to_hex().to_string();
        let clock = Arc::new(ManualClock::new(START));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let vault = Arc::new(Vault::open(store, root, clock.clone(), config).unwrap());
        let app = signet_vault::http::router(vault.clone());
        Self {
            dir,
            clock,
            vault,
            app,
            root_hex,
        }
    }

    /// Sends `request` through the router.
    pub async fn raw(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body }
    }

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
            self.clock.now_u64(),
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

    pub async fn call(
        &self,
        actor: &Actor,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.raw(self.signed(&actor.key, &actor.id, method, target, &body))
            .await
    }

    /// A new admin, enrolled with a bootstrap token.
    pub async fn admin(&self) -> Actor {
        let token = self
            .vault
            .with_tx(|tx, now| create_bootstrap_token(tx, now))
            .unwrap();
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({
            "token": token.as_str(), "public_key": key.public_key(), "hostname": "alice"
        }))
        .unwrap();
        let reply = self
            .raw(self.signed(&key, "enroll", "POST", "/v1/admin/enroll", &body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        Actor {
            id: reply.body["admin_id"].as_str().unwrap().to_owned(),
            key,
        }
    }

    /// Creates a project with a plain secret `api-key` and a structured
    /// secret `db` (fields `user`, `password`).
    pub async fn seed(&self, admin: &Actor, project: &str) {
        let r = self
            .call(
                admin,
                "POST",
                "/v1/projects",
                Some(json!({"name": project})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let r = self
            .call(
                admin,
                "PUT",
                &format!("/v1/projects/{project}/secrets/api-key"),
                Some(json!({"value": "sk_live_plain_value"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let r = self
            .call(
                admin,
                "PUT",
                &format!("/v1/projects/{project}/secrets/db"),
                Some(json!({"fields": {"user": "app_user", "password": "pg_password_value"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    /// An enrollment token for `project` with the given pre-baked grants.
    pub async fn token(
        &self,
        admin: &Actor,
        project: &str,
        grants: Value,
        max_uses: Option<u32>,
    ) -> String {
        let r = self
            .call(
                admin,
                "POST",
                "/v1/enrollment-tokens",
                Some(json!({
                    "project": project, "ttl_seconds": 3600, "machine_lifetime_seconds": 86400,
                    "max_uses": max_uses, "grants": grants
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["token"].as_str().unwrap().to_owned()
    }

    /// Enrolls a fresh key with `token`.
    pub async fn enroll(&self, token: &str) -> Result<Actor, Reply> {
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({
            "token": token, "public_key": key.public_key(), "hostname": "runner-1",
            "metadata": {"k8s.pod.uid": "uid-1"}
        }))
        .unwrap();
        let reply = self
            .raw(self.signed(&key, "enroll", "POST", "/v1/enroll", &body))
            .await;
        if reply.status != StatusCode::CREATED {
            return Err(reply);
        }
        Ok(Actor {
            id: reply.body["machine_id"].as_str().unwrap().to_owned(),
            key,
        })
    }

    /// A machine of `project` granted the whole `api-key` and the `user`
    /// field of `db`.
    pub async fn machine(&self, admin: &Actor, project: &str) -> Actor {
        let token = self
            .token(
                admin,
                project,
                json!([{"secret": "api-key"}, {"secret": "db", "fields": ["user"]}]),
                Some(1),
            )
            .await;
        self.enroll(&token).await.map_err(|r| r.body).unwrap()
    }

    /// The newest audit entry.
    pub fn last_audit(&self) -> AuditEntry {
        self.vault
            .with_tx(|tx, _| {
                let head = tx.audit_head()?.map(|(seq, _)| seq).unwrap_or(0);
                Ok(tx.audit(head.saturating_sub(1), 1)?)
            })
            .unwrap()
            .pop()
            .unwrap()
    }

    pub fn all_audit(&self) -> Vec<AuditEntry> {
        self.vault
            .with_tx(|tx, _| Ok(tx.audit(0, 100_000)?))
            .unwrap()
    }

    /// Every row of every table but the audit log and the nonces, as text:
    /// equal snapshots mean a request changed no stored data.
    pub fn snapshot(&self) -> String {
        let conn = rusqlite::Connection::open(self.dir.path().join("signet.db")).unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('audit', 'nonces') ORDER BY name")
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

trait NowU64 {
    fn now_u64(&self) -> u64;
}

impl NowU64 for ManualClock {
    fn now_u64(&self) -> u64 {
        use signet_vault::clock::Clock as _;
        self.now() as u64
    }
}
