//! Harness of Signet's tests on a real control plane: the end-to-end test
//! (`tests/kubernetes.rs`) and, as a dev-dependency, the operator's
//! `controller_real` test. Locating the binaries, a control plane from
//! `tests/control-plane/`, processes that are stopped even when a test
//! panics, polling with deadlines (blocking or async), the part of a
//! kubelet the end-to-end test plays for an injected pod ([`kubelet`]), the
//! vault as the tests see it ([`vault`]), and a real node ([`node`]).
//!
//! It depends on no Signet crate but the client, so any package may use it
//! for its tests without a dependency cycle.
//!
//! Everything binds to 127.0.0.1 only.

pub mod kubelet;
pub mod node;
pub mod vault;

use std::{
    fs::File,
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

/// Root of the repository (this crate lives in `tests/e2e`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.to_owned(), Path::to_owned)
}

/// A binary of this workspace, from the cargo target folder the running test
/// was built into (`target/debug/deps/<test>` → `target/debug/<name>`).
///
/// `cargo test --workspace` builds the binaries of every package that has
/// integration tests; `cargo test -p signet-e2e` alone does not, and uses
/// whatever an earlier build left there.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no grandparent folder")?;
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
        path.display()
    );
    Ok(path)
}

/// The bin folder of a complete control-plane build (`tests/control-plane/
/// build.sh`): `$SIGNET_CP_BIN`, else the newest complete build in the cache.
/// Never builds: a first build takes minutes, so a missing build is an error
/// that names the script.
pub fn control_plane_bin() -> anyhow::Result<PathBuf> {
    build_with(
        &["etcd", "kube-apiserver", "kubectl", "helm"],
        "run `bash tests/control-plane/build.sh` once (CI's .ci/run does it before `cargo test`)",
    )
}

/// The bin folder of the newest complete build of `tools`: `SIGNET_CP_BIN`
/// when set, else the most recently stamped build under the cache
/// (`SIGNET_CP_CACHE`, default `~/.cache/signet-control-plane`). An error
/// naming `hint` when there is none.
pub fn build_with(tools: &[&str], hint: &str) -> anyhow::Result<PathBuf> {
    let complete = |dir: &Path| tools.iter().all(|tool| dir.join(tool).is_file());
    if let Some(bin) = std::env::var_os("SIGNET_CP_BIN").map(PathBuf::from) {
        ensure!(
            complete(&bin),
            "SIGNET_CP_BIN={} lacks one of {tools:?}: {hint}",
            bin.display()
        );
        return Ok(bin);
    }
    let cache = std::env::var_os("SIGNET_CP_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/signet-control-plane"))
        })
        .with_context(|| format!("neither SIGNET_CP_CACHE nor HOME is set: {hint}"))?;
    let mut builds: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|build| complete(&build.join("bin")))
        .filter_map(|build| {
            let stamp = build.join("stamp").metadata().ok()?.modified().ok()?;
            Some((stamp, build.join("bin")))
        })
        .collect();
    builds.sort();
    builds.pop().map(|(_, bin)| bin).with_context(|| {
        format!(
            "no complete build of {tools:?} in {}: {hint}",
            cache.display()
        )
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `command` to completion; its stdout when it exits 0, else an error
/// carrying both outputs.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let output = output(command)?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).context("stdout is not UTF-8")
}

/// Runs `command` to completion, whatever its exit status.
pub fn output(command: &mut Command) -> anyhow::Result<Output> {
    command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))
}

/// The name the vault knows the test cluster by.
pub const CLUSTER: &str = "e2e";
/// Namespace of the test pods: the operator's delegations name it, and
/// only it.
pub const APP_NS: &str = "apps";

/// The EnrollmentToken `shop` (an attested policy for project `shop`,
/// pods of service account `default`) and its SecretGrant: `api-key` as a
/// raw file, fields `user` and `password` of `db` as an env file, under
/// `/var/run/secrets/signet`. Both end-to-end tests apply it.
pub const SHOP_POLICY: &str = r#"apiVersion: signet.dev/v1alpha1
kind: EnrollmentToken
metadata:
  name: shop
spec:
  project: shop
  maxUses: 100
  tokenTtl: 1h
  machineLifetime: 1h
  nameTemplate: "{namespace}-{pod}"
  allowedServiceAccounts: [default]
---
apiVersion: signet.dev/v1alpha1
kind: SecretGrant
metadata:
  name: shop
spec:
  enrollmentToken: shop
  mountPath: /var/run/secrets/signet
  refresh: 1s
  secrets:
    - secret: api-key
      file: api-key
      format: raw
    - secret: db
      fields: [user, password]
      file: db.env
      format: env
