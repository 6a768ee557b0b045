//! The audit log: a keyed hash chain. Every decision, allowed or denied,
//! becomes one entry; an allowed one commits in the same transaction as the
//! work it allowed.
//!
//! Each entry's `hash` is HMAC-SHA256 (under [`ChainKey`], derived from the
//! root key) of its contents and the hash of the entry before, so someone
//! holding only the database can neither edit an entry nor recompute the
//! chain after an edit: [`verify`] finds the first entry that does not
//! hold. What the database alone cannot show (its tail cut off, or the whole
//! log swapped for another) is caught by signed checkpoints published
//! outside it (`crate::service::audit`).
//!
//! Entries written before the chain was keyed carry a plain SHA-256. The
//! first time a vault with a keyed chain opens such a database it appends a
//! keyed bridge entry (`audit.chain.keyed`) linked to the last plain one and
//! records its sequence number in a MAC'd marker: entries before it are
//! checked as plain hashes, every later one as an HMAC. Without a valid
//! marker every entry must be keyed.

use serde::{Deserialize, Serialize};
use signet_client::api::{
    AuditAnchor, AuditBreak, AuditBreakKind, AuditCheckpoint, AuditEntry, AuditVerification,
};
use signet_client::audit::{
    ChainError, ChainVerifier, GENESIS, chain_message, checkpoint_message, plain_hash,
};
use signet_client::protocol::IdentityKey;

use crate::crypto::ChainKey;
use crate::store::{Error, Result, Store, Tx};

/// The `meta` key of the retention anchor.
const ANCHOR_KEY: &str = "audit_anchor";
/// The `meta` key of the marker saying where the keyed chain starts.
const MARKER_KEY: &str = "audit_chain";
/// The action of the entry that bridges plain-hash entries to keyed ones.
pub const BRIDGE_ACTION: &str = "audit.chain.keyed";

/// The last pruned entry, once retention has pruned any.
pub fn anchor(tx: &mut dyn Tx) -> Result<Option<AuditAnchor>> {
    parse_anchor(tx.meta(ANCHOR_KEY)?)
}

/// [`anchor`], read on a snapshot.
pub fn anchor_read(r: &mut dyn crate::store::Read) -> Result<Option<AuditAnchor>> {
    parse_anchor(r.meta(ANCHOR_KEY)?)
}

fn parse_anchor(stored: Option<Vec<u8>>) -> Result<Option<AuditAnchor>> {
    stored
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|_| Error::Corrupt("audit anchor".into()))
        })
        .transpose()
}

/// Prunes entries older than `before` (keeping the newest) and moves the
/// anchor to the last one pruned. Returns how far it pruned.
pub fn prune(tx: &mut dyn Tx, before: i64) -> Result<Option<AuditAnchor>> {
    let Some((seq, hash)) = tx.prune_audit(before)? else {
        return Ok(None);
    };
    let anchor = AuditAnchor { seq, hash };
    let bytes = serde_json::to_vec(&anchor).map_err(|_| Error::Corrupt("audit anchor".into()))?;
    tx.set_meta(ANCHOR_KEY, &bytes)?;
    Ok(Some(anchor))
}

/// One decision to record.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub allowed: bool,
    pub reason: String,
    pub source_ip: String,
    /// True once the entry was written with a transaction that committed, so
    /// the pipeline does not write it twice.
    pub committed: bool,
}

/// The newest entry: its sequence number and hash. An empty table after
/// pruning continues from the retention anchor; a log never written to is
/// at sequence 0 with the genesis hash.
pub fn head(tx: &mut dyn Tx) -> Result<AuditAnchor> {
    Ok(match tx.audit_head()? {
        Some((seq, hash)) => AuditAnchor { seq, hash },
        None => anchor(tx)?.unwrap_or_else(|| AuditAnchor {
            seq: 0,
            hash: GENESIS.to_owned(),
        }),
    })
}

/// Appends `record` at time `at`, linking it to the newest entry, its hash
/// keyed with `key` (the vault's [`crate::Vault::audit_key`]).
pub fn append(tx: &mut dyn Tx, key: &ChainKey, at: i64, record: &Record) -> Result<AuditEntry> {
    let head = head(tx)?;
    let mut entry = AuditEntry {
        seq: head.seq + 1,
        at,
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        outcome: if record.allowed { "allow" } else { "deny" }.to_owned(),
        reason: record.reason.clone(),
        source_ip: record.source_ip.clone(),
        prev_hash: head.hash,
        hash: String::new(),
    };
    entry.hash = key.mac(&chain_message(&entry));
    tx.insert_audit(&entry)?;
    Ok(entry)
}

#[derive(Serialize, Deserialize)]
struct Marker {
    keyed_from: u64,
    mac: String,
}

fn marker_message(keyed_from: u64) -> Vec<u8> {
    format!("signet-audit-chain-marker-v1\n{keyed_from}").into_bytes()
}

fn write_marker(tx: &mut dyn Tx, key: &ChainKey, keyed_from: u64) -> Result<()> {
    let marker = Marker {
        keyed_from,
        mac: key.mac(&marker_message(keyed_from)),
    };
    let bytes = serde_json::to_vec(&marker).map_err(|_| Error::Corrupt("audit marker".into()))?;
    tx.set_meta(MARKER_KEY, &bytes)
}

