//! Access rules: constraints, policies, lifecycle, co-sign, webhooks.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// A time-of-day window, evaluated in the enclosing policy's time zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Allowed days: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`; empty is every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// Opening time `HH:MM` (inclusive).
    pub start: String,
    /// Closing time `HH:MM` (exclusive); earlier than `start` spans midnight.
    pub end: String,
}

/// Restrictions on an enrollment token and the machines it enrolls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenConstraints {
    /// The enrolling hostname must match this regex (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname_regex: Option<String>,
    /// Enrollment must come from one of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidrs: Vec<String>,
    /// Machine name template: `{hostname}`, `{namespace}`, `{pod}`, `{token}`, `{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_template: Option<String>,
    /// A temporary bootstrap token: single use, machine lifetime 1 h to 12 months.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bootstrap: bool,
    /// Every later request of the enrolled machine must come from these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_ip_allowlist: Vec<String>,
    /// Every later request of the enrolled machine must come from an
    /// address in one of these countries (ISO 3166-1 alpha-2, upper case:
    /// `DE`, `FR`), as the vault's country database (`--geoip-db`) says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_country_allowlist: Vec<String>,
    /// The enrolled machine may only make requests inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_window: Option<TimeWindow>,
    /// IANA time zone of `machine_window` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_timezone: Option<String>,
}

impl TokenConstraints {
    /// True when nothing is restricted (old tokens, old clients).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `PUT /v1/projects/{project}/secrets/{secret}/policy`: rules that each
/// read of the secret must pass, independently of one another.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// IANA time zone of the window and of the daily cap's day (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    /// Reads must come from one of these CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    /// At most this many successful reads per calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_read_cap: Option<u32>,
    /// Each read needs a co-sign request approved by an admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cosign: bool,
    /// A canary: its first read locks the project and is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// A canary read also locks every project the reading machine can reach.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary_cascade: bool,
}

/// `POST /v1/machines/{id}/extend`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExtendMachine {
    /// The machine expires this many seconds from now.
    pub lifetime_seconds: u64,
}

/// `POST /v1/projects/{project}/secrets/{secret}/rollback`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The older version that becomes live.
    pub version: u32,
}

/// `POST /v1/cosign` (an admin, naming the machine) or
/// `POST /v1/machine/cosign` (the machine itself, without `machine_id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateCosign {
    pub project: String,
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CosignView {
    pub id: String,
    pub project: String,
    pub secret: String,
    pub machine_id: String,
    pub requested_by: String,
    pub created_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    pub consumed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CosignList {
    pub requests: Vec<CosignView>,
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/webhooks`
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL the events are posted to.
    pub url: String,
    /// `canary.tripped`, `machine.enrolled`, `policy.denied`, `rotation`.
    pub events: Vec<String>,
    /// Shared HMAC-SHA256 key (at least 16 characters); never shown again.
    pub secret: String,
}

impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
    /// Deliveries waiting (or retrying), delivered, and given up.
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    /// Where the next page starts (`?cursor=`); null on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}
