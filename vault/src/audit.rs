//! Appending to the hash-chained audit log. Every decision, allowed or
//! denied, becomes one entry; an allowed one commits in the same transaction
//! as the work it allowed.

use signet_client::api::{AuditAnchor, AuditEntry};
use signet_client::audit::{GENESIS, entry_hash};

use crate::store::{Error, Result, Tx};

/// The `meta` key of the retention anchor.
const ANCHOR_KEY: &str = "audit_anchor";

/// The last pruned entry, once retention has pruned any.
pub fn anchor(tx: &mut dyn Tx) -> Result<Option<AuditAnchor>> {
    tx.meta(ANCHOR_KEY)?
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

/// Appends `record` at time `at`, linking it to the newest entry.
pub fn append(tx: &mut dyn Tx, at: i64, record: &Record) -> Result<AuditEntry> {
    let (seq, prev_hash) = match tx.audit_head()? {
        Some((seq, hash)) => (seq + 1, hash),
        // An empty table after pruning continues from the retention anchor.
        None => match anchor(tx)? {
            Some(anchor) => (anchor.seq + 1, anchor.hash),
            None => (1, GENESIS.to_owned()),
        },
    };
    let mut entry = AuditEntry {
        seq,
        at,
        actor: record.actor.clone(),
        action: record.action.clone(),
        target: record.target.clone(),
        outcome: if record.allowed { "allow" } else { "deny" }.to_owned(),
        reason: record.reason.clone(),
        source_ip: record.source_ip.clone(),
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);
    tx.insert_audit(&entry)?;
    Ok(entry)
}