/// The first sequence number whose hash is keyed. A missing, unreadable or
/// forged marker means 1: every entry must then be keyed, so removing or
/// moving the marker can only make plain-hash entries fail, never pass.
pub fn keyed_from(tx: &mut dyn Tx, key: &ChainKey) -> Result<u64> {
    let marker = tx
        .meta(MARKER_KEY)?
        .and_then(|bytes| serde_json::from_slice::<Marker>(&bytes).ok());
    Ok(match marker {
        Some(m) if key.verifies(&marker_message(m.keyed_from), &m.mac) => m.keyed_from,
        _ => 1,
    })
}

/// Run once when the vault opens: makes sure the chain is keyed from here
/// on. A new log is keyed from its first entry. A log of plain-hash entries
/// gets the keyed bridge entry (at `now`); returns its sequence number.
pub fn ensure_keyed(tx: &mut dyn Tx, key: &ChainKey, now: i64) -> Result<Option<u64>> {
    if tx.meta(MARKER_KEY)?.is_some() {
        return Ok(None);
    }
    let head = head(tx)?;
    if head.seq == 0 {
        write_marker(tx, key, 1)?;
        return Ok(None);
    }
    // A keyed newest entry and no marker: the marker was removed. Bridging
    // now would bless every plain-hash entry before it, so the chain stays
    // strict and verification reports any plain entry.
    if let Some(last) = tx.audit(head.seq - 1, 1)?.first()
        && key.verifies(&chain_message(last), &last.hash)
    {
        tracing::error!(
            head = head.seq,
            "the audit chain's marker is missing although its entries are keyed; not bridging"
        );
        return Ok(None);
    }
    let bridge = append(
        tx,
        key,
        now,
        &Record {
            actor: "vault".into(),
            action: BRIDGE_ACTION.into(),
            target: "audit".into(),
            allowed: true,
            reason: format!(
                "entries up to {} carry plain SHA-256 hashes; from this one on, HMAC-SHA256 under a key derived from the root key",
                head.seq
            ),
            source_ip: String::new(),
            committed: false,
        },
    )?;
    write_marker(tx, key, bridge.seq)?;
    tracing::info!(
        keyed_from = bridge.seq,
        "audit chain keyed: bridge entry appended"
    );
    Ok(Some(bridge.seq))
}

/// Checks a whole log fed page by page, oldest first: each entry's hash
/// (HMAC from `keyed_from` on, plain SHA-256 before) and its link.
pub struct Verifier<'k> {
    key: &'k ChainKey,
    keyed_from: u64,
    links: ChainVerifier,
}

impl<'k> Verifier<'k> {
    pub fn new(key: &'k ChainKey, keyed_from: u64, anchor: Option<&AuditAnchor>) -> Self {
        Self {
            key,
            keyed_from,
            links: ChainVerifier::new(anchor),
        }
    }

    /// Verifies the next page; the first entry that does not hold stops it.
    pub fn feed(&mut self, page: &[AuditEntry]) -> Result<(), ChainError> {
        for entry in page {
            let holds = if entry.seq < self.keyed_from {
                plain_hash(entry) == entry.hash
            } else {
                self.key.verifies(&chain_message(entry), &entry.hash)
            };
            if !holds {
                return Err(ChainError::HashMismatch { seq: entry.seq });
            }
            self.links.feed(std::slice::from_ref(entry))?;
        }
        Ok(())
    }

    /// The `after` to ask the next page with.
    pub fn after(&self) -> u64 {
        self.links.after()
    }
}

/// Verifies every stored entry, one page per transaction so the writer is
/// never held for the whole log.
pub fn verify(store: &dyn Store, key: &ChainKey) -> Result<AuditVerification> {
    let (anchor, keyed_from) = {
        let mut tx = store.begin()?;
        (anchor(tx.as_mut())?, keyed_from(tx.as_mut(), key)?)
    };
    let mut verifier = Verifier::new(key, keyed_from, anchor.as_ref());
    let mut broken = None;
    loop {
        let page = store
            .begin()?
            .audit(verifier.after(), ChainVerifier::PAGE)?;
        if page.is_empty() {
            break;
        }
        if let Err(error) = verifier.feed(&page) {
            broken = Some(AuditBreak {
                seq: error.seq(),
                kind: match error {
                    ChainError::HashMismatch { .. } => AuditBreakKind::HashMismatch,
                    ChainError::BrokenLink { .. } => AuditBreakKind::BrokenLink,
                    ChainError::Gap { .. } => AuditBreakKind::Gap,
                },
                message: error.to_string(),
            });
            break;
        }
    }
    Ok(AuditVerification {
        entries: verifier.links.count(),
        keyed_from,
        head: verifier.links.head(),
        broken,
    })
}

/// `head` signed at `at` with the vault's checkpoint key.
pub fn sign_checkpoint(signer: &IdentityKey, head: AuditAnchor, at: i64) -> AuditCheckpoint {
    AuditCheckpoint {
        signature: signer.sign(&checkpoint_message(head.seq, &head.hash, at)),
        seq: head.seq,
        hash: head.hash,
        at,
        key: signer.public_key(),
    }
}

/// Writes `checkpoint` to the log stream, outside the database: one event
/// whose fields are the checkpoint (`signet audit verify --checkpoint`
/// reads such log lines back).
pub fn log_checkpoint(checkpoint: &AuditCheckpoint, trigger: &str) {
    tracing::info!(
        seq = checkpoint.seq,
        hash = %checkpoint.hash,
        at = checkpoint.at,
        key = %checkpoint.key,
        signature = %checkpoint.signature,
        trigger,
        "audit checkpoint"
    );
}
