//! The JSON shapes of the vault's HTTP API, shared by the vault (which
//! serves them) and every client (which sends and reads them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Error codes of PROTOCOL.md and the management API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadSignatureHeaders,
    TimestampSkew,
    UnknownKey,
    IdentityDisabled,
    BadSignature,
    NonceReplayed,
    NotAMachine,
    Forbidden,
    NotGranted,
    FieldNotGranted,
    InvalidToken,
    TokenExhausted,
    TokenExpired,
    ProjectLocked,
    NotFound,
    Conflict,
    InvalidRequest,
    MalformedJson,
    BodyTooLarge,
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignatureHeaders => "bad_signature_headers",
            Self::TimestampSkew => "timestamp_skew",
            Self::UnknownKey => "unknown_key",
            Self::IdentityDisabled => "identity_disabled",
            Self::BadSignature => "bad_signature",
            Self::NonceReplayed => "nonce_replayed",
            Self::NotAMachine => "not_a_machine",
            Self::Forbidden => "forbidden",
            Self::NotGranted => "not_granted",
            Self::FieldNotGranted => "field_not_granted",
            Self::InvalidToken => "invalid_token",
            Self::TokenExhausted => "token_exhausted",
            Self::TokenExpired => "token_expired",
            Self::ProjectLocked => "project_locked",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::InvalidRequest => "invalid_request",
            Self::MalformedJson => "malformed_json",
            Self::BodyTooLarge => "body_too_large",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {"code": ..., "message": ...}}`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /v1/enroll` and `POST /v1/admin/enroll`: proof of possession of a new key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub public_key: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct EnrollResponse {
    pub machine_id: String,
    pub expires_at: String,
    pub grants: Vec<GrantView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AdminEnrollResponse {
    pub admin_id: String,
    pub name: String,
}

/// One thing a machine (or an enrollment token) may read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantView {
    pub id: String,
    pub project: String,
    pub secret: String,
    /// Granted fields of a structured secret; `None` means the whole secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The live version when the grant was listed (lets clients refresh on change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}

/// `GET /v1/secrets/{project}/{secret}`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecretValue {
    pub project: String,
    pub secret: String,
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("project", &self.project)
            .field("secret", &self.secret)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ProjectList {
    pub projects: Vec<ProjectView>,
}

/// `PUT /v1/projects/{project}/secrets/{secret}`: writes a new version.
/// Exactly one of `value` and `fields` is given.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WriteSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for WriteSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteSecret { .. }")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecretMeta {
    pub project: String,
    pub name: String,
    pub live_version: u32,
    pub versions: Vec<VersionMeta>,
    /// Field names of a structured secret (names only, never values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VersionMeta {
    pub version: u32,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SecretList {
    pub secrets: Vec<SecretMeta>,
}

/// `POST /v1/grants`: exactly one of `machine_id` and `token_id`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GrantRecordList {
    pub grants: Vec<GrantRecord>,
}

/// A secret (and optionally fields) pre-granted to every machine a token enrolls.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

/// `POST /v1/enrollment-tokens`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub project: String,
    #[serde(default)]
    pub name: String,
    /// How many machines may enroll with it; `None` is unlimited until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    pub ttl_seconds: u64,
    pub machine_lifetime_seconds: u64,
    #[serde(default)]
    pub grants: Vec<TokenGrant>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub expires_at: String,
    pub machine_lifetime_seconds: u64,
    pub revoked: bool,
}

/// The answer to token creation: the only time the raw token is shown.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineView {
    pub id: String,
    pub name: String,
    pub project: String,
    pub token_id: Option<String>,
    pub hostname: String,
    pub created_at: String,
    pub expires_at: String,
    pub disabled: bool,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineList {
    pub machines: Vec<MachineView>,
}

/// What an agent identity may manage. Agents never read secret values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// List projects and secret metadata (names, versions, field names).
    Metadata,
    /// Create, list and revoke enrollment tokens.
    Tokens,
    /// Create, list and delete grants.
    Grants,
    /// List and revoke machines.
    Machines,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| format!("unknown scope {s:?} (metadata, tokens, grants, machines)"))
    }
}

/// `POST /v1/agents` and `POST /v1/admins`: register a public key generated elsewhere.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateIdentity {
    pub name: String,
    pub public_key: String,
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct IdentityView {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub scopes: Vec<Scope>,
    pub created_at: String,
}

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
}
