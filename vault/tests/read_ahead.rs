//! A machine's secret read is decided ahead of the writer, on a snapshot,
//! and its batch only records the nonce and the audit row. These tests put
//! a change between the look-ahead and the commit (the writer is held while
//! the read waits in its queue) and check that the read is decided on the
//! state it commits with, not on the one it looked up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::{Harness, Reply, Signer};
use serde_json::json;
use signet_vault::clock::Clock as _;

/// Sends one read, and runs `meanwhile` once it waits in the writer's queue
/// (looked up ahead, not yet committed).
async fn read_around(
    h: &Harness,
    machine: &Signer,
    target: &str,
    meanwhile: impl FnOnce(),
) -> Reply {
    let stats = h.vault.writer_stats();
    let hold = h.vault.hold_writer();
    let reply = h.raw(read(h, machine, target));
    let act = async {
        while stats.queued.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        meanwhile();
        drop(hold);
    };
    let (reply, ()) = tokio::join!(reply, act);
    reply
}

fn read(h: &Harness, machine: &Signer, target: &str) -> Request<Body> {
    h.signed(&machine.key, &machine.id, "GET", target, b"")
}

fn as_admin(h: &Harness, method: &str, target: &str, body: &[u8]) -> Request<Body> {
    h.signed(&h.admin.key, &h.admin.id, method, target, body)
}

/// (reads committed as looked up ahead, reads decided again in the batch)
fn counts(h: &Harness) -> (u64, u64) {
    let stats = h.vault.writer_stats();
    (
        stats.reads_ahead.load(Ordering::SeqCst),
        stats.reads_rechecked.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn an_ordinary_read_commits_only_its_nonce_and_audit_row_in_the_batch() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.seeded_machine("shop").await;
    let before = counts(&h);
    let plain = h.read(&machine, "shop", "api-key").await;
    assert_eq!(plain.status, StatusCode::OK, "{:?}", plain.body);
    assert_eq!(plain.body["value"], "sk_live_plain_value");
    let fields = h.read(&machine, "shop", "db").await;
    assert_eq!(fields.status, StatusCode::OK, "{:?}", fields.body);
    assert_eq!(fields.body["fields"], json!({"user": "app_user"}));
    assert_eq!(counts(&h), (before.0 + 2, before.1));
    let last = h.last_audit();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.target.as_str(),
            last.outcome.as_str()
        ),
        (
            machine.id.as_str(),
            "secret.read",
            "secret:shop/db@1",
            "allow"
        )
    );
    let verified = h.verify_audit();
    assert!(verified.broken.is_none(), "{verified:?}");
}

