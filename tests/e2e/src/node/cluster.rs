//! Signet installed on a [`Node`] as its chart installs it, as the node
//! tests (`tests/node.rs`, `tests/node_bench.rs`) use it: the images
//! imported, the root key's Secret, the vault's CA and (once its Service
//! has an address) certificate, a local PersistentVolume for the vault's
//! claim, `helm install` of `charts/signet` with `tests/node/values.yaml`
//! (the vault, the controller and the webhook run as pods), then, over
//! HTTPS through the vault's Service, an admin, the cluster registered with
//! its in-cluster API URL, project `shop` with two secrets,
//! the operator's agent (its identity in the Secret the controller waits
//! for) with delegations for namespace `apps`, and the EnrollmentToken
//! `shop` with its SecretGrant, both Ready (and the same pair in a
//! namespace with no delegation). Plus the pods the tests run:
//! the test app (`src/bin/signet-node-app.rs`), restricted, opted in or
//! not.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{Node, command_line, node_bin, processes_with_env};
use crate::{ControlPlane, eventually, output, repo_root, run, workspace_binary};

/// Namespace of the chart.
pub const SYSTEM_NS: &str = "signet-system";
/// Namespace of the test pods (the operator's delegations name it).
pub const APP_NS: &str = "apps";
/// A namespace with the same EnrollmentToken and SecretGrant as `apps`,
/// but no delegation to the operator: its pods must get nothing.
pub const UNDELEGATED_NS: &str = "elsewhere";
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
/// The name the vault knows the cluster by (`cluster.name` in
/// `tests/node/values.yaml`).
pub const CLUSTER: &str = "e2e";
/// The vault's pod (the chart's StatefulSet has one replica).
pub const VAULT_POD: &str = "signet-vault-0";
/// The vault's Service and its port.
const VAULT_SERVICE: (&str, u16) = ("signet-vault", 8200);
/// The Secrets the chart's values name: the root key, the operator's
/// identity.
const ROOT_KEY_SECRET: &str = "signet-root-key";
const IDENTITY_SECRET: &str = "signet-operator-identity";
/// The vault's serving certificate (`vault.tls.existingSecret`) and its CA
/// for injected pods (`operator.webhook.vaultCa.existingConfigMap`).
const VAULT_TLS_SECRET: &str = "signet-vault-tls";
const VAULT_CA_CONFIGMAP: &str = "signet-vault-ca";
/// The app's user. signet-init (65532) writes the files 0440 into a volume
/// the pod's fsGroup owns, so the app reads them through that group.
pub const APP_UID: u32 = 1000;
/// The test pods' fsGroup.
pub const FS_GROUP: u32 = 2000;
/// Bound of every wait for the kubelet, the controller or the sidecar.
pub const WAIT: Duration = Duration::from_secs(60);

/// The vault's PersistentVolume: a local volume on the node, in a folder
/// the test creates as root, as a provisioner would. The kubelet applies
/// the pod's fsGroup to it (group 65532, group-writable, setgid).
const VAULT_VOLUME: &str = r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: signet-vault-data
spec:
  capacity:
    storage: 1Gi
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  local:
    path: PATH
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/hostname
              operator: In
              values: [NODE]
"#;

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
    /// The vault's CA (its certificate is the test's).
    ca_file: PathBuf,
    identity: PathBuf,
}

impl Cli {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env_clear()
            .env("SIGNET_VAULT", &self.vault)
            .env("SIGNET_CA_CERT", &self.ca_file)
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

/// On a failing test: the objects as the API server sees them (pods,
/// volumes, the test's EnrollmentTokens), the end of the chart's pods'
/// logs, and the end of every log of the node (the kubelet, containerd,
/// kube-proxy, the scheduler, the controller-manager, dnsmasq, etcd,
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
            logs: vec![node.clone(), node.join("control-plane")],
            kubectl: (
                cp_bin.join("kubectl"),
                node.join("control-plane/kubeconfig"),
            ),
        }
    }
}

impl Diagnostics {
    /// Prints it all to stderr.
    pub fn print(&self) {
        let (kubectl, kubeconfig) = &self.kubectl;
        for args in [
            &["get", "pods,pvc,pv,enrollmenttokens", "-A", "-o", "wide"][..],
            &["-n", SYSTEM_NS, "describe", "pods"][..],
            &["-n", APP_NS, "describe", "pods"][..],
            &[
                "-n",
                SYSTEM_NS,
                "logs",
                "-l",
                "app.kubernetes.io/part-of=signet",
                "--all-containers",
                "--prefix",
                "--tail=40",
            ][..],
        ] {
            let mut command = Command::new(kubectl);
            command
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .arg("--request-timeout=10s")
                .args(args);
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

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print();
        }
    }
}

