//! The pod mutation: a plain function from a pod (and a snapshot of the
//! tokens and grants) to a JSON patch, or to a denial.
//!
//! Rules:
//! - only pods labelled `signet.dev/inject=true` are touched; others pass
//!   unchanged, so the webhook never matters to pods that did not opt in;
//! - an opted-in pod must name its EnrollmentToken in the annotation
//!   `signet.dev/enrollment-token`, and that token must exist and be
//!   referenced by at least one SecretGrant: otherwise the pod is denied
//!   (fail closed, with a message saying what is missing);
//! - `signet-init` alone gets the pod's credential: by default (attestation)
//!   a projected service-account token for the vault's audience, valid ten
//!   minutes and rotated by the kubelet, plus `SIGNET_CLUSTER` and
//!   `SIGNET_POLICY`; for an EnrollmentToken with `rawToken: true`, the
//!   token Secret. App containers see neither;
//! - `signet.dev/mode: init` injects a one-shot init container (for Jobs);
//!   absent or `sidecar` injects a native sidecar (an init container with
//!   `restartPolicy: Always`) whose startup probe holds the app containers
//!   back until the first files are written;
//! - `signet.dev/reload` chooses what happens after the files changed
//!   (see [`super::reload`]): for `signal` the pod shares its process
//!   namespace, the target container gets the marker
//!   `SIGNET_RELOAD_TARGET=<its name>` and `signet-init` runs as its user
//!   and group;
//!   `restart` is the controller's work and changes nothing here;
//! - a pod already injected (annotation `signet.dev/injected: "true"`, which
//!   the patch sets, or a container named `signet-init`) gets no patch, so
//!   mutating twice equals mutating once.

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::{
    api::core::v1::{
        Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, KeyToPath,
        ObjectFieldSelector, Pod, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements,
        SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume,
        VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::api::resource::Quantity,
};
use serde_json::Value;

use crate::{
    crd::{TOKEN_SECRET_KEY, token_secret_name},
    webhook::{
        contract::{self, Mode},
        lookup::{self, GrantLookup, Injection},
        reload::{self, Reload},
    },
};

/// Label a pod sets to `"true"` to opt in.
pub const INJECT_LABEL: &str = "signet.dev/inject";
/// Annotation naming the pod's EnrollmentToken (same namespace).
pub const TOKEN_ANNOTATION: &str = "signet.dev/enrollment-token";
/// Annotation choosing `init` or `sidecar` (the default).
pub const MODE_ANNOTATION: &str = "signet.dev/mode";
/// Annotation the patch sets; its presence makes the mutation a no-op.
pub const INJECTED_ANNOTATION: &str = "signet.dev/injected";
/// Name of the injected container.
pub const CONTAINER_NAME: &str = "signet-init";
/// Name of the in-memory volume holding the files.
pub const SECRETS_VOLUME: &str = "signet-secrets";
/// Name of the volume holding the raw enrollment token (raw-token mode).
pub const TOKEN_VOLUME: &str = "signet-token";
/// Name of the projected volume holding the pod's service-account token for
/// the vault (attested mode).
pub const IDENTITY_VOLUME: &str = "signet-identity";
/// User and group `signet-init` runs as (the distroless `nonroot` user).
pub const RUN_AS: i64 = 65532;

/// Cluster-wide settings of the injection, from the operator's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectConfig {
    /// Base URL of the vault, passed to `signet-init` as `SIGNET_VAULT`.
    pub vault_url: String,
    /// Image of `signet-init`.
    pub image: String,
    /// Pull policy of that image; the cluster default when unset.
    pub image_pull_policy: Option<String>,
    /// Size limit of the in-memory volume (it counts against the pod's
    /// memory).
    pub size_limit: Quantity,
    /// PEM certificates `signet-init` trusts for the vault's HTTPS, passed
    /// as `SIGNET_CA_PEM` (see [`super::vault_ca`]); nothing is added when
    /// unset.
    pub vault_ca_pem: Option<String>,
    /// This cluster's name as registered in the vault, passed as
    /// `SIGNET_CLUSTER` to pods that enroll by attestation.
    pub cluster: String,
    /// Audience of the projected service-account token those pods get; the
    /// vault accepts only tokens for the audience registered with the
    /// cluster, so a token meant for the API server (or anything else) is
    /// useless to it, and this one is useless to everything else.
    pub audience: String,
}

