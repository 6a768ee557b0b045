//! Signet installed on a [`Node`] as its chart installs it, as the node
//! tests (`tests/node.rs`, `tests/node_bench.rs`) use it: the images
//! imported, the root key's Secret, the vault's CA and (once its Service
//! has an address) certificate, a local PersistentVolume for the vault's
//! claim, `helm install` of `charts/signet` with `tests/node/values.yaml`
//! (the vault, the controller and the webhook run as pods), then, over
//! HTTPS through the vault's Service, an admin, the cluster registered with
//! its in-cluster API URL, project `shop` with two secrets,
//! the operator's agent (its identity in the Secret the controller waits
//! for) with delegations for namespace `apps`, the rotation agent's
//! machine (its identity in the Secret of the chart's rotator, which runs
//! no pod until a test scales it up), and the EnrollmentToken
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
// The cluster's name is also `cluster.name` in `tests/node/values.yaml`.
pub use crate::{APP_NS, CLUSTER};
use crate::{
    ControlPlane, SHOP_POLICY, eventually, output, print_log_tails, repo_root, run, vault::Cli,
    workspace_binary,
};

/// Namespace of the chart.
pub const SYSTEM_NS: &str = "signet-system";
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
/// The vault's pod (the chart's StatefulSet has one replica).
pub const VAULT_POD: &str = "signet-vault-0";
/// The vault's Service and its port.
const VAULT_SERVICE: (&str, u16) = ("signet-vault", 8200);
/// The Secrets the chart's values name: the root key, the operator's
/// identity.
const ROOT_KEY_SECRET: &str = "signet-root-key";
const IDENTITY_SECRET: &str = "signet-operator-identity";
const ROTATOR_IDENTITY_SECRET: &str = "signet-rotator-identity";
/// The chart's rotation agent (`rotator` in `tests/node/values.yaml`).
pub const ROTATOR_DEPLOYMENT: &str = "signet-rotator";
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