/// Signet on a running node (see the module documentation).
pub struct Cluster {
    /// The admin's CLI, talking to the vault through its Service.
    pub cli: Cli,
    /// The operator's agent id (the actor of the controller's revocations).
    pub agent_id: String,
    /// The control-plane tools (with the node's).
    pub cp_bin: PathBuf,
    /// The node.
    pub node: Node,
}

impl Cluster {
    /// Starts it all in `work`, telling `step` what it does.
    pub fn start(work: &Path, bins: &Binaries, step: &dyn Fn(&str)) -> anyhow::Result<Self> {
        let cp_bin = node_bin()?;

        step(
            "starting the node: control plane, scheduler, controller-manager, containerd, kubelet, kube-proxy, DNS",
        );
        let node = Node::start(&cp_bin, &work.join("node"))?;
        match install(work, bins, &node, step) {
            Ok((cli, agent_id)) => Ok(Self {
                cli,
                agent_id,
                cp_bin,
                node,
            }),
            Err(error) => {
                // While the node still runs (it stops when dropped).
                Diagnostics::of(work, &cp_bin).print();
                Err(error)
            }
        }
    }

    /// An error unless the chart's pod of `component` (`vault`,
    /// `controller` or `webhook`) runs and never restarted; with the end of
    /// its log.
    pub fn ensure_running(&self, component: &str) -> anyhow::Result<()> {
        ensure_running(self.plane(), component)
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
        self.create_pod_in(APP_NS, manifest)
    }