/// Why an opted-in pod is refused. The message reaches whoever created it.
#[derive(Debug, thiserror::Error)]
pub enum Denial {
    /// The pod opted in without naming its token.
    #[error(
        "pod is labelled {INJECT_LABEL}=true but has no {TOKEN_ANNOTATION} annotation naming its EnrollmentToken"
    )]
    MissingToken,
    /// The mode annotation has an unknown value.
    #[error("annotation {MODE_ANNOTATION} must be \"init\" or \"sidecar\", not {0:?}")]
    UnknownMode(String),
    /// The token or its grants are missing or inconsistent.
    #[error(transparent)]
    Lookup(#[from] lookup::Error),
    /// The pod's service account is not allowed to use the token.
    #[error(
        "service account {service_account} may not use EnrollmentToken {token} (allowedServiceAccounts: {allowed})"
    )]
    ServiceAccountNotAllowed {
        /// The pod's service account.
        service_account: String,
        /// The token.
        token: String,
        /// The token's allow list, comma separated.
        allowed: String,
    },
    /// The pod has no spec to patch.
    #[error("pod has no spec")]
    NoSpec,
    /// The pod already uses one of the volume names signet needs.
    #[error("pod already has a volume named {0}, which signet needs")]
    VolumeConflict(&'static str),
    /// A container already mounts something at the grant's mount path.
    #[error("container {container} already mounts a volume at {path}, the SecretGrant mountPath")]
    MountConflict {
        /// The container.
        container: String,
        /// The mount path.
        path: String,
    },
    /// The grant's mount path overlaps a credential directory of
    /// `signet-init`.
    #[error("mountPath {path} overlaps {reserved}, reserved for signet-init's credential")]
    ReservedMountPath {
        /// The grant's mount path.
        path: String,
        /// The directory it overlaps.
        reserved: &'static str,
    },
    /// The reload annotations are wrong.
    #[error(transparent)]
    Reload(#[from] reload::Error),
    /// Serialising the patch failed.
    #[error("could not encode the patch")]
    Encode(#[from] serde_json::Error),
}

/// Computes the patch for `pod`, created in `namespace`.
///
/// `Ok(None)` admits the pod unchanged (not opted in, or already injected);
/// `Ok(Some(patch))` admits it with the patch applied.
pub fn mutate(
    pod: &Pod,
    namespace: &str,
    config: &InjectConfig,
    lookup: &dyn GrantLookup,
) -> Result<Option<Patch>, Denial> {
    let labels = pod.metadata.labels.as_ref();
    if labels.and_then(|l| l.get(INJECT_LABEL)).map(String::as_str) != Some("true") {
        return Ok(None);
    }
    if is_injected(pod) {
        return Ok(None);
    }
    let annotations = pod.metadata.annotations.as_ref();
    let token = annotations
        .and_then(|a| a.get(TOKEN_ANNOTATION))
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .ok_or(Denial::MissingToken)?;
    let mode = match annotations
        .and_then(|a| a.get(MODE_ANNOTATION))
        .map(String::as_str)
    {
        None | Some("sidecar") => Mode::Sidecar,
        Some("init") => Mode::Init,
        Some(other) => return Err(Denial::UnknownMode(other.to_owned())),
    };
    let spec = pod.spec.as_ref().ok_or(Denial::NoSpec)?;
    let reload = reload::parse(pod, spec, mode)?;
    let injection = lookup::resolve(lookup, namespace, token)?;
    check_service_account(spec, token, &injection)?;
    check_conflicts(spec, &injection.mount_path)?;
    build_patch(spec, token, mode, config, &injection, &reload).map(Some)
}

fn is_injected(pod: &Pod) -> bool {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECTED_ANNOTATION))
        .is_some_and(|v| v == "true");
    let has_container = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == CONTAINER_NAME)
    });
    annotated || has_container
}

fn check_service_account(spec: &PodSpec, token: &str, injection: &Injection) -> Result<(), Denial> {
    let allowed = &injection.token.allowed_service_accounts;
    // The ServiceAccount admission plugin runs before webhooks and fills the
    // field in; "default" is what it would fill in.
    let service_account = spec.service_account_name.as_deref().unwrap_or("default");
    if allowed.is_empty() || allowed.iter().any(|a| a == service_account) {
        Ok(())
    } else {
        Err(Denial::ServiceAccountNotAllowed {
            service_account: service_account.to_owned(),
            token: token.to_owned(),
            allowed: allowed.join(","),
        })
    }
}

