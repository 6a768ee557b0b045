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
    APP_NS, CLUSTER, ControlPlane, Daemon, SHOP_POLICY, control_plane_bin, eventually, free_port,
    kubelet, output, print_log_tails, repo_root, run, vault::Cli, work_dir, workspace_binary,
};

const SYSTEM_NS: &str = "signet-system";
const RELEASE: &str = "signet";
const MOUNT_PATH: &str = "/var/run/secrets/signet";
const INIT_IMAGE: &str = "signet-init:e2e";
/// The audience of the pods' projected tokens (the chart's default).
const AUDIENCE: &str = "signet";
/// The vault's ServiceAccount in the chart: `system:auth-delegator` only.
const VAULT_SA: &str = "signet-vault";
/// Bound of every wait for an effect of the controller, the sidecar or the
/// API server.
const WAIT: Duration = Duration::from_secs(45);

/// What the kubelet fetches for a pod's volumes, from the real API server.
struct Kubelet<'a> {
    plane: &'a ControlPlane,
    namespace: &'a str,
}

impl kubelet::Sources for Kubelet<'_> {
    fn secret(&self, name: &str) -> anyhow::Result<Value> {
        self.plane
            .get_json(Some(self.namespace), "secret", name)?
            .ok_or_else(|| anyhow::anyhow!("Secret {name} not found"))
    }

    fn pod_token(&self, pod: &Value, audience: &str, seconds: u64) -> anyhow::Result<String> {
        let account = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        self.plane.token(
            self.namespace,
            account,
            audience,
            seconds,
            Some((name, uid)),
        )
    }
}

/// The `Ready` condition of a Signet object, once it has one.
fn ready_condition(plane: &ControlPlane, namespace: &str, kind: &str, name: &str) -> Option<Value> {
    plane.get_json(Some(namespace), kind, name).ok().flatten()?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
}

/// On a failing test, prints the end of every process log (the vault, the
/// operator, signet-init, kube-apiserver); `SIGNET_E2E_KEEP=1` keeps the
/// whole work folder instead of deleting it.
struct Diagnostics {
    logs: Vec<PathBuf>,
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(&self.logs, 25);
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

fn plain_pod(name: &str, account: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  serviceAccountName: {account}
  automountServiceAccountToken: false
  containers:
    - name: app
      image: busybox:1.36.1
      command: ["sh", "-c", "sleep 3600"]
"#
    )
}

/// Namespace `other` names the project delegated to `apps` only.
const BORROWED: &str = r#"apiVersion: signet.dev/v1alpha1
kind: EnrollmentToken
metadata:
  name: borrowed
spec:
  project: shop
"#;

/// A second policy in `apps` with a SecretGrant for a secret nobody
/// delegated.
const SNEAKY: &str = r#"apiVersion: signet.dev/v1alpha1
kind: EnrollmentToken
metadata:
  name: side
spec:
  project: shop
---
apiVersion: signet.dev/v1alpha1
kind: SecretGrant
metadata:
  name: sneaky
spec:
  enrollmentToken: side
  secrets:
    - secret: admin-only
      file: admin-only
"#;