    /// [`Cluster::create_pod`] in `namespace`.
    pub fn create_pod_in(&self, namespace: &str, manifest: &str) -> anyhow::Result<()> {
        eventually("the pod created", WAIT, || {
            let out = self
                .plane()
                .kubectl_stdin(&["-n", namespace, "create", "-f", "-"], manifest)?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                Ok(Some(()))
            } else if stderr.contains(&format!("EnrollmentToken {namespace}/shop does not exist"))
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
        self.wait_pod_in(APP_NS, name, what, done)
    }

    /// [`Cluster::wait_pod`] in `namespace`.
    pub fn wait_pod_in(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        eventually(&format!("pod {namespace}/{name}: {what}"), WAIT, || {
            let Some(pod) = self.plane().get_json(Some(namespace), "pod", name)? else {
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

/// Everything [`Cluster::start`] does once the node runs; the admin's CLI
/// and the operator's agent id.
fn install(
    work: &Path,
    bins: &Binaries,
    node: &Node,
    step: &dyn Fn(&str),
) -> anyhow::Result<(Cli, String)> {
    step("images: signet-vault, signet-operator, signet-init, the test app, pause");
    node.import_images(
        &bins.dir,
        &bins.app,
        &[
            "signet-vault",
            "signet-operator",
            "signet-init",
            "node-app",
            "pause",
        ],
        &work.join("images"),
    )?;
    node.namespaces(&[SYSTEM_NS, APP_NS, UNDELEGATED_NS])?;
    let plane = node.plane();

    step("root key Secret, the vault's PersistentVolume, CRDs, helm install");
    let root_key = work.join("root-key");
    std::fs::write(
        &root_key,
        run(Command::new(bins.path("signet-vault")).arg("root-key"))?,
    )?;
    std::fs::set_permissions(&root_key, std::fs::Permissions::from_mode(0o600))?;
    plane.kubectl_ok(&[
        "-n",
        SYSTEM_NS,
        "create",
        "secret",
        "generic",
        ROOT_KEY_SECRET,
        &format!("--from-file=root-key={}", root_key.display()),
    ])?;
    let volume = work.join("vault-volume");
    std::fs::create_dir(&volume)?;
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o755))?;
    plane.apply(
        "default",
        &VAULT_VOLUME
            .replace("PATH", &volume.to_string_lossy())
            .replace("NODE", node.name()),
    )?;
    // The vault's CA, for the webhook to pass to signet-init; the vault's
    // certificate comes once its Service has an address.
    let tls = work.join("tls");
    std::fs::create_dir(&tls)?;
    make_ca(&tls)?;
    plane.kubectl_ok(&[
        "-n",
        SYSTEM_NS,
        "create",
        "configmap",
        VAULT_CA_CONFIGMAP,
        &format!("--from-file=ca.crt={}", tls.join("ca.crt").display()),
    ])?;
    let crds = repo_root().join("crds");
    plane.kubectl_ok(&["apply", "--server-side", "-f", &crds.to_string_lossy()])?;
    plane.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/enrollmenttokens.signet.dev",
        "crd/secretgrants.signet.dev",
    ])?;
    run(plane.helm().args([
        "install",
        RELEASE,
        &repo_root().join("charts/signet").to_string_lossy(),
        "-n",
        SYSTEM_NS,
        "-f",
        &repo_root().join("tests/node/values.yaml").to_string_lossy(),
    ]))?;

    // The host reaches the Service's ClusterIP through kube-proxy's rules,
    // as the pods do (they use its DNS name): the certificate names both.
    let (service, port) = VAULT_SERVICE;
    let cluster_ip = plane
        .get_json(Some(SYSTEM_NS), "service", service)?
        .with_context(|| format!("no Service {service}"))?["spec"]["clusterIP"]
        .as_str()
        .context("the vault's Service has no clusterIP")?
        .to_owned();
    issue_vault_certificate(&tls, &cluster_ip)?;
    plane.kubectl_ok(&[
        "-n",
        SYSTEM_NS,
        "create",
        "secret",
        "generic",
        VAULT_TLS_SECRET,
        "--type=kubernetes.io/tls",
        &format!("--from-file=tls.crt={}", tls.join("tls.crt").display()),
        &format!("--from-file=tls.key={}", tls.join("tls.key").display()),
        &format!("--from-file=ca.crt={}", tls.join("ca.crt").display()),
    ])?;

    step("the vault's pod: bootstrap token, admin, cluster, secrets, agent");
    wait_vault(plane)?;
    // A fresh single-use token, minted in the vault's pod as the
    // chart's NOTES say (the first one stays in the data directory).
    let bootstrap = plane
        .kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "exec",
            VAULT_POD,
            "-c",
            "vault",
            "--",
            "/signet-vault",
            "bootstrap-token",
            "--data-dir",
            "/data",
        ])?
        .trim()
        .to_owned();
    ensure!(
        !bootstrap.is_empty(),
        "signet-vault bootstrap-token printed nothing"
    );
    let vault_url = format!("https://{cluster_ip}:{port}");
    let ca_file = tls.join("ca.crt");
    // kube-proxy routes the Service a moment after the pod is Ready.
    eventually("the vault's Service to answer", WAIT, || {
        let out = output(
            Command::new("curl")
                .arg("-sf")
                .arg("--max-time")
                .arg("2")
                .arg("--cacert")
                .arg(&ca_file)
                .arg(format!("{vault_url}/readyz")),
        )?;
        Ok(out.status.success().then_some(()))
    })?;
    let admin_file = work.join("admin.json");
    run(Command::new(bins.path("signet"))
        .env_clear()
        .env("SIGNET_CA_CERT", &ca_file)
        .args([
            "--vault", &vault_url, "admin", "enroll", "--token", &bootstrap, "--out",
        ])
        .arg(&admin_file))?;
    let cli = Cli {
        binary: bins.path("signet"),
        vault: vault_url,
        ca_file,
        identity: admin_file,
    };
    // As the chart's NOTES say: the in-cluster API URL, no reviewer
    // token (the vault reviews with its own service account's token).
    cli.ok(&[
        "cluster",
        "add",
        CLUSTER,
        "--api-url",
        "https://kubernetes.default.svc",
        "--ca-file",
        &plane.env("SIGNET_CP_CA")?,
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
    // The operator may hand out these two secrets to pods of `apps`
    // (and nothing to UNDELEGATED_NS).
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

    step("the operator's identity Secret: the controller's pod starts; the webhook's is ready");
    plane.kubectl_ok(&[
        "-n",
        SYSTEM_NS,
        "create",
        "secret",
        "generic",
        IDENTITY_SECRET,
        &format!("--from-file=identity.json={}", agent_file.display()),
    ])?;
    for deployment in ["signet-controller", "signet-webhook"] {
        let rolled = plane.kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=60s",
        ]);
        if let Err(error) = rolled {
            bail!("deployment {deployment} not available: {error:#}");
        }
    }
    eventually("the webhook's CA in its configuration", WAIT, || {
        let config = plane.get_json(None, "mutatingwebhookconfiguration", RELEASE)?;
        Ok(config
            .is_some_and(|c| c["webhooks"][0]["clientConfig"]["caBundle"].is_string())
            .then_some(()))
    })?;