fn check_conflicts(spec: &PodSpec, mount_path: &str) -> Result<(), Denial> {
    for name in [SECRETS_VOLUME, TOKEN_VOLUME, IDENTITY_VOLUME] {
        if spec.volumes.iter().flatten().any(|v| v.name == name) {
            return Err(Denial::VolumeConflict(name));
        }
    }
    // Both directories, whatever the mode: a token switching modes must not
    // make a SecretGrant's mountPath suddenly invalid.
    for dir in [contract::TOKEN_DIR, contract::IDENTITY_DIR] {
        if mount_path == dir
            || dir.starts_with(&format!("{mount_path}/"))
            || mount_path.starts_with(&format!("{dir}/"))
        {
            return Err(Denial::ReservedMountPath {
                path: mount_path.to_owned(),
                reserved: dir,
            });
        }
    }
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        if container
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == mount_path)
        {
            return Err(Denial::MountConflict {
                container: container.name.clone(),
                path: mount_path.to_owned(),
            });
        }
    }
    Ok(())
}

fn build_patch(
    spec: &PodSpec,
    token: &str,
    mode: Mode,
    config: &InjectConfig,
    injection: &Injection,
    reload: &Reload,
) -> Result<Patch, Denial> {
    let mut ops = Vec::new();

    // `mutate` only gets here when the token annotation exists, so the
    // annotations map does too.
    ops.push(add(
        &["metadata", "annotations", INJECTED_ANNOTATION],
        Value::from("true"),
    ));

    let credential = if injection.token.raw_token {
        token_volume(token)
    } else {
        identity_volume(config)
    };
    let volumes = [secrets_volume(config), credential];
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        &volumes,
    )?;

    let app_mount = VolumeMount {
        name: SECRETS_VOLUME.to_owned(),
        mount_path: injection.mount_path.clone(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    // Existing init containers are patched before signet-init is inserted in
    // front of them, while their indices are still the original ones.
    for (list, containers) in [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", spec.containers.as_slice()),
    ] {
        for (index, container) in containers.iter().enumerate() {
            let index = index.to_string();
            append_all(
                &mut ops,
                &["spec", list, &index, "volumeMounts"],
                container.volume_mounts.is_some(),
                std::slice::from_ref(&app_mount),
            )?;
        }
    }

    if let Reload::Signal {
        index, container, ..
    } = reload
    {
        // signet-init must see the target's processes, and find them by
        // this marker.
        ops.push(add(&["spec", "shareProcessNamespace"], Value::Bool(true)));
        let has_env = spec.containers.get(*index).is_some_and(|c| c.env.is_some());
        let index = index.to_string();
        append_all(
            &mut ops,
            &["spec", "containers", &index, "env"],
            has_env,
            &[env(contract::ENV_RELOAD_TARGET, container)],
        )?;
    }

    // First, so that app init containers already see the secrets.
    let init = serde_json::to_value(init_container(token, mode, config, injection, reload)?)?;
    match spec.init_containers {
        Some(_) => ops.push(add(&["spec", "initContainers", "0"], init)),
        None => ops.push(add(&["spec", "initContainers"], Value::Array(vec![init]))),
    }

    Ok(Patch(ops))
}

/// Adds `items` to the array at `path`: appended one by one when it exists,
/// created whole when it does not (JSON patch cannot append to a missing
/// array).
fn append_all<T: serde::Serialize>(
    ops: &mut Vec<PatchOperation>,
    path: &[&str],
    exists: bool,
    items: &[T],
) -> Result<(), Denial> {
    if exists {
        let mut item_path = path.to_vec();
        item_path.push("-");
        for item in items {
            ops.push(add(&item_path, serde_json::to_value(item)?));
        }
    } else {
        ops.push(add(path, serde_json::to_value(items)?));
    }
    Ok(())
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        // Tokens are escaped here: "signet.dev/injected" becomes
        // "signet.dev~1injected".
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

fn secrets_volume(config: &InjectConfig) -> Volume {
    Volume {
        name: SECRETS_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(config.size_limit.clone()),
        }),
        ..Volume::default()
    }
}

fn token_volume(token: &str) -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(token_secret_name(token)),
            items: Some(vec![KeyToPath {
                key: TOKEN_SECRET_KEY.to_owned(),
                path: TOKEN_SECRET_KEY.to_owned(),
                mode: None,
            }]),
            // World-readable inside the volume, which only signet-init mounts:
            // it runs as a fixed non-root user that does not own the file.
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Volume::default()
    }
}

