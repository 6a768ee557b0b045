//! `signet-init` as a process against a real vault on a loopback port.
//!
//! Each test starts its own in-process vault (fresh SQLite in a tempdir),
//! enrolls an admin through a bootstrap token, creates a project, secrets
//! and an enrollment token with pre-baked grants through the SDK, then runs
//! the real `signet-init` binary with the environment contract.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signet_client::api::{CreateToken, WriteSecret};
use signet_client::identity::Identity;
use signet_client::sdk::{Client, Options};
use signet_init::contract::{self, READY_MARKER};
use signet_vault::clock::SystemClock;
use signet_vault::crypto::RootKey;
use signet_vault::service::enroll::create_bootstrap_token;
use signet_vault::store::SqliteStore;
use signet_vault::{Config, Vault, server};
use tempfile::TempDir;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_signet-init");
const PROJECT: &str = "shop";

struct TestVault {
    url: String,
    admin: Client,
    /// The private CA of a vault served over HTTPS.
    ca_pem: Option<String>,
    _data: TempDir,
}

async fn start_vault() -> TestVault {
    start(false, false).await
}

/// A vault as it was before `GET /v1/machine/changes`: that route is 404.
async fn start_old_vault() -> TestVault {
    start(false, true).await
}

/// A vault served over HTTPS with a certificate for 127.0.0.1 and
/// localhost, issued by a fresh private CA (`TestVault::ca_pem`).
async fn start_tls_vault() -> TestVault {
    start(true, false).await
}

/// A CA and a serving certificate it signed for 127.0.0.1 and localhost:
/// (CA PEM, certificate PEM, key PEM).
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "signet test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    // rcgen makes an IP SAN of a name that parses as an IP address.
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

async fn start(tls: bool, old: bool) -> TestVault {
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(data.path()).unwrap());
    let vault = Arc::new(
        Vault::open(
            store,
            RootKey::generate(),
            Arc::new(SystemClock),
            Config::default(),
        )
        .unwrap(),
    );
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (url, ca_pem) = if tls {
        let (ca_pem, cert_pem, key_pem) = private_ca();
        let cert = data.path().join("tls.crt");
        let key = data.path().join("tls.key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let served = Arc::clone(&vault);
        tokio::spawn(async move {
            server::serve_until(
                served,
                listener,
                Some(server::Tls { cert, key }),
                std::future::pending(),
            )
            .await
        });
        (format!("https://{addr}"), Some(ca_pem))
    } else {
        let mut router = signet_vault::http::router(Arc::clone(&vault));
        if old {
            router = router.layer(axum::middleware::from_fn(without_changes));
        }
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), None)
    };
    let bootstrap = vault
        .with_tx(|tx, now| create_bootstrap_token(tx, now))
        .unwrap();
    let options = Options {
        ca_pem: ca_pem.clone().map(String::into_bytes),
        ..Options::default()
    };
    let mut admin = Client::new(&url, Identity::generate(), &options).unwrap();
    admin
        .enroll_admin(bootstrap.as_str(), "test-admin")
        .await
        .unwrap();
    admin.create_project(PROJECT).await.unwrap();
    TestVault {
        url,
        admin,
        ca_pem,
        _data: data,
    }
}

