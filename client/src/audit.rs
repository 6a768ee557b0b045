//! The audit log's chain and its signed checkpoints, as a client checks them.
//!
//! Each entry's `hash` is an HMAC-SHA256 of [`chain_message`] under a key
//! only the vault holds (derived from its root key), so a client cannot
//! recompute it: the vault checks the MACs itself (`POST /v1/audit/verify`).
//! What a client checks on its own is the rest: every entry names the hash
//! of the one before ([`ChainVerifier`]), checkpoints are signed by the
//! checkpoint key the admin pinned ([`verify_checkpoint`]), and the log the
//! vault serves still holds what each checkpoint saw ([`CheckpointCheck`]):
//! not shorter (truncation), not different (a fork).
//!
//! Entries written before the vault keyed its chain carry a plain SHA-256
//! ([`plain_hash`]); docs/protocol.md ("Audit log") describes the bridge.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::api::{AuditAnchor, AuditCheckpoint, AuditEntry};
use crate::protocol::PublicKey;

/// The `prev_hash` of the first entry in a chain that has never been pruned.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// First line of the message a checkpoint signature covers.
pub const CHECKPOINT_TAG: &str = "signet-audit-checkpoint-v1";

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

/// The bytes an entry's hash covers: the JSON of every field but `hash`,
/// in declaration order.
pub fn chain_message(entry: &AuditEntry) -> Vec<u8> {
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
    serde_json::to_vec(&hashed).unwrap_or_default()
}

/// The hash of an entry written before the chain was keyed: plain SHA-256
/// of [`chain_message`]. Anyone can recompute it, which is why the vault
/// no longer writes it.
pub fn plain_hash(entry: &AuditEntry) -> String {
    hex::encode(Sha256::digest(chain_message(entry)))
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

impl ChainError {
    /// The first entry that does not hold.
    pub fn seq(&self) -> u64 {
        match self {
            Self::HashMismatch { seq } | Self::BrokenLink { seq, .. } | Self::Gap { seq, .. } => {
                *seq
            }
        }
    }
}

/// Checks that a run of consecutive entries links up: each `seq` follows
/// the one before and each `prev_hash` is the hash before it. `anchor` is
/// the expected `prev_hash` of the first one (the genesis hash, or the
/// retention anchor), or `None` to accept whatever the first entry names.
/// The hashes themselves are MACs only the vault can check.
pub fn verify_links(entries: &[AuditEntry], anchor: Option<&str>) -> Result<(), ChainError> {
    let mut previous: Option<&AuditEntry> = None;
    for entry in entries {
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

/// Checks the links of a whole log fed page by page, oldest first, each
/// page starting right after the previous one.
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
    pub fn new(anchor: Option<&AuditAnchor>) -> Self {
        Self {
            expected_prev: anchor.map_or(GENESIS, |a| a.hash.as_str()).to_owned(),
            last_seq: anchor.map_or(0, |a| a.seq),
            count: 0,
        }
    }

    /// Verifies the next page and links it to the pages before.
    pub fn feed(&mut self, page: &[AuditEntry]) -> Result<(), ChainError> {
        if let Some(first) = page.first()
            && first.seq != self.last_seq + 1
        {
            return Err(ChainError::Gap {
                seq: first.seq,
                prev: self.last_seq,
            });
        }
        verify_links(page, Some(&self.expected_prev))?;
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

    /// The newest entry seen (or the anchor): its sequence number and hash.
    pub fn head(&self) -> AuditAnchor {
        AuditAnchor {
            seq: self.last_seq,
            hash: self.expected_prev.clone(),
        }
    }

    /// Entries verified so far.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// The bytes a checkpoint's signature covers: four lines joined by `\n`.
pub fn checkpoint_message(seq: u64, hash: &str, at: i64) -> Vec<u8> {
    format!("{CHECKPOINT_TAG}\n{seq}\n{hash}\n{at}").into_bytes()
}

/// Why a checkpoint cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("checkpoint {seq} is signed by {key}, not by the pinned checkpoint key {pinned}")]
    OtherKey {
        seq: u64,
        key: String,
        pinned: String,
    },
    #[error("checkpoint {seq}: the signature does not verify with the pinned checkpoint key")]
    BadSignature { seq: u64 },
}

/// Checks that `checkpoint` is signed by the `pinned` key. The key the
/// checkpoint names is only compared, never trusted.
pub fn verify_checkpoint(
    checkpoint: &AuditCheckpoint,
    pinned: &PublicKey,
) -> Result<(), CheckpointError> {
    let seq = checkpoint.seq;
    if checkpoint.key != pinned.encode() {
        return Err(CheckpointError::OtherKey {
            seq,
            key: checkpoint.key.clone(),
            pinned: pinned.encode(),
        });
    }
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(&checkpoint.signature)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(CheckpointError::BadSignature { seq })?;
    pinned
        .verify(
            &checkpoint_message(seq, &checkpoint.hash, checkpoint.at),
            &signature,
        )
        .map_err(|_| CheckpointError::BadSignature { seq })
}

/// What `signet audit verify` can find wrong, each with its exit code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Finding {
    /// A checkpoint is not signed by the pinned key: it proves nothing.
    #[error("untrusted checkpoint: {0}")]
    Untrusted(CheckpointError),
    /// An entry's contents, hash or link were changed after it was written.
    #[error("edited: entry {seq} does not hold: {message}")]
    Edited { seq: u64, message: String },
    /// The log ends before an entry a checkpoint saw.
    #[error(
        "truncated: a signed checkpoint covers entry {checkpoint} but the vault's log ends at entry {head}"
    )]
    Truncated { checkpoint: u64, head: u64 },
    /// Two histories: validly signed checkpoints, or a checkpoint and the
    /// log, disagree about the hash of one entry.
    #[error("fork: entry {seq} has hash {signed} in a signed checkpoint but {other} {source_of}")]
    Forked {
        seq: u64,
        signed: String,
        other: String,
        /// Where `other` comes from ("in another signed checkpoint", "in the log").
        source_of: &'static str,
    },
}

