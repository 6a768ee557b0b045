//! Revoking the vault machines of pods that are gone, without finalizers on
//! pods (a finalizer would make every injected pod's deletion depend on the
//! operator being up).
//!
//! Two paths: a watch of injected pods revokes a pod's machine when the pod
//! is deleted, and a periodic [`sweep`] revokes every live machine whose
//! `k8s.pod.uid` names a pod that no longer exists, covering events missed
//! while the operator was down. `signet-init` enrolls with the metadata keys
//! [`META_POD_UID`], [`META_POD_NAME`] and [`META_NAMESPACE`].
//!
//! The sweep assumes the vault's pod-bound machines come from this cluster;
//! clusters sharing one vault would need distinct agent identities scoped to
//! their own machines.

use std::collections::HashSet;

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt as _,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, watcher},
};

use super::{
    Error,
    context::Context,
    vault::{VaultApi, is_not_found},
};
use crate::webhook::mutate::{INJECT_LABEL, INJECTED_ANNOTATION};

/// Machine metadata key: UID of the pod the machine runs in.
pub const META_POD_UID: &str = "k8s.pod.uid";
/// Machine metadata key: name of that pod.
pub const META_POD_NAME: &str = "k8s.pod.name";
/// Machine metadata key: namespace of that pod.
pub const META_NAMESPACE: &str = "k8s.namespace";

/// Label selector of the pods the webhook handles.
fn selector() -> String {
    format!("{INJECT_LABEL}=true")
}

/// Whether the webhook injected `signet-init` into this pod.
fn injected(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.get(INJECTED_ANNOTATION).map(String::as_str) == Some("true")
}

/// Revokes every live machine bound to pod `uid`; returns how many.
pub async fn revoke_pod_machines<V: VaultApi>(vault: &V, uid: &str) -> Result<usize, Error> {
    let machines = vault.machines().await?;
    let mut revoked = 0;
    for machine in machines
        .iter()
        .filter(|m| !m.disabled && m.metadata.get(META_POD_UID).map(String::as_str) == Some(uid))
    {
        match vault.revoke_machine(&machine.id).await {
            Ok(()) => revoked += 1,
            Err(error) if is_not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
        tracing::info!(machine = %machine.id, pod_uid = uid, "revoked the machine of a deleted pod");
    }
    Ok(revoked)
}

/// One pass: revokes every live machine whose pod no longer exists. Returns
/// the ids revoked.
///
/// Machines are listed before pods, so a machine's pod (which existed before
/// the machine enrolled) is in the pod list unless it is gone. A pod missing
/// from the label-filtered list is looked up by name before its machine is
/// revoked, in case its labels changed.
pub async fn sweep<V: VaultApi>(ctx: &Context<V>) -> Result<Vec<String>, Error> {
    let machines = ctx.vault.machines().await?;
    let candidates: Vec<_> = machines
        .iter()
        .filter(|m| !m.disabled && m.metadata.contains_key(META_POD_UID))
        .collect();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let live: HashSet<String> = pods
        .list_metadata(&ListParams::default().labels(&selector()))
        .await?
        .items
        .iter()
        .filter_map(|pod| pod.metadata.uid.clone())
        .collect();

    let mut revoked = Vec::new();
    for machine in candidates {
        let Some(uid) = machine.metadata.get(META_POD_UID) else {
            continue;
        };
        if live.contains(uid) || pod_exists(&ctx.client, machine, uid).await? {
            continue;
        }
        match ctx.vault.revoke_machine(&machine.id).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        tracing::info!(machine = %machine.id, pod_uid = %uid, "sweep revoked the machine of a vanished pod");
        ctx.metrics
            .machines_revoked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        revoked.push(machine.id.clone());
    }
    Ok(revoked)
}

/// Whether the pod named in the machine's metadata exists with that UID.
async fn pod_exists(
    client: &Client,
    machine: &signet_client::api::MachineView,
    uid: &str,
) -> Result<bool, Error> {
    let (Some(namespace), Some(name)) = (
        machine.metadata.get(META_NAMESPACE),
        machine.metadata.get(META_POD_NAME),
    ) else {
        return Ok(false);
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods
        .get_metadata_opt(name)
        .await?
        .is_some_and(|pod| pod.metadata.uid.as_deref() == Some(uid)))
}

/// Watches injected pods and revokes a pod's machines when it is deleted.
/// Runs until the watch stream ends (it retries with backoff on errors).
pub async fn watch_deletions<V: VaultApi>(ctx: std::sync::Arc<Context<V>>) {
    let pods: Api<PartialObjectMeta<Pod>> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().labels(&selector());
    let events = watcher(pods, config).default_backoff();
    let mut events = std::pin::pin!(events);
    loop {
        match events.try_next().await {
            Ok(Some(watcher::Event::Delete(pod))) => on_deleted(&ctx, &pod).await,
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error) => tracing::warn!(%error, "pod watch failed; retrying"),
        }
    }
}

async fn on_deleted<V: VaultApi>(ctx: &Context<V>, pod: &PartialObjectMeta<Pod>) {
    if !injected(pod.annotations()) {
        return;
    }
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    match revoke_pod_machines(&ctx.vault, uid).await {
        Ok(count) => {
            ctx.metrics
                .machines_revoked
                .fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        }
        // The sweep retries what failed here.
        Err(error) => {
            tracing::warn!(%error, pod_uid = uid, "cannot revoke the machine of a deleted pod")
        }
    }
}

/// Runs [`sweep`] every `settings.sweep_interval`, first right away.
pub async fn sweep_forever<V: VaultApi>(ctx: std::sync::Arc<Context<V>>) {
    let mut ticks = tokio::time::interval(ctx.settings.sweep_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(&ctx).await {
            Ok(revoked) if !revoked.is_empty() => {
                tracing::info!(
                    count = revoked.len(),
                    "sweep revoked machines of vanished pods"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "machine sweep failed"),
        }
    }
}
