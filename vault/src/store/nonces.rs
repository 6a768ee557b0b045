//! Spent nonces: an append-only log on disk, a set in memory.
//!
//! Every signed request spends a random nonce. Kept in a table keyed by
//! `(key_id, nonce)`, each one dirtied a random B-tree page (about 4 KiB of
//! write-ahead log per request, synced with its batch). Here the table
//! `nonce_log` is clustered by its sequence number, so a batch's nonces
//! land on the log's last page or two, and the replay check is a lookup in
//! memory ([`Spent`]) of every nonce the log holds.
//!
//! The set is exact for this process: it is loaded from the log when the
//! store opens, and the rows another process appended to the same file are
//! read before this one writes again (a write transaction starts by
//! catching up with the log whenever `PRAGMA data_version` moved), so a
//! nonce spent by either is refused by both. A transaction's own nonces
//! join the set only once it committed; a savepoint rolled back forgets
//! those recorded since.
//!
//! The set holds 128-bit digests of `(key_id, nonce)`: a replay always
//! maps to the same digest, and two different nonces share one with odds
//! far below any other failure (a false match would only refuse a fresh
//! request as replayed).

use std::collections::HashMap;

use rusqlite::{Connection, params};
use sha2::{Digest as _, Sha256};

use super::Result;

/// A nonce's digest: the first 128 bits of SHA-256 over the key id, a zero
/// byte (neither holds one) and the nonce.
fn digest(key_id: &str, nonce: &str) -> u128 {
    let mut hash = Sha256::new();
    hash.update(key_id.as_bytes());
    hash.update([0u8]);
    hash.update(nonce.as_bytes());
    let bytes = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    u128::from_le_bytes(first)
}

/// The committed nonces of the log, by digest, with their expiry.
#[derive(Debug, Default)]
pub(super) struct Spent {
    expiries: HashMap<u128, i64>,
    /// The highest log sequence number read into the set.
    through: i64,
}

impl Spent {
    /// Every row of the log, as the store opens.
    pub(super) fn load(conn: &Connection) -> Result<Self> {
        let mut spent = Self::default();
        spent.catch_up(conn)?;
        Ok(spent)
    }

    /// Reads the rows appended since the last look (by another process):
    /// called inside a write transaction, so none can be appended meanwhile.
    pub(super) fn catch_up(&mut self, conn: &Connection) -> Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, key_id, nonce, expires_at FROM nonce_log WHERE seq > ?1 ORDER BY seq",
        )?;
        let mut rows = stmt.query([self.through])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let key_id: String = row.get(1)?;
            let nonce: String = row.get(2)?;
            self.insert(digest(&key_id, &nonce), row.get(3)?);
            self.through = self.through.max(seq);
        }
        Ok(())
    }

    fn contains(&self, digest: u128) -> bool {
        self.expiries.contains_key(&digest)
    }

    fn insert(&mut self, digest: u128, expires_at: i64) {
        let expiry = self.expiries.entry(digest).or_insert(expires_at);
        *expiry = (*expiry).max(expires_at);
    }

    /// Adds what a transaction committed.
    pub(super) fn apply(&mut self, done: &Pending) {
        for (digest, expires_at) in &done.recorded {
            self.insert(*digest, *expires_at);
        }
        self.through = self.through.max(done.last_seq);
        if done.extended != 0 {
            for expiry in self.expiries.values_mut() {
                *expiry = expiry.saturating_add(done.extended);
            }
        }
        if let Some(now) = done.pruned_before {
            self.expiries.retain(|_, expires_at| *expires_at >= now);
        }
    }
}

/// What one transaction did to the log, applied to [`Spent`] once it
/// committed.
#[derive(Debug, Default)]
pub(super) struct Pending {
    recorded: Vec<(u128, i64)>,
    /// `recorded.len()` at each open savepoint, innermost last.
    savepoints: Vec<usize>,
    last_seq: i64,
    extended: i64,
    pruned_before: Option<i64>,
}

impl Pending {
    fn contains(&self, digest: u128) -> bool {
        self.recorded.iter().any(|(d, _)| *d == digest)
    }

    pub(super) fn savepoint(&mut self) {
        self.savepoints.push(self.recorded.len());
    }

    pub(super) fn rollback_to_savepoint(&mut self) {
        if let Some(&mark) = self.savepoints.last() {
            self.recorded.truncate(mark);
        }
    }

    pub(super) fn release_savepoint(&mut self) {
        self.savepoints.pop();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.recorded.is_empty() && self.extended == 0 && self.pruned_before.is_none()
    }
}

/// Appends one nonce to the log; false when it was spent already (by a
/// committed transaction, or earlier in this one).
pub(super) fn record(
    conn: &Connection,
    spent: &Spent,
    pending: &mut Pending,
    (key_id, nonce, expires_at): (&str, &str, i64),
) -> Result<bool> {
    let digest = digest(key_id, nonce);
    if spent.contains(digest) || pending.contains(digest) {
        return Ok(false);
    }
    conn.prepare_cached("INSERT INTO nonce_log (key_id, nonce, expires_at) VALUES (?1, ?2, ?3)")?
        .execute(params![key_id, nonce, expires_at])?;
    pending.recorded.push((digest, expires_at));
    pending.last_seq = pending.last_seq.max(conn.last_insert_rowid());
    Ok(true)
}

/// Deletes the log's oldest rows up to the first one still unexpired at
/// `now` (rows are appended in about the order they expire, so the few
/// expired ones after it go with a later sweep), always keeping the newest
/// row so sequence numbers never go back. Returns how many.
pub(super) fn prune(conn: &Connection, pending: &mut Pending, now: i64) -> Result<u64> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM nonce_log WHERE seq < COALESCE(
                 (SELECT seq FROM nonce_log WHERE expires_at >= ?1 ORDER BY seq LIMIT 1),
                 (SELECT MAX(seq) FROM nonce_log))",
        )?
        .execute([now])?;
    pending.pruned_before = Some(pending.pruned_before.map_or(now, |before| before.max(now)));
    Ok(deleted as u64)
}

/// Keeps every logged nonce `seconds` longer.
pub(super) fn extend(conn: &Connection, pending: &mut Pending, seconds: i64) -> Result<u64> {
    let changed = conn
        .prepare_cached("UPDATE nonce_log SET expires_at = expires_at + ?1")?
        .execute([seconds])?;
    pending.extended = pending.extended.saturating_add(seconds);
    Ok(changed as u64)
}
