//! What the tools answer: closed, flat, no maps. Each is built field by
//! field from the API type it shows, so a field the API gains later (say,
//! a value) does not reach the assistant by accident.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api;

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Projects {
    pub projects: Vec<Project>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Why the project is locked (a canary was read), when it is.
    pub locked: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secrets {
    pub secrets: Vec<Secret>,
}

/// A secret's metadata: never its value.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub project: String,
    pub name: String,
    pub live_version: u32,
    pub versions: Vec<Version>,
    /// Field names of a structured secret (names only).
    pub field_names: Option<Vec<String>>,
    pub policy: Option<Policy>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Version {
    pub version: u32,
    pub created_at: String,
    pub created_by: String,
}

/// Rules each read of a secret must pass, independently of one another.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// IANA time zone of the window and of the daily cap's day (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Reads only inside this time-of-day window.
    #[serde(default)]
    pub window: Option<Window>,
    /// Reads only from these CIDRs.
    #[serde(default)]
    pub ip_allowlist: Vec<String>,
    /// At most this many successful reads per calendar day.
    #[serde(default)]
    pub daily_read_cap: Option<u32>,
    /// Each read needs a co-sign request approved by an admin.
    #[serde(default)]
    pub cosign: bool,
    /// A canary: its first read locks the project and is refused.
    #[serde(default)]
    pub canary: bool,
    /// A canary read also locks every project the reading machine can reach.
    #[serde(default)]
    pub canary_cascade: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `mon` … `sun`; empty is every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// Opening time `HH:MM` (inclusive).
    pub start: String,
    /// Closing time `HH:MM` (exclusive); earlier than `start` spans midnight.
    pub end: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Machines {
    pub machines: Vec<Machine>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    pub id: String,
    pub name: String,
    pub project: String,
    pub token_id: Option<String>,
    pub hostname: String,
    pub created_at: String,
    pub expires_at: String,
    pub disabled: bool,
    pub kubernetes: Option<MachineKubernetes>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineKubernetes {
    pub cluster: String,
    pub namespace: String,
    pub service_account: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    /// Every field came from a token the cluster verified.
    pub attested: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTokens {
    pub tokens: Vec<EnrollmentToken>,
}

/// An enrollment token or attested policy: never the raw token.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentToken {
    pub id: String,
    pub name: String,
    pub project: String,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: String,
    pub machine_lifetime_seconds: u64,
    pub revoked: bool,
    /// Set for a policy bound to a Kubernetes namespace.
    pub kubernetes: Option<Binding>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub cluster: String,
    pub namespace: String,
    pub policy: String,
    pub service_accounts: Vec<String>,
    /// Pods enroll with a raw token instead of attestation.
    pub raw_token: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatedEnrollmentToken {
    pub created: EnrollmentToken,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegations {
    pub delegations: Vec<Delegation>,
}

/// What an admin lets this agent hand out.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegation {
    pub id: String,
    pub project: String,
    pub secret: String,
    /// Only these fields; absent for the whole secret.
    pub fields: Option<Vec<String>>,
    /// For pods of this namespace; absent for machines outside Kubernetes.
    pub kubernetes: Option<NamespaceRef>,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceRef {
    pub cluster: String,
    pub namespace: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    pub grants: Vec<Grant>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub id: String,
    pub machine_id: Option<String>,
    pub token_id: Option<String>,
    pub project: String,
    pub secret: String,
    pub fields: Option<Vec<String>>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddedGrant {
    pub grant: Grant,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    /// The id of what was removed.
    pub removed: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySet {
    pub secret: Secret,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEntries {
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent when this page was not full.
    pub next_after: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditCheck {
    /// Whether every entry's MAC and link hold.
    pub intact: bool,
    pub entries: u64,
    pub keyed_from: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// The first entry that does not hold.
    pub broken: Option<AuditBreak>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditBreak {
    pub seq: u64,
    /// `hash_mismatch`, `broken_link` or `gap`.
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Explanations {
    pub denials: Vec<Denial>,
}

/// A refusal and what it means.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    /// `audit` (an entry of the audit log) or `session` (a refusal of one
    /// of this session's tool calls).
    pub source: String,
    /// The audit entry's sequence number.
    pub seq: Option<u64>,
    /// The tool (session) or the vault's action name (audit).
    pub action: String,
    pub target: Option<String>,
    /// The vault's error code, e.g. `not_delegated`.
    pub code: String,
    /// The vault's own words.
    pub reason: String,
    /// What the code means and what would be allowed instead.
    pub explanation: String,
}

// Conversions.

pub fn project(p: api::ProjectView) -> Project {
    Project {
        id: p.id,
        name: p.name,
        created_at: p.created_at,
        locked: p.locked,
    }
}

pub fn secret(s: api::SecretMeta) -> Secret {
    Secret {
        project: s.project,
        name: s.name,
        live_version: s.live_version,
        versions: s
            .versions
            .into_iter()
            .map(|v| Version {
                version: v.version,
                created_at: v.created_at,
                created_by: v.created_by,
            })
            .collect(),
        field_names: s.fields,
        policy: s.policy.map(Policy::from),
    }
}

impl From<api::AccessPolicy> for Policy {
    fn from(p: api::AccessPolicy) -> Self {
        Self {
            timezone: p.timezone,
            window: p.window.map(|w| Window {
                days: w.days,
                start: w.start,
                end: w.end,
            }),
            ip_allowlist: p.ip_allowlist,
            daily_read_cap: p.daily_read_cap,
            cosign: p.cosign,
            canary: p.canary,
            canary_cascade: p.canary_cascade,
        }
    }
}

impl From<Policy> for api::AccessPolicy {
    fn from(p: Policy) -> Self {
        Self {
            timezone: p.timezone,
            window: p.window.map(|w| api::TimeWindow {
                days: w.days,
                start: w.start,
                end: w.end,
            }),
            ip_allowlist: p.ip_allowlist,
            daily_read_cap: p.daily_read_cap,
            cosign: p.cosign,
            canary: p.canary,
            canary_cascade: p.canary_cascade,
        }
    }
}

pub fn machine(m: api::MachineView) -> Machine {
    // `metadata` (free-form strings a machine sent at enrollment) stays out:
    // an open map is where anything could travel.
    Machine {
        id: m.id,
        name: m.name,
        project: m.project,
        token_id: m.token_id,
        hostname: m.hostname,
        created_at: m.created_at,
        expires_at: m.expires_at,
        disabled: m.disabled,
        kubernetes: m.kubernetes.map(|k| MachineKubernetes {
            cluster: k.cluster,
            namespace: k.namespace,
            service_account: k.service_account,
            pod_name: k.pod_name,
            pod_uid: k.pod_uid,
            attested: k.attested,
        }),
    }
}

pub fn token(t: api::TokenView) -> EnrollmentToken {
    EnrollmentToken {
        id: t.id,
        name: t.name,
        project: t.project,
        max_uses: t.max_uses,
        uses: t.uses,
        expires_at: t.expires_at,
        machine_lifetime_seconds: t.machine_lifetime_seconds,
        revoked: t.revoked,
        kubernetes: t.kubernetes.map(|k| Binding {
            cluster: k.cluster,
            namespace: k.namespace,
            policy: k.policy,
            service_accounts: k.service_accounts,
            raw_token: k.raw_token,
        }),
    }
}

pub fn grant(g: api::GrantRecord) -> Grant {
    Grant {
        id: g.id,
        machine_id: g.machine_id,
        token_id: g.token_id,
        project: g.project,
        secret: g.secret,
        fields: g.fields,
    }
}

pub fn delegation(d: api::DelegationView) -> Delegation {
    Delegation {
        id: d.id,
        project: d.project,
        secret: d.secret,
        fields: d.fields,
        kubernetes: d.kubernetes.map(|k| NamespaceRef {
            cluster: k.cluster,
            namespace: k.namespace,
        }),
        created_at: d.created_at,
        created_by: d.created_by,
    }
}
