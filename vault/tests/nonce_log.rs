//! Spent nonces live in an append-only log on disk and a set in memory
//! (`vault/src/store/nonces.rs`). These tests replay a request where the
//! set could miss it: after a restart (the set is loaded from the log), on
//! a second vault over the same file (the set catches up with rows another
//! connection appended), and against a transaction that spent a nonce and
//! did not commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use kit::{Harness, LOCAL_IP, Signer};
use serde_json::Value;
use signet_client::protocol;
use signet_vault::clock::Clock as _;
use signet_vault::crypto::RootKey;
use signet_vault::store::{SqliteStore, Store};
use signet_vault::vault::{Config, Settings};
use tower::ServiceExt as _;

const TARGET: &str = "/v1/secrets/shop/api-key";

/// A machine's read of [`TARGET`] with a fixed nonce, signed now: the same
/// request every time it is called.
fn fixed(h: &Harness, machine: &Signer, nonce: &str) -> impl Fn() -> Request<Body> + use<> {
    let headers = protocol::sign(
        &machine.key,
        &machine.id,
        "GET",
        TARGET,
        b"",
        u64::try_from(h.clock.now()).unwrap(),
        nonce,
    );
    move || {
        let mut builder = Request::builder().method("GET").uri(TARGET);
        for (name, value) in headers.pairs() {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).unwrap()
    }
}

/// A second vault over the harness's data directory, with its own store
/// (its own SQLite connections, as another process would have).
fn beside(h: &Harness) -> Router {
    let root = RootKey::parse(h.root_hex.as_bytes()).unwrap();
    let vault = kit::open_vault(
        h.dir.path(),
        root,
        h.clock.clone(),
        Config::default(),
        Settings::default(),
    )
    .unwrap();
    signet_vault::http::router(Arc::new(vault))
}

/// Sends `request` through `app`; the status and the error code, if any.
async fn send(app: &Router, mut request: Request<Body>) -> (StatusCode, String) {
    request.extensions_mut().insert(ConnectInfo(SocketAddr::new(
        LOCAL_IP.parse().unwrap(),
        40_000,
    )));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

#[tokio::test]
async fn a_nonce_spent_before_a_restart_stays_spent() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let same = fixed(&h, &machine, &protocol::fresh_nonce());
    assert_eq!(h.raw(same()).await.status, StatusCode::OK);

    let h = h.reopen(Settings::default());
    let r = h.raw(same()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "nonce_replayed")
    );
    assert_eq!(h.denials("nonce_replayed").len(), 1);
}

#[tokio::test]
async fn a_nonce_spent_through_another_connection_is_refused() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    // Both vaults are open before either request: the second one's set
    // was loaded before the nonces were spent, so only catching up with the
    // log can refuse the replays.
    let other = beside(&h);

    let first = fixed(&h, &machine, &protocol::fresh_nonce());
    assert_eq!(h.raw(first()).await.status, StatusCode::OK);
    assert_eq!(
        send(&other, first()).await,
        (StatusCode::UNAUTHORIZED, "nonce_replayed".to_owned())
    );

    let second = fixed(&h, &machine, &protocol::fresh_nonce());
    assert_eq!(send(&other, second()).await.0, StatusCode::OK);
    let r = h.raw(second()).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "nonce_replayed")
    );
}

#[tokio::test]
async fn a_nonce_of_a_transaction_that_did_not_commit_is_not_spent() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let later = kit::START + 60;

    // Rolled back whole: neither the log nor the set keeps it.
    let mut tx = store.begin().unwrap();
    assert!(tx.record_nonce("m_1", "abandoned", later).unwrap());
    drop(tx);

    // Rolled back to its request's savepoint: forgotten too, while a nonce
    // recorded before the savepoint stays.
    let mut tx = store.begin_batch().unwrap();
    assert!(tx.record_nonce("m_1", "kept", later).unwrap());
    tx.savepoint().unwrap();
    assert!(tx.record_nonce("m_1", "undone", later).unwrap());
    assert!(!tx.record_nonce("m_1", "undone", later).unwrap());
    tx.rollback_to_savepoint().unwrap();
    tx.release_savepoint().unwrap();
    assert!(!tx.record_nonce("m_1", "kept", later).unwrap());
    tx.commit().unwrap();

    let mut tx = store.begin().unwrap();
    assert!(tx.record_nonce("m_1", "abandoned", later).unwrap());
    assert!(tx.record_nonce("m_1", "undone", later).unwrap());
    assert!(!tx.record_nonce("m_1", "kept", later).unwrap());
    // The same nonce under another key is another nonce.
    assert!(tx.record_nonce("m_2", "kept", later).unwrap());
    tx.commit().unwrap();

    // And a fresh store over the file sees exactly what committed.
    drop(store);
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut tx = store.begin().unwrap();
    for (key, nonce) in [("m_1", "kept"), ("m_1", "abandoned"), ("m_1", "undone")] {
        assert!(!tx.record_nonce(key, nonce, later).unwrap(), "{nonce}");
    }
    assert!(tx.record_nonce("m_2", "fresh", later).unwrap());
}

#[tokio::test]
async fn spent_nonces_are_forgotten_only_once_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let now = kit::START;
    let mut tx = store.begin().unwrap();
    assert!(tx.record_nonce("m_1", "old", now - 1).unwrap());
    assert!(tx.record_nonce("m_1", "due", now).unwrap());
    assert!(tx.record_nonce("m_1", "young", now + 30).unwrap());
    tx.commit().unwrap();

    let mut tx = store.begin().unwrap();
    assert_eq!(tx.prune_nonces(now).unwrap(), 1);
    tx.commit().unwrap();

    let mut tx = store.begin().unwrap();
    assert!(!tx.record_nonce("m_1", "due", now).unwrap());
    assert!(!tx.record_nonce("m_1", "young", now).unwrap());
    assert!(tx.record_nonce("m_1", "old", now + 30).unwrap());
}

#[tokio::test]
async fn a_nonce_spent_before_the_upgrade_to_the_log_stays_spent() {
    // A data directory as the vault left it before migration 0005: nonces
    // in the keyed table.
    let dir = tempfile::tempdir().unwrap();
    let later = kit::START + 60;
    {
        let conn = rusqlite::Connection::open(dir.path().join("signet.db")).unwrap();
        for sql in [
            include_str!("../migrations/0001_init.sql"),
            include_str!("../migrations/0002_access.sql"),
            include_str!("../migrations/0003_attestation.sql"),
            include_str!("../migrations/0004_keyset_indexes.sql"),
        ] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 4").unwrap();
        conn.execute(
            "INSERT INTO nonces (key_id, nonce, expires_at) VALUES ('m_1', 'before', ?1)",
            [later],
        )
        .unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    let mut tx = store.begin().unwrap();
    assert!(!tx.record_nonce("m_1", "before", later).unwrap());
    assert!(tx.record_nonce("m_1", "after", later).unwrap());
    tx.commit().unwrap();
}
