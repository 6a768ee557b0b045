//! The keyed audit chain and its signed checkpoints, on a real SQLite file
//! edited behind the vault's back: the vault's own check
//! (`POST /v1/audit/verify`) finds an edited entry and a chain recomputed
//! without its key; a checkpoint signed before finds a truncated tail; a
//! log of plain-hash entries is bridged to the keyed chain once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::sync::Arc;

use axum::http::StatusCode;
use kit::{Harness, START, open_vault};
use serde_json::json;
use signet_client::api::{
    AuditBreakKind, AuditCheckpoint, AuditEntry, AuditPage, AuditVerification,
};
use signet_client::audit::{
    CheckpointCheck, Finding, GENESIS, chain_message, plain_hash, verify_checkpoint, verify_links,
};
use signet_client::protocol::PublicKey;
use signet_vault::clock::ManualClock;
use signet_vault::crypto::RootKey;
use signet_vault::service::audit::Trigger;
use signet_vault::store::{SqliteStore, Store as _};
use signet_vault::vault::{Config, Settings};

/// A vault with some history: a project, two secret writes, a token.
async fn busy() -> Harness {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "one").await;
    h.write("app", "db", "two").await;
    h.token(json!({"project": "app", "max_uses": 1, "ttl_seconds": 600,
                   "machine_lifetime_seconds": 600, "grants": [{"secret": "db"}]}))
        .await;
    h
}