/// Answers the change route as a vault without it does.
async fn without_changes(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if request.uri().path() == "/v1/machine/changes" {
        let body = serde_json::json!({"error": {"code": "not_found", "message": "no such route"}});
        return (axum::http::StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    next.run(request).await
}

impl TestVault {
    async fn plain(&self, name: &str, value: &str) {
        let body = WriteSecret {
            value: Some(value.to_owned()),
            fields: None,
        };
        self.admin.write_secret(PROJECT, name, &body).await.unwrap();
    }

    async fn structured(&self, name: &str, fields: &[(&str, &str)]) {
        let body = WriteSecret {
            value: None,
            fields: Some(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        };
        self.admin.write_secret(PROJECT, name, &body).await.unwrap();
    }

    /// An enrollment token with whole-secret grants on `secrets`.
    async fn token(&self, secrets: &[&str]) -> String {
        let grants: Vec<_> = secrets
            .iter()
            .map(|s| serde_json::json!({ "secret": s }))
            .collect();
        let body: CreateToken = serde_json::from_value(serde_json::json!({
            "project": PROJECT,
            "name": "pods",
            "ttl_seconds": 3600,
            "machine_lifetime_seconds": 3600,
            "grants": grants,
        }))
        .unwrap();
        // Not bound to a cluster: a raw token, as these tests want.
        self.admin.create_token(&body).await.unwrap().token.unwrap()
    }

    async fn machine_count(&self) -> usize {
        self.admin
            .machines()
            .await
            .unwrap()
            .machines
            .iter()
            .filter(|m| !m.disabled)
            .count()
    }
}

/// A pod's worth of environment: a token file and a mount directory.
struct Pod {
    dir: TempDir,
    env: BTreeMap<String, String>,
}

impl Pod {
    fn new(vault_url: &str, token: &str, mode: &str, files: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mount")).unwrap();
        std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
        let env = [
            (contract::ENV_VAULT, vault_url.to_owned()),
            (
                contract::ENV_TOKEN_FILE,
                dir.path().join("token").display().to_string(),
            ),
            (
                contract::ENV_MOUNT_PATH,
                dir.path().join("mount").display().to_string(),
            ),
            (contract::ENV_MODE, mode.to_owned()),
            (contract::ENV_REFRESH_SECONDS, "1".to_owned()),
            (contract::ENV_FILES, files.to_string()),
            (contract::ENV_POD_NAME, "web-0".to_owned()),
            (contract::ENV_POD_NAMESPACE, "shop".to_owned()),
            (
                contract::ENV_POD_UID,
                "0d8a4c7e-1111-2222-3333-444455556666".to_owned(),
            ),
            (contract::ENV_MAX_ATTEMPTS, "3".to_owned()),
            (contract::ENV_RETRY_BASE_MS, "50".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self { dir, env }
    }

    fn mount(&self) -> PathBuf {
        self.dir.path().join("mount")
    }

    fn command(&self, subcommand: &str) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg(subcommand)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `signet-init run` to completion (bounded), returning status and stderr.
    async fn run(&self) -> (ExitStatus, String) {
        let child = self.command("run").spawn().unwrap();
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("signet-init run did not finish")
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn probe(&self) -> i32 {
        let output = self.command("probe").output().await.unwrap();
        output.status.code().unwrap()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.mount().join(name)).unwrap()
    }

    fn mode(&self, name: &str) -> u32 {
        std::fs::metadata(self.mount().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn names(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.mount())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// True when `text` holds a run of base64url characters long enough to be
/// an encoded 32-byte (43 chars) or 64-byte (86 chars) key or signature.
fn has_key_sized_blob(text: &str) -> bool {
    let mut run = 0usize;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run += 1;
            if run >= 43 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// No file in the mount directory holds anything that looks like key
/// material: the private key exists only in signet-init's memory.
fn assert_no_key_material(pod: &Pod) {
    for name in pod.names() {
        let bytes = std::fs::read(pod.mount().join(&name)).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            !has_key_sized_blob(&text),
            "{name} holds a key-sized base64url blob"
        );
    }
    // Nothing but the mount directory and the token may be in the pod dir.
    let top: BTreeSet<String> = std::fs::read_dir(pod.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(top, set(&["mount", "token"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_mode_writes_every_format_with_exact_contents_and_modes() {
    let vault = start_vault().await;
    vault.plain("api-key", "s3cr'et").await;
    vault
        .structured(
            "db",
            &[("user", "app"), ("password", "p\"w"), ("host", "db.local")],
        )
        .await;
    let token = vault.token(&["api-key", "db"]).await;
    let pod = Pod::new(
        &vault.url,
        &token,
        "init",
        serde_json::json!([
            {"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"},
            {"secret": "api-key", "fields": [], "file": "api.env", "format": "env"},
            {"secret": "api-key", "fields": [], "file": "api.json", "format": "json"},
            {"secret": "db", "fields": [], "file": "db", "format": "raw"},
            {"secret": "db", "fields": ["user", "password"], "file": "db.env", "format": "env"},
            {"secret": "db", "fields": [], "file": "db.json", "format": "json"},
        ]),
    );
    assert_eq!(pod.probe().await, 1, "not ready before run");

    let (status, stderr) = pod.run().await;
    assert!(status.success(), "{status}: {stderr}");

    assert_eq!(pod.read("api-key"), "s3cr'et");
    assert_eq!(pod.read("api.env"), "API_KEY='s3cr'\\''et'\n");
    assert_eq!(pod.read("api.json"), r#""s3cr'et""#);
    assert_eq!(pod.read("db.host"), "db.local");
    assert_eq!(pod.read("db.password"), "p\"w");
    assert_eq!(pod.read("db.user"), "app");
    assert_eq!(pod.read("db.env"), "password='p\"w'\nuser='app'\n");
    assert_eq!(
        pod.read("db.json"),
        r#"{"host":"db.local","password":"p\"w","user":"app"}"#
    );
    let expected = set(&[
        "api-key",
        "api.env",
        "api.json",
        "db.host",
        "db.password",
        "db.user",
        "db.env",
        "db.json",
        READY_MARKER,
    ]);
    assert_eq!(pod.names(), expected);
    for name in &expected {
        assert_eq!(pod.mode(name), 0o440, "{name}");
    }
    assert_eq!(pod.probe().await, 0, "ready after run");
    assert_no_key_material(&pod);
    // Init mode revokes its machine: the key died with the process.
    assert_eq!(vault.machine_count().await, 0);
    assert!(!stderr.contains(&token), "the token must never be logged");
    assert!(
        !stderr.contains("s3cr"),
        "a secret value must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_0400_is_honoured() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    let token = vault.token(&["api-key"]).await;
    let mut pod = Pod::new(
        &vault.url,
        &token,
        "init",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "key", "format": "raw"}]),
    );
    pod.env
        .insert(contract::ENV_FILE_MODE.to_owned(), "0400".to_owned());
    let (status, stderr) = pod.run().await;
    assert!(status.success(), "{stderr}");
    assert_eq!(pod.read("key"), "v1");
    assert_eq!(pod.mode("key"), 0o400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_refreshes_after_rotation_and_revokes_itself_on_sigterm() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    vault
        .structured("db", &[("user", "app"), ("password", "one")])
        .await;
    vault.plain("static", "unchanged").await;
    let token = vault.token(&["api-key", "db", "static"]).await;
    let pod = Pod::new(
        &vault.url,
        &token,
        "sidecar",
        serde_json::json!([
            {"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"},
            {"secret": "db", "fields": [], "file": "db.json", "format": "json"},
            {"secret": "static", "fields": [], "file": "static", "format": "raw"},
        ]),
    );
    let mut child: Child = pod.command("run").spawn().unwrap();
    let pid = child.id().unwrap();

    wait_for(|| pod.mount().join(READY_MARKER).exists(), "first write").await;
    assert_eq!(pod.probe().await, 0);
    assert_eq!(pod.read("api-key"), "v1");
    assert_eq!(pod.read("db.json"), r#"{"password":"one","user":"app"}"#);
    assert_eq!(vault.machine_count().await, 1);
    let static_inode = inode(&pod.mount().join("static"));

    vault.plain("api-key", "v2").await;
    vault
        .structured("db", &[("user", "app"), ("password", "two")])
        .await;
    wait_for(
        || std::fs::read_to_string(pod.mount().join("api-key")).is_ok_and(|v| v == "v2"),
        "api-key rotation",
    )
    .await;
    wait_for(
        || {
            std::fs::read_to_string(pod.mount().join("db.json"))
                .is_ok_and(|v| v == r#"{"password":"two","user":"app"}"#)
        },
        "db rotation",
    )
    .await;
    assert_eq!(pod.mode("api-key"), 0o440);
    // An unchanged secret is not rewritten.
    assert_eq!(inode(&pod.mount().join("static")), static_inode);
    assert_eq!(
        pod.names(),
        set(&["api-key", "db.json", "static", READY_MARKER])
    );
    assert_no_key_material(&pod);

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("sidecar did not stop after SIGTERM")
        .unwrap();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        pipe.read_to_string(&mut stderr).await.unwrap();
    }
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("machine revoked"), "{stderr}");
    assert_eq!(vault.machine_count().await, 0, "the machine revoked itself");
    assert!(!stderr.contains(&token));
    assert!(!stderr.contains("two"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_vault_exits_3_naming_the_url_after_bounded_retries() {
    // A port nobody listens on: bind, learn it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let pod = Pod::new(
        &url,
        "st_enroll_whatever",
        "init",
        serde_json::json!([{"secret": "x", "fields": [], "file": "x", "format": "raw"}]),
    );
    let started = Instant::now();
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("after 3 attempt(s)"), "{stderr}");
    assert_eq!(stderr.matches("retrying").count(), 2, "{stderr}");
    // 3 attempts with 50 ms and 100 ms (±20 %) between them.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(pod.names(), BTreeSet::new());
    assert_eq!(pod.probe().await, 1);
}

/// The projected token is read again at every enrollment attempt (the
/// kubelet rotates it): a file that disappears while the vault is
/// unreachable ends the retries with a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_enrollment_rereads_the_token_at_every_attempt() {
    use tokio::io::{AsyncBufReadExt as _, BufReader};

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pod = Pod::new(
        &format!("http://127.0.0.1:{port}"),
        "unused",
        "init",
        serde_json::json!([{"secret": "x", "fields": [], "file": "x", "format": "raw"}]),
    );
    let sa_token = pod.dir.path().join("sa-token");
    std::fs::write(&sa_token, "header.payload.signature\n").unwrap();
    pod.env.remove(contract::ENV_TOKEN_FILE);
    for (name, value) in [
        (contract::ENV_SA_TOKEN_FILE, sa_token.display().to_string()),
        (contract::ENV_CLUSTER, "prod".to_owned()),
        (contract::ENV_POLICY, "web".to_owned()),
        (contract::ENV_MAX_ATTEMPTS, "50".to_owned()),
        (contract::ENV_RETRY_BASE_MS, "200".to_owned()),
    ] {
        pod.env.insert(name.to_owned(), value);
    }
    let mut child = pod.command("run").spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stderr = String::new();
    let seen_retry = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stderr.push_str(&line);
            stderr.push('\n');
            if line.contains("retrying") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(seen_retry, "{stderr}");
    // After the first attempt, before the next one.
    std::fs::remove_file(&sa_token).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        child.wait().await.unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("service-account token file"), "{stderr}");
    assert!(stderr.matches("retrying").count() < 5, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_token_exits_4_without_retrying() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    let token = vault.token(&["api-key"]).await;
    let forged = format!("{}x", token);
    let pod = Pod::new(
        &vault.url,
        &forged,
        "init",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "k", "format": "raw"}]),
    );
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains(&vault.url), "{stderr}");
    assert!(!stderr.contains(&forged), "the token must never be logged");
    assert_eq!(pod.names(), BTreeSet::new());
    assert_eq!(vault.machine_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_secret_exits_5_and_revokes_the_machine() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    vault.plain("other", "nope").await;
    let token = vault.token(&["api-key"]).await;
    let pod = Pod::new(
        &vault.url,
        &token,
        "init",
        serde_json::json!([
            {"secret": "api-key", "fields": [], "file": "k", "format": "raw"},
            {"secret": "other", "fields": [], "file": "o", "format": "raw"},
        ]),
    );
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("secret other is not granted"), "{stderr}");
    assert!(!pod.names().contains(READY_MARKER));
    assert_eq!(pod.probe().await, 1);
    assert_eq!(vault.machine_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2() {
    let pod = Pod::new(
        "http://127.0.0.1:1",
        "t",
        "daemon",
        serde_json::json!([{"secret": "x", "fields": [], "file": "x", "format": "raw"}]),
    );
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SIGNET_MODE"), "{stderr}");

    let mut pod = Pod::new(
        "http://127.0.0.1:1",
        "t",
        "init",
        serde_json::json!([{"secret": "x", "fields": [], "file": "x", "format": "raw"}]),
    );
    pod.env.insert(
        contract::ENV_TOKEN_FILE.to_owned(),
        "/nonexistent/token".to_owned(),
    );
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");

    // Attestation needs its three variables together.
    pod.env.insert(
        contract::ENV_TOKEN_FILE.to_owned(),
        pod.dir.path().join("token").display().to_string(),
    );
    pod.env
        .insert(contract::ENV_CLUSTER.to_owned(), "prod".to_owned());
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("missing: SIGNET_SA_TOKEN_FILE, SIGNET_POLICY"),
        "{stderr}"
    );
    pod.env.remove(contract::ENV_CLUSTER);

    pod.env.remove(contract::ENV_MOUNT_PATH);
    assert_eq!(pod.probe().await, 2);
}

/// A pod that enrolls by attestation naming a cluster the vault does not
/// know is refused with exit 4 and told how to register it, and the
/// projected token appears in no log line even at the most verbose level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_attestation_exits_4_and_never_logs_the_token() {
    const JWT: &str =
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDp3ZWIifQ.c2lnbmF0dXJl";
    let vault = start_vault().await;
    let mut pod = Pod::new(
        &vault.url,
        "unused",
        "init",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "k", "format": "raw"}]),
    );
    let sa_token = pod.dir.path().join("sa-token");
    std::fs::write(&sa_token, format!("{JWT}\n")).unwrap();
    pod.env.remove(contract::ENV_TOKEN_FILE);
    for (name, value) in [
        (contract::ENV_SA_TOKEN_FILE, sa_token.display().to_string()),
        (contract::ENV_CLUSTER, "prod".to_owned()),
        (contract::ENV_POLICY, "web".to_owned()),
        (contract::ENV_LOG, "trace".to_owned()),
    ] {
        pod.env.insert(name.to_owned(), value);
    }
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(4), "{stderr}");
    // The vault's `unknown_cluster`, with what to do about it.
    assert!(stderr.contains("refused the enrollment"), "{stderr}");
    assert!(stderr.contains("signet cluster add"), "{stderr}");
    for part in JWT.split('.') {
        assert!(!stderr.contains(part), "the token leaked: {stderr}");
    }
    assert_eq!(vault.machine_count().await, 0);

    // An unreadable projected token is a configuration error naming the file.
    std::fs::remove_file(&sa_token).unwrap();
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("service-account token file"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_vault_with_a_private_ca_needs_signet_ca_pem() {
    let vault = start_tls_vault().await;
    let ca_pem = vault.ca_pem.clone().unwrap();
    vault.plain("api-key", "over-tls").await;
    let token = vault.token(&["api-key"]).await;
    let files = serde_json::json!([{"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"}]);

    // Without the CA: the handshake fails, retried like an unreachable vault.
    let pod = Pod::new(&vault.url, &token, "init", files.clone());
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&vault.url), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert_eq!(pod.names(), BTreeSet::new());

    // With the CA as the webhook injects it.
    let mut pod = Pod::new(&vault.url, &token, "init", files.clone());
    pod.env
        .insert(contract::ENV_CA_PEM.to_owned(), ca_pem.clone());
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(pod.read("api-key"), "over-tls");
    assert!(!stderr.contains("BEGIN CERTIFICATE"), "{stderr}");

    // SIGNET_CA_FILE still works; both at once is a configuration error.
    let mut pod = Pod::new(&vault.url, &token, "init", files);
    let ca_file = pod.dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    pod.env.insert(
        contract::ENV_CA_FILE.to_owned(),
        ca_file.display().to_string(),
    );
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(pod.read("api-key"), "over-tls");

    pod.env.insert(contract::ENV_CA_PEM.to_owned(), ca_pem);
    let (status, stderr) = pod.run().await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SIGNET_CA_FILE and SIGNET_CA_PEM are both set"),
        "{stderr}"
    );
    assert_eq!(vault.machine_count().await, 0);
}

/// A sidecar that refreshes only every 5 minutes: a file rewritten sooner
/// was rewritten because the vault pushed the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_rewrites_a_file_within_a_second_of_a_new_version() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    vault.plain("static", "unchanged").await;
    let token = vault.token(&["api-key", "static"]).await;
    let mut pod = Pod::new(
        &vault.url,
        &token,
        "sidecar",
        serde_json::json!([
            {"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"},
            {"secret": "static", "fields": [], "file": "static", "format": "raw"},
        ]),
    );
    pod.env
        .insert(contract::ENV_REFRESH_SECONDS.to_owned(), "300".to_owned());
    let _child: Child = pod.command("run").spawn().unwrap();
    wait_for(|| pod.mount().join(READY_MARKER).exists(), "first write").await;
    let static_inode = inode(&pod.mount().join("static"));

    for value in ["v2", "v3"] {
        let written = Instant::now();
        vault.plain("api-key", value).await;
        let deadline = written + Duration::from_secs(5);
        while std::fs::read_to_string(pod.mount().join("api-key"))
            .ok()
            .as_deref()
            != Some(value)
        {
            assert!(Instant::now() < deadline, "{value} never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = written.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "{value} written {took:?} after the admin's write"
        );
    }
    assert_eq!(inode(&pod.mount().join("static")), static_inode);
    assert_eq!(pod.mode("api-key"), 0o440);
}

/// Against a vault without the change route, the sidecar refreshes every
/// period as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_falls_back_to_the_period_without_the_change_route() {
    let vault = start_old_vault().await;
    vault.plain("api-key", "v1").await;
    let token = vault.token(&["api-key"]).await;
    let pod = Pod::new(
        &vault.url,
        &token,
        "sidecar",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"}]),
    );
    let mut child: Child = pod.command("run").spawn().unwrap();
    wait_for(|| pod.mount().join(READY_MARKER).exists(), "first write").await;
    vault.plain("api-key", "v2").await;
    wait_for(
        || std::fs::read_to_string(pod.mount().join("api-key")).is_ok_and(|v| v == "v2"),
        "the period's refresh",
    )
    .await;
    child.start_kill().unwrap();
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no change route"), "{stderr}");
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap().ino()
}

/// Polls for an effect of the process under test, with a deadline.
async fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Measures one init-mode run fetching 10 secrets, under `/usr/bin/time -v`.
/// Ignored by default; BENCHMARKS.md has the command (it points
/// `SIGNET_INIT_BENCH_BIN` at a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn bench_init_run_with_ten_secrets() {
    let vault = start_vault().await;
    let mut names = Vec::new();
    let mut files = Vec::new();
    for i in 0..10 {
        let name = format!("secret-{i}");
        if i % 2 == 0 {
            vault.plain(&name, &"x".repeat(64)).await;
        } else {
            vault
                .structured(&name, &[("user", "app"), ("password", &"y".repeat(32))])
                .await;
        }
        let format = ["raw", "env", "json"][i % 3];
        files.push(
            serde_json::json!({"secret": name, "fields": [], "file": name, "format": format}),
        );
        names.push(name);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let token = vault.token(&refs).await;
    let pod = Pod::new(&vault.url, &token, "init", serde_json::Value::Array(files));
    let bin = std::env::var("SIGNET_INIT_BENCH_BIN").unwrap_or_else(|_| BIN.to_owned());
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(&bin)
        .arg("run")
        .env_clear()
        .envs(&pod.env)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(pod.names().contains(READY_MARKER));
    let size = std::fs::metadata(&bin).unwrap().len();
    println!("binary: {bin} ({size} bytes)");
    for line in stderr.lines().filter(|l| {
        l.contains("Maximum resident set size")
            || l.contains("Elapsed (wall clock)")
            || l.contains("User time")
            || l.contains("System time")
    }) {
        println!("{}", line.trim());
    }
}

/// A marked process that appends `<signal> <contents of api-key>` to `log`
/// for each SIGHUP/SIGUSR1 it handles, so the test sees which signal came and
/// what the file held when it came. Its `sleep` children carry the marker
/// too (as any child of a container's main process would).
fn recorder(container: &str, mount: &Path, log: &Path) -> Child {
    let script = format!(
        "trap 'echo HUP $(cat {file}) >> {log}' HUP; trap 'echo USR1 $(cat {file}) >> {log}' USR1; echo started >> {log}; while :; do sleep 0.05; done",
        file = mount.join("api-key").display(),
        log = log.display(),
    );
    // Whoever started the tests may ignore SIGHUP (nohup, a background
    // job), and a shell cannot trap a signal ignored when it started: start
    // the recorder with both signals at their defaults.
    Command::new("/usr/bin/env")
        .args(["--default-signal=HUP,USR1", "/bin/sh", "-c"])
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(contract::ENV_RELOAD_TARGET, container)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The reload signal reaches the target container's main process after each
/// rewrite, with the new file already in place, and never at the first
/// write; a later process of the same container (an exec session) is left
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_signals_the_reload_target_after_each_rewrite() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    let token = vault.token(&["api-key"]).await;
    let mut pod = Pod::new(
        &vault.url,
        &token,
        "sidecar",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"}]),
    );
    let container = format!("app-{}", std::process::id());
    pod.env
        .insert(contract::ENV_REFRESH_SECONDS.to_owned(), "300".to_owned());
    pod.env
        .insert(contract::ENV_RELOAD_SIGNAL.to_owned(), "SIGHUP".to_owned());
    pod.env
        .insert(contract::ENV_RELOAD_CONTAINER.to_owned(), container.clone());

    let main_log = pod.dir.path().join("main.log");
    let exec_log = pod.dir.path().join("exec.log");
    let _main = recorder(&container, &pod.mount(), &main_log);
    wait_for(|| lines(&main_log) == ["started"], "the main process").await;
    // Started later, like `kubectl exec` into the same container.
    let _exec = recorder(&container, &pod.mount(), &exec_log);
    wait_for(|| lines(&exec_log) == ["started"], "the exec session").await;

    let mut sidecar: Child = pod.command("run").spawn().unwrap();
    wait_for(|| pod.mount().join(READY_MARKER).exists(), "first write").await;
    // The first write is not a change: the app reads its files at start.
    vault.plain("api-key", "v2").await;
    wait_for(|| lines(&main_log).len() == 2, "the first signal").await;
    vault.plain("api-key", "v3").await;
    wait_for(|| lines(&main_log).len() == 3, "the second signal").await;
    assert_eq!(lines(&main_log), ["started", "HUP v2", "HUP v3"]);
    assert_eq!(lines(&exec_log), ["started"]);

    sidecar.start_kill().unwrap();
    let output = sidecar.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("signalled the reload target"), "{stderr}");
}

/// A target that cannot be found is logged with the fix, and the sidecar
/// keeps the files fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_reload_target_is_logged_with_the_fix_and_files_stay_fresh() {
    let vault = start_vault().await;
    vault.plain("api-key", "v1").await;
    let token = vault.token(&["api-key"]).await;
    let mut pod = Pod::new(
        &vault.url,
        &token,
        "sidecar",
        serde_json::json!([{"secret": "api-key", "fields": [], "file": "api-key", "format": "raw"}]),
    );
    pod.env
        .insert(contract::ENV_REFRESH_SECONDS.to_owned(), "300".to_owned());
    pod.env
        .insert(contract::ENV_RELOAD_SIGNAL.to_owned(), "SIGUSR1".to_owned());
    pod.env.insert(
        contract::ENV_RELOAD_CONTAINER.to_owned(),
        format!("absent-{}", std::process::id()),
    );
    let mut sidecar: Child = pod.command("run").spawn().unwrap();
    wait_for(|| pod.mount().join(READY_MARKER).exists(), "first write").await;
    for value in ["v2", "v3"] {
        vault.plain("api-key", value).await;
        wait_for(|| pod.read("api-key") == value, value).await;
    }
    sidecar.start_kill().unwrap();
    let output = sidecar.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot signal the reload target"),
        "{stderr}"
    );
    assert!(stderr.contains("shareProcessNamespace"), "{stderr}");
}
