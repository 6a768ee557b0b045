//! What every reconcile shares: the Kubernetes client, the vault, the event
//! recorder, counters, the clock and the retry bookkeeping.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Client, Resource,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::vault::VaultApi;

/// Name the controller reports events and applies objects as.
pub const MANAGER: &str = "signet-operator";

/// The current time; a parameter so tests can move it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Tunables of the reconcilers, and the cluster they work for.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Name of this cluster as registered in the vault: every policy the
    /// controller creates is bound to it, and only machines the vault
    /// attested in it are revoked when their pod is gone (several clusters
    /// may share one vault).
    pub cluster: String,
    /// How long a raw token stays valid after its renewal, so pods that
    /// read the Secret just before keep enrolling while the kubelet updates
    /// the mounted file (about a minute).
    pub renewal_grace: Duration,
    /// Re-check period of a healthy object (token uses, vault-side drift).
    pub resync: Duration,
    /// Retry period while something outside the spec is missing (a secret
    /// not created yet, a token not ready yet).
    pub waiting_retry: Duration,
    /// Period of the sweep that revokes machines whose pod is gone.
    pub sweep_interval: Duration,
    /// Period of the check that rolls out workloads with
    /// `signet.dev/reload: restart` after a secret changed.
    pub reload_interval: Duration,
    /// First error backoff; doubled at each consecutive failure.
    pub backoff_base: Duration,
    /// Longest error backoff.
    pub backoff_max: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cluster: signet_init::contract::DEFAULT_CLUSTER.to_owned(),
            renewal_grace: Duration::from_secs(600),
            resync: Duration::from_secs(300),
            waiting_retry: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(300),
            reload_interval: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Counters of the controller's work.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that failed.
    pub failures: AtomicU64,
    /// Machines revoked because their pod is gone.
    pub machines_revoked: AtomicU64,
    /// Workloads rolled out for new secret versions.
    pub restarts: AtomicU64,
}

/// State shared by every reconcile.
pub struct Context<V> {
    /// Kubernetes client.
    pub client: Client,
    /// The vault, as the agent identity.
    pub vault: V,
    /// Publishes events on the custom resources.
    pub recorder: Recorder,
    /// Work counters.
    pub metrics: Metrics,
    /// The clock.
    pub clock: Clock,
    /// Tunables.
    pub settings: Settings,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl<V: VaultApi> Context<V> {
    /// A context with the system clock.
    pub fn new(client: Client, vault: V, settings: Settings) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Self {
            client,
            vault,
            recorder,
            metrics: Metrics::default(),
            clock: Arc::new(Timestamp::now),
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the clock (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// Publishes an event on `object`; failures are logged, never fatal.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }

    /// Records a success of `key`, resetting its backoff.
    pub fn succeeded(&self, key: &str) {
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Records a failure of `key` and returns how long to wait before the
    /// next attempt: `backoff_base * 2^(n-1)`, capped at `backoff_max`.
    pub fn failed(&self, key: &str) -> Duration {
        self.metrics.reconciles.fetch_add(1, Ordering::Relaxed);
        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        let attempt = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key.to_owned()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        backoff(&self.settings, attempt)
    }
}

/// Delay before retry number `attempt` (1-based).
pub fn backoff(settings: &Settings, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1).min(20))
        .unwrap_or(u32::MAX);
    settings
        .backoff_base
        .saturating_mul(factor)
        .min(settings.backoff_max)
}

/// A `Ready` condition, transition time now.
pub fn ready_condition(
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: crate::crd::READY_CONDITION.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Keeps the previous transition time when the condition's status did not
/// change, so `lastTransitionTime` means what it says.
pub fn merge_condition(previous: &[Condition], mut next: Condition) -> Vec<Condition> {
    if let Some(old) = previous.iter().find(|c| c.type_ == next.type_)
        && old.status == next.status
    {
        next.last_transition_time = old.last_transition_time.clone();
    }
    let mut merged: Vec<Condition> = previous
        .iter()
        .filter(|c| c.type_ != next.type_)
        .cloned()
        .collect();
    merged.push(next);
    merged
}

impl<V> Context<V> {
    /// Writes the status of `K` named `name` with server-side apply, unless
    /// nothing changed since `previous`.
    pub async fn apply_status<K, S>(
        &self,
        namespace: &str,
        name: &str,
        previous: &S,
        status: &S,
    ) -> Result<(), kube::Error>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        S: serde::Serialize + PartialEq,
    {
        if previous == status {
            return Ok(());
        }
        let api: kube::Api<K> = kube::Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "status": status,
        });
        api.patch_status(
            name,
            &kube::api::PatchParams::apply(MANAGER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let settings = Settings::default();
        assert_eq!(backoff(&settings, 1), Duration::from_secs(1));
        assert_eq!(backoff(&settings, 2), Duration::from_secs(2));
        assert_eq!(backoff(&settings, 4), Duration::from_secs(8));
        assert_eq!(backoff(&settings, 30), Duration::from_secs(300));
        assert_eq!(backoff(&settings, u32::MAX), Duration::from_secs(300));
    }
}