impl Finding {
    /// The exit code of `signet audit verify` for this finding.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Edited { .. } => 3,
            Self::Truncated { .. } => 4,
            Self::Forked { .. } => 5,
            Self::Untrusted(_) => 6,
        }
    }
}

/// Compares the log, as it is read, with a set of checkpoints: every
/// checkpoint must be signed by the pinned key, no two may name different
/// hashes for one entry, and the log must still hold each one's entry with
/// the hash it signed.
#[derive(Debug)]
pub struct CheckpointCheck {
    /// The hash each checkpointed entry must have, by sequence number.
    wanted: BTreeMap<u64, String>,
    /// What the log holds at those sequence numbers.
    found: BTreeMap<u64, String>,
}

/// What [`CheckpointCheck::finish`] could check.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Checkpointed entries found in the log with the signed hash.
    pub matched: usize,
    /// Checkpointed entries retention has pruned (not checkable).
    pub pruned: usize,
}

impl CheckpointCheck {
    /// Checks the signatures and that the checkpoints agree with each other.
    pub fn new(checkpoints: &[AuditCheckpoint], pinned: &PublicKey) -> Result<Self, Finding> {
        let mut wanted: BTreeMap<u64, String> = BTreeMap::new();
        for checkpoint in checkpoints {
            verify_checkpoint(checkpoint, pinned).map_err(Finding::Untrusted)?;
            match wanted.get(&checkpoint.seq) {
                Some(hash) if *hash != checkpoint.hash => {
                    return Err(Finding::Forked {
                        seq: checkpoint.seq,
                        signed: hash.clone(),
                        other: checkpoint.hash.clone(),
                        source_of: "in another signed checkpoint",
                    });
                }
                Some(_) => {}
                None => {
                    wanted.insert(checkpoint.seq, checkpoint.hash.clone());
                }
            }
        }
        Ok(Self {
            wanted,
            found: BTreeMap::new(),
        })
    }

    /// Notes the hashes of checkpointed entries in the next page.
    pub fn observe(&mut self, page: &[AuditEntry]) {
        for entry in page {
            if self.wanted.contains_key(&entry.seq) {
                self.found.insert(entry.seq, entry.hash.clone());
            }
        }
    }

