//! The JSON shapes of the vault's HTTP API, shared by the vault (which
//! serves them) and every client (which sends and reads them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Error codes of docs/protocol.md and the management API.
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
    /// The secret's (or machine's) time-of-day window is closed now.
    PolicyTimeWindow,
    /// The request's source address is outside the allowed CIDRs.
    PolicyIp,
    /// The secret's per-day read cap is used up.
    PolicyDailyCap,
    /// The secret needs an approved co-sign request for this read.
    CosignRequired,
    /// The enrolling hostname does not match the token's regex.
    HostnameNotAllowed,
    /// The enrollment comes from outside the token's source CIDRs.
    SourceNotAllowed,
    /// A webhook URL resolves to an address the vault refuses to call.
    DestinationNotAllowed,
    /// An agent acted outside what an admin delegated to it.
    NotDelegated,
    /// The attestation names a cluster the vault does not know.
    UnknownCluster,
    /// No live enrollment policy of that name in the pod's namespace.
    UnknownPolicy,
    /// The projected service-account token has expired.
    AttestationExpired,
    /// The projected service-account token is not meant for this vault.
    AttestationAudience,
    /// The service-account token is not bound to a pod.
    AttestationNotPodBound,
    /// The pod the token is bound to no longer exists.
    AttestationPodGone,
    /// The pod of that name has another UID than the token is bound to.
    AttestationPodMismatch,
    /// The cluster's TokenReview did not authenticate the token.
    AttestationRejected,
    /// The cluster's TokenReview API could not be reached.
    AttestationUnavailable,
    /// The pod's service account may not enroll with this policy.
    ServiceAccountNotAllowed,
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
            Self::PolicyTimeWindow => "policy_time_window",
            Self::PolicyIp => "policy_ip",
            Self::PolicyDailyCap => "policy_daily_cap",
            Self::CosignRequired => "cosign_required",
            Self::HostnameNotAllowed => "hostname_not_allowed",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::DestinationNotAllowed => "destination_not_allowed",
            Self::NotDelegated => "not_delegated",
            Self::UnknownCluster => "unknown_cluster",
            Self::UnknownPolicy => "unknown_policy",
            Self::AttestationExpired => "attestation_expired",
            Self::AttestationAudience => "attestation_audience",
            Self::AttestationNotPodBound => "attestation_not_pod_bound",
            Self::AttestationPodGone => "attestation_pod_gone",
            Self::AttestationPodMismatch => "attestation_pod_mismatch",
            Self::AttestationRejected => "attestation_rejected",
            Self::AttestationUnavailable => "attestation_unavailable",
            Self::ServiceAccountNotAllowed => "service_account_not_allowed",
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
///
/// A machine outside Kubernetes (or a pod of a raw-token policy) presents an
/// enrollment `token`; a pod presents an `attestation` instead and leaves
/// `token` empty.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    #[serde(default)]
    pub token: String,
    pub public_key: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<Attestation>,
}

impl Drop for EnrollRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("public_key", &self.public_key)
            .field("hostname", &self.hostname)
            .field("attestation", &self.attestation)
            .finish_non_exhaustive()
    }
}

/// A pod's proof of who it is: a projected service-account token whose
/// audience names this vault, checked with the cluster's TokenReview API.
/// The namespace, service account, pod name and pod UID of the machine come
/// from the verified token, never from the request.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Attestation {
    /// The registered cluster the pod runs in.
    pub cluster: String,
    /// The enrollment policy (the `EnrollmentToken` object's name) in the
    /// pod's own namespace.
    pub policy: String,
    /// The projected service-account token (a JWT). Never logged or stored.
    pub service_account_token: String,
}

impl Drop for Attestation {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.service_account_token);
    }
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestation")
            .field("cluster", &self.cluster)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
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
    /// Why the project is locked (a canary was read), when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<String>,
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
    /// The access policy attached to the secret, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<AccessPolicy>,
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
    /// Optional restrictions on who may enroll and on the machines it makes.
    #[serde(default, skip_serializing_if = "TokenConstraints::is_empty")]
    pub constraints: TokenConstraints,
    /// Binds the token to one namespace of one registered cluster. Pods then
    /// enroll by attestation and no raw token exists, unless `raw_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesBinding>,
}

/// The Kubernetes side of an enrollment policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KubernetesBinding {
    /// A cluster registered with `POST /v1/clusters`.
    pub cluster: String,
    /// The only namespace whose pods may enroll.
    pub namespace: String,
    /// The name pods give in their attestation (the `EnrollmentToken`
    /// object's name).
    pub policy: String,
    /// Service accounts of that namespace allowed to enroll; empty allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Issue a raw bearer token instead (explicit opt-in): the vault can then
    /// check neither the pod nor its service account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_token: bool,
}

