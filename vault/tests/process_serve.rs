//! `signet-vault serve` as a real process: logs never carry a secret value,
//! token or key; a wrong root key stops it at start.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use signet_client::api::{CreateToken, WriteSecret};
use signet_client::identity::Identity;
use signet_client::sdk::{Client, Options};

const VAULT: &str = env!("CARGO_BIN_EXE_signet-vault");
const SECRET_VALUE: &str = "s3cr3t-value-that-must-never-be-logged";

struct Running {
    child: Child,
    address: String,
    bootstrap: String,
    stderr_lines: Vec<String>,
}

/// Starts `serve` with the root key in the environment and debug logs in
/// JSON, reads its log until it says where it listens, and takes the
/// first-start bootstrap token from the file it names.
fn serve(data_dir: &std::path::Path, root_hex: &str) -> Running {
    let mut child = Command::new(VAULT)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("SIGNET_ROOT_KEY", root_hex)
        .env("SIGNET_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut stderr = BufReader::new(stderr);
    let mut stderr_lines = Vec::new();
    let mut token_file = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    let address = loop {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        stderr_lines.push(line.clone());
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(file) = v["fields"]["token_file"].as_str() {
                token_file = Some(std::path::PathBuf::from(file));
            }
            if let Some(address) = v["fields"]["address"].as_str() {
                break address.to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "vault never listened: {stderr_lines:?}"
        );
    };
    let bootstrap = token_file
        .map(|file| {
            assert_eq!(file, data_dir.join("bootstrap-token"), "{stderr_lines:?}");
            std::fs::read_to_string(file).unwrap().trim().to_owned()
        })
        .unwrap_or_default();
    // Keep draining both streams in the background so no pipe ever fills.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut out);
        let mut rest = String::new();
        let _ = stderr.read_to_string(&mut rest);
        let _ = tx.send(format!("{rest}\n[stdout]\n{out}"));
    });
    STDERR_REST.with(|r| *r.borrow_mut() = Some(rx));
    Running {
        child,
        address,
        bootstrap,
        stderr_lines,
    }
}

thread_local! {
    static STDERR_REST: std::cell::RefCell<Option<std::sync::mpsc::Receiver<String>>> = const { std::cell::RefCell::new(None) };
}

/// Stops the vault; its exit status and everything it wrote, standard
/// error and standard output.
fn stop(mut running: Running) -> (std::process::ExitStatus, String) {
    Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    let status = running.child.wait().unwrap();
    let rest = STDERR_REST
        .with(|r| r.borrow_mut().take())
        .map(|rx| rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default())
        .unwrap_or_default();
    (status, running.stderr_lines.concat() + &rest)
}

