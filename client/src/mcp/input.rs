//! What the tools take: closed structs (`deny_unknown_fields`, so
//! `additionalProperties: false`), and names and ids checked by pattern
//! before they reach a URL path or query.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::output::Policy;

macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $pattern:literal, $max:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            const PATTERN: &'static str = $pattern;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                static PATTERN: LazyLock<Option<Regex>> =
                    LazyLock::new(|| Regex::new($name::PATTERN).ok());
                // The patterns are fixed and valid; were one not, it would
                // refuse everything, never let anything through.
                let ok = text.len() <= $max
                    && PATTERN.as_ref().is_some_and(|p| p.is_match(&text));
                if ok {
                    Ok(Self(text))
                } else {
                    Err(format!(
                        concat!("not a valid ", $what, " (expected {} of at most {} characters)"),
                        Self::PATTERN,
                        $max
                    ))
                }
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "maxLength": $max,
                    "description": $what,
                })
            }
        }
    };
}

checked_string!(
    /// A project, secret, cluster or policy name, as the vault accepts them.
    Name,
    "^[a-z0-9][a-z0-9._-]{0,62}$",
    63,
    "name (a-z, 0-9, '.', '_', '-')"
);
checked_string!(
    /// A field name of a structured secret (the name, never its value).
    FieldName,
    "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$",
    128,
    "field name"
);
checked_string!(
    /// An id the vault issued (`m_…`, `et_…`, `g_…`).
    Id,
    "^[a-z]{1,3}[_][A-Za-z0-9]{1,60}$",
    64,
    "vault id"
);
checked_string!(
    /// A Kubernetes namespace (a DNS label).
    Namespace,
    "^[a-z0-9][a-z0-9-]{0,62}$",
    63,
    "Kubernetes namespace"
);
checked_string!(
    /// A Kubernetes service account name.
    ServiceAccount,
    "^[a-z0-9][a-z0-9.-]{0,252}$",
    253,
    "Kubernetes service account name"
);

/// No arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArguments {}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectArgument {
    /// The project whose secrets to list.
    pub project: Name,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantFilter {
    /// Only the grants of this machine.
    #[serde(default)]
    pub machine_id: Option<Id>,
    /// Only the grants of this enrollment token or policy.
    #[serde(default)]
    pub token_id: Option<Id>,
}

/// A secret (optionally only some of its fields) that every pod enrolled
/// by the policy may read.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretGrant {
    pub secret: Name,
    /// Only these fields of a structured secret; absent for the whole secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<FieldName>>,
}

/// An attested enrollment policy for the pods of one Kubernetes namespace.
/// There is no raw token to hand out: pods prove who they are with their
/// projected service-account token.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    pub project: Name,
    /// A registered cluster.
    pub cluster: Name,
    /// The only namespace whose pods may enroll.
    pub namespace: Namespace,
    /// The name pods give when they enroll (the EnrollmentToken object's name).
    pub policy: Name,
    /// Service accounts of the namespace allowed to enroll; empty allows any.
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccount>,
    /// Secrets every enrolled pod may read: each must be delegated to this agent.
    #[serde(default)]
    pub grants: Vec<SecretGrant>,
    /// How many pods may enroll; absent is unlimited until expiry.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// How long the policy accepts enrollments (default 3600).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// How long an enrolled pod's machine lives (default 86400).
    #[serde(default)]
    pub machine_lifetime_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddGrant {
    /// The machine to grant to (exactly one of `machine_id`, `token_id`).
    #[serde(default)]
    pub machine_id: Option<Id>,
    /// The enrollment token or policy to grant to.
    #[serde(default)]
    pub token_id: Option<Id>,
    pub project: Name,
    pub secret: Name,
    /// Only these fields; absent for the whole secret.
    #[serde(default)]
    pub fields: Option<Vec<FieldName>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveGrant {
    /// The grant's id (`g_…`).
    pub id: Id,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPolicy {
    pub project: Name,
    pub secret: Name,
    /// The whole policy; an empty object removes it.
    pub policy: Policy,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadAudit {
    /// Entries after this sequence number (0, the default, is the start).
    #[serde(default)]
    pub after: u64,
    /// At most this many entries (1 to 500, default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only `allow` or only `deny` entries of the page.
    #[serde(default)]
    pub outcome: Option<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainDenial {
    /// The audit entry to explain. Absent: the vault's refusals of this
    /// session's own tool calls, newest first.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// The names as the API takes them.
pub fn field_names(fields: Option<Vec<FieldName>>) -> Option<Vec<String>> {
    fields.map(|f| f.into_iter().map(String::from).collect())
}
