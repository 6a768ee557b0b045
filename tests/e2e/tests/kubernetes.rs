//! Signet end to end on a real Kubernetes API server, every part a real
//! process: etcd + kube-apiserver (`tests/control-plane/start.sh`), the CRDs
//! and the Helm chart installed with kubectl and helm, `signet-vault serve`,
//! the `signet` CLI, `signet-operator controller` and `signet-operator
//! webhook` (called by kube-apiserver over TLS), and `signet-init`, run by
//! this test in the kubelet's place from the pod spec the API server stored.
//!
//! Fails (never skips) when the control-plane binaries are not built: run
//! `bash tests/control-plane/build.sh` once. The workspace binaries come
//! from the cargo target folder (`cargo test --workspace` builds them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use signet_e2e::{
    ControlPlane, Daemon, control_plane_bin, eventually, free_port, kubelet, output, repo_root,
    run, workspace_binary,
};

const SYSTEM_NS: &str = "signet-system";
const APP_NS: &str = "apps";
const RELEASE: &str = "signet";
const MOUNT_PATH: &str = "/var/run/secrets/signet";
const INIT_IMAGE: &str = "signet-init:e2e";
/// Bound of every wait for an effect of the controller, the sidecar or the
/// API server.
const WAIT: Duration = Duration::from_secs(45);

/// The `signet` CLI as the admin.
struct Cli {
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

    fn ok(&self, args: &[&str]) -> String {
        run(self.command().args(args)).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = run(self.command().arg("--json").args(args)).unwrap();
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Live (not disabled) machines enrolled from pod `uid`.
    fn live_machines_of_pod(&self, uid: &str) -> Vec<Value> {
        self.json(&["machine", "list"])["machines"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["metadata"]["k8s.pod.uid"] == uid && m["disabled"] != true)
            .cloned()
            .collect()
    }
}

/// On a failing test, prints the end of every process log (the vault, the
/// operator, signet-init, kube-apiserver); `SIGNET_E2E_KEEP=1` keeps the
/// whole work folder instead of deleting it.
struct Diagnostics {
    logs: Vec<PathBuf>,
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
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
                for line in &lines[lines.len().saturating_sub(25)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn opted_in_pod(name: &str, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    signet.dev/inject: "true"
  annotations:
    signet.dev/enrollment-token: {token}
spec:
  automountServiceAccountToken: false
  containers:
    - name: app
      image: busybox:1.36.1
      command: ["sh", "-c", "sleep 3600"]
"#
    )
}

const PLAIN_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: plain
spec:
  automountServiceAccountToken: false
  containers:
    - name: app
      image: busybox:1.36.1
      command: ["sh", "-c", "sleep 3600"]
"#;

const TOKEN_AND_GRANT: &str = r#"apiVersion: signet.dev/v1alpha1
kind: EnrollmentToken
metadata:
  name: shop
spec:
  project: shop
  maxUses: 5
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

#[test]
fn signet_on_a_real_control_plane() {
    let started = Instant::now();
    let cp_bin = control_plane_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let bins = ["signet-vault", "signet", "signet-operator", "signet-init"]
        .map(|name| workspace_binary(name).unwrap_or_else(|e| panic!("{e:#}")));
    let [vault_bin, cli_bin, operator_bin, init_bin] = bins;
    let keep = std::env::var_os("SIGNET_E2E_KEEP").is_some_and(|v| v == "1");
    let work = tempfile::Builder::new()
        .prefix("signet-e2e.")
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("SIGNET_E2E_KEEP=1: keeping {}", work.path().display());
    }
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let _diagnostics = Diagnostics {
        logs: vec![logs.clone(), work.path().join("control-plane")],
    };
    let step = |what: &str| eprintln!("[e2e {:>5.1}s] {what}", started.elapsed().as_secs_f64());

    // ---- 1. control plane ---------------------------------------------------
    step("starting etcd + kube-apiserver");
    let plane = ControlPlane::start(&cp_bin, &work.path().join("control-plane")).unwrap();
    let kubeconfig = plane.kubeconfig().to_owned();
    // MutatingAdmissionWebhook is one of kube-apiserver's default admission
    // plugins; step 5 proves it is on (the stored pod is the mutated one).
    for ns in [SYSTEM_NS, APP_NS] {
        plane.kubectl_ok(&["create", "namespace", ns]).unwrap();
    }
    // No controller-manager: the `default` ServiceAccount is made by hand.
    plane
        .kubectl_ok(&["-n", APP_NS, "create", "serviceaccount", "default"])
        .unwrap();

