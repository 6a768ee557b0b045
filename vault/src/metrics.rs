//! Prometheus metrics, served at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use signet_client::api::ErrorCode;

use crate::writer::Stats;

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
    connections_refused: Counter,
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
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed when accepted: their source was over its budget of unverified denials and held as many connections as it may",
            connections_refused.clone(),
        );
        Self {
            registry,
            decisions,
            unverified,
            unverified_overflow,
            unverified_rows,
            overloaded,
            connections_refused,
        }
    }
}

impl Metrics {
    /// Also serves the writer's counters (group commit and reads looked up
    /// ahead), read at each scrape.
    pub fn with_writer(mut self, stats: Arc<Stats>) -> Self {
        self.registry
            .register_collector(Box::new(WriterCollector(stats)));
        self
    }

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

    /// Counts one connection refused for the budget; `overflow` as for
    /// [`Metrics::unverified_denial`].
    pub fn connection_refused(&self, overflow: bool) {
        self.connections_refused.inc();
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

/// The writer's [`Stats`], as counters (and the queue as a gauge).
#[derive(Debug)]
struct WriterCollector(Arc<Stats>);

impl Collector for WriterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = &self.0;
        let counters: [(&str, &str, &AtomicU64); 8] = [
            (
                "writer_batches",
                "Batches (transactions) the writer committed or rolled back",
                &stats.batches,
            ),
            (
                "writer_requests",
                "Signed requests run in the writer's batches",
                &stats.requests,
            ),
            (
                "writer_reads_ahead",
                "Secret reads committed as looked up ahead of the writer (only their nonce and audit row written in the batch)",
                &stats.reads_ahead,
            ),
            (
                "writer_reads_rechecked",
                "Secret reads looked up ahead and decided again in the batch, because a change ran in between",
                &stats.reads_rechecked,
            ),
            (
                "writer_busy_nanoseconds",
                "Time the writer spent running and committing batches",
                &stats.busy_nanos,
            ),
            (
                "writer_commit_nanoseconds",
                "Of the writer's busy time, the time in commits",
                &stats.commit_nanos,
            ),
            (
                "writer_syncs",
                "Syncs of the store to disk, each covering every batch committed before it",
                &stats.syncs,
            ),
            (
                "writer_sync_nanoseconds",
                "Time the syncer spent syncing the store to disk (while the writer runs the next batch)",
                &stats.sync_nanos,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        let queued = ConstGauge::new(
            i64::try_from(stats.queued.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
        );
        let metric = encoder.encode_descriptor(
            "writer_queued",
            "Signed requests waiting for the writer's next batch",
            None,
            queued.metric_type(),
        )?;
        queued.encode(metric)
    }
}
