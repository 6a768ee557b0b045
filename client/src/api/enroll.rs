//! Enrollment (raw token or a pod's attestation) and what a machine may read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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

/// The answer of `GET /v1/machine/changes`: what the machine may read with
/// the live versions, and an opaque token naming exactly that list. Names,
/// fields and versions only: never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChangeList {
    /// Pass it back as `since` to wait for the next change. Opaque: a
    /// client compares it for equality only.
    pub token: String,
    pub grants: Vec<GrantView>,
}
