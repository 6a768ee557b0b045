use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a file name written into the secrets volume: no path
/// separators, and no leading dot so `.`/`..` and signet-init's own hidden
/// files (such as the readiness marker) can never be overwritten.
pub(crate) const FILE_NAME_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]*$";

/// Which secrets of an EnrollmentToken's project the pods enrolled through it
/// receive, and how they are written into the pod.
///
/// The operator turns this into grants on the enrollment token in the vault
/// (and on machines already enrolled through it); the admission webhook tells
/// `signet-init` which files to write. All SecretGrants naming the same
/// EnrollmentToken must agree on `mountPath`.
// Several printer columns share `type_`, which clippy mistakes for a
// repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "signet.dev",
    version = "v1alpha1",
    kind = "SecretGrant",
    namespaced,
    status = "SecretGrantStatus",
    shortname = "sgrant",
    category = "signet",
    doc = "Secrets that pods enrolled through an EnrollmentToken receive, and the files they are written to.",
    printcolumn(name = "Token", type_ = "string", json_path = ".spec.enrollmentToken"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecretGrantSpec {
    /// Name of the EnrollmentToken, in this namespace, the grant applies to.
    #[schemars(
        length(min = 1, max = 240),
        pattern("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub enrollment_token: String,

    /// Directory in every application container where the files appear. It is
    /// an in-memory volume, mounted read-only.
    #[serde(default = "default_mount_path")]
    #[schemars(length(max = 1024), pattern("^(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+$"))]
    pub mount_path: String,

    /// How often the sidecar checks for new secret versions, for example
    /// "5m". Unused in init mode.
    #[serde(default = "default_refresh")]
    #[schemars(pattern(crate::duration::PATTERN))]
    pub refresh: String,

    /// The secrets to write. File names (explicit or defaulted) must be
    /// unique.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(
        validation = Rule::new(
            "self.all(a, self.exists_one(b, (has(b.file) ? b.file : b.secret) == (has(a.file) ? a.file : a.secret)))"
        ).message("two secrets are written to the same file; set distinct `file` names")
    )]
    pub secrets: Vec<GrantedSecret>,
}

fn default_mount_path() -> String {
    "/var/run/secrets/signet".to_owned()
}

fn default_refresh() -> String {
    "5m".to_owned()
}

/// One secret of the token's project and the file it is written to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "has(self.file) || self.secret.matches('^[A-Za-z0-9_-][A-Za-z0-9._-]*$')"
).message("the secret name is not a valid file name; set `file`"))]
pub struct GrantedSecret {
    /// Name of the secret in the EnrollmentToken's project.
    #[schemars(length(min = 1, max = 253))]
    pub secret: String,

    /// For a structured secret, the fields to expose. All fields when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub fields: Vec<String>,

    /// File name under the mount path. Defaults to the secret name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), pattern(FILE_NAME_PATTERN))]
    pub file: Option<String>,

    /// How the secret is rendered into its file.
    #[serde(default)]
    pub format: FileFormat,
}

impl GrantedSecret {
    /// The file name under the mount path: `file`, or the secret name.
    pub fn file_name(&self) -> &str {
        self.file.as_deref().unwrap_or(&self.secret)
    }
}

/// How a secret is rendered into files; shared with `signet-init`, which
/// does the rendering (the type's doc comment is the CRD description).
pub use signet_init::contract::FileFormat;

/// Observed state of a SecretGrant, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretGrantStatus {
    /// Standard conditions; `Ready` is true when every secret resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Secrets granted on the enrollment token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved: Vec<String>,

    /// Secrets that could not be granted, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedSecret>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A secret of a SecretGrant that could not be granted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnresolvedSecret {
    /// Name of the secret.
    pub secret: String,
    /// Why it could not be granted, for example "NotFound".
    pub reason: String,
}
