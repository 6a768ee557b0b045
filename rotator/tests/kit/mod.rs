//! The rotation tests' kit: an in-process vault on a loopback port (fresh
//! SQLite, an injectable clock), an admin, the agent machine and a reader
//! machine enrolled through the SDK, and the real database servers that
//! tests/rotation/start-servers.sh starts.
//!
//! A test that needs a server which does not answer skips with a message,
//! except under `CI`, where it fails: CI must start them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../vault/tests/kit/backend.rs"]
mod backend;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use signet_client::api::*;
use signet_client::identity::Identity;
use signet_client::sdk::{Client, Options};
use signet_vault::clock::ManualClock;
use signet_vault::crypto::RootKey;
use signet_vault::service::enroll::create_bootstrap_token;
use signet_vault::{Config, Vault};
use tempfile::TempDir;

pub const PROJECT: &str = "shop";
pub const ADMIN_USER: &str = "signet_admin";

pub fn admin_password() -> String {
    std::env::var("SIGNET_ROTATION_ADMIN_PASSWORD").unwrap_or_else(|_| "signet-admin-pw".into())
}

fn port(var: &str, default: u16) -> u16 {
    std::env::var(var)
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

pub fn pg_port() -> u16 {
    port("SIGNET_ROTATION_PG_PORT", 54329)
}
pub fn redis_port() -> u16 {
    port("SIGNET_ROTATION_REDIS_PORT", 63799)
}
pub fn mysql_port() -> u16 {
    port("SIGNET_ROTATION_MYSQL_PORT", 33069)
}

/// Whether a server answers on `port`; without one, `false` (skip) or,
/// under `CI`, a failure.
pub async fn server_up(name: &str, port: u16) -> bool {
    if tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{name} does not answer on 127.0.0.1:{port}: run tests/rotation/start-servers.sh before the tests"
        );
    }
    eprintln!(
        "SKIPPED: {name} does not answer on 127.0.0.1:{port} (tests/rotation/start-servers.sh starts it)"
    );
    false
}

/// A short random suffix, so tests sharing a server do not collide.
pub fn unique() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}{:x}",
        now.subsec_nanos() % 0xfffff,
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct TestVault {
    pub url: String,
    pub vault: Arc<Vault>,
    pub clock: Arc<ManualClock>,
    pub admin: Client,
    _data: TempDir,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub async fn start_vault() -> TestVault {
    let data = tempfile::tempdir().unwrap();
    let store = backend::open_store(data.path());
    // The clock starts at the wall clock (requests are signed with it) and
    // moves only when a test moves it.
    let clock = Arc::new(ManualClock::new(now()));
    // Requests are signed with the wall clock: a wide skew lets a test move
    // the vault's clock past leases and graces.
    let config = Config {
        skew_seconds: 3600,
        ..Config::default()
    };
    let vault = Arc::new(Vault::open(store, RootKey::generate(), clock.clone(), config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = signet_vault::http::router(Arc::clone(&vault))
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}");
    let bootstrap = vault
        .with_tx(|tx, now| create_bootstrap_token(tx, now))
        .unwrap();
    let mut admin = Client::new(&url, Identity::generate(), &Options::default()).unwrap();
    admin
        .enroll_admin(bootstrap.as_str(), "test-admin")
        .await
        .unwrap();
    admin.create_project(PROJECT).await.unwrap();
    TestVault {
        url,
        vault,
        clock,
        admin,
        _data: data,
    }
}

impl TestVault {
    pub async fn credential(&self, name: &str, username: &str, password: &str) {
        let fields = BTreeMap::from([
            ("username".to_owned(), username.to_owned()),
            ("password".to_owned(), password.to_owned()),
        ]);
        let body = WriteSecret {
            value: None,
            fields: Some(fields),
        };
        self.admin.write_secret(PROJECT, name, &body).await.unwrap();
    }

    /// A machine enrolled with whole-secret grants on `secrets`.
    pub async fn machine(&self, name: &str, secrets: &[&str]) -> Client {
        let grants: Vec<_> = secrets
            .iter()
            .map(|s| serde_json::json!({ "secret": s }))
            .collect();
        let body: CreateToken = serde_json::from_value(serde_json::json!({
            "project": PROJECT,
            "name": name,
            "ttl_seconds": 3600,
            "machine_lifetime_seconds": 36000,
            "grants": grants,
        }))
        .unwrap();
        let token = self.admin.create_token(&body).await.unwrap().token.unwrap();
        let (client, _) = Client::enroll(
            &self.url,
            &token,
            name,
            BTreeMap::new(),
            &Options::default(),
        )
        .await
        .unwrap();
        client
    }

    pub async fn rotation(
        &self,
        provider: Provider,
        secret: &str,
        admin_secret: &str,
        agent: &Client,
        target: RotationTarget,
    ) -> RotationView {
        self.admin
            .create_rotation(&CreateRotation {
                project: PROJECT.into(),
                secret: secret.into(),
                provider,
                target,
                admin_secret: admin_secret.into(),
                agent_machine_id: agent.identity().id.clone().unwrap(),
                interval_seconds: None,
                policy: PasswordPolicy::default(),
                lease_seconds: None,
                grace_seconds: Some(0),
            })
            .await
            .unwrap()
    }

    pub async fn live(&self, secret: &str) -> u32 {
        self.admin
            .secret_meta(PROJECT, secret)
            .await
            .unwrap()
            .live_version
    }

    pub async fn jobs(&self, rotation: &str) -> Vec<RotationJobView> {
        self.admin.rotation_jobs(rotation).await.unwrap().jobs
    }

    /// Every audit entry's text, to look for what must never be there.
    pub async fn audit_text(&self) -> String {
        let page = self.admin.audit(0, 5000).await.unwrap();
        serde_json::to_string(&page).unwrap()
    }
}

/// The username and password of `project/secret` as `reader` reads it,
/// with the version.
pub async fn read_credential(reader: &Client, secret: &str) -> (u32, String, String) {
    let value = reader.read_secret(PROJECT, secret, None).await.unwrap();
    let fields = value.fields.clone().unwrap();
    (
        value.version,
        fields["username"].clone(),
        fields["password"].clone(),
    )
}

/// A reader in a loop: reads the secret, tries what it got against the
/// database with `works`, and counts every value that did not work.
pub struct ReaderLoop {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<ReaderReport>,
    pub newest: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub struct ReaderReport {
    pub reads: u64,
    pub failures: Vec<String>,
    pub versions: std::collections::BTreeSet<u32>,
}

impl ReaderLoop {
    pub fn start<F, Fut>(reader: Client, secret: &'static str, works: F) -> Self
    where
        F: Fn(String, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let newest = Arc::new(AtomicU64::new(0));
        let (flag, seen) = (Arc::clone(&stop), Arc::clone(&newest));
        let handle = tokio::spawn(async move {
            let mut report = ReaderReport::default();
            while !flag.load(Ordering::SeqCst) {
                let (version, user, password) = read_credential(&reader, secret).await;
                report.reads += 1;
                report.versions.insert(version);
                if let Err(error) = works(user.clone(), password).await {
                    report.failures.push(format!("v{version} {user}: {error}"));
                }
                seen.fetch_max(u64::from(version), Ordering::SeqCst);
            }
            report
        });
        Self {
            stop,
            handle,
            newest,
        }
    }

    /// Waits until the reader has read (and tried) `version` at least once.
    pub async fn wait_for(&self, version: u32) {
        for _ in 0..500 {
            if self.newest.load(Ordering::SeqCst) >= u64::from(version) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the reader never saw version {version}");
    }

    pub async fn stop(self) -> ReaderReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap()
    }
}
