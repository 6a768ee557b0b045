//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use signet_client::api::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    outcome: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// The vault's counters.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    unverified: Family<CodeLabels, Counter>,
    unverified_overflow: Counter,
    unverified_rows: Counter,
    overloaded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("signet");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Signed requests decided, by action, outcome and error code",
            decisions.clone(),
        );
        let unverified = Family::<CodeLabels, Counter>::default();
        registry.register(
            "unverified_denials",
            "Requests denied before their signature verified, by error code (audited in groups)",
            unverified.clone(),
        );
        let unverified_overflow = Counter::default();
        registry.register(
            "unverified_denials_overflow",
            "Unverified denials counted in the overflow group: more groups than one interval keeps",
            unverified_overflow.clone(),
        );
        let unverified_rows = Counter::default();
        registry.register(
            "unverified_denial_rows",
            "Audit rows written for groups of unverified denials",
            unverified_rows.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "overloaded",
            "Requests answered 503 because the limit of requests in flight was reached",
            overloaded.clone(),
        );
        Self {
            registry,
            decisions,
            unverified,
            unverified_overflow,
            unverified_rows,
            overloaded,
        }
    }
}

impl Metrics {
    /// Counts one decision.
    pub fn decision(&self, action: &str, outcome: &str, code: Option<ErrorCode>) {
        self.decisions
            .get_or_create(&DecisionLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
                code: code.map_or("", ErrorCode::as_str).to_owned(),
            })
            .inc();
    }

    /// Counts one request denied before its signature verified.
    pub fn unverified_denial(&self, code: ErrorCode, overflow: bool) {
        self.unverified
            .get_or_create(&CodeLabels {
                code: code.as_str().to_owned(),
            })
            .inc();
        if overflow {
            self.unverified_overflow.inc();
        }
    }

    /// Counts audit rows written for groups of unverified denials.
    pub fn unverified_rows(&self, rows: u64) {
        self.unverified_rows.inc_by(rows);
    }

    /// Counts one request refused for the limit of requests in flight.
    pub fn overloaded(&self) {
        self.overloaded.inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
