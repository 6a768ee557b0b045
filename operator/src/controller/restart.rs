//! `signet.dev/reload: restart`: a rolling restart of the Deployment or
//! StatefulSet whose pods use a secret that got a new live version, the way
//! Reloader does it: the controller writes a hash of the live versions into
//! the workload's pod template annotation [`VERSIONS_ANNOTATION`], and the
//! workload's own controller replaces the pods.
//!
//! Every [`Settings::reload_interval`](super::Settings) the controller lists
//! the injected pods that ask for it, finds each pod's workload through its
//! controller owner (a ReplicaSet's Deployment, or a StatefulSet), and the
//! secrets its EnrollmentToken is granted by the SecretGrants of its
//! namespace. Their live versions come from the vault's metadata route
//! (`GET /v1/projects/{project}/secrets/{secret}`): an agent sees names and
//! version numbers, never a value.
//!
//! Stateless, so nothing is lost when the operator restarts:
//! - the template carries a hash that differs from the current one: patch;
//! - it carries none yet (the workload never restarted for a secret): patch
//!   only when a live version was created after the workload's oldest pod,
//!   which that pod cannot have read at start. Otherwise nothing, so opting
//!   in does not restart anything by itself. (Vault and API server clocks
//!   are compared here; a skew of seconds only matters for a version
//!   written within those seconds of a pod's creation.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::Pod,
    },
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt as _,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::{
    Error,
    context::{Context, MANAGER},
    vault::{VaultApi, is_not_found, not_delegated},
};
use crate::{
    crd::{EnrollmentToken, SecretGrant},
    webhook::{
        mutate::{INJECT_LABEL, INJECTED_ANNOTATION, TOKEN_ANNOTATION},
        reload::{RELOAD_ANNOTATION, RESTART},
    },
};

/// Pod template annotation holding the hash of the live versions the
/// workload's pods were (re)started for.
pub const VERSIONS_ANNOTATION: &str = "signet.dev/secret-versions";

/// A workload the controller can roll out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// A Deployment, by namespace and name.
    Deployment(String, String),
    /// A StatefulSet, by namespace and name.
    StatefulSet(String, String),
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deployment(ns, name) => write!(f, "Deployment {ns}/{name}"),
            Self::StatefulSet(ns, name) => write!(f, "StatefulSet {ns}/{name}"),
        }
    }
}

/// What the pods of one workload use.
#[derive(Debug, Default)]
struct Uses {
    /// EnrollmentTokens named by its pods.
    tokens: BTreeSet<String>,
    /// Creation time of its oldest pod.
    oldest: Option<Timestamp>,
}

/// The hash written into the template: SHA-256 of the sorted
/// `project/secret=version` lines, hex, first 16 bytes.
pub fn versions_hash(versions: &BTreeMap<String, u32>) -> String {
    let mut hasher = Sha256::new();
    for (secret, version) in versions {
        hasher.update(format!("{secret}={version}\n"));
    }
    hex::encode(&hasher.finalize()[..16])
}

/// One pass: rolls out every workload whose pods use a secret with a new
/// live version. Returns the workloads patched.
pub async fn pass<V: VaultApi>(ctx: &Context<V>) -> Result<Vec<Workload>, Error> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let listed = pods
        .list(&ListParams::default().labels(&format!("{INJECT_LABEL}=true")))
        .await?;
    let mut workloads: BTreeMap<Workload, Uses> = BTreeMap::new();
    let mut replica_sets: HashMap<(String, String), Option<Workload>> = HashMap::new();
    for pod in &listed.items {
        let annotations = pod.annotations();
        if annotations.get(RELOAD_ANNOTATION).map(|v| v.trim()) != Some(RESTART)
            || annotations.get(INJECTED_ANNOTATION).map(String::as_str) != Some("true")
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let (Some(namespace), Some(token)) = (pod.namespace(), annotations.get(TOKEN_ANNOTATION))
        else {
            continue;
        };
        let Some(workload) = workload_of(ctx, pod, &namespace, &mut replica_sets).await? else {
            continue;
        };
        let uses = workloads.entry(workload).or_default();
        uses.tokens.insert(token.trim().to_owned());
        if let Some(created) = pod.metadata.creation_timestamp.as_ref().map(|t| t.0) {
            uses.oldest = Some(uses.oldest.map_or(created, |o| o.min(created)));
        }
    }

    let mut versions = Versions::default();
    let mut patched = Vec::new();
    for (workload, uses) in workloads {
        let namespace = match &workload {
            Workload::Deployment(ns, _) | Workload::StatefulSet(ns, _) => ns.clone(),
        };
        let mut live = BTreeMap::new();
        let mut newest: Option<Timestamp> = None;
        for token in &uses.tokens {
            for (key, version, created) in versions.of_token(ctx, &namespace, token).await? {
                live.insert(key, version);
                newest = newest.max(created);
            }
        }
        if live.is_empty() {
            continue;
        }
        let hash = versions_hash(&live);
        let current = template_annotation(ctx, &workload).await?;
        let stale = match current.as_deref() {
            Some(current) => current != hash,
            None => newest.zip(uses.oldest).is_some_and(|(n, o)| n > o),
        };
        if !stale {
            continue;
        }
        patch_template(ctx, &workload, &hash).await?;
        tracing::info!(workload = %workload, hash, "rolling out for new secret versions");
        ctx.metrics
            .restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        patched.push(workload);
    }
    Ok(patched)
}

