//! The hash-chained audit log.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// One entry of the hash-chained audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    pub seq: u64,
    /// Unix seconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `allow` or `deny`.
    pub outcome: String,
    pub reason: String,
    pub source_ip: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The last entry removed by retention: the chain starts from its hash
    /// instead of the genesis hash. Absent while nothing was pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AuditAnchor>,
}

/// Where a pruned audit chain resumes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditAnchor {
    /// Sequence number of the last pruned entry.
    pub seq: u64,
    /// Its hash: the `prev_hash` of the oldest entry kept.
    pub hash: String,
}

/// A signed statement of the audit log's head at a time, published outside
/// the database (the vault's log stream, the `audit.checkpoint` webhook
/// event) so that a later truncation or rewrite of the log shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditCheckpoint {
    /// Sequence number of the newest entry (0 for an empty log).
    pub seq: u64,
    /// Its hash (the genesis hash for an empty log).
    pub hash: String,
    /// Unix seconds when the checkpoint was made.
    pub at: i64,
    /// The vault's checkpoint public key (base64url), to compare with the
    /// pinned one; never trusted on its own.
    pub key: String,
    /// Ed25519 signature (base64url) over
    /// `signet-audit-checkpoint-v1\n{seq}\n{hash}\n{at}`.
    pub signature: String,
}

/// The public half of the vault's checkpoint key, for admins to pin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckpointKey {
    /// Ed25519 public key, base64url without padding.
    pub key: String,
}

/// The vault's own check of every stored entry's HMAC and link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: u64,
    /// Entries before this sequence number were written before the chain
    /// was keyed and carry a plain SHA-256; from it on, HMAC-SHA256.
    pub keyed_from: u64,
    /// The newest entry checked (or the retention anchor, or sequence 0
    /// and the genesis hash).
    pub head: AuditAnchor,
    /// The first entry that does not hold; absent when the chain is intact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<AuditBreak>,
}

/// The first entry of the chain that does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditBreak {
    pub seq: u64,
    pub kind: AuditBreakKind,
    pub message: String,
}

/// How an entry fails to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuditBreakKind {
    /// Its hash is not the MAC of its contents: it was edited, or its hash
    /// recomputed without the vault's key.
    HashMismatch,
    /// Its `prev_hash` is not the hash of the entry before.
    BrokenLink,
    /// Entries are missing before it.
    Gap,
}