    // ---- 2. CRDs and the chart ----------------------------------------------
    step("kubectl apply -f crds/ and helm install");
    let crds = repo_root().join("crds");
    plane
        .kubectl_ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()])
        .unwrap();
    plane
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/enrollmenttokens.signet.dev",
            "crd/secretgrants.signet.dev",
        ])
        .unwrap();
    let vault_port = free_port().unwrap();
    let webhook_port = free_port().unwrap();
    let vault_url = format!("http://127.0.0.1:{vault_port}");
    let webhook_url = format!("https://127.0.0.1:{webhook_port}/mutate");
    // tests/chart/values-e2e.yaml: every object, but no replicas (the
    // processes run here), the webhook called by URL, a plain-HTTP vault on
    // loopback; the ports are this run's.
    let chart = repo_root().join("charts/signet");
    let values = repo_root().join("tests/chart/values-e2e.yaml");
    run(plane.helm().args([
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "-n",
        SYSTEM_NS,
        "-f",
        values.to_str().unwrap(),
        "--set",
        &format!("operator.vaultUrl={vault_url}"),
        "--set",
        &format!("operator.webhook.url={webhook_url}"),
    ]))
    .unwrap();
    let config = plane
        .get_json(None, "mutatingwebhookconfiguration", RELEASE)
        .unwrap()
        .expect("the chart's MutatingWebhookConfiguration");
    let hook = &config["webhooks"][0];
    assert_eq!(hook["clientConfig"]["url"], webhook_url.as_str());
    assert_eq!(hook["failurePolicy"], "Fail");
    assert_eq!(
        hook["objectSelector"]["matchLabels"]["signet.dev/inject"],
        "true"
    );
    assert!(hook["clientConfig"].get("caBundle").is_none());
    for (kind, name) in [
        ("clusterrole", "signet-controller"),
        ("serviceaccount", "signet-controller"),
        ("serviceaccount", "signet-webhook"),
        ("deployment", "signet-webhook"),
    ] {
        let namespace = (kind != "clusterrole").then_some(SYSTEM_NS);
        assert!(
            plane.get_json(namespace, kind, name).unwrap().is_some(),
            "helm install did not create {kind}/{name}"
        );
    }

    // ---- 3. vault, admin, secrets, agent, controller, webhook ---------------
    step("signet-vault serve, admin, project, secrets, agent");
    let root_key = work.path().join("root-key");
    std::fs::write(
        &root_key,
        run(Command::new(&vault_bin).arg("root-key")).unwrap(),
    )
    .unwrap();
    std::fs::set_permissions(&root_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut vault_cmd = Command::new(&vault_bin);
    vault_cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{vault_port}")])
        .arg("--data-dir")
        .arg(work.path().join("vault-data"))
        .arg("--root-key-file")
        .arg(&root_key);
    let mut vault = Daemon::spawn("vault", vault_cmd, &logs).unwrap();
    let bootstrap = eventually("the vault's bootstrap token on stdout", WAIT, || {
        vault.ensure_running()?;
        Ok(vault
            .stdout()
            .split_whitespace()
            .skip_while(|w| *w != "--token")
            .nth(1)
            .map(str::to_owned))
    })
    .unwrap();
    let admin_file = work.path().join("admin.json");
    run(Command::new(&cli_bin)
        .env_clear()
        .args([
            "--vault", &vault_url, "admin", "enroll", "--token", &bootstrap, "--out",
        ])
        .arg(&admin_file))
    .unwrap();
    let cli = Cli {
        binary: cli_bin.clone(),
        vault: vault_url.clone(),
        identity: admin_file,
    };
    cli.ok(&["project", "create", "shop"]);
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v1"]);
    cli.ok(&[
        "secret",
        "set",
        "shop/db",
        "--field",
        "user=shop",
        "--field",
        "password=it's-a-secret",
    ]);
    let agent_file = work.path().join("agent.json");
    cli.ok(&["keygen", "--out", agent_file.to_str().unwrap()]);
    cli.ok(&[
        "agent",
        "create",
        "--name",
        "signet-operator",
        "--key-file",
        agent_file.to_str().unwrap(),
        "--scope",
        "metadata",
        "--scope",
        "tokens",
        "--scope",
        "grants",
        "--scope",
        "machines",
    ]);

    step("signet-operator controller and webhook");
    let mut controller_cmd = Command::new(&operator_bin);
    controller_cmd
        .args(["controller", "--vault", &vault_url, "--identity"])
        .arg(&agent_file)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,signet_operator=debug");
    let mut controller = Daemon::spawn("controller", controller_cmd, &logs).unwrap();
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
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info");
    let mut webhook = Daemon::spawn("webhook", webhook_cmd, &logs).unwrap();
    eventually("the webhook's CA in the caBundle", WAIT, || {
        webhook.ensure_running()?;
        let config = plane.get_json(None, "mutatingwebhookconfiguration", RELEASE)?;
        Ok(config.filter(|c| c["webhooks"][0]["clientConfig"]["caBundle"].is_string()))
    })
    .unwrap();
    eventually("the webhook ready (its watches synced)", WAIT, || {
        webhook.ensure_running()?;
        let out = output(Command::new("curl").args([
            "-ksf",
            "--max-time",
            "2",
            &format!("https://127.0.0.1:{webhook_port}/readyz"),
        ]))?;
        Ok(out.status.success().then_some(()))
    })
    .unwrap();

    // ---- 4. EnrollmentToken and SecretGrant ---------------------------------
    step("EnrollmentToken + SecretGrant");
    plane.apply(APP_NS, TOKEN_AND_GRANT).unwrap();
    for object in ["enrollmenttoken/shop", "secretgrant/shop"] {
        let waited = plane.kubectl_ok(&[
            "-n",
            APP_NS,
            "wait",
            "--for=condition=Ready",
            "--timeout=45s",
            object,
        ]);
        if let Err(error) = waited {
            controller.ensure_running().unwrap();
            panic!(
                "{object} not Ready: {error:#}\ncontroller log:\n{}",
                controller.stderr_tail(40)
            );
        }
    }
    let token_secret = plane
        .get_json(Some(APP_NS), "secret", "signet-token-shop")
        .unwrap()
        .expect("the controller writes Secret signet-token-shop");
    assert!(token_secret["data"]["token"].is_string());
    let token_cr = plane
        .get_json(Some(APP_NS), "enrollmenttoken", "shop")
        .unwrap()
        .unwrap();
    let token_id = token_cr["status"]["tokenId"].as_str().unwrap().to_owned();

    // ---- 5. the opted-in pod, mutated by the webhook and stored -------------
    step("opted-in pod through the webhook");
    plane.apply(APP_NS, &opted_in_pod("app", "shop")).unwrap();
    let pod = plane.get_json(Some(APP_NS), "pod", "app").unwrap().unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["signet.dev/injected"], "true",
        "the stored pod is not the mutated one: kube-apiserver did not call the webhook"
    );
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "signet-init");
    assert_eq!(init["image"], INIT_IMAGE);
    assert_eq!(init["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        init["startupProbe"]["exec"]["command"],
        serde_json::json!(["/signet-init", "probe"])
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let secrets_volume = volumes
        .iter()
        .find(|v| v["name"] == "signet-secrets")
        .unwrap();
    assert_eq!(secrets_volume["emptyDir"]["medium"], "Memory");
    let token_volume = volumes
        .iter()
        .find(|v| v["name"] == "signet-token")
        .unwrap();
    assert_eq!(token_volume["secret"]["secretName"], "signet-token-shop");
    let app_mount = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "signet-secrets")
        .cloned()
        .unwrap();
    assert_eq!(app_mount["mountPath"], MOUNT_PATH);
    assert_eq!(app_mount["readOnly"], true);
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();

    // ---- 6. the kubelet's part: run signet-init from the stored spec --------
    step("playing the kubelet: signet-init run");
    let pod_root = work.path().join("pod-app");
    let sidecar = kubelet::Container::prepare(&pod, "signet-init", &pod_root, &init_bin, |name| {
        plane
            .get_json(Some(APP_NS), "secret", name)?
            .ok_or_else(|| anyhow::anyhow!("Secret {name} not found"))
    })
    .unwrap();
    for key in [
        "SIGNET_VAULT",
        "SIGNET_TOKEN_FILE",
        "SIGNET_MOUNT_PATH",
        "SIGNET_MODE",
        "SIGNET_FILES",
        "SIGNET_POD_UID",
    ] {
        assert!(sidecar.env.contains_key(key), "signet-init has no {key}");
    }
    assert_eq!(sidecar.env["SIGNET_MODE"], "sidecar");
    assert_eq!(sidecar.env["SIGNET_VAULT"], vault_url);
    assert_eq!(sidecar.env["SIGNET_POD_UID"], pod_uid);
    assert_eq!(sidecar.env["SIGNET_POD_NAME"], "app");
    assert_eq!(sidecar.env["SIGNET_POD_NAMESPACE"], APP_NS);
    let secrets_dir = sidecar.local_mount(MOUNT_PATH).unwrap().to_owned();
    let mut init_process = Daemon::spawn("signet-init", sidecar.command(), &logs).unwrap();
    let probe = sidecar.startup_probe.clone().unwrap();
    eventually("signet-init's startup probe to pass", WAIT, || {
        init_process.ensure_running()?;
        Ok(output(&mut sidecar.exec(&probe))?
            .status
            .success()
            .then_some(()))
    })
    .unwrap();
    // What the app container reads through its read-only mount.
    let api_key = secrets_dir.join("api-key");
    let db_env = secrets_dir.join("db.env");
    assert_eq!(std::fs::read_to_string(&api_key).unwrap(), "key-v1");
    assert_eq!(
        std::fs::read_to_string(&db_env).unwrap(),
        "password='it'\\''s-a-secret'\nuser='shop'\n"
    );
    assert_eq!(mode_of(&api_key), 0o440);
    assert_eq!(mode_of(&db_env), 0o440);
    let mut names: Vec<String> = std::fs::read_dir(&secrets_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, ["api-key", "db.env"], "no other visible files");
    let machines = cli.live_machines_of_pod(&pod_uid);
    assert_eq!(machines.len(), 1, "one machine for the pod: {machines:?}");
    assert_eq!(machines[0]["name"], "apps-app", "the token's name template");

    // ---- 7. sidecar refresh ---------------------------------------------------
    step("new version of api-key reaches the file");
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v2"]);
    eventually("the new api-key version in the file", WAIT, || {
        init_process.ensure_running()?;
        Ok((std::fs::read_to_string(&api_key)? == "key-v2").then_some(()))
    })
    .unwrap();
    assert_eq!(mode_of(&api_key), 0o440);

    // ---- 8. pod deleted → machine revoked by the controller -------------------
    step("deleting the pod revokes its machine");
    plane
        .kubectl_ok(&[
            "-n",
            APP_NS,
            "delete",
            "pod",
            "app",
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])
        .unwrap();
    // signet-init is still running (no kubelet to stop it), so the
    // revocation can only come from the controller.
    init_process.ensure_running().unwrap();
    eventually("the controller to revoke the pod's machine", WAIT, || {
        Ok(cli.live_machines_of_pod(&pod_uid).is_empty().then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\ncontroller log:\n{}", controller.stderr_tail(40)));
    assert!(
        !init_process.stderr_tail(200).contains("machine revoked"),
        "signet-init revoked itself: the controller's revocation is unproven"
    );
    init_process.stop().unwrap();

    // ---- 9. EnrollmentToken deleted → token revoked, CR gone ------------------
    step("deleting the EnrollmentToken revokes its token");
    let live_token = |id: &str| {
        cli.json(&["token", "list"])["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["revoked"] != true)
    };
    assert!(live_token(&token_id), "the token is live before the delete");
    plane
        .kubectl_ok(&[
            "-n",
            APP_NS,
            "delete",
            "enrollmenttoken",
            "shop",
            "--wait=false",
        ])
        .unwrap();
    eventually("the vault token revoked", WAIT, || {
        Ok((!live_token(&token_id)).then_some(()))
    })
    .unwrap();
    eventually("the EnrollmentToken gone (finalizer removed)", WAIT, || {
        Ok(plane
            .get_json(Some(APP_NS), "enrollmenttoken", "shop")?
            .is_none()
            .then_some(()))
    })
    .unwrap();

    // ---- 10. a pod naming a missing EnrollmentToken is refused ----------------
    step("a pod naming a missing EnrollmentToken is refused");
    let refused = plane
        .kubectl_stdin(
            &["-n", APP_NS, "apply", "-f", "-"],
            &opted_in_pod("lost", "no-such-token"),
        )
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "admitted: {message}");
    assert!(
        message.contains(r#"admission webhook "inject.signet.dev" denied the request"#)
            && message.contains("EnrollmentToken apps/no-such-token does not exist"),
        "unclear refusal: {message}"
    );

    // ---- 11. webhook down: plain pods admitted, opted-in pods refused ---------
    step("webhook stopped: scoping and failurePolicy");
    webhook.stop().unwrap();
    plane.apply(APP_NS, PLAIN_POD).unwrap();
    let plain = plane
        .get_json(Some(APP_NS), "pod", "plain")
        .unwrap()
        .unwrap();
    assert!(plain["spec"].get("initContainers").is_none());
    assert!(
        plain["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("signet.dev/injected").is_none())
    );
    let refused = plane
        .kubectl_stdin(
            &["-n", APP_NS, "apply", "-f", "-"],
            &opted_in_pod("app2", "shop"),
        )
        .unwrap();
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "admitted without the webhook");
    assert!(
        message.contains(r#"failed calling webhook "inject.signet.dev""#),
        "unexpected refusal: {message}"
    );

    controller.ensure_running().unwrap();
    controller.stop().unwrap();
    vault.stop().unwrap();
    step("done");
}
