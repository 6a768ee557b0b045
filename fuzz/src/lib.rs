//! What the fuzz targets share: the signing key of docs/protocol-vectors.json,
//! and a vault in this process (the real router over SQLite in a temporary
//! directory, a clock that does not move, a first admin, a project `shop`
//! and a machine that may read `shop/fuzzed`), so that a fuzzed body goes
//! through every check a real request meets.
//!
//! A panic is how a target reports a finding: any 5xx, an error body that is
//! not `{"error":{"code":...}}`, or an answer that echoes a secret sent in
//! the request.

// A test harness: a failed setup is a crash to look at, not an error to handle.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use signet_client::protocol::{self, IdentityKey};
use signet_vault::budget::BudgetLimits;
use signet_vault::clock::{Clock as _, ManualClock};
use signet_vault::crypto::RootKey;
use signet_vault::ids;
use signet_vault::settings::Limits;
use signet_vault::store::{Admin, SqliteStore, Store};
use signet_vault::vault::{Config, Settings, Vault};
use tower::ServiceExt as _;

/// Monday 2024-06-03 10:00:00 UTC, as in the vault's test kit.
pub const START: i64 = 1_717_408_800;

/// The seed of docs/protocol-vectors.json: bytes 0 to 31.
pub fn vector_key() -> IdentityKey {
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    IdentityKey::from_seed(&seed)
}

/// Its public key, as the vectors (and the enrollment corpus) spell it.
pub const VECTOR_PUBLIC_KEY: &str = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg";

/// The placeholder an enrollment input uses for the live token, which is
/// random per process (the harness substitutes it before signing).
pub const TOKEN_PLACEHOLDER: &[u8] = b"@TOKEN@";

/// One identity that signs requests.
pub struct Signer {
    pub id: String,
    pub key: IdentityKey,
}

/// The vault under fuzzing and its fixtures.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    app: Router,
    pub admin: Signer,
    pub machine: Signer,
    /// A raw enrollment token of project `shop`, unlimited uses, one year (the
    /// clock does not move).
    pub token: String,
}

/// `SIGNET_FUZZ_VERBOSE=1`: print every answer (to see what a seed reaches).
static VERBOSE: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("SIGNET_FUZZ_VERBOSE").is_some());

/// The harness, built on first use and kept for the whole run.
pub static VAULT: LazyLock<Harness> = LazyLock::new(Harness::start);

impl Harness {
    fn start() -> Self {
        // tmpfs when there is one: SQLite runs with synchronous=FULL.
        let base = std::env::var_os("SIGNET_FUZZ_TMP")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                let shm = std::path::Path::new("/dev/shm");
                shm.is_dir().then(|| shm.to_path_buf())
            })
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("signet-fuzz-")
            .tempdir_in(base)
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let clock = Arc::new(ManualClock::new(START));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let vault = Arc::new(
            Vault::open(store, RootKey::generate(), clock.clone(), Config::default())
                .unwrap()
                .with_settings(unbudgeted()),
        );
        let key = IdentityKey::generate();
        let (admin_id, public_key) = (ids::new(ids::ADMIN), key.public_key());
        let id = admin_id.clone();
        vault
            .with_tx(move |tx, now| {
                Ok(tx.insert_admin(&Admin {
                    id,
                    name: "first".into(),
                    public_key,
                    created_at: now,
                    disabled_at: None,
                })?)
            })
            .unwrap();
        let mut harness = Self {
            runtime,
            _dir: dir,
            clock,
            app: signet_vault::http::router(vault),
            admin: Signer { id: admin_id, key },
            machine: Signer {
                id: String::new(),
                key: IdentityKey::generate(),
            },
            token: String::new(),
        };
        let admin = |h: &Self, method, target: &str, body: Value| {
            let body = serde_json::to_vec(&body).unwrap();
            let (status, reply) = h.send(&h.admin.key, &h.admin.id, method, target, &body);
            assert!(
                status.is_success(),
                "setup {method} {target}: {status}: {}",
                String::from_utf8_lossy(&reply)
            );
            serde_json::from_slice::<Value>(&reply).unwrap()
        };
        admin(&harness, "POST", "/v1/projects", json!({"name": "shop"}));
        admin(
            &harness,
            "PUT",
            "/v1/projects/shop/secrets/fuzzed",
            json!({"value": "initial"}),
        );
        let token = admin(
            &harness,
            "POST",
            "/v1/enrollment-tokens",
            json!({"project": "shop", "ttl_seconds": 31_536_000,
                   "machine_lifetime_seconds": 86_400, "grants": [{"secret": "fuzzed"}]}),
        )["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let body = serde_json::to_vec(&json!({
            "token": token, "public_key": harness.machine.key.public_key(), "hostname": "fuzz"
        }))
        .unwrap();
        let (status, reply) = harness.send(
            &harness.machine.key,
            protocol::ENROLL_KEY_ID,
            "POST",
            "/v1/enroll",
            &body,
        );
        assert_eq!(status, StatusCode::CREATED, "setup enroll");
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        harness.machine.id = reply["machine_id"].as_str().unwrap().to_owned();
        harness.token = token;
        harness
    }

    /// Sends one request signed now by `key` as `key_id`, from 10.1.2.3;
    /// the status and the whole body.
    pub fn send(
        &self,
        key: &IdentityKey,
        key_id: &str,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
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
        let mut request = builder.body(Body::from(body.to_vec())).unwrap();
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            40_000,
        )));
        let (status, bytes) = self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, bytes.to_vec())
        });
        if *VERBOSE {
            eprintln!(
                "{method} {target}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        (status, bytes)
    }
}

/// Default settings without the per-source budget of unverified denials:
/// every input comes from one address at one instant, and past the budget
/// each would be refused before it reached what the target explores.
fn unbudgeted() -> Settings {
    Settings {
        limits: Limits {
            unverified: BudgetLimits {
                burst: 0,
                ..BudgetLimits::default()
            },
            ..Limits::default()
        },
        ..Settings::default()
    }
}

/// The checks every answer passes: no 5xx; an error is
/// `{"error":{"code":"...","message":"..."}}` and quotes no string of
/// `secrets` (docs/protocol.md: error texts never contain a secret value or
/// a token). Strings under eight bytes do not count, so that a short value
/// that happens to be a word of a message is not a finding.
pub fn check_answer(what: &str, status: StatusCode, body: &[u8], secrets: &[&str]) {
    assert!(
        !status.is_server_error(),
        "{what}: {status}: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_success() {
        return;
    }
    let error: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status}: error body is not JSON: {e}"));
    assert!(
        error["error"]["code"].is_string() && error["error"]["message"].is_string(),
        "{what}: {status}: error body of the wrong shape: {error}"
    );
    let text = String::from_utf8_lossy(body);
    for secret in secrets.iter().filter(|s| s.len() >= 8) {
        assert!(
            !text.contains(secret),
            "{what}: {status}: the error quotes a secret of the request"
        );
    }
}
