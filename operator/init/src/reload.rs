//! `signet.dev/reload: signal`: after a refresh rewrote files, send a signal
//! to the main process of a named container of the same pod.
//!
//! The pod shares one process namespace (`shareProcessNamespace: true`, set
//! by the webhook), so the target's processes are visible in `/proc`. The
//! webhook marks the target container with the environment entry
//! `SIGNET_RELOAD_TARGET=<container name>`; every process started in that
//! container inherits it (children and `kubectl exec` sessions too), so the
//! main process is the earliest-started marked process, and among marked
//! processes started in the same clock tick, the one whose parent is not
//! marked.
//!
//! Reading another process's `/proc/<pid>/environ` needs the same user and
//! group as that process (real, effective and saved, as the kernel's ptrace
//! read check compares them), and signalling it the same user (or
//! `CAP_SYS_PTRACE` and `CAP_KILL`, which `signet-init` never has): the
//! webhook runs `signet-init` as the target container's `runAsUser` and
//! `runAsGroup`. A process that changed its credentials
//! (setuid programs) is not dumpable and stays unreadable even then.

use std::collections::HashMap;
use std::path::Path;

use rustix::process::{Pid, Signal, kill_process};

use crate::contract::{ENV_RELOAD_TARGET, ReloadSignal};

/// What to signal, from `SIGNET_RELOAD_SIGNAL` and `SIGNET_RELOAD_CONTAINER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalTarget {
    /// The signal.
    pub signal: ReloadSignal,
    /// The container whose main process receives it.
    pub container: String,
}

/// Why the target could not be signalled. Messages name the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no process of container {container} is visible{unreadable}; check that the pod has shareProcessNamespace: true, that container {container} is running, and that its environment still holds {marker}={container}",
        marker = ENV_RELOAD_TARGET,
        unreadable = unreadable_hint(*.unreadable)
    )]
    NotFound {
        container: String,
        unreadable: usize,
    },
    #[error(
        "not permitted to send {signal} to process {pid} of container {container}; signet-init must run as the same user as that container (set runAsUser on the container or the pod)"
    )]
    Denied {
        container: String,
        pid: u32,
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot send {signal} to process {pid} of container {container}")]
    Kill {
        container: String,
        pid: u32,
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list the processes in /proc")]
    Proc(#[source] std::io::Error),
}

fn unreadable_hint(unreadable: usize) -> String {
    if unreadable == 0 {
        String::new()
    } else {
        format!(
            " ({unreadable} process(es) could not be inspected: signet-init must run as the same user and group as the target container)"
        )
    }
}

/// Finds the main process of `target.container` and sends it the signal;
/// returns its pid.
pub fn send(target: &SignalTarget) -> Result<u32, Error> {
    let pid = main_process(Path::new("/proc"), &target.container)?;
    let signal = target.signal.as_str();
    let denied = |source| Error::Denied {
        container: target.container.clone(),
        pid,
        signal,
        source,
    };
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::NotFound {
            container: target.container.clone(),
            unreadable: 0,
        })?;
    match kill_process(raw, to_rustix(target.signal)) {
        Ok(()) => Ok(pid),
        Err(errno) if errno == rustix::io::Errno::PERM => Err(denied(errno.into())),
        Err(errno) => Err(Error::Kill {
            container: target.container.clone(),
            pid,
            signal,
            source: errno.into(),
        }),
    }
}

fn to_rustix(signal: ReloadSignal) -> Signal {
    match signal {
        ReloadSignal::Hup => Signal::HUP,
        ReloadSignal::Usr1 => Signal::USR1,
        ReloadSignal::Usr2 => Signal::USR2,
        ReloadSignal::Int => Signal::INT,
        ReloadSignal::Quit => Signal::QUIT,
        ReloadSignal::Term => Signal::TERM,
        ReloadSignal::Winch => Signal::WINCH,
    }
}

/// A marked process: its parent and when it started (clock ticks since boot).
struct Marked {
    parent: u32,
    start: u64,
}

/// The pid of the main process of `container` among the processes under
/// `proc` (normally `/proc`).
pub fn main_process(proc: &Path, container: &str) -> Result<u32, Error> {
    let marker = format!("{ENV_RELOAD_TARGET}={container}").into_bytes();
    let own = std::process::id();
    let mut marked: HashMap<u32, Marked> = HashMap::new();
    let mut unreadable = 0;
    for entry in std::fs::read_dir(proc).map_err(Error::Proc)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own {
            continue;
        }
        let environ = match std::fs::read(entry.path().join("environ")) {
            Ok(environ) => environ,
            // Gone since the listing: not a candidate.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        if !environ.split(|b| *b == 0).any(|entry| entry == marker) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some((parent, start)) = parse_stat(&stat) {
            marked.insert(pid, Marked { parent, start });
        }
    }
    marked
        .iter()
        .min_by_key(|(pid, m)| (m.start, marked.contains_key(&m.parent), **pid))
        .map(|(pid, _)| *pid)
        .ok_or(Error::NotFound {
            container: container.to_owned(),
            unreadable,
        })
}

/// The parent pid (field 4) and start time (field 22) of a
/// `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    let parent = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((parent, start))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(stat), Some((7, 98765)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_missing_container_names_the_fix() {
        let error = main_process(Path::new("/proc"), "no-such-container-x").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("shareProcessNamespace"), "{text}");
        assert!(
            text.contains("SIGNET_RELOAD_TARGET=no-such-container-x"),
            "{text}"
        );
    }
}
