//! Group commit keeps every rule exact at the batch boundary: requests that
//! land in one batch (one transaction, one fsync) see each other exactly as
//! if each had its own transaction. Each test holds the writer, queues its
//! requests, and checks they committed as one batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::{Harness, Reply, Signer};
use serde_json::json;
use signet_client::audit::ChainVerifier;
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::Clock as _;

fn read(h: &Harness, machine: &Signer, target: &str) -> Request<Body> {
    h.signed(&machine.key, &machine.id, "GET", target, b"")
}

#[tokio::test]
async fn a_replay_inside_one_batch_is_refused() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let nonce = protocol::fresh_nonce();
    let now = u64::try_from(h.clock.now()).unwrap();
    let same = || {
        let headers = protocol::sign(
            &machine.key,
            &machine.id,
            "GET",
            "/v1/secrets/shop/api-key",
            b"",
            now,
            &nonce,
        );
        let mut builder = Request::builder()
            .method("GET")
            .uri("/v1/secrets/shop/api-key");
        for (name, value) in headers.pairs() {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).unwrap()
    };
    let replies = h.in_one_batch(vec![same(), same()]).await;
    assert_eq!(replies[0].status, StatusCode::OK);
    assert_eq!(
        (replies[1].status, replies[1].code()),
        (StatusCode::UNAUTHORIZED, "nonce_replayed")
    );
    assert_eq!(h.denials("nonce_replayed").len(), 1);
}

#[tokio::test]
async fn a_canary_read_locks_its_project_for_the_rest_of_the_batch() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "real").await;
    h.write("app", "bait", "fake").await;
    h.policy("app", "bait", json!({"canary": true})).await;
    let thief = h.machine("app", &["db", "bait"]).await;
    let honest = h.machine("app", &["db"]).await;
    let replies = h
        .in_one_batch(vec![
            read(&h, &honest, "/v1/secrets/app/db"),
            read(&h, &thief, "/v1/secrets/app/bait"),
            read(&h, &honest, "/v1/secrets/app/db"),
            read(&h, &thief, "/v1/secrets/app/db"),
        ])
        .await;
    let outcome: Vec<(StatusCode, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(
        outcome,
        [
            (StatusCode::OK, ""),
            (StatusCode::LOCKED, "project_locked"),
            (StatusCode::LOCKED, "project_locked"),
            (StatusCode::LOCKED, "project_locked"),
        ]
    );
    assert!(replies[1].body.get("value").is_none());
    // The lock survived the denials that followed it in the batch.
    let r = h.admin("GET", "/v1/projects", None).await;
    assert!(r.body["projects"][0]["locked"].is_string(), "{:?}", r.body);
}

#[tokio::test]
async fn a_daily_cap_reached_mid_batch_is_exact() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    h.policy("app", "db", json!({"daily_read_cap": 3})).await;
    let machine = h.machine("app", &["db"]).await;
    let requests = (0..6)
        .map(|_| read(&h, &machine, "/v1/secrets/app/db"))
        .collect();
    let replies = h.in_one_batch(requests).await;
    let codes: Vec<&str> = replies.iter().map(Reply::code).collect();
    assert_eq!(
        codes,
        [
            "",
            "",
            "",
            "policy_daily_cap",
            "policy_daily_cap",
            "policy_daily_cap"
        ]
    );
}

#[tokio::test]
async fn the_last_use_of_a_token_is_claimed_once_in_a_batch() {
    let h = Harness::new();
    h.seed("shop").await;
    let token = h
        .token(json!({"project": "shop", "max_uses": 1, "ttl_seconds": 60,
                      "machine_lifetime_seconds": 60}))
        .await;
    let enroll = || {
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&json!({
            "token": token, "public_key": key.public_key(), "hostname": "h",
        }))
        .unwrap();
        h.signed(&key, protocol::ENROLL_KEY_ID, "POST", "/v1/enroll", &body)
    };
    let replies = h.in_one_batch(vec![enroll(), enroll(), enroll()]).await;
    let statuses: Vec<StatusCode> = replies.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN
        ]
    );
    assert_eq!(replies[1].code(), "token_exhausted");
    let machines = h.admin("GET", "/v1/machines", None).await;
    assert_eq!(machines.body["machines"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_audit_chain_follows_the_commit_order_of_a_batch() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = h.audit().len();
    let requests = vec![
        read(&h, &machine, "/v1/secrets/shop/api-key"),
        read(&h, &machine, "/v1/secrets/shop/db"),
        read(&h, &machine, "/v1/secrets/shop/api-key?version=1"),
        read(&h, &machine, "/v1/secrets/shop/nope"),
    ];
    let replies = h.in_one_batch(requests).await;
    assert_eq!(replies[0].status, StatusCode::OK);
    assert_eq!(replies[1].code(), "not_granted");
    let audit = h.audit();
    let batch: Vec<(&str, &str)> = audit[before..]
        .iter()
        .map(|e| (e.outcome.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        batch,
        [
            ("allow", "secret:shop/api-key@1"),
            ("deny", "secret:shop/db"),
            ("allow", "secret:shop/api-key@1"),
            ("deny", "secret:shop/nope"),
        ]
    );
    let mut verifier = ChainVerifier::new(None);
    verifier.feed(&audit).expect("one unbroken chain");
    assert_eq!(verifier.count(), audit.len() as u64);
}
