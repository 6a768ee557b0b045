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

/// The vault's counters.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
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
        Self {
            registry,
            decisions,
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

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