/// The Signet binaries a node test runs and puts in images.
pub struct Binaries {
    /// Folder of signet-vault, signet, signet-operator, signet-init and
    /// signet-rotator.
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
        for name in [
            "signet-vault",
            "signet",
            "signet-operator",
            "signet-init",
            "signet-rotator",
        ] {
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
        print_log_tails(&self.logs, 30);
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
    /// The id of the rotation agent's machine (enrolled in project `shop`).
    pub rotator_id: String,
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
            Ok((cli, agent_id, rotator_id)) => Ok(Self {
                cli,
                agent_id,
                rotator_id,
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
            } else if (stderr.contains(&format!("EnrollmentToken {namespace}/"))
                && stderr.contains("does not exist"))
                || stderr.contains("references EnrollmentToken ")
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

    /// The projected service-account token the kubelet wrote for the
    /// signet-init of pod `uid` (read on the node, as root).
    pub fn identity_token(&self, uid: &str) -> anyhow::Result<String> {
        let file = self
            .node
            .pod_dir(uid)
            .join("volumes/kubernetes.io~projected/signet-identity/token");
        let token = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(token.trim().to_owned())
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

/// Everything [`Cluster::start`] does once the node runs; the admin's CLI,
/// the operator's agent id and the rotation agent's machine id.
fn install(
    work: &Path,
    bins: &Binaries,
    node: &Node,
    step: &dyn Fn(&str),
) -> anyhow::Result<(Cli, String, String)> {
    step("images: signet-vault, signet-operator, signet-init, signet-rotator, the test app, pause");
    node.import_images(
        &bins.dir,
        &bins.app,
        &[
            "signet-vault",
            "signet-operator",
            "signet-init",
            "signet-rotator",
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
    secret_from_file(plane, ROOT_KEY_SECRET, "root-key", &root_key)?;
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
    let cli = Cli::new(&bins.path("signet"), &vault_url, &admin_file).with_ca(&ca_file);
    // As the chart's NOTES say: the in-cluster API URL, no reviewer
    // token (the vault reviews with its own service account's token).
    let agent_file = work.join("agent.json");
    let agent_id = cli.seed(
        "https://kubernetes.default.svc",
        &plane.env("SIGNET_CP_CA")?,
        &agent_file,
    )?;

    // The rotation agent's machine, enrolled as the chart's NOTES say, its
    // identity in the Secret the chart's rotator mounts.
    let rotator_file = work.join("rotator.json");
    let rotator_id = enroll_rotator(&cli, &rotator_file)?;
    secret_from_file(
        plane,
        ROTATOR_IDENTITY_SECRET,
        "identity.json",
        &rotator_file,
    )?;

    step("the operator's identity Secret: the controller's pod starts; the webhook's is ready");
    secret_from_file(plane, IDENTITY_SECRET, "identity.json", &agent_file)?;
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
        plane.apply(namespace, SHOP_POLICY)?;
    }
    if let Err(error) = plane.wait_shop_policy(APP_NS, WAIT) {
        ensure_running(plane, "controller")?;
        return Err(error);
    }
    Ok((cli, agent_id, rotator_id))
}

/// Enrolls a machine of project `shop` with a single-use token and no
/// grant, its identity written to `file`: the machine id.
fn enroll_rotator(cli: &Cli, file: &Path) -> anyhow::Result<String> {
    let created = cli.json(&[
        "token",
        "create",
        "--project",
        "shop",
        "--name",
        "rotator",
        "--max-uses",
        "1",
        "--ttl",
        "10m",
        "--machine-lifetime",
        "2h",
    ])?;
    let token = created["token"]
        .as_str()
        .with_context(|| format!("token create printed no token: {created}"))?;
    cli.ok(&["enroll", "--token", token, "--out", &file.to_string_lossy()])?;
    let identity: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
    Ok(identity["id"]
        .as_str()
        .context("the rotator's identity file has no id")?
        .to_owned())
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
        let Some((terminated, log)) = container_exit(plane, SYSTEM_NS, VAULT_POD, "vault", status)?
        else {
            return Ok(None);
        };
        Ok(Some(Err(anyhow::anyhow!(
            "the vault's container exited ({}, exit code {}) on the chart's volume and security context \
             (uid and fsGroup 65532; the local PersistentVolume's folder was made by root, as a provisioner makes it, \
             and the kubelet gave it to the fsGroup); its log:\n{}",
            terminated["reason"],
            terminated["exitCode"],
            log,
        ))))
    })?
}

/// How container `container` of pod `namespace/pod` last exited, from
/// `status`, its entry in the pod's container statuses: its `terminated`
/// state and its log (stdout and stderr), of the current run when that has
/// exited, else of the previous one (the kubelet restarts a native sidecar
/// or a container of a restarting pod); `None` while no run has exited.
pub fn container_exit(
    plane: &ControlPlane,
    namespace: &str,
    pod: &str,
    container: &str,
    status: &Value,
) -> anyhow::Result<Option<(Value, String)>> {
    let (terminated, previous) = if status["state"]["terminated"].is_object() {
        (&status["state"]["terminated"], false)
    } else {
        (&status["lastState"]["terminated"], true)
    };
    if !terminated.is_object() {
        return Ok(None);
    }
    let mut logs = plane.kubectl();
    logs.args(["-n", namespace, "logs", pod, "-c", container]);
    if previous {
        logs.arg("--previous");
    }
    let log = output(&mut logs)?;
    Ok(Some((
        terminated.clone(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&log.stdout),
            String::from_utf8_lossy(&log.stderr)
        ),
    )))
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

/// [`app_pod`] opted in to a native sidecar, the app watching the secrets'
/// folder and never exiting.
pub fn sidecar_pod(name: &str, node: &str) -> String {
    app_pod(
        name,
        node,
        Some("sidecar"),
        "Always",
        &["watch", MOUNT_PATH],
    )
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

/// A Secret `name` of the system namespace holding `file` under `key`.
fn secret_from_file(
    plane: &ControlPlane,
    name: &str,
    key: &str,
    file: &Path,
) -> anyhow::Result<()> {
    plane.kubectl_ok(&[
        "-n",
        SYSTEM_NS,
        "create",
        "secret",
        "generic",
        name,
        &format!("--from-file={key}={}", file.display()),
    ])?;
    Ok(())
}