/// `POST /v1/audit/verify` as the first admin.
async fn vault_check(h: &Harness) -> AuditVerification {
    let reply = h.admin("POST", "/v1/audit/verify", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    serde_json::from_value(reply.body).unwrap()
}

/// `GET /v1/audit/checkpoint` as the first admin.
async fn checkpoint(h: &Harness) -> AuditCheckpoint {
    let reply = h.admin("GET", "/v1/audit/checkpoint", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    serde_json::from_value(reply.body).unwrap()
}

/// The pinned key, as `GET /v1/audit/checkpoint-key` gives it.
async fn pinned_key(h: &Harness) -> PublicKey {
    let reply = h.admin("GET", "/v1/audit/checkpoint-key", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    PublicKey::parse(reply.body["key"].as_str().unwrap()).unwrap()
}

/// Rewrites entries `from..` with plain SHA-256 hashes, each linked to the
/// one before, as someone holding only the database would after an edit.
fn recompute_from(h: &Harness, from: u64) {
    let db = h.db();
    let mut prev = h
        .audit()
        .into_iter()
        .find(|e| e.seq == from - 1)
        .map_or(GENESIS.to_owned(), |e| e.hash);
    for mut entry in h.audit().into_iter().filter(|e| e.seq >= from) {
        entry.prev_hash = prev;
        entry.hash = plain_hash(&entry);
        db.execute(
            "UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
            rusqlite::params![entry.seq, entry.prev_hash, entry.hash],
        )
        .unwrap();
        prev = entry.hash;
    }
}

#[tokio::test]
async fn an_untouched_log_verifies() {
    let h = busy().await;
    let entries = h.audit();
    let report = vault_check(&h).await;
    assert_eq!(report.broken, None);
    assert_eq!(report.keyed_from, 1, "a new log is keyed from its start");
    // Everything written before the check, and the check's own entry.
    assert_eq!(report.entries, entries.len() as u64 + 1);
    assert_eq!(report.head.seq, entries.len() as u64 + 1);
    // The hashes are MACs: no plain SHA-256 anyone could recompute.
    assert!(entries.iter().all(|e| plain_hash(e) != e.hash));
    assert_eq!(h.last_audit().action, "audit.verify");
}

#[tokio::test]
async fn an_edited_entry_is_found_by_the_vault() {
    let h = busy().await;
    // Someone with the database turns a write into a denial.
    let changed = h
        .db()
        .execute("UPDATE audit SET outcome = 'deny' WHERE seq = 3", [])
        .unwrap();
    assert_eq!(changed, 1);
    let broken = vault_check(&h).await.broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (3, AuditBreakKind::HashMismatch));
    // The links still hold: only the vault, with the key, can tell.
    let page: AuditPage =
        serde_json::from_value(h.admin("GET", "/v1/audit", None).await.body).unwrap();
    verify_links(&page.entries, Some(GENESIS)).unwrap();
}

#[tokio::test]
async fn a_chain_recomputed_after_an_edit_is_found_by_the_vault() {
    let h = busy().await;
    let head = h.audit().len() as u64;
    h.db()
        .execute(
            "UPDATE audit SET target = 'secret:app/other' WHERE seq = 3",
            [],
        )
        .unwrap();
    recompute_from(&h, 3);
    // The recomputed chain links up from genesis to its head...
    let entries: Vec<AuditEntry> = h.audit();
    verify_links(&entries, Some(GENESIS)).unwrap();
    assert_eq!(entries.len() as u64, head);
    // ...but its hashes are not the vault's MACs, from the edit on.
    let broken = vault_check(&h).await.broken.unwrap();
    assert_eq!((broken.seq, broken.kind), (3, AuditBreakKind::HashMismatch));
}

#[tokio::test]
async fn a_truncated_tail_is_found_against_a_signed_checkpoint() {
    let h = busy().await;
    let pinned = pinned_key(&h).await;
    let signed = checkpoint(&h).await;
    verify_checkpoint(&signed, &pinned).unwrap();
    assert_eq!(signed.seq, h.audit().len() as u64 - 1, "the head before it");

    // The tail goes: the checkpointed entry and the two before it.
    h.db()
        .execute("DELETE FROM audit WHERE seq >= ?1", [signed.seq - 2])
        .unwrap();
    let page: AuditPage =
        serde_json::from_value(h.admin("GET", "/v1/audit?limit=5000", None).await.body).unwrap();
    // What is left is a sound chain: the vault alone cannot see the cut...
    assert_eq!(vault_check(&h).await.broken, None);
    // ...the checkpoint published before can.
    let mut check = CheckpointCheck::new(std::slice::from_ref(&signed), &pinned).unwrap();
    check.observe(&page.entries);
    let last = page.entries.last().unwrap();
    let head = signet_client::api::AuditAnchor {
        seq: last.seq,
        hash: last.hash.clone(),
    };
    assert_eq!(
        check.finish(None, &head),
        Err(Finding::Truncated {
            checkpoint: signed.seq,
            head: signed.seq - 3
        })
    );
}

#[tokio::test]
async fn checkpoints_are_signed_by_a_key_derived_from_the_root_key() {
    let h = Harness::with_settings(Settings {
        webhook_allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Settings::default()
    });
    let hook = h
        .admin(
            "POST",
            "/v1/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook", "secret": "a-webhook-secret-of-some-length",
                        "events": ["audit.checkpoint"]})),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{:?}", hook.body);
    let pinned = pinned_key(&h).await;
    let on_demand = checkpoint(&h).await;
    verify_checkpoint(&on_demand, &pinned).unwrap();
    assert_eq!(on_demand.at, START);
    let entries = h.audit();
    let head = &entries[entries.len() - 2];
    assert_eq!(
        (on_demand.seq, on_demand.hash.as_str()),
        (head.seq, head.hash.as_str())
    );

    // The schedule publishes the head once, then not again until it moves.
    let periodic = h.vault.publish_checkpoint(Trigger::Periodic).unwrap();
    let periodic = periodic.expect("the head moved since the last one");
    verify_checkpoint(&periodic, &pinned).unwrap();
    assert_eq!(periodic.seq, h.last_audit().seq);
    assert_eq!(h.vault.publish_checkpoint(Trigger::Periodic).unwrap(), None);
    assert!(
        h.vault
            .publish_checkpoint(Trigger::Shutdown)
            .unwrap()
            .is_some()
    );
    // Each published one is queued for the webhook, with the checkpoint.
    let bodies: Vec<String> = h
        .db()
        .prepare("SELECT body FROM webhook_deliveries WHERE event = 'audit.checkpoint' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(bodies.len(), 3, "on demand, periodic, shutdown");
    let sent: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(sent["data"], serde_json::to_value(&periodic).unwrap());

    // Every restart (and every replica) derives the same key.
    let key = pinned.encode();
    let h = h.reopen(Settings::default());
    assert_eq!(pinned_key(&h).await.encode(), key);
    // Admins only.
    let agent = h.agent(&["machines"]).await;
    for (method, path) in [
        ("GET", "/v1/audit/checkpoint"),
        ("GET", "/v1/audit/checkpoint-key"),
        ("POST", "/v1/audit/verify"),
    ] {
        let reply = h.call(&agent, method, path, None).await;
        assert_eq!(reply.code(), "forbidden", "{method} {path}");
    }
}

/// Writes `n` entries the way a vault before the keyed chain did.
fn plain_log(dir: &std::path::Path, n: u64) -> Vec<AuditEntry> {
    let store = SqliteStore::open(dir).unwrap();
    let mut tx = store.begin().unwrap();
    let mut prev = GENESIS.to_owned();
    let mut entries = Vec::new();
    for seq in 1..=n {
        let mut entry = AuditEntry {
            seq,
            at: START - 100 + seq as i64,
            actor: "ad_old".into(),
            action: "secret.write".into(),
            target: format!("secret:app/s{seq}"),
            outcome: "allow".into(),
            reason: String::new(),
            source_ip: "10.0.0.1".into(),
            prev_hash: prev,
            hash: String::new(),
        };
        entry.hash = plain_hash(&entry);
        prev = entry.hash.clone();
        tx.insert_audit(&entry).unwrap();
        entries.push(entry);
    }
    tx.commit().unwrap();
    entries
}

fn open(dir: &std::path::Path, root_hex: &str) -> signet_vault::Vault {
    open_vault(
        dir,
        RootKey::parse(root_hex.as_bytes()).unwrap(),
        Arc::new(ManualClock::new(START)),
        Config::default(),
        Settings::default(),
    )
    .unwrap()
}

fn check(dir: &std::path::Path, root_hex: &str) -> AuditVerification {
    let root = RootKey::parse(root_hex.as_bytes()).unwrap();
    signet_vault::audit::verify(&SqliteStore::open(dir).unwrap(), &root.audit_chain_key()).unwrap()
}

#[test]
fn a_plain_hash_log_is_bridged_to_the_keyed_chain_once() {
    let dir = tempfile::tempdir().unwrap();
    let root_hex = RootKey::generate().to_hex().to_string();
    let old = plain_log(dir.path(), 3);

    drop(open(dir.path(), &root_hex));
    let store = SqliteStore::open(dir.path()).unwrap();
    let entries = store.begin().unwrap().audit(0, 100).unwrap();
    assert_eq!(entries.len(), 4);
    let bridge = &entries[3];
    assert_eq!(bridge.action, signet_vault::audit::BRIDGE_ACTION);
    assert_eq!(bridge.prev_hash, old[2].hash);
    let root = RootKey::parse(root_hex.as_bytes()).unwrap();
    assert!(
        root.audit_chain_key()
            .verifies(&chain_message(bridge), &bridge.hash)
    );
    let report = check(dir.path(), &root_hex);
    assert_eq!((report.broken, report.keyed_from), (None, 4));

    // Opening again bridges nothing more.
    drop(open(dir.path(), &root_hex));
    assert_eq!(store.begin().unwrap().audit(0, 100).unwrap().len(), 4);

    // A plain entry is still checked, as a plain hash.
    let db = rusqlite::Connection::open(dir.path().join("signet.db")).unwrap();
    db.execute("UPDATE audit SET actor = 'someone' WHERE seq = 2", [])
        .unwrap();
    assert_eq!(check(dir.path(), &root_hex).broken.unwrap().seq, 2);
    db.execute("UPDATE audit SET actor = 'ad_old' WHERE seq = 2", [])
        .unwrap();
    assert_eq!(check(dir.path(), &root_hex).broken, None);

    // Moving the marker past the keyed entries, or removing it, cannot make
    // them pass as plain hashes: without a valid marker every entry must be
    // keyed, and the vault does not bridge a keyed chain again.
    db.execute(
        "UPDATE meta SET value = CAST(?1 AS BLOB) WHERE key = 'audit_chain'",
        [r#"{"keyed_from": 99, "mac": "00"}"#],
    )
    .unwrap();
    assert_eq!(check(dir.path(), &root_hex).broken.unwrap().seq, 1);
    db.execute("DELETE FROM meta WHERE key = 'audit_chain'", [])
        .unwrap();
    drop(open(dir.path(), &root_hex));
    assert_eq!(store.begin().unwrap().audit(0, 100).unwrap().len(), 4);
    assert_eq!(check(dir.path(), &root_hex).broken.unwrap().seq, 1);
}

#[test]
fn an_entry_rolled_back_to_its_savepoint_is_not_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let key = RootKey::generate().audit_chain_key();
    let record = |action: &str| signet_vault::audit::Record {
        actor: "adm_1".into(),
        action: action.into(),
        allowed: true,
        ..Default::default()
    };
    let mut tx = store.begin_batch().unwrap();
    let kept = signet_vault::audit::append(tx.as_mut(), &key, START, &record("kept")).unwrap();
    tx.savepoint().unwrap();
    signet_vault::audit::append(tx.as_mut(), &key, START, &record("undone")).unwrap();
    tx.rollback_to_savepoint().unwrap();
    tx.release_savepoint().unwrap();
    let next = signet_vault::audit::append(tx.as_mut(), &key, START, &record("next")).unwrap();
    assert_eq!((next.seq, next.prev_hash), (kept.seq + 1, kept.hash));
    tx.commit().unwrap();
}