"#;

/// A fresh work folder named `prefix` and a random tail;
/// `SIGNET_E2E_KEEP=1` keeps it (and says where).
pub fn work_dir(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let keep = std::env::var_os("SIGNET_E2E_KEEP").is_some_and(|v| v == "1");
    let work = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()?;
    if keep {
        eprintln!("SIGNET_E2E_KEEP=1: keeping {}", work.path().display());
    }
    Ok(work)
}

/// Prints to stderr the last `lines` lines of every `.log` and `.err` file
/// in `dirs`, for a failing test.
pub fn print_log_tails(dirs: &[PathBuf], lines: usize) {
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "err" || x == "log"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {} ----", file.display());
            for line in &all[all.len().saturating_sub(lines)..] {
                eprintln!("{line}");
            }
        }
    }
}

/// How often [`eventually`] and [`eventually_async`] poll.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// Polls `check` every 200 ms until it returns `Some`, failing after
/// `timeout` with `what` and the last error `check` returned, if any.
pub fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Deadline::new(what, timeout);
    loop {
        if let Some(value) = deadline.check(check())? {
            return Ok(value);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// [`eventually`] for checks that await, in a test on a Tokio runtime:
/// sleeping between polls must not block the thread that runs what is
/// being waited for (an in-process controller or vault).
pub async fn eventually_async<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Deadline::new(what, timeout);
    loop {
        if let Some(value) = deadline.check(check().await)? {
            return Ok(value);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The timing and the failure message both `eventually`s share.
struct Deadline<'a> {
    what: &'a str,
    timeout: Duration,
    at: Instant,
}

impl<'a> Deadline<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        Self {
            what,
            timeout,
            at: Instant::now() + timeout,
        }
    }

    /// The value when the check found it; `None` to poll again; an error
    /// naming `what` (and the check's last error) once the time is up.
    fn check<T>(&self, outcome: anyhow::Result<Option<T>>) -> anyhow::Result<Option<T>> {
        let last = match outcome {
            Ok(Some(value)) => return Ok(Some(value)),
            Ok(None) => None,
            Err(error) => Some(error),
        };
        if Instant::now() < self.at {
            return Ok(None);
        }
        let Self { what, timeout, .. } = self;
        match last {
            Some(error) => bail!("timed out after {timeout:?} waiting for {what}: {error:#}"),
            None => bail!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// A child process whose stdout and stderr go to files; stopped with
/// SIGTERM (then SIGKILL) when dropped, so a failing test leaves nothing
/// running.
pub struct Daemon {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How long a daemon gets to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Daemon {
    /// Spawns `command` with stdin closed and output to `<logs>/<name>.out`
    /// and `<logs>/<name>.err`.
    pub fn spawn(name: &str, mut command: Command, logs: &Path) -> anyhow::Result<Self> {
        let stdout = logs.join(format!("{name}.out"));
        let stderr = logs.join(format!("{name}.err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    /// Everything it wrote to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last `lines` lines of its stderr, for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// An error unless the process is still running.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its stderr ends with:\n{}",
                self.name,
                self.stderr_tail(30)
            );
        }
        Ok(())
    }

    /// Kills it with SIGKILL, as a crash or an OOM kill would: no clean-up
    /// of its own runs.
    pub fn crash(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // std has no SIGTERM and the workspace forbids unsafe: kill(1) sends it.
        let _ = output(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                self.child.wait()?;
                bail!("{} ignored SIGTERM for {STOP_GRACE:?}; killed", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.stop();
        }
    }
}

/// A running etcd + kube-apiserver from `tests/control-plane/start.sh`,
/// stopped (`start.sh stop`) when dropped.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts one in `dir` with the tools in `bin`.
    pub fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let script = repo_root().join("tests/control-plane/start.sh");
        let output = output(
            Command::new("bash")
                .arg(&script)
                .arg(dir)
                .env("SIGNET_CP_BIN", bin),
        )?;
        // Created before checking, so that a half-started plane is stopped.
        let plane = Self {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            kubeconfig: PathBuf::from(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim(),
            ),
        };
        ensure!(
            output.status.success() && plane.kubeconfig.is_file(),
            "tests/control-plane/start.sh failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(plane)
    }

    /// One that `start.sh` already started in `dir` (as `tests/node/
    /// start.sh` does, with a node's flags), stopped like any other when
    /// dropped.
    pub fn attach(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let kubeconfig = dir.join("kubeconfig");
        ensure!(
            kubeconfig.is_file(),
            "no control plane in {}: {} is missing",
            dir.display(),
            kubeconfig.display()
        );
        Ok(Self {
            dir: dir.to_owned(),
            bin: bin.to_owned(),
            kubeconfig,
        })
    }

    /// The kubeconfig (cluster-admin through a client certificate).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A value `start.sh` recorded in its `env` file (`SIGNET_CP_SERVER`,
    /// `SIGNET_CP_CA`, ...).
    pub fn env(&self, key: &str) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.dir.join("env"))?;
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('=').map(str::to_owned))
            .ok_or_else(|| anyhow::anyhow!("start.sh recorded no {key}"))
    }

    /// The kube-apiserver's log, for failure messages.
    pub fn apiserver_log(&self) -> PathBuf {
        self.dir.join("kube-apiserver.log")
    }

    /// A kubectl command against this control plane.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.bin.join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=20s");
        command
    }

    /// A helm command against this control plane.
    pub fn helm(&self) -> Command {
        let mut command = Command::new(self.bin.join("helm"));
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        // helm keeps caches and repositories under HOME by default.
        for (var, sub) in [
            ("HELM_CACHE_HOME", "helm/cache"),
            ("HELM_CONFIG_HOME", "helm/config"),
            ("HELM_DATA_HOME", "helm/data"),
        ] {
            command.env(var, self.dir.join(sub));
        }
        command
    }

    /// `kubectl ARGS` that must succeed; its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.kubectl().args(args))
    }

    /// `kubectl ARGS` with `stdin` as standard input, whatever its status.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> anyhow::Result<Output> {
        use std::io::Write as _;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl has no stdin")?
            .write_all(stdin.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// `kubectl apply -f -` of `manifest`, which must succeed.
    pub fn apply(&self, namespace: &str, manifest: &str) -> anyhow::Result<()> {
        let output = self.kubectl_stdin(&["-n", namespace, "apply", "-f", "-"], manifest)?;
        ensure!(
            output.status.success(),
            "kubectl apply failed:\n{}\n{manifest}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// A token of ServiceAccount `account` from the TokenRequest API, valid
    /// `seconds`, for `audience` (the API server's own when empty), bound
    /// to pod `(name, uid)` when given, as the kubelet's projected tokens
    /// are.
    pub fn token(
        &self,
        namespace: &str,
        account: &str,
        audience: &str,
        seconds: u64,
        pod: Option<(&str, &str)>,
    ) -> anyhow::Result<String> {
        let duration = format!("{seconds}s");
        let mut args = vec![
            "-n",
            namespace,
            "create",
            "token",
            account,
            "--duration",
            &duration,
        ];
        if !audience.is_empty() {
            args.extend(["--audience", audience]);
        }
        if let Some((name, uid)) = pod {
            args.extend([
                "--bound-object-kind",
                "Pod",
                "--bound-object-name",
                name,
                "--bound-object-uid",
                uid,
            ]);
        }
        Ok(self.kubectl_ok(&args)?.trim().to_owned())
    }

    /// Waits up to `timeout` for the Ready condition of the [`SHOP_POLICY`]
    /// objects in `namespace`: the controller made the vault policy and
    /// granted its secrets. An error naming the first that is not Ready.
    pub fn wait_shop_policy(&self, namespace: &str, timeout: Duration) -> anyhow::Result<()> {
        let timeout = format!("--timeout={}s", timeout.as_secs());
        for object in ["enrollmenttoken/shop", "secretgrant/shop"] {
            self.kubectl_ok(&[
                "-n",
                namespace,
                "wait",
                "--for=condition=Ready",
                &timeout,
                object,
            ])
            .with_context(|| format!("{object} not Ready"))?;
        }
        Ok(())
    }

    /// `kubectl get KIND NAME -o json`, parsed; `None` when not found.
    pub fn get_json(
        &self,
        namespace: Option<&str>,
        kind: &str,
        name: &str,
    ) -> anyhow::Result<Option<serde_json::Value>> {
        let mut command = self.kubectl();
        if let Some(namespace) = namespace {
            command.args(["-n", namespace]);
        }
        let output = output(command.args(["get", kind, name, "-o", "json"]))?;
        if output.status.success() {
            return Ok(Some(serde_json::from_slice(&output.stdout)?));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("NotFound") || stderr.contains("not found") {
            return Ok(None);
        }
        bail!("kubectl get {kind} {name} failed: {stderr}")
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = output(
            Command::new("bash")
                .arg(repo_root().join("tests/control-plane/start.sh"))
                .arg("stop")
                .arg(&self.dir),
        );
    }
}
