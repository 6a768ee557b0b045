//! Grants and enrollment tokens (or attested policies).

use serde::{Deserialize, Serialize};

use super::TokenConstraints;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}
