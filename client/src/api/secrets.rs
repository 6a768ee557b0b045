//! Projects, secrets and their versions: values only ever flow to machines.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::AccessPolicy;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
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
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}
