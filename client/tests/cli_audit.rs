//! `signet audit verify` through the real `signet` binary against a real
//! `signet-vault dev`, whose SQLite file the test edits behind its back:
//! one exit code per finding (3 edited, 4 truncated, 5 fork, 6 checkpoint
//! not signed by the pinned key), 0 on an untouched log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use signet_client::api::AuditEntry;
use signet_client::audit::{GENESIS, plain_hash};
use support::{ADMIN, Setup};

const KEY: &str = "checkpoint-key.txt";

/// A dev vault with some history, its pinned checkpoint key saved, and a
/// checkpoint of its head saved as `name`; returns the checkpoint's entry.
fn setup(name: &str) -> (Setup, u64) {
    let s = Setup::new();
    s.project("app", &[("db", "one"), ("api", "two")]);
    s.ok(Some(ADMIN), &["audit", "checkpoint-key", "--out", KEY]);
    let seq = save_checkpoint(&s, name);
    (s, seq)
}

fn save_checkpoint(s: &Setup, name: &str) -> u64 {
    s.ok(Some(ADMIN), &["audit", "checkpoint", "--out", name]);
    let text = std::fs::read_to_string(s.work.path().join(name)).unwrap();
    let checkpoint: serde_json::Value = serde_json::from_str(&text).unwrap();
    checkpoint["seq"].as_u64().unwrap()
}

fn db(s: &Setup) -> rusqlite::Connection {
    rusqlite::Connection::open(s.data.join("signet.db")).unwrap()
}

fn entries(s: &Setup) -> Vec<AuditEntry> {
    let db = db(s);
    let mut statement = db
        .prepare("SELECT seq, at, actor, action, target, outcome, reason, source_ip, prev_hash, hash FROM audit ORDER BY seq")
        .unwrap();
    statement
        .query_map([], |r| {
            Ok(AuditEntry {
                seq: r.get(0)?,
                at: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                target: r.get(4)?,
                outcome: r.get(5)?,
                reason: r.get(6)?,
                source_ip: r.get(7)?,
                prev_hash: r.get(8)?,
                hash: r.get(9)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `signet audit verify` with `checkpoints`: its exit code and stderr.
fn verify(s: &Setup, checkpoints: &[&str]) -> (i32, String, String) {
    let mut args = vec!["audit", "verify", "--key-file", KEY];
    for checkpoint in checkpoints {
        args.extend(["--checkpoint", checkpoint]);
    }
    let output = s.signet(Some(ADMIN), &args);
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn an_untouched_log_verifies_against_its_checkpoints() {
    let (s, first) = setup("first.json");
    s.ok(
        Some(ADMIN),
        &["secret", "set", "app/db", "--value", "three"],
    );
    let second = save_checkpoint(&s, "second.json");
    assert!(second > first);
    let (code, stdout, stderr) = verify(&s, &["first.json", "second.json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    assert!(stdout.contains("checkpoints: 2 matched"), "{stdout}");
    assert!(s.vault.stop().success());
}

#[test]
fn a_truncated_tail_exits_4() {
    let (s, seq) = setup("checkpoint.json");
    let deleted = db(&s)
        .execute("DELETE FROM audit WHERE seq >= ?1", [seq - 1])
        .unwrap();
    assert!(deleted >= 2);
    let (code, _, stderr) = verify(&s, &["checkpoint.json"]);
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "truncated: a signed checkpoint covers entry {seq} but the vault's log ends at entry {}",
            seq - 2
        )),
        "{stderr}"
    );
}

#[test]
fn an_edited_entry_exits_3() {
    let (s, _) = setup("checkpoint.json");
    db(&s)
        .execute("UPDATE audit SET outcome = 'deny' WHERE seq = 3", [])
        .unwrap();
    let (code, _, stderr) = verify(&s, &["checkpoint.json"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("edited: entry 3 does not hold: entry 3: stored hash does not match"),
        "{stderr}"
    );
}

#[test]
fn a_chain_recomputed_after_an_edit_exits_3() {
    let (s, _) = setup("checkpoint.json");
    let db = db(&s);
    db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 3", [])
        .unwrap();
    // Every hash from the edit on recomputed as plain SHA-256, linked up.
    let mut prev = GENESIS.to_owned();
    for mut entry in entries(&s) {
        if entry.seq >= 3 {
            entry.prev_hash = prev;
            entry.hash = plain_hash(&entry);
            db.execute(
                "UPDATE audit SET prev_hash = ?2, hash = ?3 WHERE seq = ?1",
                rusqlite::params![entry.seq, entry.prev_hash, entry.hash],
            )
            .unwrap();
        }
        prev = entry.hash;
    }
    let (code, _, stderr) = verify(&s, &["checkpoint.json"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("edited: entry 3 does not hold"), "{stderr}");
}

#[test]
fn a_rolled_back_log_that_went_on_is_a_fork_exit_5() {
    // The database is put back to an older state (a restored backup, a
    // cut tail) and the vault goes on writing: the checkpointed entry now
    // exists again with other contents.
    let (s, seq) = setup("before.json");
    db(&s)
        .execute("DELETE FROM audit WHERE seq >= ?1", [seq])
        .unwrap();
    s.ok(Some(ADMIN), &["project", "create", "other"]);
    s.ok(Some(ADMIN), &["project", "create", "third"]);
    let (code, _, stderr) = verify(&s, &["before.json"]);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains(&format!("fork: entry {seq} has hash")) && stderr.contains("in the log"),
        "{stderr}"
    );

    // Two checkpoints, both validly signed, for one entry.
    db(&s)
        .execute("DELETE FROM audit WHERE seq >= ?1", [seq])
        .unwrap();
    s.ok(Some(ADMIN), &["project", "create", "fourth"]);
    assert_eq!(save_checkpoint(&s, "after.json"), seq);
    let (code, _, stderr) = verify(&s, &["before.json", "after.json"]);
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("in another signed checkpoint"), "{stderr}");
}

#[test]
fn a_checkpoint_not_signed_by_the_pinned_key_exits_6() {
    let (s, _) = setup("checkpoint.json");
    let path = s.work.path().join("checkpoint.json");
    let mut checkpoint: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    checkpoint["seq"] = (checkpoint["seq"].as_u64().unwrap() + 100).into();
    std::fs::write(s.work.path().join("moved.json"), checkpoint.to_string()).unwrap();
    let (code, _, stderr) = verify(&s, &["moved.json"]);
    assert_eq!(code, 6, "{stderr}");
    assert!(stderr.contains("untrusted checkpoint"), "{stderr}");

    // Another vault's key pinned: its checkpoints prove nothing here.
    let other = signet_client::protocol::IdentityKey::generate().public_key();
    std::fs::write(s.work.path().join(KEY), other).unwrap();
    let (code, _, stderr) = verify(&s, &["checkpoint.json"]);
    assert_eq!(code, 6, "{stderr}");
}
