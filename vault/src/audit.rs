//! Appending to the hash-chained audit log. Every decision, allowed or
//! denied, becomes one entry; an allowed one commits in the same transaction
//! as the work it allowed.

use signet_client::api::AuditEntry;
use signet_client::audit::{GENESIS, entry_hash};

use crate::store::{Result, Tx};

/// One decision to record.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub actor: String,
    pub action: String,
    pub target: String,
    pub allowed: bool,
    pub reason: String,
    pub source_ip: String,
}

/// Appends `record` at time `at`, linking it to the newest entry.
pub fn append(tx: &mut dyn Tx, at: i64, record: &Record) -> Result<AuditEntry> {
    let (seq, prev_hash) = match tx.audit_head()? {
        Some((seq, hash)) => (seq + 1, hash),
        None => (1, GENESIS.to_owned()),
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
