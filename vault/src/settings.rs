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
    /// How often a signed checkpoint of the audit chain's head is published
    /// while the head moves (also on shutdown and on demand); `None`
    /// publishes only those two.
    pub audit_checkpoint_every: Option<std::time::Duration>,
    /// Webhook destinations allowed even though they are loopback, private,
    /// link-local or otherwise refused by default.
    pub webhook_allow: Vec<ipnet::IpNet>,
    /// Timeout of one webhook delivery attempt.
    pub webhook_timeout: std::time::Duration,
    /// TokenReview bearer token of clusters registered without their own.
    pub kube_token_file: std::path::PathBuf,
    /// Timeout of one TokenReview call.
    pub attestation_timeout: std::time::Duration,
    /// How webhook destinations are resolved: bounded in number and time.
    pub lookups: crate::dns::Lookups,
    /// Webhook deliveries attempted at once.
    pub webhook_concurrency: usize,
    /// Delivered or failed webhook deliveries, and used or expired co-sign
    /// requests, are pruned this many days after they finished.
    pub history_retention_days: u32,
    /// Denials of unverified requests are written as counted groups once
    /// per this interval (see [`crate::denials`]).
    pub denial_flush_interval: std::time::Duration,
    /// Most groups of unverified denials kept per interval; the rest are
    /// counted in one overflow group.
    pub denial_groups_max: usize,
    /// Limits of the HTTP server.
    pub limits: Limits,
    /// The country database of `--geoip-db`; without one, country
    /// allowlists are refused when a token is created, and a machine that
    /// carries one is refused (fail closed).
    pub countries: Option<std::sync::Arc<crate::geoip::Countries>>,
}

/// What one client may hold of the HTTP server.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for a client to send a request's headers (HTTP/1); also how
    /// long an HTTP/1 connection may wait for its next request.
    pub header_read_timeout: std::time::Duration,
    /// Time for a client to send a request's body.
    pub body_timeout: std::time::Duration,
    /// A connection with no request in flight and no bytes read or written
    /// for this long is closed.
    pub idle_timeout: std::time::Duration,
    /// Requests handled at once; one more is answered `503` with
    /// `Retry-After`.
    pub max_in_flight: usize,
    /// The `Retry-After` of that answer, in seconds.
    pub retry_after_seconds: u32,
    /// Requests one machine may have waiting on `GET /v1/machine/changes`.
    pub waiting_per_machine: usize,
    /// Requests all machines together may have waiting there; each holds
    /// one of `max_in_flight`, so this stays well below it.
    pub waiting_max: usize,
    /// What one source may have denied before a signature verified (see
    /// [`crate::budget`]).
    pub unverified: crate::budget::BudgetLimits,
    /// How long a refusal for that budget is held before it is answered
    /// (see [`crate::http::limit`]); zero answers at once.
    pub unverified_tarpit: std::time::Duration,
    /// Connections a source over that budget may hold; more are closed
    /// when accepted (see [`crate::connections`]); 0: no cap.
    pub unverified_connections_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
            idle_timeout: std::time::Duration::from_secs(60),
            max_in_flight: 1024,
            retry_after_seconds: 1,
            waiting_per_machine: 2,
            waiting_max: 256,
            unverified: crate::budget::BudgetLimits::default(),
            unverified_tarpit: std::time::Duration::from_secs(1),
            unverified_connections_max: 32,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            audit_retention_days: None,
            audit_checkpoint_every: Some(std::time::Duration::from_secs(60)),
            webhook_allow: Vec::new(),
            webhook_timeout: std::time::Duration::from_secs(10),
            kube_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            attestation_timeout: std::time::Duration::from_secs(5),
            lookups: crate::dns::Lookups::default(),
            webhook_concurrency: 8,
            history_retention_days: 30,
            denial_flush_interval: std::time::Duration::from_secs(10),
            denial_groups_max: 1000,
            limits: Limits::default(),
            countries: None,
        }
    }
}