#[tokio::test]
async fn a_machine_disabled_while_its_read_waits_is_refused() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    let disable = format!("/v1/machines/{}/disable", machine.id);
    let replies = h
        .in_one_batch(vec![
            as_admin(&h, "POST", &disable, b""),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    assert_eq!(replies[0].status, StatusCode::OK, "{:?}", replies[0].body);
    assert_eq!(
        replies[1].code(),
        "identity_disabled",
        "{:?}",
        replies[1].body
    );
    assert!(replies[1].body.get("value").is_none());
    assert_eq!(
        counts(&h),
        (before.0, before.1 + 1),
        "the read was not looked up ahead"
    );
}

#[tokio::test]
async fn a_grant_deleted_while_the_read_waits_is_refused() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let grants = h
        .admin(
            "GET",
            &format!("/v1/grants?machine_id={}", machine.id),
            None,
        )
        .await;
    let grant = grants.body["grants"][0]["id"].as_str().unwrap().to_owned();
    let before = counts(&h);
    let replies = h
        .in_one_batch(vec![
            as_admin(&h, "DELETE", &format!("/v1/grants/{grant}"), b""),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    assert_eq!(
        replies[0].status,
        StatusCode::NO_CONTENT,
        "{:?}",
        replies[0].body
    );
    assert_eq!(replies[1].code(), "not_granted", "{:?}", replies[1].body);
    assert_eq!(
        counts(&h),
        (before.0, before.1 + 1),
        "the read was not looked up ahead"
    );
}

#[tokio::test]
async fn a_version_written_while_the_read_waits_is_the_one_served() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let replies = h
        .in_one_batch(vec![
            as_admin(
                &h,
                "PUT",
                "/v1/projects/shop/secrets/api-key",
                br#"{"value":"rotated"}"#,
            ),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    assert_eq!(replies[0].status, StatusCode::OK, "{:?}", replies[0].body);
    assert_eq!(replies[1].status, StatusCode::OK, "{:?}", replies[1].body);
    assert_eq!(
        (
            replies[1].body["value"].as_str(),
            replies[1].body["version"].as_u64()
        ),
        (Some("rotated"), Some(2))
    );
}

#[tokio::test]
async fn a_read_before_a_change_in_the_same_batch_is_served() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    let disable = format!("/v1/machines/{}/disable", machine.id);
    let replies = h
        .in_one_batch(vec![
            read(&h, &machine, "/v1/secrets/shop/api-key"),
            as_admin(&h, "POST", &disable, b""),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    assert_eq!(replies[0].status, StatusCode::OK, "{:?}", replies[0].body);
    assert_eq!(replies[1].status, StatusCode::OK, "{:?}", replies[1].body);
    assert_eq!(
        replies[2].code(),
        "identity_disabled",
        "{:?}",
        replies[2].body
    );
    assert_eq!(counts(&h), (before.0 + 1, before.1 + 1));
}

#[tokio::test]
async fn a_machine_expiring_while_its_read_waits_is_refused() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    h.db()
        .execute(
            "UPDATE machines SET expires_at = ?2 WHERE id = ?1",
            rusqlite::params![machine.id, h.clock.now() + 1],
        )
        .unwrap();
    // The next batch sees that change from another connection.
    let warm = h.read(&machine, "shop", "api-key").await;
    assert_eq!(warm.status, StatusCode::OK, "{:?}", warm.body);
    let before = counts(&h);
    let reply = read_around(&h, &machine, "/v1/secrets/shop/api-key", || {
        h.clock.advance(2);
    })
    .await;
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
    assert_eq!(
        counts(&h),
        (before.0, before.1 + 1),
        "the read was not looked up ahead"
    );
}

#[tokio::test]
async fn a_change_committed_by_another_connection_while_the_read_waits_is_seen() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    let reply = read_around(&h, &machine, "/v1/secrets/shop/api-key", || {
        h.db()
            .execute(
                "UPDATE machines SET disabled_at = ?2 WHERE id = ?1",
                rusqlite::params![machine.id, h.clock.now()],
            )
            .unwrap();
    })
    .await;
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
    assert_eq!(
        counts(&h),
        (before.0, before.1 + 1),
        "the read was not looked up ahead"
    );
}

#[tokio::test]
async fn a_change_outside_the_writer_while_the_read_waits_is_seen() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    // What a background sweep or server-side tooling does: its own
    // transaction on the store, not a request in the writer.
    let reply = read_around(&h, &machine, "/v1/secrets/shop/api-key", || {
        h.vault
            .with_tx(|tx, now| Ok(tx.set_machine_disabled(&machine.id, Some(now))?))
            .unwrap();
    })
    .await;
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
    assert_eq!(
        counts(&h),
        (before.0, before.1 + 1),
        "the read was not looked up ahead"
    );
}

#[tokio::test]
async fn a_policy_set_while_the_read_waits_is_enforced() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let replies = h
        .in_one_batch(vec![
            as_admin(
                &h,
                "PUT",
                "/v1/projects/shop/secrets/api-key/policy",
                br#"{"ip_allowlist":["192.0.2.0/24"]}"#,
            ),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    assert_eq!(replies[0].status, StatusCode::OK, "{:?}", replies[0].body);
    assert_eq!(replies[1].code(), "policy_ip", "{:?}", replies[1].body);
}

#[tokio::test]
async fn a_read_looked_up_while_a_change_is_uncommitted_is_decided_after_it() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    let stats = h.vault.writer_stats();
    let taken = stats.requests.load(Ordering::SeqCst);
    // A change holds the store's write transaction, not committed yet,
    // while the read looks up and queues.
    let (vault, id) = (std::sync::Arc::clone(&h.vault), machine.id.clone());
    let (began, has_begun) = std::sync::mpsc::channel();
    let (commit, may_commit) = std::sync::mpsc::channel::<()>();
    let change = std::thread::spawn(move || {
        vault.with_tx(|tx, now| {
            tx.set_machine_disabled(&id, Some(now))?;
            began.send(()).unwrap();
            may_commit.recv().unwrap();
            Ok(())
        })
    });
    has_begun.recv().unwrap();
    let reply = h.raw(read(&h, &machine, "/v1/secrets/shop/api-key"));
    let act = async {
        while stats.requests.load(Ordering::SeqCst) == taken {
            tokio::task::yield_now().await;
        }
        commit.send(()).unwrap();
    };
    let (reply, ()) = tokio::join!(reply, act);
    change.join().unwrap().unwrap();
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
    assert_eq!(
        counts(&h),
        before,
        "a snapshot missing a change in flight was trusted"
    );
}

#[tokio::test]
async fn what_a_read_looked_up_is_not_reused_after_a_change() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    for _ in 0..2 {
        let reply = h.read(&machine, "shop", "api-key").await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    let disable = format!("/v1/machines/{}/disable", machine.id);
    let disabled = h.admin("POST", &disable, None).await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    let reply = h.read(&machine, "shop", "api-key").await;
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
    let enable = format!("/v1/machines/{}/enable", machine.id);
    let enabled = h.admin("POST", &enable, None).await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    // Changed behind the vault's back, after the last look-ahead.
    let reply = h.read(&machine, "shop", "api-key").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    h.db()
        .execute(
            "UPDATE machines SET disabled_at = ?2 WHERE id = ?1",
            rusqlite::params![machine.id, h.clock.now()],
        )
        .unwrap();
    let reply = h.read(&machine, "shop", "api-key").await;
    assert_eq!(reply.code(), "identity_disabled", "{:?}", reply.body);
}

#[tokio::test]
async fn a_request_that_only_reads_does_not_send_the_reads_beside_it_back() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let before = counts(&h);
    // signet-init's grant list and an admin's list, each just before a read
    // in the same batch: neither changes what the reads looked up.
    let replies = h
        .in_one_batch(vec![
            read(&h, &machine, "/v1/machine/grants"),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
            as_admin(&h, "GET", "/v1/projects", b""),
            read(&h, &machine, "/v1/secrets/shop/api-key"),
        ])
        .await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }
    assert_eq!(replies[1].body["value"], "sk_live_plain_value");
    assert_eq!(
        counts(&h),
        (before.0 + 2, before.1),
        "a read was decided again after a request that only reads"
    );
}

