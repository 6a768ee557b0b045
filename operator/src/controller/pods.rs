//! Revoking the vault machines of pods that are gone, without finalizers on
//! pods (a finalizer would make every injected pod's deletion depend on the
//! operator being up).
//!
//! Two paths: a watch of injected pods revokes a pod's machines when the pod
//! is deleted, and a periodic [`sweep`] revokes every live machine whose pod
//! no longer exists, covering events missed while the operator was down.
//!
//! Both go by the identity the vault attested ([`MachineView::kubernetes`]
//! with `attested`): the cluster, namespace, pod name and pod UID the vault
//! took from the pod's verified service-account token. Only machines
//! attested in this controller's cluster (`Settings::cluster`) are touched,
//! so clusters sharing one vault leave each other's machines alone. The
//! metadata a machine reported about itself at enrollment
//! (`signet_init::contract::META_POD_UID` and the like) is never used:
//! anyone holding a raw token can write anything there.
//!
//! Machines enrolled with a raw token (`rawToken: true`) have no attested
//! pod, so they are not revoked here: `signet-init` revokes its machine on
//! SIGTERM, and the EnrollmentToken's `machineLifetime` is the backstop.

use std::collections::HashSet;

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt as _,
    api::ListParams,
    core::PartialObjectMeta,
    runtime::{WatchStreamExt as _, watcher},
};
use signet_client::api::MachineView;

use super::{
    Error,
    context::Context,
    vault::{VaultApi, is_not_found},
};
use crate::webhook::mutate::{INJECT_LABEL, INJECTED_ANNOTATION};

/// Label selector of the pods the webhook handles.
fn selector() -> String {
    format!("{INJECT_LABEL}=true")
}

/// Whether the webhook injected `signet-init` into this pod.
fn injected(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations.get(INJECTED_ANNOTATION).map(String::as_str) == Some("true")
}

/// The pod a live machine runs in, as the vault attested it in `cluster`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestedPod<'a> {
    /// Namespace of the pod.
    pub namespace: &'a str,
    /// Name of the pod.
    pub name: &'a str,
    /// UID of the pod.
    pub uid: &'a str,
}

/// The attested pod of `machine`, when it is live and the vault attested it
/// in `cluster`; `None` for raw-token machines and other clusters' machines,
/// whatever their self-reported metadata says.
pub fn attested_pod<'a>(machine: &'a MachineView, cluster: &str) -> Option<AttestedPod<'a>> {
    let kubernetes = machine.kubernetes.as_ref()?;
    if machine.disabled || !kubernetes.attested || kubernetes.cluster != cluster {
        return None;
    }
    Some(AttestedPod {
        namespace: &kubernetes.namespace,
        name: kubernetes.pod_name.as_deref()?,
        uid: kubernetes.pod_uid.as_deref()?,
    })
}

/// Revokes every live machine the vault attested as pod `uid` of `cluster`;
/// returns how many.
pub async fn revoke_pod_machines<V: VaultApi>(
    vault: &V,
    cluster: &str,
    uid: &str,
) -> Result<usize, Error> {
    let machines = vault.machines().await?;
    let mut revoked = 0;
    for machine in machines
        .iter()
        .filter(|m| attested_pod(m, cluster).is_some_and(|pod| pod.uid == uid))
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

/// One pass: revokes every live machine attested in this cluster whose pod
/// no longer exists. Returns the ids revoked.
///
/// Machines are listed before pods, so a machine's pod (which existed before
/// the machine enrolled) is in the pod list unless it is gone. A pod missing
/// from the label-filtered list is looked up by its attested namespace and
/// name before its machine is revoked, in case its labels changed.
pub async fn sweep<V: VaultApi>(ctx: &Context<V>) -> Result<Vec<String>, Error> {
    let machines = ctx.vault.machines().await?;
    let cluster = ctx.settings.cluster.as_str();
    let candidates: Vec<(&MachineView, AttestedPod<'_>)> = machines
        .iter()
        .filter_map(|m| attested_pod(m, cluster).map(|pod| (m, pod)))
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
    for (machine, pod) in candidates {
        if live.contains(pod.uid) || pod_exists(&ctx.client, pod).await? {
            continue;
        }
        match ctx.vault.revoke_machine(&machine.id).await {
            Ok(()) => {}
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error.into()),
        }
        tracing::info!(machine = %machine.id, pod_uid = %pod.uid, "sweep revoked the machine of a vanished pod");
        ctx.metrics
            .machines_revoked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        revoked.push(machine.id.clone());
    }
    Ok(revoked)
}

/// Whether the attested pod still exists with its attested UID.
async fn pod_exists(client: &Client, pod: AttestedPod<'_>) -> Result<bool, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), pod.namespace);
    Ok(pods
        .get_metadata_opt(pod.name)
        .await?
        .is_some_and(|found| found.metadata.uid.as_deref() == Some(pod.uid)))
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
    match revoke_pod_machines(&ctx.vault, &ctx.settings.cluster, uid).await {
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