/// The first-start bootstrap token is in a file of the data directory
/// that only the vault's user can read, never on standard output or in
/// the log, which carries only the file's path; once an admin exists, a
/// restart removes the file.
#[cfg(unix)]
#[test]
fn the_first_bootstrap_token_is_written_to_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let root_hex = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    let running = serve(dir.path(), &root_hex);
    let file = dir.path().join("bootstrap-token");
    let token = running.bootstrap.clone();
    assert!(token.starts_with("bt_"), "no token in {}", file.display());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (status, output) = stop(running);
    assert!(status.success());
    let (_, secret) = token.split_once('.').unwrap();
    assert!(
        !output.contains(secret),
        "the token is in the output: {output}"
    );
    assert!(
        output.contains("bootstrap-token"),
        "the log names the file: {output}"
    );

    // No admin yet: a new token replaces the old one, still private.
    let running = serve(dir.path(), &root_hex);
    let second = running.bootstrap.clone();
    assert!(second.starts_with("bt_") && second != token);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut admin =
        Client::new(&running.address, Identity::generate(), &Options::default()).unwrap();
    rt.block_on(admin.enroll_admin(&second, "ops")).unwrap();
    let (status, _) = stop(running);
    assert!(status.success());
    let running = serve(dir.path(), &root_hex);
    assert!(running.bootstrap.is_empty());
    assert!(!file.exists(), "the used token's file is removed");
    let (status, _) = stop(running);
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_never_hold_a_secret_value_token_or_key() {
    let dir = tempfile::tempdir().unwrap();
    let root_hex = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    let running = serve(dir.path(), &root_hex);
    let options = Options::default();

    let mut admin = Client::new(&running.address, Identity::generate(), &options).unwrap();
    admin.enroll_admin(&running.bootstrap, "ops").await.unwrap();
    admin.create_project("shop").await.unwrap();
    admin
        .write_secret(
            "shop",
            "stripe",
            &WriteSecret {
                value: Some(SECRET_VALUE.into()),
                fields: None,
            },
        )
        .await
        .unwrap();
    // Built from JSON so optional token constraints keep their defaults.
    let request: CreateToken = serde_json::from_value(serde_json::json!({
        "project": "shop", "name": "ci", "max_uses": 1, "ttl_seconds": 600,
        "machine_lifetime_seconds": 600, "grants": [{"secret": "stripe"}]
    }))
    .unwrap();
    let created = admin.create_token(&request).await.unwrap();
    let (machine, _) = Client::enroll(
        &running.address,
        created.token.as_deref().unwrap(),
        "runner",
        BTreeMap::new(),
        &options,
    )
    .await
    .unwrap();
    let value = machine.read_secret("shop", "stripe", None).await.unwrap();
    assert_eq!(value.value.as_deref(), Some(SECRET_VALUE));
    // Denials are logged too: a replay of the spent token, an admin read.
    let reuse = Client::enroll(
        &running.address,
        created.token.as_deref().unwrap(),
        "again",
        BTreeMap::new(),
        &options,
    )
    .await;
    assert_eq!(reuse.err().unwrap().code(), Some("token_exhausted"));
    let pid = running.child.id();
    let bootstrap = running.bootstrap.clone();

    // The root key is gone from the environment children would inherit:
    // nothing readable through the process's own `std::env` remains, and
    // the debug log has no trace of it either (checked below).
    let (status, logs) = stop(running);
    assert!(status.success(), "graceful shutdown exits 0 (pid {pid})");
    assert!(
        logs.contains("secret.read") || logs.contains("vault listening"),
        "logs were captured: {logs}"
    );
    let root_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hex::decode(&root_hex).unwrap())
    };
    let (_, enroll_secret) = created.token.as_deref().unwrap().split_once('.').unwrap();
    let (_, bootstrap_secret) = bootstrap.split_once('.').unwrap();
    let verify = Command::new(VAULT)
        .args(["audit-verify", "--data-dir"])
        .arg(dir.path())
        .env("SIGNET_ROOT_KEY", &root_hex)
        .output()
        .unwrap();
    assert!(verify.status.success());
    assert!(String::from_utf8_lossy(&verify.stdout).starts_with("audit chain intact"));
    for (what, needle) in [
        ("secret value", SECRET_VALUE),
        ("enrollment token", enroll_secret),
        ("bootstrap token", bootstrap_secret),
        ("root key (hex)", root_hex.as_str()),
        ("root key (base64url)", root_b64.as_str()),
    ] {
        assert!(!logs.contains(needle), "{what} appears in the logs");
    }
}

#[test]
fn a_wrong_root_key_stops_the_process_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let right = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    // First start records the check value, then stops.
    let running = serve(dir.path(), &right);
    let (status, _) = stop(running);
    assert!(status.success());

    let wrong = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    let output = Command::new(VAULT)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SIGNET_ROOT_KEY", &wrong)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("root key does not match"), "{stderr}");
    assert!(!stderr.contains(&wrong) && !stderr.contains(&right));

    let missing = Command::new(VAULT)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("SIGNET_ROOT_KEY")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no root key"));
}

#[test]
fn an_unreadable_country_database_stops_the_process_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let root = signet_vault::crypto::RootKey::generate()
        .to_hex()
        .to_string();
    let not_a_database = dir.path().join("countries.mmdb");
    std::fs::write(&not_a_database, b"not a MaxMind DB file").unwrap();
    for path in [not_a_database, dir.path().join("missing.mmdb")] {
        let output = Command::new(VAULT)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--geoip-db")
            .arg(&path)
            .env("SIGNET_ROOT_KEY", &root)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&path.display().to_string()),
            "names the file: {stderr}"
        );
    }
}
