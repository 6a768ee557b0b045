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
