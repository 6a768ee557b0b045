//! A real one-node cluster for the tests that run pods (`tests/node.rs`):
//! etcd, kube-apiserver, kube-scheduler, kube-controller-manager,
//! containerd, runc, a bridge, a kubelet, kube-proxy and a cluster DNS from
//! `tests/node/start.sh`, and images from `tests/node/images.sh`, imported
//! into the node's containerd. Stopped (`start.sh stop`) when dropped, even
//! after a panic.
//!
//! Unlike the rest of this crate, a node binds more than 127.0.0.1: the
//! kubelet and the DNS listen on the node's bridge address ([`Node::ip`]),
//! and the API server on every address, so that pods reach it through the
//! `kubernetes` Service. [`cluster`] installs Signet's chart on a node;
//! [`rotation`] is what its rotation step needs besides.

pub mod cluster;
pub mod rotation;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::{ControlPlane, output, repo_root, run};

/// The bin folder of a control-plane build that has the node's components
/// (build.sh recipe 3 or later): `$SIGNET_CP_BIN`, else the newest such
/// build in the cache. Never builds.
pub fn node_bin() -> anyhow::Result<PathBuf> {
    crate::build_with(
        &[
            "etcd",
            "kube-apiserver",
            "kubectl",
            "helm",
            "kubelet",
            "kube-scheduler",
            "kube-controller-manager",
            "kube-proxy",
        ],
        "run `bash tests/control-plane/build.sh` (it builds the kubelet, kube-scheduler, kube-controller-manager and kube-proxy too; CI's .ci/run does it first)",
    )
}

/// An error unless this process runs as root (effective uid 0): a node
/// mounts, makes cgroups and network namespaces.
pub fn ensure_root() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    ensure!(
        effective == "0",
        "a real node needs root (it mounts, makes cgroups, a bridge and network namespaces); running as uid {effective}"
    );
    Ok(())
}

/// A running node; its control plane is [`Node::plane`].
pub struct Node {
    dir: PathBuf,
    name: String,
    ip: String,
    // Dropped after `Drop::drop` stopped the node (which stops it too).
    plane: ControlPlane,
}

impl Node {
    /// Starts one in `dir` with the tools in `bin` (see [`node_bin`]).
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        ensure_root()?;
        let script = repo_root().join("tests/node/start.sh");
        let started = output(
            Command::new("bash")
                .arg(&script)
                .arg(dir)
                .env("SIGNET_CP_BIN", bin),
        )?;
        if !started.status.success() {
            // start.sh stops what it started when it fails; make sure.
            let _ = output(Command::new("bash").arg(&script).arg("stop").arg(dir));
            bail!(
                "tests/node/start.sh failed ({}):\n{}",
                started.status,
                String::from_utf8_lossy(&started.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.join("env")).context("reading the node's env")?;
        let value = |key: &str| {
            env.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .with_context(|| format!("start.sh recorded no {key}"))
        };
        let plane = ControlPlane::attach(bin, &dir.join("control-plane"))?;
        Ok(Self {
            dir: dir.to_owned(),
            name: value("SIGNET_NODE_NAME")?,
            ip: value("SIGNET_NODE_IP")?,
            plane,
        })
    }

    /// The control plane the node is registered with.
    pub fn plane(&self) -> &ControlPlane {
        &self.plane
    }

    /// The node's name (pods set it as `spec.nodeName`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address on its bridge: the kubelet's and the DNS's, and
    /// the host's as the pods see it.
    pub fn ip(&self) -> &str {
        &self.ip
    }

    /// The kubelet's folder of pod `uid` (its volumes are under
    /// `volumes/`).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.dir.join("kubelet/pods").join(uid)
    }

    /// Creates `names` and waits until the controller-manager gave each its
    /// `default` ServiceAccount and `kube-root-ca.crt` ConfigMap.
    pub fn namespaces(&self, names: &[&str]) -> anyhow::Result<()> {
        run(Command::new("bash")
            .arg(repo_root().join("tests/node/start.sh"))
            .arg("namespace")
            .arg(&self.dir)
            .args(names))?;
        Ok(())
    }

    /// Builds `images` (names of `tests/node/images.sh`) from the Signet
    /// binaries in `bins` and the test app `app`, into `out`, and imports
    /// them into the node's containerd.
    pub fn import_images(
        &self,
        bins: &Path,
        app: &Path,
        images: &[&str],
        out: &Path,
    ) -> anyhow::Result<()> {
        run(Command::new("bash")
            .arg(repo_root().join("tests/node/images.sh"))
            .arg("--import")
            .arg(&self.dir)
            .arg(out)
            .env("SIGNET_BIN_DIR", bins)
            .env("SIGNET_NODE_APP", app)
            .env("SIGNET_IMAGES", images.join(" ")))?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let stopped = output(
            Command::new("bash")
                .arg(repo_root().join("tests/node/start.sh"))
                .arg("stop")
                .arg(&self.dir),
        );
        if let Ok(stopped) = stopped
            && !stopped.status.success()
        {
            eprintln!(
                "tests/node/start.sh stop failed:\n{}",
                String::from_utf8_lossy(&stopped.stderr)
            );
        }
    }
}

/// Host PIDs of the processes whose environment has `name=value` (a
/// container's env is its process's env; root reads every one).
pub fn processes_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
        })
        .collect()
}

/// The command line of process `pid` (empty once it is gone).
pub fn command_line(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The resident set size of process `pid`, in KiB (`VmRSS`).
pub fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS for process {pid}"))
}
