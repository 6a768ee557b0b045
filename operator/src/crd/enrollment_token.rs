use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Key, inside the token Secret, of the raw enrollment token.
pub const TOKEN_SECRET_KEY: &str = "token";

/// Name of the Secret holding the raw token of the EnrollmentToken `name`
/// (only with `rawToken: true`).
///
/// The webhook mounts this Secret into `signet-init` and the controller
/// writes it; both derive the name here so they cannot disagree.
pub fn token_secret_name(name: &str) -> String {
    format!("signet-token-{name}")
}

/// An enrollment policy in the Signet vault for the pods of this namespace,
/// managed by the operator.
///
/// By default it is a policy, not a credential: pods that name this resource
/// in the `signet.dev/enrollment-token` annotation prove who they are with a
/// projected service-account token, which the vault checks with the
/// cluster's TokenReview API, taking the namespace, service account and pod
/// from it. No raw token and no Secret exist. The operator creates the
/// policy in the vault (within what the vault's admin delegated to it for
/// this namespace), renews it before it expires and revokes it when this
/// resource is deleted.
///
/// With `rawToken: true` the vault issues a raw bearer token instead, which
/// the operator keeps in the Secret `signet-token-<name>` (owned by this
/// resource); anyone who can read that Secret can enroll.
// Several printer columns share `type_`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "EnrollmentToken",
    namespaced,
    status = "EnrollmentTokenStatus",
    shortname = "enrolltoken",
    category = "signet",
    doc = "An enrollment policy in the Signet vault: pods of this namespace enroll under it as short-lived machines, by attestation unless rawToken is set.",
    printcolumn(name = "Project", type_ = "string", json_path = ".spec.project"),
    printcolumn(name = "Raw", type_ = "boolean", json_path = ".spec.rawToken", priority = 1),
    printcolumn(name = "Uses", type_ = "integer", json_path = ".status.uses"),
    printcolumn(name = "Max Uses", type_ = "integer", json_path = ".spec.maxUses"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Expires", type_ = "date", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // A raw token's Secret is named `signet-token-<name>` and must itself be
    // a valid Secret name (253 characters at most).
    validation = Rule::new("size(self.metadata.name) <= 240")
        .message("metadata.name must be at most 240 characters (a raw token's Secret adds a 13-character prefix)")
)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentTokenSpec {
    /// Vault project the policy enrolls machines into.
    #[schemars(length(min = 1, max = 253))]
    pub project: String,

    /// How many machines may enroll under the policy, across its renewals;
    /// unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_uses: Option<u32>,

    /// How long the policy (or raw token) is valid in the vault, for example
    /// "24h". The operator renews it before it expires; a renewal keeps the
    /// uses already spent.
    #[serde(default = "default_token_ttl")]
    #[schemars(pattern(crate::duration::PATTERN))]
    pub token_ttl: String,

    /// How long a machine enrolled with the token lives before the vault
    /// expires it, for example "24h". Machines are also revoked when their
    /// pod goes away; this is the backstop.
    #[serde(default = "default_machine_lifetime")]
    #[schemars(pattern(crate::duration::PATTERN))]
    pub machine_lifetime: String,

    /// Template for the names of enrolled machines. `{namespace}` and `{pod}`
    /// are replaced by the pod's namespace and name, for example
    /// "{namespace}-{pod}".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name_template: Option<String>,

    /// Service accounts (in this namespace) whose pods may enroll. Any
    /// service account when empty. The vault enforces it on the verified
    /// service-account token; the admission webhook refuses other pods early.
    /// A raw token cannot be checked this way: anyone holding it enrolls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 253),
            pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )
    )]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub allowed_service_accounts: Vec<String>,

    /// Regular expression the enrolling pod's hostname must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub hostname_regex: Option<String>,

    /// CIDR ranges the enrolling pod's address must fall in, for example
    /// "10.42.0.0/16". Any address when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // Bounded so the apiserver's CEL cost estimate stays within budget; 43 is
    // the longest IPv6 CIDR.
    #[schemars(length(max = 32), inner(length(min = 1, max = 43)))]
    #[x_kube(
        merge_strategy = ListMerge::Set,
        validation = Rule::new("self.all(c, isCIDR(c))").message("every entry must be a CIDR such as 10.0.0.0/8")
    )]
    pub source_cidrs: Vec<String>,

    /// Explicit opt-in to a raw bearer token instead of attestation. The
    /// operator then writes the token into the Secret `signet-token-<name>`
    /// in this namespace, and anyone who can read that Secret can enroll
    /// machines as these pods, from anywhere, until it is renewed. Prefer
    /// attestation (the default); use this only for pods that cannot mount a
    /// projected service-account token, or where the vault cannot reach
    /// the cluster's TokenReview API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw_token: bool,
}

fn default_token_ttl() -> String {
    "24h".to_owned()
}

fn default_machine_lifetime() -> String {
    "24h".to_owned()
}

/// Observed state of an EnrollmentToken, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentTokenStatus {
    /// Standard conditions; `Ready` is true once the policy is live in the
    /// vault (and, with `rawToken`, its Secret is written). Reason
    /// `NotDelegated` means the vault's admin has not delegated a secret or
    /// field (or this namespace at all) to the operator; the message names
    /// it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Identifier of the current policy (or raw token) in the vault, for
    /// people and `signet` commands. Information only: the operator finds
    /// its vault objects by this resource's UID, never by this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,

    /// With `rawToken`: name of the Secret (in this namespace) holding the raw
    /// token under the key "token".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,

    /// How many machines have enrolled under the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,

    /// When the current policy (or raw token) expires in the vault; the
    /// operator renews it before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
