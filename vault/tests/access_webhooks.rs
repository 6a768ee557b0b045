//! Outgoing webhooks: signed deliveries received by a real HTTP server on
//! loopback (allowlisted for the test), retries with backoff on the manual
//! clock, and refusal of loopback, private and metadata destinations at
//! creation and at delivery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac as _};
use kit::{Harness, LOCAL_IP};
use serde_json::{Value, json};
use sha2::Sha256;
use signet_vault::vault::Settings;

const SECRET: &str = "a-shared-webhook-secret";

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<Mutex<u32>>,
}

/// Starts the receiver on 127.0.0.1; returns its URL.
async fn start_receiver(receiver: Receiver) -> String {
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Receiver>,
                 headers: HeaderMap,
                 body: String| async move {
                    r.seen.lock().unwrap().push(Received { headers, body });
                    let mut fail = r.fail_first.lock().unwrap();
                    if *fail > 0 {
                        *fail -= 1;
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn loopback_allowed() -> Settings {
    Settings {
        webhook_allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Settings::default()
    }
}

/// Recomputes the signature the way a receiver would, independently of the vault.
fn verify(received: &Received, secret: &str) -> Value {
    let timestamp = received.headers["signet-webhook-timestamp"]
        .to_str()
        .unwrap();
    let signature = received.headers["signet-webhook-signature"]
        .to_str()
        .unwrap();
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", received.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "HMAC does not verify");
    serde_json::from_str(&received.body).unwrap()
}

async fn create_hook(h: &Harness, url: &str, events: &[&str]) -> kit::Reply {
    h.admin(
        "POST",
        "/v1/webhooks",
        Some(json!({"url": url, "events": events, "secret": SECRET})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_and_retried_with_backoff() {
    let receiver = Receiver::default();
    *receiver.fail_first.lock().unwrap() = 1;
    let url = start_receiver(receiver.clone()).await;
    let h = Harness::with_settings(loopback_allowed());
    let hook = create_hook(
        &h,
        &url,
        &["machine.enrolled", "canary.tripped", "policy.denied"],
    )
    .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{:?}", hook.body);

    h.project("app").await;
    h.write("app", "bait", "x").await;
    h.policy("app", "bait", json!({"canary": true})).await;
    let machine = h.machine("app", &["bait"]).await;

    // First attempt: the receiver answers 500, so the event is retried later.
    let report = h.vault.deliver_webhooks().await.unwrap();
    assert_eq!((report.delivered, report.retrying), (0, 1));
    let report = h.vault.deliver_webhooks().await.unwrap();
    assert_eq!(
        report,
        Default::default(),
        "nothing is due before the backoff passes"
    );
    h.clock.advance(30);
    let report = h.vault.deliver_webhooks().await.unwrap();
    assert_eq!(report.delivered, 1);
    {
        let seen = receiver.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body, seen[1].body, "a retry sends the same event");
        let event = verify(&seen[1], SECRET);
        assert_eq!(event["event"], "machine.enrolled");
        assert_eq!(event["data"]["machine_id"], machine.id.as_str());
        assert_eq!(seen[1].headers["signet-webhook-event"], "machine.enrolled");
        // A wrong key does not verify.
        let mut mac = <Hmac<Sha256>>::new_from_slice(b"another-secret-entirely").unwrap();
        mac.update(seen[1].body.as_bytes());
        assert_ne!(
            seen[1].headers["signet-webhook-signature"]
                .to_str()
                .unwrap(),
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        );
    }

    // A canary read queues canary.tripped in the read's own transaction.
    assert_eq!(
        h.read(&machine, "app", "bait").await.status,
        StatusCode::LOCKED
    );
    assert_eq!(h.vault.deliver_webhooks().await.unwrap().delivered, 1);
    let event = verify(receiver.seen.lock().unwrap().last().unwrap(), SECRET);
    assert_eq!(event["event"], "canary.tripped");
    assert_eq!(event["data"]["project"], "app");
    assert_eq!(event["data"]["secret"], "bait");

    // A policy denial queues policy.denied with its code.
    h.admin("POST", "/v1/projects/app/unlock", None).await;
    h.write("app", "db", "v").await;
    let other = h.machine("app", &["db"]).await;
    h.policy("app", "db", json!({"ip_allowlist": ["192.0.2.0/24"]}))
        .await;
    assert_eq!(h.read(&other, "app", "db").await.code(), "policy_ip");
    h.vault.deliver_webhooks().await.unwrap();
    let events: Vec<Value> = receiver
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| verify(r, SECRET))
        .collect();
    let denied = events
        .iter()
        .find(|e| e["event"] == "policy.denied")
        .expect("policy.denied delivered");
    assert_eq!(denied["data"]["code"], "policy_ip");
    assert_eq!(denied["data"]["source_ip"], LOCAL_IP);

    let list = h.admin("GET", "/v1/webhooks", None).await;
    assert_eq!(list.body["webhooks"][0]["pending"], 0);
    assert_eq!(list.body["webhooks"][0]["failed"], 0);
}

#[tokio::test]
async fn internal_destinations_are_refused_at_creation() {
    let h = Harness::new();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:9/hook",
    ] {
        let reply = create_hook(&h, url, &["canary.tripped"]).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "destination_not_allowed"),
            "{url}: {:?}",
            reply.body
        );
    }
    assert_eq!(h.denials("destination_not_allowed").len(), 6);
    let list = h.admin("GET", "/v1/webhooks", None).await;
    assert!(list.body["webhooks"].as_array().unwrap().is_empty());
    // Shape errors.
    assert_eq!(
        create_hook(&h, "ftp://example.com/", &["rotation"])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create_hook(&h, "https://example.com/", &["nope"])
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_at_delivery() {
    let receiver = Receiver::default();
    let url = start_receiver(receiver.clone()).await;
    // Registered while loopback was allowlisted...
    let allowed = Harness::with_settings(loopback_allowed());
    assert_eq!(
        create_hook(&allowed, &url, &["machine.enrolled"])
            .await
            .status,
        StatusCode::CREATED
    );
    // ...then the vault restarts without the allowlist: the event is queued
    // but never sent.
    let h = allowed.reopen(Settings::default());
    h.project("app").await;
    h.machine("app", &[]).await;
    let report = h.vault.deliver_webhooks().await.unwrap();
    assert_eq!((report.delivered, report.failed), (0, 1));
    assert!(
        receiver.seen.lock().unwrap().is_empty(),
        "nothing reached the loopback receiver"
    );
    let list = h.admin("GET", "/v1/webhooks", None).await;
    assert_eq!(list.body["webhooks"][0]["failed"], 1);
}