    step("EnrollmentToken + SecretGrant in apps (Ready) and elsewhere");
    for namespace in [APP_NS, UNDELEGATED_NS] {
        plane.apply(namespace, TOKEN_AND_GRANT)?;
    }
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
            ensure_running(plane, "controller")?;
            bail!("{object} not Ready: {error:#}");
        }
    }
    Ok((cli, agent_id))
}

/// [`Cluster::ensure_running`] on `plane`: an error unless the chart's pod of `component` (`vault`,
/// `controller` or `webhook`) runs and never restarted; with the end of
/// its log.
fn ensure_running(plane: &ControlPlane, component: &str) -> anyhow::Result<()> {
    let selector = format!("app.kubernetes.io/component={component}");
    let pods: Value = serde_json::from_str(&plane.kubectl_ok(&[
        "-n", SYSTEM_NS, "get", "pods", "-l", &selector, "-o", "json",
    ])?)?;
    let pods = pods["items"].as_array().context("no pod list")?;
    let [pod] = pods.as_slice() else {
        bail!("expected one {component} pod, found {}", pods.len());
    };
    let status = &pod["status"]["containerStatuses"][0];
    if pod["status"]["phase"] == "Running" && status["restartCount"] == 0 {
        return Ok(());
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let logs = output(plane.kubectl().args([
        "-n",
        SYSTEM_NS,
        "logs",
        name,
        "--all-containers",
        "--tail=30",
    ]))?;
    bail!(
        "the {component} pod {name} is {} with {} restart(s) ({}); its log ends with:\n{}",
        pod["status"]["phase"],
        status["restartCount"],
        status["state"],
        String::from_utf8_lossy(&logs.stdout)
    )
}

/// A P-256 CA made with openssl: `ca.key` and `ca.crt` in `dir`.
fn make_ca(dir: &Path) -> anyhow::Result<()> {
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=signet-node-test-vault-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]))?;
    Ok(())
}

/// The vault's serving certificate from the CA of [`make_ca`]: `tls.key`
/// and `tls.crt` in `dir`, for the Service's names and `cluster_ip`.
fn issue_vault_certificate(dir: &Path, cluster_ip: &str) -> anyhow::Result<()> {
    let (service, _) = VAULT_SERVICE;
    let names = [
        service.to_owned(),
        format!("{service}.{SYSTEM_NS}"),
        format!("{service}.{SYSTEM_NS}.svc"),
        format!("{service}.{SYSTEM_NS}.svc.cluster.local"),
    ];
    let san: Vec<String> = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .chain([format!("IP:{cluster_ip}")])
        .collect();
    std::fs::write(
        dir.join("tls.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            san.join(",")
        ),
    )?;
    run(Command::new("openssl").current_dir(dir).args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        &format!("/CN={service}.{SYSTEM_NS}.svc"),
    ]))?;
    run(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "tls.ext",
        "-out",
        "tls.crt",
    ]))?;
    Ok(())
}

/// Waits for the vault's pod to be Ready. A vault container that exits (as
/// it does when it cannot prepare its data directory on the volume) fails
/// the wait at once, with the vault's own words.
fn wait_vault(plane: &ControlPlane) -> anyhow::Result<()> {
    eventually("the vault's pod Ready", WAIT, || {
        let Some(pod) = plane.get_json(Some(SYSTEM_NS), "pod", VAULT_POD)? else {
            return Ok(None);
        };
        if is_ready(&pod) {
            return Ok(Some(Ok(())));
        }
        let status = &pod["status"]["containerStatuses"][0];
        let (terminated, previous) = if status["state"]["terminated"].is_object() {
            (&status["state"]["terminated"], false)
        } else {
            (&status["lastState"]["terminated"], true)
        };
        if !terminated.is_object() {
            return Ok(None);
        }
        let mut logs = plane.kubectl();
        logs.args(["-n", SYSTEM_NS, "logs", VAULT_POD, "-c", "vault"]);
        if previous {
            logs.arg("--previous");
        }
        let log = output(&mut logs)?;
        Ok(Some(Err(anyhow::anyhow!(
            "the vault's container exited ({}, exit code {}) on the chart's volume and security context \
             (uid and fsGroup 65532; the local PersistentVolume's folder was made by root, as a provisioner makes it, \
             and the kubelet gave it to the fsGroup); its log:\n{}{}",
            terminated["reason"],
            terminated["exitCode"],
            String::from_utf8_lossy(&log.stdout),
            String::from_utf8_lossy(&log.stderr),
        ))))
    })?
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
