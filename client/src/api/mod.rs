//! The JSON shapes of the vault's HTTP API, shared by the vault (which
//! serves them) and every client (which sends and reads them).

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
    /// The request's source address is in no country of the machine's
    /// country allowlist (or its country is unknown).
    PolicyCountry,
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
    /// The request's body did not arrive in time.
    RequestTimeout,
    /// The vault is at its limit of requests in flight; retry after the
    /// `Retry-After` header's seconds.
    Overloaded,
    /// The machine (or the vault) already has as many requests waiting on
    /// `GET /v1/machine/changes` as it allows; retry after `Retry-After`
    /// seconds, or poll.
    TooManyWaiting,
    /// The request's source has had too many requests denied before their
    /// signature verified; retry after `Retry-After` seconds. A request
    /// signed by a key the vault already knows is still served.
    RateLimited,
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
            Self::PolicyCountry => "policy_country",
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
            Self::RequestTimeout => "request_timeout",
            Self::Overloaded => "overloaded",
            Self::TooManyWaiting => "too_many_waiting",
            Self::RateLimited => "rate_limited",
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

/// Items on a page of a list route when `?limit=` is absent.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Most items a list route answers on one page (`?limit=` up to this).
pub const LIST_LIMIT_MAX: u32 = 1000;

mod access;
mod audit;
mod enroll;
mod identities;
mod rotation;
mod secrets;
mod tokens;

pub use access::*;
pub use audit::*;
pub use enroll::*;
pub use identities::*;
pub use rotation::*;
pub use secrets::*;
pub use tokens::*;
