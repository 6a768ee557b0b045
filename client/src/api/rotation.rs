//! Rotation: configs on a secret, the jobs that rotate it, and what a
//! rotation agent claims and reports. See docs/rotation.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The database whose credential a config rotates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// PostgreSQL: a new login role per rotation, member of `target.role`.
    Postgresql,
    /// MariaDB or MySQL: a new user per rotation, granted `target.role` as
    /// its default role.
    Mysql,
    /// A Redis ACL user (`target.role`) holding the old and the new
    /// password until the old one is retired.
    Redis,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgresql => "postgresql",
            Self::Mysql => "mysql",
            Self::Redis => "redis",
        }
    }
}

/// Where the database is and what the rotated credential is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotationTarget {
    /// Host name or address the agent connects to (1 to 253 characters).
    pub host: String,
    pub port: u16,
    /// PostgreSQL and MariaDB: the group role holding the privileges, which
    /// every rotated login user is a member of. Redis: the ACL user itself.
    /// 1 to 32 of `a-z`, `0-9`, `_`, starting with a letter.
    pub role: String,
    /// The database the credential is verified against (PostgreSQL and
    /// MariaDB; ignored for Redis). Same characters as `role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Which characters a generated password is made of.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// `A-Z`, `a-z`, `0-9`.
    #[default]
    Alphanumeric,
    /// Alphanumeric plus `-_.~+=^!*`: no quote, backslash, space or `$`, so
    /// no client or shell needs to escape it.
    Symbols,
}

/// How a new password is generated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    /// 16 to 128 characters (default 32).
    #[serde(default = "default_length")]
    pub length: u16,
    #[serde(default)]
    pub alphabet: Alphabet,
}

fn default_length() -> u16 {
    32
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            length: default_length(),
            alphabet: Alphabet::default(),
        }
    }
}

/// `POST /v1/rotations`: rotate `project/secret` (a structured secret with
/// `username` and `password` fields) with the agent machine `agent_machine_id`,
/// which connects with the admin credential `project/admin_secret`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRotation {
    pub project: String,
    pub secret: String,
    pub provider: Provider,
    pub target: RotationTarget,
    /// A structured secret of the same project with `username` and
    /// `password`: the database's admin credential. Only the agent may hold
    /// a grant on it.
    pub admin_secret: String,
    /// The machine that rotates: the only identity that may claim this
    /// config's jobs.
    pub agent_machine_id: String,
    /// Rotate every this many seconds (3600 to 31536000); none: only when
    /// triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    #[serde(default)]
    pub policy: PasswordPolicy,
    /// How long a claimed job may run before it fails (30 to 3600, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
    /// How long the previous credential keeps working after the new one is
    /// live, before the agent retires it (0 to 86400, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// A rotation config.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotationView {
    pub id: String,
    pub project: String,
    pub secret: String,
    pub provider: Provider,
    pub target: RotationTarget,
    pub admin_secret: String,
    pub agent_machine_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u64>,
    /// When the schedule rotates next (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due_at: Option<String>,
    pub policy: PasswordPolicy,
    pub lease_seconds: u64,
    pub grace_seconds: u64,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotationList {
    pub rotations: Vec<RotationView>,
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// Where a rotation job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// The new credential waits, unseen by readers, for the agent.
    Pending,
    /// The agent holds the job until its lease ends.
    Claimed,
    /// The new credential is live; the old one waits to be retired.
    Promoted,
    /// Done: the old credential is retired.
    Retired,
    /// Failed; the pending credential was discarded, the live one stayed.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Claimed => "claimed",
            Self::Promoted => "promoted",
            Self::Retired => "retired",
            Self::Failed => "failed",
        }
    }

    /// The job still holds its secret: no other rotation may start.
    pub fn is_running(self) -> bool {
        matches!(self, Self::Pending | Self::Claimed | Self::Promoted)
    }
}

/// One rotation of a secret. Never a credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotationJobView {
    pub id: String,
    pub rotation_id: String,
    pub state: JobState,
    /// The live version when the job was made.
    pub from_version: u32,
    /// The version the new credential became, once promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<u32>,
    /// `schedule` or the admin who triggered it.
    pub created_by: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotationJobList {
    pub jobs: Vec<RotationJobView>,
}

/// What a claimed job asks of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Create the new credential, prove it with a fresh connection, report
    /// `confirmed` (or why not).
    Apply,
    /// The new credential is live and the grace is over: remove the
    /// previous one, report `retired`.
    Retire,
}

/// `POST /v1/machine/rotations/claim` answer: one job for this agent.
/// The only place a new credential ever leaves the vault before it is live.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RotationClaim {
    pub job_id: String,
    pub rotation_id: String,
    pub step: Step,
    pub provider: Provider,
    pub target: RotationTarget,
    /// The admin credential's fields (`username`, `password`).
    pub admin: BTreeMap<String, String>,
    /// Apply: the credential to create. Retire: the new live one.
    pub new: BTreeMap<String, String>,
    /// The credential being replaced (for Retire: the one to remove).
    pub old: BTreeMap<String, String>,
    /// Report before this (RFC 3339), or the job fails.
    pub lease_until: String,
}

impl std::fmt::Debug for RotationClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationClaim")
            .field("job_id", &self.job_id)
            .field("rotation_id", &self.rotation_id)
            .field("step", &self.step)
            .field("provider", &self.provider)
            .field("target", &self.target)
            .field("lease_until", &self.lease_until)
            .finish_non_exhaustive()
    }
}

impl Drop for RotationClaim {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for map in [&mut self.admin, &mut self.new, &mut self.old] {
            for value in map.values_mut() {
                value.zeroize();
            }
        }
    }
}

/// How the agent's step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Apply: the new credential exists and a fresh connection with it worked.
    Confirmed,
    /// Apply: the database refused to create it (nothing was left behind).
    ApplyFailed,
    /// Apply: created, but a fresh connection with it failed (the agent
    /// removed it again).
    VerifyFailed,
    /// Retire: the previous credential is removed.
    Retired,
    /// Retire: it could not be removed; the vault offers the step again.
    RetireFailed,
}

/// `POST /v1/machine/rotations/{job}/report`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotationReport {
    pub outcome: Outcome,
    /// What went wrong, for the audit log (at most 300 characters, never a
    /// credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
