//! `GET /v1/machine/changes`: a machine waits for a change of what it may
//! read. The wake-up is real time (a notification after a commit); the
//! tests wait on the responses themselves and on the vault's count of
//! waiting requests, never on a sleep, and bound every wait generously.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use kit::{Harness, Reply, Signer};
use serde_json::json;
use signet_vault::settings::Limits;
use signet_vault::vault::Settings;

/// Longest any test waits for an answer it expects, so a bug fails the
/// test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn changes(h: &Harness, machine: &Signer, query: &str) -> Reply {
    let target = format!("/v1/machine/changes{query}");
    tokio::time::timeout(PATIENCE, h.call(machine, "GET", &target, None))
        .await
        .expect("the change route answers within its wait")
}

/// The token of the machine's list now (asked without `since`: at once).
async fn token(h: &Harness, machine: &Signer) -> String {
    let reply = changes(h, machine, "?wait=0").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["token"].as_str().unwrap().to_owned()
}

/// Resolves once `n` requests are waiting in the vault.
async fn until_waiting(h: &Harness, n: usize) {
    let deadline = Instant::now() + PATIENCE;
    while h.vault.changes().waiting() < n {
        assert!(Instant::now() < deadline, "never {n} requests waiting");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version_of(reply: &Reply, secret: &str) -> u64 {
    reply.body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["secret"] == secret)
        .and_then(|g| g["version"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_machine_hears_a_new_version_within_a_second() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let since = token(&h, &machine).await;

    let query = format!("?since={since}&wait=60");
    let (reply, written_at) = tokio::join!(changes(&h, &machine, &query), async {
        until_waiting(&h, 1).await;
        h.write("shop", "api-key", "sk_live_second_value").await;
        Instant::now()
    });
    let heard = written_at.elapsed();
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(
        heard < Duration::from_secs(1),
        "answered {heard:?} after the write"
    );
    assert_ne!(reply.body["token"], since.as_str());
    assert_eq!(version_of(&reply, "api-key"), 2);
    // Names, fields and versions only.
    let text = reply.body.to_string();
    assert!(!text.contains("sk_live"), "{text}");
    assert_eq!(h.vault.changes().waiting(), 0);

    // One audit row per request, written before the wait.
    let rows = h
        .audit()
        .into_iter()
        .filter(|e| e.action == "machine.changes")
        .count();
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_and_a_new_grant_wake_it_too() {
    let h = Harness::new();
    h.seed("shop").await;
    h.write("shop", "api-key", "sk_live_second_value").await;
    let machine = h.machine("shop", &["api-key"]).await;

    let since = token(&h, &machine).await;
    let query = format!("?since={since}&wait=60");
    let (reply, ()) = tokio::join!(changes(&h, &machine, &query), async {
        until_waiting(&h, 1).await;
        let rolled = h
            .admin(
                "POST",
                "/v1/projects/shop/secrets/api-key/rollback",
                Some(json!({"version": 1})),
            )
            .await;
        assert_eq!(rolled.status, StatusCode::OK, "{:?}", rolled.body);
    });
    assert_eq!(version_of(&reply, "api-key"), 1);

    let since = reply.body["token"].as_str().unwrap().to_owned();
    let query = format!("?since={since}&wait=60");
    let (reply, ()) = tokio::join!(changes(&h, &machine, &query), async {
        until_waiting(&h, 1).await;
        let granted = h
            .admin(
                "POST",
                "/v1/grants",
                Some(json!({"machine_id": machine.id, "project": "shop", "secret": "db"})),
            )
            .await;
        assert_eq!(granted.status, StatusCode::CREATED, "{:?}", granted.body);
    });
    assert_eq!(reply.body["grants"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_secret_it_is_not_granted_does_not_answer_it() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let since = token(&h, &machine).await;

    let asked = Instant::now();
    let query = format!("?since={since}&wait=2");
    let (reply, written_at) = tokio::join!(changes(&h, &machine, &query), async {
        until_waiting(&h, 1).await;
        h.write_fields("shop", "db", json!({"user": "u2", "password": "p2"}))
            .await;
        Instant::now()
    });
    // Answered when the wait ran out, not at the write, with the same list.
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(
        asked.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        asked.elapsed()
    );
    assert!(written_at.elapsed() > Duration::from_millis(0));
    assert_eq!(reply.body["token"], since.as_str());
    assert_eq!(version_of(&reply, "api-key"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_or_absent_since_is_answered_at_once() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let since = token(&h, &machine).await;
    h.write("shop", "api-key", "sk_live_second_value").await;

    for query in [format!("?since={since}&wait=60"), "?wait=60".to_owned()] {
        let asked = Instant::now();
        let reply = changes(&h, &machine, &query).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert!(asked.elapsed() < Duration::from_secs(5), "{query}");
        assert_eq!(version_of(&reply, "api-key"), 2, "{query}");
        assert_ne!(reply.body["token"], since.as_str());
    }
    // No place among the waiting was taken.
    assert_eq!(h.vault.changes().waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_are_bounded_per_machine() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let since = token(&h, &machine).await;
    let query = format!("?since={since}&wait=60");

    let (first, second, ()) = tokio::join!(
        changes(&h, &machine, &query),
        changes(&h, &machine, &query),
        async {
            until_waiting(&h, 2).await;
            let third = changes(&h, &machine, &query).await;
            assert_eq!(
                third.status,
                StatusCode::TOO_MANY_REQUESTS,
                "{:?}",
                third.body
            );
            assert_eq!(third.code(), "too_many_waiting");
            // The two waiting are answered by the next change.
            h.write("shop", "api-key", "sk_live_second_value").await;
        }
    );
    for reply in [first, second] {
        assert_eq!(version_of(&reply, "api-key"), 2);
    }
    assert_eq!(h.vault.changes().waiting(), 0);
    // The refusal is audited like any refusal after the signature.
    assert_eq!(h.denials("too_many_waiting").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_are_bounded_in_total() {
    let h = Harness::with_settings(Settings {
        limits: Limits {
            waiting_max: 1,
            ..Limits::default()
        },
        ..Settings::default()
    });
    h.seed("shop").await;
    let (one, two) = (
        h.machine("shop", &["api-key"]).await,
        h.machine("shop", &["api-key"]).await,
    );
    let (since_one, since_two) = (token(&h, &one).await, token(&h, &two).await);

    let query_one = format!("?since={since_one}&wait=60");
    let (first, ()) = tokio::join!(changes(&h, &one, &query_one), async {
        until_waiting(&h, 1).await;
        let other = changes(&h, &two, &format!("?since={since_two}&wait=60")).await;
        assert_eq!(
            other.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            other.body
        );
        // Without a wait it is still answered.
        let now = changes(&h, &two, &format!("?since={since_two}&wait=0")).await;
        assert_eq!(now.status, StatusCode::OK, "{:?}", now.body);
        h.write("shop", "api-key", "sk_live_second_value").await;
    });
    assert_eq!(version_of(&first, "api-key"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_machines_may_wait_and_the_query_is_checked() {
    let h = Harness::new();
    h.seed("shop").await;
    let admin = changes(&h, &h.admin, "?wait=1").await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN, "{:?}", admin.body);
    assert_eq!(admin.code(), "not_a_machine");
    let agent = h.agent(&["metadata"]).await;
    let agent = changes(&h, &agent, "?wait=1").await;
    assert_eq!(agent.code(), "not_a_machine");

    let machine = h.machine("shop", &["api-key"]).await;
    for query in ["?wait=61", "?wait=soon", "?since=x&other=1"] {
        let reply = changes(&h, &machine, query).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
        assert_eq!(reply.code(), "invalid_request", "{query}");
    }
    assert_eq!(h.vault.changes().waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutting_down_vault_answers_the_waiting_at_once() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let since = token(&h, &machine).await;
    let query = format!("?since={since}&wait=60");
    let asked = Instant::now();
    let (reply, ()) = tokio::join!(changes(&h, &machine, &query), async {
        until_waiting(&h, 1).await;
        h.vault.changes().close();
    });
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["token"], since.as_str());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(h.vault.changes().waiting(), 0);
}
