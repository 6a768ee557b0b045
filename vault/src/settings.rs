//! The vault's tunables: the wire pipeline's ([`Config`]) and the access
//! rules' ([`Settings`]).

/// Tunables of the pipeline.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest accepted `|now - Signet-Timestamp|`, in seconds.
    pub skew_seconds: i64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            skew_seconds: 30,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Settings of the access rules that are not part of the wire pipeline.
/// Kept apart from [`Config`] so code that builds a `Config` by hand keeps
/// compiling; set with [`Vault::with_settings`].
#[derive(Clone, Debug)]
pub struct Settings {
    /// Audit entries older than this many days are pruned by
    /// [`Vault::sweep`]; `None` keeps everything.
    pub audit_retention_days: Option<u32>,
    /// Webhook destinations allowed even though they are loopback, private,
    /// link-local or otherwise refused by default.
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Timeout of one webhook delivery attempt.
    pub webhook_timeout: std::time::Duration,
    /// TokenReview bearer token of clusters registered without their own.
    pub kube_token_file: std::path::PathBuf,
    /// Timeout of one TokenReview call.
    pub attestation_timeout: std::time::Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            audit_retention_days: None,
            webhook_allow: Vec::new(),
            webhook_timeout: std::time::Duration::from_secs(10),
            kube_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            attestation_timeout: std::time::Duration::from_secs(5),
        }
    }
}
