//! The hot path: one signed secret read through the whole router —
//! header parsing, Ed25519 strict verification, one SQLite transaction
//! (identity, nonce, grant, version, audit row), two unwraps and a decrypt.
//! Figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::SystemClock;
use signet_vault::crypto::RootKey;
use signet_vault::service::enroll::create_bootstrap_token;
use signet_vault::store::{SqliteStore, Store};
use signet_vault::{Config, Vault};
use tower::ServiceExt as _;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(key: &IdentityKey, id: &str, method: &str, target: &str, body: &[u8]) -> Request<Body> {
    let headers = protocol::sign(
        key,
        id,
        method,
        target,
        body,
        now(),
        &protocol::fresh_nonce(),
    );
    let mut builder = Request::builder().method(method).uri(target);
    for (name, value) in headers.pairs() {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

async fn json_of(app: &axum::Router, request: Request<Body>) -> serde_json::Value {
    use http_body_util::BodyExt as _;
    let response = app.clone().oneshot(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let vault = Arc::new(
        Vault::open(
            store,
            RootKey::generate(),
            Arc::new(SystemClock),
            Config::default(),
        )
        .unwrap(),
    );
    let app = signet_vault::http::router(vault.clone());

    let (machine_key, machine_id) = runtime.block_on(async {
        let token = vault.with_tx(|tx, now| create_bootstrap_token(tx, now)).unwrap();
        let admin_key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({"token": token.as_str(), "public_key": admin_key.public_key()})).unwrap();
        let admin = json_of(&app, signed(&admin_key, "enroll", "POST", "/v1/admin/enroll", &body)).await;
        let admin_id = admin["admin_id"].as_str().unwrap().to_owned();
        let call = |method: &str, target: &str, body: serde_json::Value| {
            signed(&admin_key, &admin_id, method, target, &serde_json::to_vec(&body).unwrap())
        };
        json_of(&app, call("POST", "/v1/projects", json!({"name": "bench"}))).await;
        json_of(&app, call("PUT", "/v1/projects/bench/secrets/db", json!({"value": "x".repeat(64)}))).await;
        let token = json_of(
            &app,
            call(
                "POST",
                "/v1/enrollment-tokens",
                json!({"project": "bench", "ttl_seconds": 3600, "machine_lifetime_seconds": 3600, "grants": [{"secret": "db"}]}),
            ),
        )
        .await;
        let machine_key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({"token": token["token"], "public_key": machine_key.public_key()})).unwrap();
        let enrolled = json_of(&app, signed(&machine_key, "enroll", "POST", "/v1/enroll", &body)).await;
        (machine_key, enrolled["machine_id"].as_str().unwrap().to_owned())
    });

    c.bench_function("signed secret read (router, SQLite, audit)", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = signed(
                &machine_key,
                &machine_id,
                "GET",
                "/v1/secrets/bench/db",
                b"",
            );
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        });
    });

    let key = IdentityKey::generate();
    let public = protocol::PublicKey::parse(&key.public_key()).unwrap();
    let headers = protocol::sign(
        &key,
        "m_x",
        "GET",
        "/v1/secrets/a/b",
        b"",
        1_800_000_000,
        &protocol::fresh_nonce(),
    );
    let parsed = protocol::ParsedHeaders::parse(
        Some(&headers.key_id),
        Some(&headers.timestamp),
        Some(&headers.nonce),
        Some(&headers.signature),
    )
    .unwrap();
    c.bench_function("signature verify (strict)", |b| {
        b.iter(|| {
            parsed
                .verify(&public, "GET", "/v1/secrets/a/b", b"")
                .unwrap()
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
