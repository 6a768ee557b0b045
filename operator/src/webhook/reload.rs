//! What happens after `signet-init` rewrote a pod's files, chosen by the
//! pod's annotations and checked at admission so a mistake is a clear
//! denial rather than a reload that silently never happens.
//!
//! | annotation | values |
//! | --- | --- |
//! | `signet.dev/reload` | `none` (default: the app watches its files), `signal`, `restart` |
//! | `signet.dev/reload-container` | `signal`: the container whose main process is signalled; defaults to the only container |
//! | `signet.dev/reload-signal` | `signal`: `SIGHUP` (default), `SIGUSR1`, `SIGUSR2`, `SIGINT`, `SIGQUIT`, `SIGTERM`, `SIGWINCH` |
//!
//! `signal` needs the sidecar mode, and a `runAsUser` other than root and a
//! `runAsGroup` (on the container or the pod) for the target: `signet-init`
//! runs as that user and group, because reading another process's
//! environment (how it finds the target, see `signet_init::reload`) needs
//! the same user and group, and signalling it the same user.
//! `restart` needs a pod created by a Deployment (through its ReplicaSet) or
//! a StatefulSet: the controller rolls that workload out when a secret the
//! pod is granted gets a new live version.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::webhook::contract::{Mode, ReloadSignal};

/// Annotation choosing the reload action.
pub const RELOAD_ANNOTATION: &str = "signet.dev/reload";
/// Annotation naming the container to signal.
pub const RELOAD_CONTAINER_ANNOTATION: &str = "signet.dev/reload-container";
/// Annotation naming the signal.
pub const RELOAD_SIGNAL_ANNOTATION: &str = "signet.dev/reload-signal";
/// `signet.dev/reload` value: a rolling restart of the owning workload.
pub const RESTART: &str = "restart";

/// The reload action of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// Nothing: the app watches its files.
    None,
    /// Signal the main process of a container.
    Signal {
        /// Index of the container in `spec.containers`.
        index: usize,
        /// Its name.
        container: String,
        /// The signal.
        signal: ReloadSignal,
        /// The container's user, which `signet-init` runs as.
        user: i64,
        /// The container's group, which `signet-init` runs as.
        group: i64,
    },
    /// Roll out the owning Deployment or StatefulSet (the controller does).
    Restart,
}

/// Why a pod's reload annotations are refused. Messages reach the pod's
/// author.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "annotation {RELOAD_ANNOTATION} must be \"none\", \"signal\" or \"restart\", not {0:?}"
    )]
    UnknownAction(String),
    #[error("annotation {0} only applies with {RELOAD_ANNOTATION}: signal")]
    SignalOptionWithoutSignal(&'static str),
    #[error(
        "{RELOAD_ANNOTATION}: signal needs signet.dev/mode: sidecar (an init container has exited before any change)"
    )]
    SignalNeedsSidecar,
    #[error(
        "{RELOAD_ANNOTATION}: signal needs {RELOAD_CONTAINER_ANNOTATION} naming one of the pod's containers ({0})"
    )]
    ContainerMissing(String),
    #[error(
        "{RELOAD_CONTAINER_ANNOTATION} names {name:?}, which is not one of the pod's containers ({containers})"
    )]
    UnknownContainer { name: String, containers: String },
    #[error(
        "annotation {RELOAD_SIGNAL_ANNOTATION} must be one of {allowed}, not {given:?}",
        allowed = ReloadSignal::ALL.map(ReloadSignal::as_str).join(", ")
    )]
    UnknownSignal { given: String },
    #[error(
        "{RELOAD_ANNOTATION}: signal needs runAsUser and runAsGroup on container {0} or on the pod: signet-init runs as the same user and group so it may find and signal that container's process"
    )]
    UserUnknown(String),
    #[error(
        "{RELOAD_ANNOTATION}: signal cannot target container {0}, which runs as root (runAsUser: 0): signet-init never runs as root"
    )]
    RootTarget(String),
    #[error(
        "{RELOAD_ANNOTATION}: restart needs a pod created by a Deployment or a StatefulSet; this pod's controller is {0}"
    )]
    NoWorkload(String),
}

/// Reads and checks the reload annotations of `pod`, injected in `mode`.
pub fn parse(pod: &Pod, spec: &PodSpec, mode: Mode) -> Result<Reload, Error> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |key: &str| annotations.and_then(|a| a.get(key)).map(|v| v.trim());
    let container = get(RELOAD_CONTAINER_ANNOTATION);
    let signal = get(RELOAD_SIGNAL_ANNOTATION);
    let action = get(RELOAD_ANNOTATION).unwrap_or("none");
    if action != "signal" {
        if container.is_some() {
            return Err(Error::SignalOptionWithoutSignal(
                RELOAD_CONTAINER_ANNOTATION,
            ));
        }
        if signal.is_some() {
            return Err(Error::SignalOptionWithoutSignal(RELOAD_SIGNAL_ANNOTATION));
        }
    }
    match action {
        "none" => Ok(Reload::None),
        RESTART => {
            let owner = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true));
            match owner {
                Some(o)
                    if o.api_version == "apps/v1"
                        && matches!(o.kind.as_str(), "ReplicaSet" | "StatefulSet") =>
                {
                    Ok(Reload::Restart)
                }
                Some(o) => Err(Error::NoWorkload(format!("{} {}", o.kind, o.name))),
                None => Err(Error::NoWorkload("none".to_owned())),
            }
        }
        "signal" => {
            if mode != Mode::Sidecar {
                return Err(Error::SignalNeedsSidecar);
            }
            let names = || {
                spec.containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (index, target) = match container {
                Some(name) => spec
                    .containers
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name == name)
                    .ok_or_else(|| Error::UnknownContainer {
                        name: name.to_owned(),
                        containers: names(),
                    })?,
                None => match spec.containers.as_slice() {
                    [only] => (0, only),
                    _ => return Err(Error::ContainerMissing(names())),
                },
            };
            let signal = match signal {
                None => ReloadSignal::Hup,
                Some(name) => ReloadSignal::parse(name).ok_or_else(|| Error::UnknownSignal {
                    given: name.to_owned(),
                })?,
            };
            let (user, group) =
                user_of(spec, target).ok_or_else(|| Error::UserUnknown(target.name.clone()))?;
            if user == 0 {
                return Err(Error::RootTarget(target.name.clone()));
            }
            Ok(Reload::Signal {
                index,
                container: target.name.clone(),
                signal,
                user,
                group,
            })
        }
        other => Err(Error::UnknownAction(other.to_owned())),
    }
}

/// The user and group a container runs as, when the pod says so (the
/// image's user is unknown at admission).
fn user_of(spec: &PodSpec, container: &Container) -> Option<(i64, i64)> {
    let container = container.security_context.as_ref();
    let pod = spec.security_context.as_ref();
    let user = container
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user))?;
    let group = container
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group))?;
    Some((user, group))
}