/// The pod's service-account token for the vault: audience the vault's,
/// ten minutes of validity (the kubelet rotates it), bound to the pod so the
/// vault can check the pod still exists and take its UID.
fn identity_volume(config: &InjectConfig) -> Volume {
    Volume {
        name: IDENTITY_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(config.audience.clone()),
                    expiration_seconds: Some(contract::SA_TOKEN_EXPIRATION_SECONDS),
                    path: contract::SA_TOKEN_PATH.to_owned(),
                }),
                ..VolumeProjection::default()
            }]),
            // The kubelet's default mode: with an fsGroup it makes the token
            // 0600 plus group read for the fsGroup, which signet-init gets.
            default_mode: None,
        }),
        ..Volume::default()
    }
}

fn init_container(
    token: &str,
    mode: Mode,
    config: &InjectConfig,
    injection: &Injection,
    reload: &Reload,
) -> Result<Container, Denial> {
    let files = serde_json::to_string(&injection.files)?;
    let (credential_env, credential_mount) = if injection.token.raw_token {
        (
            vec![env(contract::ENV_TOKEN_FILE, contract::TOKEN_FILE)],
            VolumeMount {
                name: TOKEN_VOLUME.to_owned(),
                mount_path: contract::TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        )
    } else {
        (
            vec![
                env(contract::ENV_SA_TOKEN_FILE, contract::SA_TOKEN_FILE),
                env(contract::ENV_CLUSTER, &config.cluster),
                env(contract::ENV_POLICY, token),
            ],
            VolumeMount {
                name: IDENTITY_VOLUME.to_owned(),
                mount_path: contract::IDENTITY_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        )
    };
    let mut vars = vec![env(contract::ENV_VAULT, &config.vault_url)];
    vars.extend(credential_env);
    vars.extend([
        env(contract::ENV_MOUNT_PATH, &injection.mount_path),
        env(contract::ENV_MODE, mode.as_str()),
        env(
            contract::ENV_REFRESH_SECONDS,
            &injection.refresh.as_secs().max(1).to_string(),
        ),
        env(contract::ENV_FILES, &files),
        field_env(contract::ENV_POD_NAME, "metadata.name"),
        field_env(contract::ENV_POD_NAMESPACE, "metadata.namespace"),
        field_env(contract::ENV_POD_UID, "metadata.uid"),
    ]);
    if let Some(pem) = &config.vault_ca_pem {
        vars.push(env(contract::ENV_CA_PEM, pem));
    }
    let mut security_context = restricted_security_context();
    if let Reload::Signal {
        container,
        signal,
        user,
        group,
        ..
    } = reload
    {
        vars.push(env(contract::ENV_RELOAD_SIGNAL, signal.as_str()));
        vars.push(env(contract::ENV_RELOAD_CONTAINER, container));
        // The same user and group as the target: reading its
        // /proc/<pid>/environ (the kernel's ptrace read check compares
        // both) and signalling it need nothing more, so no capability is
        // added.
        security_context.run_as_user = Some(*user);
        security_context.run_as_group = Some(*group);
    }
    let (restart_policy, startup_probe) = match mode {
        Mode::Init => (None, None),
        Mode::Sidecar => (
            Some("Always".to_owned()),
            Some(Probe {
                exec: Some(ExecAction {
                    command: Some(contract::PROBE_COMMAND.map(str::to_owned).to_vec()),
                }),
                // Checked every second so apps start as soon as the files are
                // there; two minutes covers signet-init's bounded retries.
                period_seconds: Some(1),
                failure_threshold: Some(120),
                timeout_seconds: Some(2),
                ..Probe::default()
            }),
        ),
    };
    Ok(Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: config.image_pull_policy.clone(),
        command: Some(vec![contract::BINARY.to_owned()]),
        args: Some(contract::RUN_ARGS.map(str::to_owned).to_vec()),
        env: Some(vars),
        volume_mounts: Some(vec![
            VolumeMount {
                name: SECRETS_VOLUME.to_owned(),
                mount_path: injection.mount_path.clone(),
                ..VolumeMount::default()
            },
            credential_mount,
        ]),
        resources: Some(resources()),
        security_context: Some(security_context),
        restart_policy,
        startup_probe,
        // signet-init's last words explain a failure in `kubectl describe`.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".to_owned()),
                field_path: field_path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn resources() -> ResourceRequirements {
    let quantities = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
            .collect()
    };
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
        limits: Some(quantities(&[("memory", "32Mi")])),
        ..ResourceRequirements::default()
    }
}

/// The Pod Security Standards "restricted" profile.
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}