#[tokio::test]
async fn the_writer_counters_are_served_as_metrics() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    assert_eq!(
        h.read(&machine, "shop", "api-key").await.status,
        StatusCode::OK
    );
    let (ahead, rechecked) = counts(&h);
    let stats = h.vault.writer_stats();
    let (status, text) = h.text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for (name, value) in [
        ("signet_writer_reads_ahead_total", ahead),
        ("signet_writer_reads_rechecked_total", rechecked),
        (
            "signet_writer_batches_total",
            stats.batches.load(Ordering::SeqCst),
        ),
        (
            "signet_writer_requests_total",
            stats.requests.load(Ordering::SeqCst),
        ),
    ] {
        assert!(
            text.lines().any(|line| line == format!("{name} {value}")),
            "{name} {value} not in:\n{text}"
        );
    }
    assert!(ahead >= 1);
    let counter = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    let (busy, commit) = (
        counter("signet_writer_busy_nanoseconds_total"),
        counter("signet_writer_commit_nanoseconds_total"),
    );
    assert!(commit > 0 && commit <= busy, "busy {busy}, commit {commit}");
    // Every answered read waited for a sync of its batch.
    let (syncs, synced) = (
        counter("signet_writer_syncs_total"),
        counter("signet_writer_sync_nanoseconds_total"),
    );
    assert!(syncs >= 1 && synced > 0, "syncs {syncs}, {synced} ns");
}
