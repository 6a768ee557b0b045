//! The audit log's hash chain. The vault computes it when it appends a row;
//! `signet audit verify` recomputes it from the entries alone.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::api::AuditEntry;

/// The `prev_hash` of the first entry in a chain that has never been pruned.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    at: i64,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    outcome: &'a str,
    reason: &'a str,
    source_ip: &'a str,
    prev_hash: &'a str,
}

/// The hash of `entry` given its `prev_hash`: SHA-256 over the JSON of every
/// field but `hash`, in declaration order.
pub fn entry_hash(entry: &AuditEntry) -> String {
    let hashed = Hashed {
        seq: entry.seq,
        at: entry.at,
        actor: &entry.actor,
        action: &entry.action,
        target: &entry.target,
        outcome: &entry.outcome,
        reason: &entry.reason,
        source_ip: &entry.source_ip,
        prev_hash: &entry.prev_hash,
    };
    // Serializing a struct of strings and integers cannot fail.
    let json = serde_json::to_vec(&hashed).unwrap_or_default();
    hex::encode(Sha256::digest(json))
}

/// Where a chain stopped holding.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    #[error("entry {seq}: stored hash does not match its contents")]
    HashMismatch { seq: u64 },
    #[error("entry {seq}: prev_hash does not match the hash of entry {prev}")]
    BrokenLink { seq: u64, prev: u64 },
    #[error("entry {seq}: sequence gap after entry {prev}")]
    Gap { seq: u64, prev: u64 },
}

/// Checks a run of consecutive entries. `anchor` is the expected `prev_hash`
/// of the first one (the genesis hash, or the retention anchor), or `None` to
/// accept whatever the first entry names.
pub fn verify_chain(entries: &[AuditEntry], anchor: Option<&str>) -> Result<(), ChainError> {
    let mut previous: Option<&AuditEntry> = None;
    for entry in entries {
        if entry_hash(entry) != entry.hash {
            return Err(ChainError::HashMismatch { seq: entry.seq });
        }
        match previous {
            Some(prev) => {
                if entry.seq != prev.seq + 1 {
                    return Err(ChainError::Gap {
                        seq: entry.seq,
                        prev: prev.seq,
                    });
                }
                if entry.prev_hash != prev.hash {
                    return Err(ChainError::BrokenLink {
                        seq: entry.seq,
                        prev: prev.seq,
                    });
                }
            }
            None => {
                if anchor.is_some_and(|a| a != entry.prev_hash) {
                    return Err(ChainError::BrokenLink {
                        seq: entry.seq,
                        prev: entry.seq.saturating_sub(1),
                    });
                }
            }
        }
        previous = Some(entry);
    }
    Ok(())
}

/// Checks a whole log fed page by page, oldest first, each page starting
/// right after the previous one.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_prev: String,
    last_seq: u64,
    count: u64,
}

impl ChainVerifier {
    /// Page size the callers fetch with; a shorter page is the last one.
    pub const PAGE: u32 = 5000;

    /// Starts at `anchor` (the hash of the last entry retention pruned), or
    /// at the genesis hash when nothing was pruned.
    pub fn new(anchor: Option<&str>) -> Self {
        Self {
            expected_prev: anchor.unwrap_or(GENESIS).to_owned(),
            last_seq: 0,
            count: 0,
        }
    }

    /// Verifies the next page and links it to the pages before.
    pub fn feed(&mut self, page: &[AuditEntry]) -> Result<(), ChainError> {
        verify_chain(page, Some(&self.expected_prev))?;
        if let Some(last) = page.last() {
            self.expected_prev = last.hash.clone();
            self.last_seq = last.seq;
            self.count += page.len() as u64;
        }
        Ok(())
    }

    /// The `after` to ask the next page with.
    pub fn after(&self) -> u64 {
        self.last_seq
    }

    /// Entries verified so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    at: 1_700_000_000 + seq as i64,
                    actor: "ad_1".into(),
                    action: "secret.write".into(),
                    target: "p/s".into(),
                    outcome: "allow".into(),
                    reason: String::new(),
                    source_ip: "127.0.0.1".into(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = entry_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_verifies() {
        assert_eq!(verify_chain(&chain(5), Some(GENESIS)), Ok(()));
    }

    #[test]
    fn editing_any_field_is_detected() {
        let mut entries = chain(5);
        entries[2].outcome = "deny".into();
        assert_eq!(
            verify_chain(&entries, Some(GENESIS)),
            Err(ChainError::HashMismatch { seq: 3 })
        );
    }

    #[test]
    fn rehashing_an_edit_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].actor = "someone-else".into();
        entries[2].hash = entry_hash(&entries[2]);
        assert_eq!(
            verify_chain(&entries, Some(GENESIS)),
            Err(ChainError::BrokenLink { seq: 4, prev: 3 })
        );
    }

    #[test]
    fn pages_link_to_each_other() {
        let entries = chain(6);
        let mut verifier = ChainVerifier::new(None);
        verifier.feed(&entries[..3]).unwrap();
        assert_eq!(verifier.after(), 3);
        verifier.feed(&entries[3..]).unwrap();
        assert_eq!(verifier.count(), 6);
        let mut skipping = ChainVerifier::new(None);
        skipping.feed(&entries[..2]).unwrap();
        assert!(skipping.feed(&entries[3..]).is_err());
    }

    #[test]
    fn deleting_an_entry_is_detected() {
        let mut entries = chain(5);
        entries.remove(1);
        assert_eq!(
            verify_chain(&entries, Some(GENESIS)),
            Err(ChainError::Gap { seq: 3, prev: 1 })
        );
    }
}