/// The Deployment (through the pod's ReplicaSet) or StatefulSet that
/// controls `pod`, if any.
async fn workload_of<V: VaultApi>(
    ctx: &Context<V>,
    pod: &Pod,
    namespace: &str,
    replica_sets: &mut HashMap<(String, String), Option<Workload>>,
) -> Result<Option<Workload>, Error> {
    let Some(owner) = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.api_version == "apps/v1")
    else {
        return Ok(None);
    };
    match owner.kind.as_str() {
        "StatefulSet" => Ok(Some(Workload::StatefulSet(
            namespace.to_owned(),
            owner.name.clone(),
        ))),
        "ReplicaSet" => {
            let key = (namespace.to_owned(), owner.name.clone());
            if let Some(found) = replica_sets.get(&key) {
                return Ok(found.clone());
            }
            let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
            let found = api.get_opt(&owner.name).await?.and_then(|rs| {
                rs.owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                    .map(|o| Workload::Deployment(namespace.to_owned(), o.name.clone()))
            });
            replica_sets.insert(key, found.clone());
            Ok(found)
        }
        _ => Ok(None),
    }
}

/// A secret's live version and when it was created, if the vault says.
type Live = (u32, Option<Timestamp>);

/// Live versions per token, looked up once per pass.
#[derive(Default)]
struct Versions {
    /// SecretGrants per namespace.
    grants: HashMap<String, Vec<SecretGrant>>,
    /// Live version and its creation time per `project/secret`; `None` when
    /// the vault does not show it to the agent.
    meta: HashMap<(String, String), Option<Live>>,
}

impl Versions {
    /// `(project/secret, live version, created)` of every secret the
    /// SecretGrants of `namespace` give `token`.
    async fn of_token<V: VaultApi>(
        &mut self,
        ctx: &Context<V>,
        namespace: &str,
        token: &str,
    ) -> Result<Vec<(String, u32, Option<Timestamp>)>, Error> {
        let tokens: Api<EnrollmentToken> = Api::namespaced(ctx.client.clone(), namespace);
        let Some(enrollment_token) = tokens.get_opt(token).await? else {
            return Ok(Vec::new());
        };
        let project = enrollment_token.spec.project.clone();
        if !self.grants.contains_key(namespace) {
            let api: Api<SecretGrant> = Api::namespaced(ctx.client.clone(), namespace);
            let list = api.list(&ListParams::default()).await?.items;
            self.grants.insert(namespace.to_owned(), list);
        }
        let secrets: BTreeSet<String> = self
            .grants
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|g| g.spec.enrollment_token == token && g.metadata.deletion_timestamp.is_none())
            .flat_map(|g| g.spec.secrets.iter().map(|s| s.secret.clone()))
            .collect();
        let mut out = Vec::new();
        for secret in secrets {
            let key = (project.clone(), secret.clone());
            if !self.meta.contains_key(&key) {
                let found = match ctx.vault.secret_meta(&project, &secret).await {
                    Ok(meta) => {
                        let created = meta
                            .versions
                            .iter()
                            .find(|v| v.version == meta.live_version)
                            .and_then(|v| v.created_at.parse::<Timestamp>().ok());
                        Some((meta.live_version, created))
                    }
                    Err(error) if is_not_found(&error) || not_delegated(&error).is_some() => None,
                    Err(error) => return Err(error.into()),
                };
                self.meta.insert(key.clone(), found);
            }
            if let Some(Some((version, created))) = self.meta.get(&key) {
                out.push((format!("{project}/{secret}"), *version, *created));
            }
        }
        Ok(out)
    }
}

async fn template_annotation<V: VaultApi>(
    ctx: &Context<V>,
    workload: &Workload,
) -> Result<Option<String>, Error> {
    let template = match workload {
        Workload::Deployment(ns, name) => Api::<Deployment>::namespaced(ctx.client.clone(), ns)
            .get(name)
            .await?
            .spec
            .map(|s| s.template),
        Workload::StatefulSet(ns, name) => Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
            .get(name)
            .await?
            .spec
            .map(|s| s.template),
    };
    Ok(template
        .and_then(|t| t.metadata)
        .and_then(|m| m.annotations)
        .and_then(|mut a| a.remove(VERSIONS_ANNOTATION)))
}

async fn patch_template<V: VaultApi>(
    ctx: &Context<V>,
    workload: &Workload,
    hash: &str,
) -> Result<(), Error> {
    let patch = Patch::Merge(json!({
        "spec": {"template": {"metadata": {"annotations": {VERSIONS_ANNOTATION: hash}}}}
    }));
    let params = PatchParams::apply(MANAGER);
    match workload {
        Workload::Deployment(ns, name) => {
            Api::<Deployment>::namespaced(ctx.client.clone(), ns)
                .patch(name, &params, &patch)
                .await?;
        }
        Workload::StatefulSet(ns, name) => {
            Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
                .patch(name, &params, &patch)
                .await?;
        }
    }
    Ok(())
}

/// Runs [`pass`] every `settings.reload_interval`.
pub async fn restart_forever<V: VaultApi>(ctx: std::sync::Arc<Context<V>>) {
    let mut ticks = tokio::time::interval(ctx.settings.reload_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = pass(&ctx).await {
            tracing::warn!(%error, "reload pass failed");
        }
    }
}
