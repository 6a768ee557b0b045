//! Signet installed on a [`Node`], as the node tests (`tests/node.rs`,
//! `tests/node_bench.rs`) use it: the images imported, the CRDs and the
//! chart installed, `signet-vault serve` on the node's address (where the
//! pods reach the host), an admin, a registered cluster, project `shop`
//! with two secrets, the operator's agent with delegations for namespace
//! `apps`, the controller and the webhook as processes, and the
//! EnrollmentToken `shop` with its SecretGrant, both Ready. Plus the pods
//! the tests run: the test app (`src/bin/signet-node-app.rs`), restricted,
//! opted in or not.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{Node, command_line, node_bin, processes_with_env};
use crate::{
    ControlPlane, Daemon, eventually, free_port, output, repo_root, run, workspace_binary,
};

/// Namespace of the chart.
pub const SYSTEM_NS: &str = "signet-system";
/// Namespace of the test pods (the operator's delegations name it).
pub const APP_NS: &str = "apps";
/// The chart's release name, and the MutatingWebhookConfiguration's.
pub const RELEASE: &str = "signet";
/// The SecretGrant's mount path.
pub const MOUNT_PATH: &str = "/var/run/secrets/signet";
/// Where signet-init (only) finds the pod's projected token.
pub const IDENTITY_TOKEN: &str = "/var/run/secrets/signet.dev/identity/token";
/// The image the webhook injects.
pub const INIT_IMAGE: &str = "signet.invalid/signet-init:node";
/// The test app's image.
pub const APP_IMAGE: &str = "signet.invalid/node-app:node";
/// The name the vault knows the cluster by.
pub const CLUSTER: &str = "e2e";
/// The vault's ServiceAccount in the chart (`system:auth-delegator` only).
const VAULT_SA: &str = "signet-vault";
/// The app's user. signet-init (65532) writes the files 0440 into a volume
/// the pod's fsGroup owns, so the app reads them through that group.
pub const APP_UID: u32 = 1000;
/// The test pods' fsGroup.
pub const FS_GROUP: u32 = 2000;
/// Bound of every wait for the kubelet, the controller or the sidecar.
pub const WAIT: Duration = Duration::from_secs(60);

const TOKEN_AND_GRANT: &str = r#"apiVersion: signet.dev/v1alpha1
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

/// The `signet` CLI as the admin.
pub struct Cli {
    binary: PathBuf,
    vault: String,
    identity: PathBuf,
}

impl Cli {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("SIGNET_VAULT", &self.vault)
            .env("SIGNET_IDENTITY", &self.identity);
        command
    }

    /// `signet ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.command().args(args))
    }

    /// `signet --json ARGS`, parsed.
    pub fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let stdout = run(self.command().arg("--json").args(args))?;
        serde_json::from_str(&stdout).with_context(|| format!("signet {args:?}: {stdout}"))
    }

    /// Live (not disabled) machines attested as running in pod `uid`.
    pub fn live_machines_of_pod(&self, uid: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.json(&["machine", "list"])?;
        Ok(list["machines"]
            .as_array()
            .context("machine list has no machines")?
            .iter()
            .filter(|m| {
                m["kubernetes"]["pod_uid"] == uid
                    && m["kubernetes"]["attested"] == true
                    && m["disabled"] != true
            })
            .cloned()
            .collect())
    }

    /// Allowed audit entries of `action`.
    pub fn audited(&self, action: &str) -> anyhow::Result<Vec<Value>> {
        let list = self.json(&["audit", "list", "--limit", "5000"])?;
        Ok(list["entries"]
            .as_array()
            .context("audit list has no entries")?
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] != "deny")
            .cloned()
            .collect())
    }
}

/// The Signet binaries a node test runs and puts in images.
pub struct Binaries {
    /// Folder of signet-vault, signet, signet-operator and signet-init.
    pub dir: PathBuf,
    /// The test app and pause program (`src/bin/signet-node-app.rs`).
    pub app: PathBuf,
}