/// `POST /v1/enrollment-tokens/{id}/renew`: a raw token's successor. The
/// successor shares the remaining uses; the old token stays valid for
/// `grace_seconds` (at most its own expiry).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewToken {
    pub ttl_seconds: u64,
    #[serde(default)]
    pub grace_seconds: u64,
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
    #[serde(default, skip_serializing_if = "TokenConstraints::is_empty")]
    pub constraints: TokenConstraints,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesBinding>,
}

/// The answer to token creation: the only time the raw token is shown.
/// An attested policy has no raw token.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedToken {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
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
    /// Where the machine runs, for a machine bound to a cluster namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<MachineKubernetes>,
}

/// The Kubernetes identity of a machine. With `attested`, every field came
/// from a projected service-account token the cluster verified; without, only
/// `cluster` and `namespace` are known (from its raw token's binding).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineKubernetes {
    pub cluster: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    pub attested: bool,
}

/// A namespace of a registered cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NamespaceRef {
    pub cluster: String,
    pub namespace: String,
}

/// `POST /v1/delegations` (admins only): lets an agent hand out one secret
/// (optionally only some fields) to machines of one Kubernetes namespace, or
/// to machines outside Kubernetes when `kubernetes` is absent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDelegation {
    pub agent_id: String,
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<NamespaceRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationView {
    pub id: String,
    pub agent_id: String,
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// Absent: for machines outside Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<NamespaceRef>,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DelegationList {
    pub delegations: Vec<DelegationView>,
}

/// `POST /v1/clusters` (admins only): a cluster whose pods may enroll by
/// attestation. The vault calls its TokenReview API with `reviewer_token`,
/// or, when absent, with the token in the vault's `--kube-token-file` (its
/// own service account's, in the cluster). Either needs only
/// `system:auth-delegator`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterCluster {
    /// 1 to 63 characters of a-z, 0-9, '.', '_', '-'.
    pub name: String,
    /// `https://` URL of the kube-apiserver.
    pub api_url: String,
    /// PEM CA bundle that signs the apiserver's certificate.
    pub ca_pem: String,
    /// The audience pods' projected tokens must carry (default `signet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// A bearer token for TokenReview; sealed under the root key, never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer_token: Option<String>,
}

impl std::fmt::Debug for RegisterCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterCluster")
            .field("name", &self.name)
            .field("api_url", &self.api_url)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClusterView {
    pub name: String,
    pub api_url: String,
    pub audience: String,
    /// `token`: a registered reviewer token; `service-account`: the vault's own.
    pub reviewer: String,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ClusterList {
    pub clusters: Vec<ClusterView>,
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

/// A time-of-day window, evaluated in the enclosing policy's time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Allowed days: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`; empty is every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Opening time `HH:MM` (inclusive).
    pub start: String,
    /// Closing time `HH:MM` (exclusive); earlier than `start` spans midnight.
    pub end: String,
}

/// Restrictions on an enrollment token and the machines it enrolls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenConstraints {
    /// The enrolling hostname must match this regex (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_regex: Option<String>,
    /// Enrollment must come from one of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<String>,
    /// Machine name template: `{hostname}`, `{namespace}`, `{pod}`, `{token}`, `{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
    /// A temporary bootstrap token: single use, machine lifetime 1 h to 12 months.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrap: bool,
    /// Every later request of the enrolled machine must come from these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_ip_allowlist: Vec<String>,
    /// The enrolled machine may only make requests inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_window: Option<TimeWindow>,
    /// IANA time zone of `machine_window` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_timezone: Option<String>,
}

impl TokenConstraints {
    /// True when nothing is restricted (old tokens, old clients).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `PUT /v1/projects/{project}/secrets/{secret}/policy`: rules that each
/// read of the secret must pass, independently of one another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// IANA time zone of the window and of the daily cap's day (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    /// Reads must come from one of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// At most this many successful reads per calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_read_cap: Option<u32>,
    /// Each read needs a co-sign request approved by an admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cosign: bool,
    /// A canary: its first read locks the project and is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// A canary read also locks every project the reading machine can reach.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_cascade: bool,
}

/// `POST /v1/machines/{id}/extend`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExtendMachine {
    /// The machine expires this many seconds from now.
    pub lifetime_seconds: u64,
}

/// `POST /v1/projects/{project}/secrets/{secret}/rollback`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The older version that becomes live.
    pub version: u32,
}

/// `POST /v1/cosign` (an admin, naming the machine) or
/// `POST /v1/machine/cosign` (the machine itself, without `machine_id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCosign {
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CosignView {
    pub id: String,
    pub project: String,
    pub secret: String,
    pub machine_id: String,
    pub requested_by: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub consumed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CosignList {
    pub requests: Vec<CosignView>,
}

/// `POST /v1/webhooks`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL the events are posted to.
    pub url: String,
    /// `canary.tripped`, `machine.enrolled`, `policy.denied`, `rotation`.
    pub events: Vec<String>,
    /// Shared HMAC-SHA256 key (at least 16 characters); never shown again.
    pub secret: String,
}

impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    /// Deliveries waiting (or retrying), delivered, and given up.
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}