    /// After the whole log was read: `anchor` is where it starts (retention),
    /// `head` its newest entry (or the anchor, or sequence 0 and the genesis
    /// hash for an empty log).
    pub fn finish(
        &self,
        anchor: Option<&AuditAnchor>,
        head: &AuditAnchor,
    ) -> Result<CheckpointReport, Finding> {
        let mut report = CheckpointReport::default();
        for (&seq, signed) in &self.wanted {
            if seq > head.seq {
                return Err(Finding::Truncated {
                    checkpoint: seq,
                    head: head.seq,
                });
            }
            let stored = if seq == head.seq {
                Some(head.hash.as_str())
            } else if seq == 0 {
                Some(GENESIS)
            } else if let Some(anchor) = anchor.filter(|a| seq <= a.seq) {
                if seq < anchor.seq {
                    report.pruned += 1;
                    continue;
                }
                Some(anchor.hash.as_str())
            } else {
                self.found.get(&seq).map(String::as_str)
            };
            match stored {
                Some(stored) if stored == signed => report.matched += 1,
                Some(stored) => {
                    return Err(Finding::Forked {
                        seq,
                        signed: signed.clone(),
                        other: stored.to_owned(),
                        source_of: "in the log",
                    });
                }
                // Within the log's range yet never read: the log skipped it.
                None => {
                    return Err(Finding::Edited {
                        seq,
                        message: "the log the vault served has no such entry".into(),
                    });
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::IdentityKey;

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
                e.hash = plain_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    fn signed(key: &IdentityKey, seq: u64, hash: &str) -> AuditCheckpoint {
        let at = 1_700_000_500;
        AuditCheckpoint {
            seq,
            hash: hash.to_owned(),
            at,
            key: key.public_key(),
            signature: key.sign(&checkpoint_message(seq, hash, at)),
        }
    }

    fn pinned(key: &IdentityKey) -> PublicKey {
        PublicKey::parse(&key.public_key()).unwrap()
    }

    fn head(entries: &[AuditEntry]) -> AuditAnchor {
        let last = entries.last().unwrap();
        AuditAnchor {
            seq: last.seq,
            hash: last.hash.clone(),
        }
    }

    #[test]
    fn an_untouched_chain_links_up() {
        assert_eq!(verify_links(&chain(5), Some(GENESIS)), Ok(()));
    }

    #[test]
    fn a_changed_link_is_detected() {
        let mut entries = chain(5);
        entries[3].prev_hash = plain_hash(&entries[0]);
        assert_eq!(
            verify_links(&entries, Some(GENESIS)),
            Err(ChainError::BrokenLink { seq: 4, prev: 3 })
        );
        let entries = chain(3);
        assert!(verify_links(&entries[1..], Some(GENESIS)).is_err());
    }

    #[test]
    fn pages_link_to_each_other() {
        let entries = chain(6);
        let mut verifier = ChainVerifier::new(None);
        verifier.feed(&entries[..3]).unwrap();
        assert_eq!(verifier.after(), 3);
        verifier.feed(&entries[3..]).unwrap();
        assert_eq!(verifier.count(), 6);
        assert_eq!(verifier.head(), head(&entries));
        let mut skipping = ChainVerifier::new(None);
        skipping.feed(&entries[..2]).unwrap();
        assert_eq!(
            skipping.feed(&entries[3..]),
            Err(ChainError::Gap { seq: 4, prev: 2 })
        );
        // The first page must start right after the anchor.
        let anchor = AuditAnchor {
            seq: 1,
            hash: entries[0].hash.clone(),
        };
        assert!(
            ChainVerifier::new(Some(&anchor))
                .feed(&entries[1..])
                .is_ok()
        );
        assert!(
            ChainVerifier::new(Some(&anchor))
                .feed(&entries[2..])
                .is_err()
        );
    }

    #[test]
    fn deleting_an_entry_is_detected() {
        let mut entries = chain(5);
        entries.remove(1);
        assert_eq!(
            verify_links(&entries, Some(GENESIS)),
            Err(ChainError::Gap { seq: 3, prev: 1 })
        );
    }

    #[test]
    fn a_checkpoint_verifies_only_with_the_pinned_key() {
        let key = IdentityKey::generate();
        let checkpoint = signed(&key, 5, &"ab".repeat(32));
        assert_eq!(verify_checkpoint(&checkpoint, &pinned(&key)), Ok(()));
        let other = IdentityKey::generate();
        assert!(matches!(
            verify_checkpoint(&checkpoint, &pinned(&other)),
            Err(CheckpointError::OtherKey { seq: 5, .. })
        ));
        // A checkpoint naming the pinned key but signed by another one.
        let mut forged = signed(&other, 5, &"ab".repeat(32));
        forged.key = key.public_key();
        assert_eq!(
            verify_checkpoint(&forged, &pinned(&key)),
            Err(CheckpointError::BadSignature { seq: 5 })
        );
        // Every signed field is covered.
        for edit in [
            |c: &mut AuditCheckpoint| c.seq += 1,
            |c: &mut AuditCheckpoint| c.hash = "cd".repeat(32),
            |c: &mut AuditCheckpoint| c.at += 1,
        ] {
            let mut moved = checkpoint.clone();
            edit(&mut moved);
            assert!(verify_checkpoint(&moved, &pinned(&key)).is_err());
        }
    }

    #[test]
    fn the_log_must_hold_what_each_checkpoint_saw() {
        let key = IdentityKey::generate();
        let entries = chain(6);
        let checkpoints = [
            signed(&key, 3, &entries[2].hash),
            signed(&key, 6, &entries[5].hash),
        ];
        let mut check = CheckpointCheck::new(&checkpoints, &pinned(&key)).unwrap();
        check.observe(&entries);
        assert_eq!(
            check.finish(None, &head(&entries)),
            Ok(CheckpointReport {
                matched: 2,
                pruned: 0
            })
        );

        // Truncated: the log now ends at entry 4.
        let mut check = CheckpointCheck::new(&checkpoints, &pinned(&key)).unwrap();
        check.observe(&entries[..4]);
        assert_eq!(
            check.finish(None, &head(&entries[..4])),
            Err(Finding::Truncated {
                checkpoint: 6,
                head: 4
            })
        );

        // Forked: entry 3 has another hash in the log.
        let mut other = chain(6);
        other[2].hash = "ff".repeat(32);
        let mut check = CheckpointCheck::new(&checkpoints, &pinned(&key)).unwrap();
        check.observe(&other);
        assert!(matches!(
            check.finish(None, &head(&entries)),
            Err(Finding::Forked { seq: 3, .. })
        ));

        // Pruned by retention: not checkable, not a failure.
        let anchor = AuditAnchor {
            seq: 4,
            hash: entries[3].hash.clone(),
        };
        let mut check = CheckpointCheck::new(&checkpoints, &pinned(&key)).unwrap();
        check.observe(&entries[4..]);
        assert_eq!(
            check.finish(Some(&anchor), &head(&entries)),
            Ok(CheckpointReport {
                matched: 1,
                pruned: 1
            })
        );
    }

    #[test]
    fn two_signed_checkpoints_for_one_entry_must_agree() {
        let key = IdentityKey::generate();
        let same = [
            signed(&key, 3, &"ab".repeat(32)),
            signed(&key, 3, &"ab".repeat(32)),
        ];
        assert!(CheckpointCheck::new(&same, &pinned(&key)).is_ok());
        let forked = [
            signed(&key, 3, &"ab".repeat(32)),
            signed(&key, 3, &"cd".repeat(32)),
        ];
        let error = CheckpointCheck::new(&forked, &pinned(&key)).unwrap_err();
        assert!(matches!(error, Finding::Forked { seq: 3, .. }), "{error}");
        assert_eq!(error.exit_code(), 5);
    }

    #[test]
    fn an_unsigned_checkpoint_is_refused_before_anything_else() {
        let key = IdentityKey::generate();
        let other = IdentityKey::generate();
        let checkpoints = [signed(&other, 3, &"ab".repeat(32))];
        let error = CheckpointCheck::new(&checkpoints, &pinned(&key)).unwrap_err();
        assert!(matches!(error, Finding::Untrusted(_)));
        assert_eq!(error.exit_code(), 6);
    }
}
