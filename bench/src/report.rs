//! One run's figures: a table line for people, one JSON object for scripts.

use std::fmt;

use serde::Serialize;

use crate::load::{Outcome, Plan};

/// The figures of one load run. For an enrollment run (`operation`
/// `enroll`) the `reads` fields count enrollments.
#[derive(Debug, Serialize)]
pub struct Report {
    pub target: &'static str,
    /// `read` or `enroll`.
    pub operation: &'static str,
    pub clients: u32,
    pub identities: u32,
    pub threads: u32,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Successful reads that completed in the measured window.
    pub reads: u64,
    pub reads_per_s: f64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// Non-200 answers and transport failures in the measured window.
    pub errors: u64,
    pub warmup_errors: u64,
    pub warmup_reads: u64,
    pub error_samples: Vec<String>,
    /// CPU time of the generator itself in the window, in cores (CPU
    /// seconds per second) and per successful read.
    pub generator_cpu_s: Option<f64>,
    pub generator_cores: Option<f64>,
    pub generator_cpu_us_per_read: Option<f64>,
    /// The same for the server process, when `--server-pid` was given.
    pub server_cpu_s: Option<f64>,
    pub server_cores: Option<f64>,
    pub server_cpu_us_per_read: Option<f64>,
    /// Data added before measuring (Signet's `--extra-secrets` and
    /// `--extra-machines`) and how long the whole setup took.
    pub extra_secrets: u32,
    pub extra_machines: u32,
    pub setup_s: Option<f64>,
}

/// Who ran and how, besides the outcome.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub target: &'static str,
    pub operation: &'static str,
    pub clients: u32,
    pub identities: u32,
    pub threads: u32,
    pub plan: Plan,
    pub extra_secrets: u32,
    pub extra_machines: u32,
    pub setup_s: Option<f64>,
}

impl Report {
    pub fn new(run: Run, outcome: &Outcome) -> Self {
        let latencies = &outcome.latencies_ns;
        let reads = latencies.len() as u64;
        let duration_s = run.plan.duration.as_secs_f64();
        let window_s = outcome.window.as_secs_f64();
        let cores = |cpu: Option<f64>| cpu.filter(|_| window_s > 0.0).map(|c| c / window_s);
        let per_read = |cpu: Option<f64>| {
            cpu.filter(|_| reads > 0)
                .map(|c| c * 1e6 / reads as f64 * duration_s / window_s.max(f64::EPSILON))
        };
        let mean_ms = (reads > 0).then(|| {
            let total: u128 = latencies.iter().map(|&ns| u128::from(ns)).sum();
            total as f64 / reads as f64 / 1e6
        });
        Self {
            target: run.target,
            operation: run.operation,
            clients: run.clients,
            identities: run.identities,
            threads: run.threads,
            warmup_s: run.plan.warmup.as_secs_f64(),
            duration_s,
            reads,
            reads_per_s: if duration_s > 0.0 {
                reads as f64 / duration_s
            } else {
                0.0
            },
            p50_ms: percentile(latencies, 0.50).map(ms),
            p90_ms: percentile(latencies, 0.90).map(ms),
            p99_ms: percentile(latencies, 0.99).map(ms),
            max_ms: latencies.last().copied().map(ms),
            mean_ms,
            errors: outcome.errors,
            warmup_errors: outcome.warmup_errors,
            warmup_reads: outcome.warmup_reads,
            error_samples: outcome.error_samples.clone(),
            generator_cpu_s: outcome.generator_cpu,
            generator_cores: cores(outcome.generator_cpu),
            generator_cpu_us_per_read: per_read(outcome.generator_cpu),
            server_cpu_s: outcome.server_cpu,
            server_cores: cores(outcome.server_cpu),
            server_cpu_us_per_read: per_read(outcome.server_cpu),
            extra_secrets: run.extra_secrets,
            extra_machines: run.extra_machines,
            setup_s: run.setup_s,
        }
    }

    /// Any refused or failed request, warm-up included.
    pub fn failed(&self) -> bool {
        self.errors + self.warmup_errors > 0 || self.reads == 0
    }
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
        let (target, rate) = match self.operation {
            "enroll" => ("enroll", "enrollments/s"),
            _ => (self.target, "reads/s"),
        };
        write!(
            f,
            "{:<8} clients {:>3}  ids {:>3}  {:>9.1} {rate}  p50 {}  p99 {}  errors {} (warm-up {})",
            target,
            self.clients,
            self.identities,
            self.reads_per_s,
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.errors,
            self.warmup_errors,
        )?;
        let unit = if self.operation == "enroll" {
            "enrollment"
        } else {
            "read"
        };
        for (who, cores, per_read) in [
            (
                "generator",
                self.generator_cores,
                self.generator_cpu_us_per_read,
            ),
            ("server", self.server_cores, self.server_cpu_us_per_read),
        ] {
            if let Some(cores) = cores {
                write!(f, "  {who} {cores:.2} cores")?;
                if let Some(us) = per_read {
                    write!(f, " ({us:.0} µs/{unit})")?;
                }
            }
        }
        if self.extra_secrets > 0 || self.extra_machines > 0 {
            write!(
                f,
                "  extra: {} secrets, {} machines",
                self.extra_secrets, self.extra_machines
            )?;
        }
        if let Some(setup) = self.setup_s {
            write!(f, "  setup {setup:.1} s")?;
        }
        for sample in &self.error_samples {
            write!(f, "\n  error: {sample}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.50), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn rates_and_cpu_are_per_window() {
        let plan = Plan {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            server_pid: None,
        };
        let outcome = Outcome {
            latencies_ns: vec![1_000_000; 1000],
            window: Duration::from_secs(2),
            generator_cpu: Some(0.5),
            ..Outcome::default()
        };
        let run = Run {
            target: "signet",
            operation: "read",
            clients: 4,
            identities: 4,
            threads: 2,
            plan,
            extra_secrets: 0,
            extra_machines: 0,
            setup_s: None,
        };
        let report = Report::new(run, &outcome);
        assert_eq!(report.reads_per_s, 500.0);
        assert_eq!(report.p50_ms, Some(1.0));
        assert_eq!(report.generator_cores, Some(0.25));
        assert_eq!(report.generator_cpu_us_per_read, Some(500.0));
        assert_eq!(report.server_cores, None);
        assert!(!report.failed());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["target"], "signet");
        assert_eq!(json["reads"], 1000);
    }
}