#[test]
fn signet_on_a_real_control_plane() {
    let started = Instant::now();
    let cp_bin = control_plane_bin().unwrap_or_else(|e| panic!("{e:#}"));
    let bins = ["signet-vault", "signet", "signet-operator", "signet-init"]
        .map(|name| workspace_binary(name).unwrap_or_else(|e| panic!("{e:#}")));
    let [vault_bin, cli_bin, operator_bin, init_bin] = bins;
    let work = work_dir("signet-e2e.").unwrap();
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
    for ns in [SYSTEM_NS, APP_NS, "other"] {
        plane.kubectl_ok(&["create", "namespace", ns]).unwrap();
        // No controller-manager: the `default` ServiceAccount is made by hand.
        plane
            .kubectl_ok(&["-n", ns, "create", "serviceaccount", "default"])
            .unwrap();
    }
    plane
        .kubectl_ok(&["-n", APP_NS, "create", "serviceaccount", "intruder"])
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

    // The chart's vault ServiceAccount may review tokens and nothing else;
    // the vault runs outside the cluster here, so its token comes from
    // TokenRequest instead of a projected volume.
    let binding = plane
        .get_json(
            None,
            "clusterrolebinding",
            &format!("{VAULT_SA}-tokenreview"),
        )
        .unwrap()
        .expect("the chart binds the vault's ServiceAccount to system:auth-delegator");
    assert_eq!(binding["roleRef"]["name"], "system:auth-delegator");
    let reviewer_token = work.path().join("reviewer-token");
    std::fs::write(
        &reviewer_token,
        plane.token(SYSTEM_NS, VAULT_SA, "", 3600, None).unwrap(),
    )
    .unwrap();
    let can_i = |verb: &str, resource: &str| {
        plane
            .kubectl()
            .args(["auth", "can-i", verb, resource, "--as"])
            .arg(format!("system:serviceaccount:{SYSTEM_NS}:{VAULT_SA}"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "yes")
            .unwrap()
    };
    assert!(can_i("create", "tokenreviews.authentication.k8s.io"));
    for (verb, resource) in [
        ("get", "secrets"),
        ("get", "pods"),
        ("create", "serviceaccounts/token"),
    ] {
        assert!(!can_i(verb, resource), "the vault may {verb} {resource}");
    }

    // ---- 3. vault, admin, secrets, agent, controller, webhook ---------------
    step("signet-vault serve, admin, cluster, project, secrets, agent, delegations");
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
        .arg(&root_key)
        .arg("--kube-token-file")
        .arg(&reviewer_token);
    let mut vault = Daemon::spawn("vault", vault_cmd, &logs).unwrap();
    // The first-start token is written to the data directory, never logged.
    let bootstrap = work.path().join("vault-data").join("bootstrap-token");
    eventually("the vault's bootstrap token file", WAIT, || {
        vault.ensure_running()?;
        Ok(std::fs::read_to_string(&bootstrap)
            .ok()
            .filter(|token| token.ends_with('\n'))
            .map(|_| ()))
    })
    .unwrap();
    let admin_file = work.path().join("admin.json");
    run(Command::new(&cli_bin)
        .env_clear()
        .args(["--vault", &vault_url, "admin", "enroll", "--token-file"])
        .arg(&bootstrap)
        .arg("--out")
        .arg(&admin_file))
    .unwrap();
    let cli = Cli::new(&cli_bin, &vault_url, &admin_file);
    let agent_file = work.path().join("agent.json");
    cli.seed(
        &plane.env("SIGNET_CP_SERVER").unwrap(),
        &plane.env("SIGNET_CP_CA").unwrap(),
        &agent_file,
    )
    .unwrap();
    // A secret nobody delegates (the SecretGrant `sneaky` asks for it).
    cli.ok(&["secret", "set", "shop/admin-only", "--value", "root-of-all"])
        .unwrap();

    step("signet-operator controller and webhook");
    let mut controller_cmd = Command::new(&operator_bin);
    controller_cmd
        .args(["controller", "--vault", &vault_url, "--identity"])
        .arg(&agent_file)
        .env("SIGNET_CLUSTER_NAME", CLUSTER)
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
        .env("SIGNET_CLUSTER_NAME", CLUSTER)
        .env("SIGNET_TOKEN_AUDIENCE", AUDIENCE)
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
    plane.apply(APP_NS, SHOP_POLICY).unwrap();
    if let Err(error) = plane.wait_shop_policy(APP_NS, WAIT) {
        controller.ensure_running().unwrap();
        panic!("{error:#}\ncontroller log:\n{}", controller.stderr_tail(40));
    }
    // An attested policy: no raw token exists, so no Secret holds one.
    assert!(
        plane
            .get_json(Some(APP_NS), "secret", "signet-token-shop")
            .unwrap()
            .is_none(),
        "an attested EnrollmentToken must not write a token Secret"
    );
    let policies: Vec<Value> = cli.json(&["token", "list"]).unwrap()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kubernetes"]["policy"] == "shop" && t["revoked"] != true)
        .cloned()
        .collect();
    assert_eq!(policies.len(), 1, "{policies:?}");
    assert_eq!(policies[0]["kubernetes"]["namespace"], APP_NS);
    assert_eq!(policies[0]["kubernetes"]["cluster"], CLUSTER);
    assert_ne!(policies[0]["kubernetes"]["raw_token"], true);
    let token_id = policies[0]["id"].as_str().unwrap().to_owned();

    // ---- 5. the opted-in pod, mutated by the webhook and stored -------------
    step("opted-in pod through the webhook");
    // The webhook reads EnrollmentTokens from its own watch, which may lag
    // the controller's Ready by a moment: retry the create, as a
    // ReplicaSet would.
    eventually("the webhook to admit the opted-in pod", WAIT, || {
        webhook.ensure_running()?;
        let out = plane.kubectl_stdin(
            &["-n", APP_NS, "apply", "-f", "-"],
            &opted_in_pod("app", "shop"),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(Some(()))
        } else if stderr.contains("EnrollmentToken apps/shop does not exist") {
            Ok(None)
        } else {
            anyhow::bail!("pod refused: {stderr}")
        }
    })
    .unwrap();
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
    assert!(volumes.iter().all(|v| v.get("secret").is_none()));
    let identity = volumes
        .iter()
        .find(|v| v["name"] == "signet-identity")
        .expect("a projected service-account token volume");
    let projected = &identity["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projected["audience"], AUDIENCE);
    assert_eq!(projected["expirationSeconds"], 600);
    // Only signet-init mounts the identity; the app never sees it.
    let mounts_identity = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "signet-identity")
    };
    assert!(mounts_identity(init));
    assert!(!mounts_identity(&pod["spec"]["containers"][0]));
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
    let sources = Kubelet {
        plane: &plane,
        namespace: APP_NS,
    };
    let sidecar =
        kubelet::Container::prepare(&pod, "signet-init", &pod_root, &init_bin, &sources).unwrap();
    assert!(!sidecar.env.contains_key("SIGNET_TOKEN_FILE"));
    assert_eq!(sidecar.env["SIGNET_CLUSTER"], CLUSTER);
    assert_eq!(sidecar.env["SIGNET_POLICY"], "shop");
    for key in [
        "SIGNET_VAULT",
        "SIGNET_SA_TOKEN_FILE",
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
    let machines = cli.live_machines_of_pod(&pod_uid).unwrap();
    assert_eq!(machines.len(), 1, "one machine for the pod: {machines:?}");
    assert_eq!(machines[0]["name"], "apps-app", "the token's name template");
    let attested = &machines[0]["kubernetes"];
    assert_eq!(attested["namespace"], APP_NS);
    assert_eq!(attested["pod_name"], "app");
    assert_eq!(attested["service_account"], "default");
    assert_eq!(attested["cluster"], CLUSTER);

    // ---- 6b. a restarted sidecar re-enrolls; the old machine goes -----------
    step("restarted sidecar: new machine, the previous one revoked");
    let first_machine = machines[0]["id"].as_str().unwrap().to_owned();
    // A crash: the sidecar's key dies with it and it revokes nothing.
    init_process.crash().unwrap();
    assert_eq!(cli.live_machines_of_pod(&pod_uid).unwrap().len(), 1);
    let mut init_process = Daemon::spawn("signet-init-2", sidecar.command(), &logs).unwrap();
    let second_machine = eventually("the sidecar's new machine", WAIT, || {
        init_process.ensure_running()?;
        cli.machine_replacing(&pod_uid, &first_machine)
    })
    .unwrap();
    cli.ensure_replacement_audited(&first_machine, &second_machine)
        .unwrap();

    // ---- 6c. projected tokens the vault must refuse -------------------------
    step("bad projected tokens are refused, each with its own code");
    let pod_token = |namespace: &str, account: &str, audience: &str, name: &str, uid: &str| {
        plane
            .token(namespace, account, audience, 600, Some((name, uid)))
            .unwrap()
    };
    let pod_uid_of = |name: &str| {
        plane.get_json(Some(APP_NS), "pod", name).unwrap().unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let force_delete = |name: &str| {
        plane
            .kubectl_ok(&[
                "-n",
                APP_NS,
                "delete",
                "pod",
                name,
                "--grace-period=0",
                "--force",
            ])
            .unwrap();
    };
    let mut refusals = vec![
        (
            "attestation_audience",
            pod_token(APP_NS, "default", "another-audience", "app", &pod_uid),
        ),
        (
            "attestation_not_pod_bound",
            plane.token(APP_NS, "default", AUDIENCE, 600, None).unwrap(),
        ),
    ];
    plane
        .apply(APP_NS, &plain_pod("intruder", "intruder"))
        .unwrap();
    refusals.push((
        "service_account_not_allowed",
        pod_token(
            APP_NS,
            "intruder",
            AUDIENCE,
            "intruder",
            &pod_uid_of("intruder"),
        ),
    ));
    plane.apply(APP_NS, &plain_pod("gone", "default")).unwrap();
    let gone = pod_token(APP_NS, "default", AUDIENCE, "gone", &pod_uid_of("gone"));
    force_delete("gone");
    refusals.push(("attestation_pod_gone", gone));
    plane
        .apply(APP_NS, &plain_pod("reborn", "default"))
        .unwrap();
    let reborn = pod_token(APP_NS, "default", AUDIENCE, "reborn", &pod_uid_of("reborn"));
    force_delete("reborn");
    plane
        .apply(APP_NS, &plain_pod("reborn", "default"))
        .unwrap();
    refusals.push(("attestation_pod_mismatch", reborn));
    for (code, token) in refusals {
        assert_eq!(
            cli.enroll_attested(CLUSTER, "shop", token).unwrap(),
            Err(code.to_owned()),
            "{code}"
        );
        assert_eq!(
            cli.denials(code).unwrap().len(),
            1,
            "one audit row for {code}"
        );
    }
    // A valid token of the pod, but a policy its namespace does not have.
    assert_eq!(
        cli.enroll_attested(
            CLUSTER,
            "no-such-policy",
            pod_token(APP_NS, "default", AUDIENCE, "app", &pod_uid)
        )
        .unwrap(),
        Err("unknown_policy".to_owned())
    );
    assert_eq!(
        cli.live_machines_of_pod(&pod_uid).unwrap().len(),
        1,
        "no refused attempt enrolled or replaced anything"
    );

    // ---- 6d. namespaces are a boundary ---------------------------------------
    step("an undelegated namespace or secret is refused with Ready=False");
    plane.apply("other", BORROWED).unwrap();
    plane.apply(APP_NS, SNEAKY).unwrap();
    for (namespace, kind, name) in [
        ("other", "enrollmenttoken", "borrowed"),
        (APP_NS, "secretgrant", "sneaky"),
    ] {
        let condition = eventually(&format!("{kind}/{name} refused"), WAIT, || {
            Ok(ready_condition(&plane, namespace, kind, name)
                .filter(|c| c["status"] == "False" && c["reason"] == "NotDelegated"))
        })
        .unwrap_or_else(|e| panic!("{e:#}\ncontroller log:\n{}", controller.stderr_tail(40)));
        let message = condition["message"].as_str().unwrap_or_default();
        assert!(message.contains("delegation"), "{kind}/{name}: {message}");
        let events = plane
            .kubectl_ok(&[
                "-n",
                namespace,
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={name},reason=NotDelegated"),
                "-o",
                "json",
            ])
            .unwrap();
        assert!(
            events.contains("delegation"),
            "no NotDelegated Event for {kind}/{name}: {events}"
        );
    }
    assert!(
        cli.json(&["token", "list"]).unwrap()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["kubernetes"]["namespace"] != "other"),
        "no policy exists for namespace other"
    );

    // ---- 7. sidecar refresh ---------------------------------------------------
    step("new version of api-key reaches the file");
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v2"])
        .unwrap();
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
        Ok(cli.live_machines_of_pod(&pod_uid)?.is_empty().then_some(()))
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
        cli.json(&["token", "list"]).unwrap()["tokens"]
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
    plane.apply(APP_NS, &plain_pod("plain", "default")).unwrap();
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