impl Binaries {
    /// `$SIGNET_NODE_BIN_DIR` (the benchmark uses `target/release`), else
    /// the cargo target folder the running test was built into; `app` is
    /// the test's `CARGO_BIN_EXE_signet-node-app`.
    pub fn find(app: &Path) -> anyhow::Result<Self> {
        let dir = match std::env::var_os("SIGNET_NODE_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => workspace_binary("signet-init")?
                .parent()
                .context("signet-init has no folder")?
                .to_owned(),
        };
        for name in ["signet-vault", "signet", "signet-operator", "signet-init"] {
            ensure!(
                dir.join(name).is_file(),
                "{} is missing: cargo build --workspace --bins (or set SIGNET_NODE_BIN_DIR)",
                dir.join(name).display()
            );
        }
        Ok(Self {
            dir,
            app: app.to_owned(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// On a failing test: the pods as the API server sees them, and the end of
/// every log (the vault, the operator, the kubelet, containerd, etcd,
/// kube-apiserver). Declare it after the [`Cluster`], so that it runs while
/// the node still does.
pub struct Diagnostics {
    logs: Vec<PathBuf>,
    /// kubectl and the cluster-admin kubeconfig.
    kubectl: (PathBuf, PathBuf),
}

impl Diagnostics {
    /// For the cluster [`Cluster::start`] makes in `work`.
    pub fn of(work: &Path, cp_bin: &Path) -> Self {
        let node = work.join("node");
        Self {
            logs: vec![work.join("logs"), node.clone(), node.join("control-plane")],
            kubectl: (
                cp_bin.join("kubectl"),
                node.join("control-plane/kubeconfig"),
            ),
        }
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let (kubectl, kubeconfig) = &self.kubectl;
        for args in [
            &["get", "pods", "-A", "-o", "wide"][..],
            &["-n", APP_NS, "describe", "pods"][..],
        ] {
            let mut command = Command::new(kubectl);
            command.arg("--kubeconfig").arg(kubeconfig).args(args);
            if let Ok(out) = output(&mut command) {
                eprintln!("---- kubectl {} ----", args.join(" "));
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        for dir in &self.logs {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "err" || x == "log"))
                .collect();
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("---- last lines of {} ----", file.display());
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Signet on a running node (see the module documentation).
pub struct Cluster {
    // Fields drop in order: the processes stop before the node does.
    /// The controller process.
    pub controller: Daemon,
    /// The webhook process.
    pub webhook: Daemon,
    /// The vault process.
    pub vault: Daemon,
    /// The admin's CLI.
    pub cli: Cli,
    /// The operator's agent id (the actor of the controller's revocations).
    pub agent_id: String,
    /// The control-plane tools (with the kubelet).
    pub cp_bin: PathBuf,
    /// The node.
    pub node: Node,
}

impl Cluster {
    /// Starts it all in `work`, telling `step` what it does.
    pub fn start(work: &Path, bins: &Binaries, step: &dyn Fn(&str)) -> anyhow::Result<Self> {
        let cp_bin = node_bin()?;
        let logs = work.join("logs");
        std::fs::create_dir_all(&logs)?;

        step("starting the node: etcd, kube-apiserver, containerd, bridge, kubelet");
        let node = Node::start(&cp_bin, &work.join("node"))?;
        let _diagnostics = Diagnostics::of(work, &cp_bin);
        step("images: signet-init, the test app, pause; imported into containerd");
        node.import_images(
            &bins.dir,
            &bins.app,
            &["signet-init", "node-app", "pause"],
            &work.join("images"),
        )?;
        node.namespaces(&[SYSTEM_NS, APP_NS])?;
        let plane = node.plane();

        step("kubectl apply -f crds/ and helm install");
        let crds = repo_root().join("crds");
        plane.kubectl_ok(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
        plane.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/enrollmenttokens.signet.dev",
            "crd/secretgrants.signet.dev",
        ])?;
        let vault_port = free_port()?;
        let webhook_port = free_port()?;
        // The pods reach the host at the node's bridge address.
        let vault_url = format!("http://{}:{vault_port}", node.ip());
        let webhook_url = format!("https://127.0.0.1:{webhook_port}/mutate");
        run(plane.helm().args([
            "install",
            RELEASE,
            &repo_root().join("charts/signet").to_string_lossy(),
            "-n",
            SYSTEM_NS,
            "-f",
            &repo_root()
                .join("tests/chart/values-e2e.yaml")
                .to_string_lossy(),
            "--set",
            &format!("operator.vaultUrl={vault_url}"),
            "--set",
            &format!("operator.webhook.url={webhook_url}"),
        ]))?;
        // The chart's vault ServiceAccount may only review tokens; the vault
        // runs on the host, so its token comes from TokenRequest.
        let reviewer_token = work.join("reviewer-token");
        let token = plane.kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "create",
            "token",
            VAULT_SA,
            "--duration",
            "3600s",
        ])?;
        std::fs::write(&reviewer_token, token.trim())?;

        step("signet-vault serve on the node address, admin, cluster, secrets, agent");
        let vault_bin = bins.path("signet-vault");
        let root_key = work.join("root-key");
        std::fs::write(&root_key, run(Command::new(&vault_bin).arg("root-key"))?)?;
        std::fs::set_permissions(&root_key, std::fs::Permissions::from_mode(0o600))?;
        let mut vault_cmd = Command::new(&vault_bin);
        vault_cmd
            .args(["serve", "--listen", &format!("{}:{vault_port}", node.ip())])
            .arg("--data-dir")
            .arg(work.join("vault-data"))
            .arg("--root-key-file")
            .arg(&root_key)
            .arg("--kube-token-file")
            .arg(&reviewer_token);
        let mut vault = Daemon::spawn("vault", vault_cmd, &logs)?;
        let bootstrap = eventually("the vault's bootstrap token on stdout", WAIT, || {
            vault.ensure_running()?;
            Ok(vault
                .stdout()
                .split_whitespace()
                .skip_while(|w| *w != "--token")
                .nth(1)
                .map(str::to_owned))
        })?;
        let admin_file = work.join("admin.json");
        run(Command::new(bins.path("signet"))
            .env_clear()
            .args([
                "--vault", &vault_url, "admin", "enroll", "--token", &bootstrap, "--out",
            ])
            .arg(&admin_file))?;
        let cli = Cli {
            binary: bins.path("signet"),
            vault: vault_url.clone(),
            identity: admin_file,
        };
        let server = plane.env("SIGNET_CP_SERVER")?;
        let ca_file = plane.env("SIGNET_CP_CA")?;
        cli.ok(&[
            "cluster",
            "add",
            CLUSTER,
            "--api-url",
            &server,
            "--ca-file",
            &ca_file,
        ])?;
        cli.ok(&["project", "create", "shop"])?;
        cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v1"])?;
        cli.ok(&[
            "secret",
            "set",
            "shop/db",
            "--field",
            "user=shop",
            "--field",
            "password=it's-a-secret",
        ])?;
        let agent_file = work.join("agent.json");
        cli.ok(&["keygen", "--out", &agent_file.to_string_lossy()])?;
        cli.ok(&[
            "agent",
            "create",
            "--name",
            "signet-operator",
            "--key-file",
            &agent_file.to_string_lossy(),
            "--scope",
            "metadata",
            "--scope",
            "tokens",
            "--scope",
            "grants",
            "--scope",
            "machines",
        ])?;
        let agent: Value = serde_json::from_str(&std::fs::read_to_string(&agent_file)?)?;
        let agent_id = agent["id"]
            .as_str()
            .context("the agent file has no id")?
            .to_owned();
        // The operator may hand out these two secrets to pods of `apps`.
        for secret in [
            vec!["--secret", "api-key"],
            vec!["--secret", "db", "--field", "user", "--field", "password"],
        ] {
            let mut args = vec![
                "delegation",
                "add",
                "--agent",
                &agent_id,
                "--project",
                "shop",
                "--cluster",
                CLUSTER,
                "--namespace",
                APP_NS,
            ];
            args.extend(secret);
            cli.ok(&args)?;
        }

        step("signet-operator controller and webhook");
        let kubeconfig = plane.kubeconfig().to_owned();
        let operator_bin = bins.path("signet-operator");
        let mut controller_cmd = Command::new(&operator_bin);
        controller_cmd
            .args(["controller", "--vault", &vault_url, "--identity"])
            .arg(&agent_file)
            .env("SIGNET_CLUSTER_NAME", CLUSTER)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,signet_operator=debug");
        let mut controller = Daemon::spawn("controller", controller_cmd, &logs)?;
        let mut webhook_cmd = Command::new(&operator_bin);
        webhook_cmd
            .args([
                "webhook",
                "--listen",
                &format!("127.0.0.1:{webhook_port}"),
                "--self-signed-service",
                "signet-webhook",
                "--namespace",
                SYSTEM_NS,
                "--webhook-config-name",
                RELEASE,
                "--self-signed-extra-name",
                "127.0.0.1",
                "--vault-url",
                &vault_url,
                "--init-image",
                INIT_IMAGE,
                "--init-image-pull-policy",
                "Never",
            ])
            .env("SIGNET_CLUSTER_NAME", CLUSTER)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info");
        let mut webhook = Daemon::spawn("webhook", webhook_cmd, &logs)?;
        eventually(
            "the webhook ready (CA installed, watches synced)",
            WAIT,
            || {
                webhook.ensure_running()?;
                let config = plane.get_json(None, "mutatingwebhookconfiguration", RELEASE)?;
                if !config.is_some_and(|c| c["webhooks"][0]["clientConfig"]["caBundle"].is_string())
                {
                    return Ok(None);
                }
                let out = output(Command::new("curl").args([
                    "-ksf",
                    "--max-time",
                    "2",
                    &format!("https://127.0.0.1:{webhook_port}/readyz"),
                ]))?;
                Ok(out.status.success().then_some(()))
            },
        )?;

        step("EnrollmentToken + SecretGrant");
        plane.apply(APP_NS, TOKEN_AND_GRANT)?;
        for object in ["enrollmenttoken/shop", "secretgrant/shop"] {
            let waited = plane.kubectl_ok(&[
                "-n",
                APP_NS,
                "wait",
                "--for=condition=Ready",
                "--timeout=60s",
                object,
            ]);
            if let Err(error) = waited {
                controller.ensure_running()?;
                bail!("{object} not Ready: {error:#}");
            }
        }
        Ok(Self {
            controller,
            webhook,
            vault,
            cli,
            agent_id,
            cp_bin,
            node,
        })
    }

    /// The control plane.
    pub fn plane(&self) -> &ControlPlane {
        self.node.plane()
    }

    /// `kubectl create -f -` of `manifest` in `apps`. The webhook reads
    /// EnrollmentTokens and SecretGrants from its own watches, which may lag
    /// the controller's Ready by a moment: a refusal for that reason is
    /// retried, as a ReplicaSet would.
    pub fn create_pod(&self, manifest: &str) -> anyhow::Result<()> {
        eventually("the pod created", WAIT, || {
            let out = self
                .plane()
                .kubectl_stdin(&["-n", APP_NS, "create", "-f", "-"], manifest)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                Ok(Some(()))
            } else if stderr.contains("EnrollmentToken apps/shop does not exist")
                || stderr.contains("references EnrollmentToken shop")
                || stderr.contains("still loading EnrollmentTokens")
            {
                Ok(None)
            } else {
                bail!("kubectl create refused the pod: {stderr}")
            }
        })
    }

    /// Polls pod `name` until `done` says so, failing at once when a
    /// container cannot start (an image, configuration or crash-loop
    /// problem) rather than waiting out the deadline.
    pub fn wait_pod(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        eventually(&format!("pod {name}: {what}"), WAIT, || {
            let Some(pod) = self.plane().get_json(Some(APP_NS), "pod", name)? else {
                return Ok(None);
            };
            if done(&pod) {
                return Ok(Some(pod));
            }
            let statuses = pod["status"]["initContainerStatuses"]
                .as_array()
                .into_iter()
                .chain(pod["status"]["containerStatuses"].as_array())
                .flatten();
            for status in statuses {
                let waiting = &status["state"]["waiting"];
                let reason = waiting["reason"].as_str().unwrap_or_default();
                if matches!(
                    reason,
                    "ErrImageNeverPull"
                        | "CreateContainerConfigError"
                        | "CreateContainerError"
                        | "CrashLoopBackOff"
                ) {
                    bail!(
                        "container {} cannot start: {reason}: {}",
                        status["name"],
                        waiting["message"]
                    );
                }
            }
            Ok(None)
        })
    }

    /// The JSON lines the test app of pod `name` printed so far.
    pub fn app_reports(&self, name: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .plane()
            .kubectl_ok(&["-n", APP_NS, "logs", name, "-c", "app"])?
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect())
    }
}

/// A pod on `node` running the test app with `args`, restricted (non-root,
/// no capabilities, read-only root, RuntimeDefault seccomp, the fsGroup);
/// opted in to injection with `mode` (`sidecar` or `init`) when given.
pub fn app_pod(
    name: &str,
    node: &str,
    inject: Option<&str>,
    restart: &str,
    args: &[&str],
) -> String {
    let mut metadata = json!({ "name": name });
    if let Some(mode) = inject {
        metadata["labels"] = json!({ "signet.dev/inject": "true" });
        metadata["annotations"] = json!({
            "signet.dev/enrollment-token": "shop",
            "signet.dev/mode": mode,
        });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node,
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 5,
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": APP_UID,
                "runAsGroup": APP_UID,
                "fsGroup": FS_GROUP,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "app",
                "image": APP_IMAGE,
                "imagePullPolicy": "Never",
                "args": args,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "resources": {
                    "requests": { "cpu": "10m", "memory": "16Mi" },
                    "limits": { "memory": "32Mi" },
                },
            }],
        },
    })
    .to_string()
}

/// True once the pod's Ready condition is.
pub fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The host PID of the `signet-init run` of pod `uid` (its startup probe's
/// `signet-init probe` has the same environment).
pub fn sidecar_pid(uid: &str) -> anyhow::Result<u32> {
    eventually("signet-init's process on the node", WAIT, || {
        Ok(processes_with_env("SIGNET_POD_UID", uid)
            .into_iter()
            .find(|pid| command_line(*pid) == ["/signet-init", "run"]))
    })
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A fresh work folder; `SIGNET_E2E_KEEP=1` keeps it (and says where).
pub fn work_dir() -> anyhow::Result<tempfile::TempDir> {
    let keep = std::env::var_os("SIGNET_E2E_KEEP").is_some_and(|v| v == "1");
    let work = tempfile::Builder::new()
        .prefix("signet-node.")
        .disable_cleanup(keep)
        .tempdir()?;
    if keep {
        eprintln!("SIGNET_E2E_KEEP=1: keeping {}", work.path().display());
    }
    Ok(work)
}
