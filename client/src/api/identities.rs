//! Machines, agents and admins; clusters and delegations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MachineList {
    pub machines: Vec<MachineView>,
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
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
    /// Set the access policy of secrets delegated to the agent whole, only
    /// to tighten it.
    Policies,
    /// Read and verify the audit log (it never holds a value).
    Audit,
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!("unknown scope {s:?} (metadata, tokens, grants, machines, policies, audit)")
        })
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
