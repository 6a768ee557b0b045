//! Test harness for the access-rule tests: a vault over a fresh SQLite file
//! in a temporary directory, a manual clock, and signed requests sent
//! through the real router with a chosen source address.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use signet_client::api::AuditEntry;
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::ManualClock;
use signet_vault::crypto::RootKey;
use signet_vault::store::{Admin, SqliteStore, Store};
use signet_vault::vault::{Config, Settings, Vault};
use tower::ServiceExt as _;

/// Monday 2024-06-03 10:00:00 UTC.
pub const START: i64 = 1_717_408_800;
/// The source address requests come from unless a test says otherwise.
pub const LOCAL_IP: &str = "10.1.2.3";

/// One identity that signs requests.
pub struct Signer {
    pub id: String,
    pub key: IdentityKey,
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub root_hex: String,
    pub clock: Arc<ManualClock>,
    pub vault: Arc<Vault>,
    pub app: Router,
    pub admin: Signer,
}

/// A reply: status, error code (if any), JSON body.
#[derive(Debug)]
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
        Self::with_settings(Settings::default())
    }

    pub fn with_settings(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::generate();
        let root_hex = root.to_hex().to_string();
        Self::open(dir, root_hex, settings)
    }

    /// Opens a vault over an existing directory (same root key).
    pub fn open(dir: tempfile::TempDir, root_hex: String, settings: Settings) -> Self {
        let clock = Arc::new(ManualClock::new(START));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let root = RootKey::parse(root_hex.as_bytes()).unwrap();
        let vault = Arc::new(
            Vault::open(store, root, clock.clone(), Config::default())
                .unwrap()
                .with_settings(settings),
        );
        let key = IdentityKey::generate();
        let public_key = key.public_key();
        let admin_id = format!("ad_{}", ulid::Ulid::new());
        let id = admin_id.clone();
        vault
            .with_tx(move |tx, now| {
                tx.insert_admin(&Admin {
                    id,
                    name: "first".into(),
                    public_key,
                    created_at: now,
                    disabled_at: None,
                })?;
                Ok(())
            })
            .unwrap();
        let app = signet_vault::http::router(vault.clone());
        Self {
            dir,
            root_hex,
            clock,
            vault,
            app,
            admin: Signer { id: admin_id, key },
        }
    }

    /// Sends one signed request as `signer` from `source_ip`.
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
        let signed = protocol::sign(
            &signer.key,
            &signer.id,
            method,
            target,
            &body,
            self.clock.now_u64(),
            &protocol::fresh_nonce(),
        );
        self.send(
            method,
            target,
            body,
            signed.pairs().map(|(k, v)| (k, v.to_owned())),
            source_ip,
        )
        .await
    }

    pub async fn send(
        &self,
        method: &str,
        target: &str,
        body: Vec<u8>,
        headers: [(&'static str, String); 4],
        source_ip: &str,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(target);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request.header("content-type", "application/json");
        }
        let mut request = request.body(Body::from(body)).unwrap();
        let ip: IpAddr = source_ip.parse().unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply { status, body }
    }

    pub async fn call(
        &self,
        signer: &Signer,
        method: &str,
        target: &str,
        body: Option<Value>,
    ) -> Reply {
        self.call_from(signer, method, target, body, LOCAL_IP).await
    }

    /// As the first admin.
    pub async fn admin(&self, method: &str, target: &str, body: Option<Value>) -> Reply {
        self.call(&self.admin, method, target, body).await
    }

    /// Registers a second admin.
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
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({
            "token": token,
            "public_key": key.public_key(),
            "hostname": hostname,
            "metadata": metadata,
        }))
        .unwrap();
        let signed = protocol::sign(
            &key,
            protocol::ENROLL_KEY_ID,
            "POST",
            "/v1/enroll",
            &body,
            self.clock.now_u64(),
            &protocol::fresh_nonce(),
        );
        let reply = self
            .send(
                "POST",
                "/v1/enroll",
                body,
                signed.pairs().map(|(k, v)| (k, v.to_owned())),
                source_ip,
            )
            .await;
        let signer = reply.body["machine_id"].as_str().map(|id| Signer {
            id: id.to_owned(),
            key,
        });
        (reply, signer)
    }

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

    /// Creates an enrollment token; returns the raw token.
    pub async fn token(&self, body: Value) -> String {
        let reply = self
            .admin("POST", "/v1/enrollment-tokens", Some(body))
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }

    /// A machine enrolled in `project` with grants on `secrets`.
    pub async fn machine(&self, project: &str, secrets: &[&str]) -> Signer {
        let grants: Vec<Value> = secrets.iter().map(|s| json!({"secret": s})).collect();
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

    /// A machine reads `project/secret`.
    pub async fn read(&self, machine: &Signer, project: &str, secret: &str) -> Reply {
        self.call(
            machine,
            "GET",
            &format!("/v1/secrets/{project}/{secret}"),
            None,
        )
        .await
    }

    pub async fn read_from(
        &self,
        machine: &Signer,
        project: &str,
        secret: &str,
        ip: &str,
    ) -> Reply {
        self.call_from(
            machine,
            "GET",
            &format!("/v1/secrets/{project}/{secret}"),
            None,
            ip,
        )
        .await
    }

    pub async fn policy(&self, project: &str, secret: &str, policy: Value) -> Reply {
        let target = format!("/v1/projects/{project}/secrets/{secret}/policy");
        self.admin("PUT", &target, Some(policy)).await
    }

    /// Every audit entry, read straight from the store.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.vault
            .with_tx(|tx, _| Ok(tx.audit(0, 100_000)?))
            .unwrap()
    }

    /// Denied audit entries whose reason starts with `code`.
    pub fn denials(&self, code: &str) -> Vec<AuditEntry> {
        self.audit()
            .into_iter()
            .filter(|e| e.outcome == "deny" && e.reason.starts_with(&format!("{code}:")))
            .collect()
    }
}

/// `ManualClock::now` as the protocol's unsigned seconds.
pub trait NowU64 {
    fn now_u64(&self) -> u64;
}

impl NowU64 for ManualClock {
    fn now_u64(&self) -> u64 {
        use signet_vault::clock::Clock as _;
        u64::try_from(self.now()).unwrap()
    }
}
