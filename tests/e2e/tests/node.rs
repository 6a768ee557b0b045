//! Signet on a real node, as its chart installs it: a one-node cluster
//! (`tests/node/start.sh`: the control plane, scheduler, controller-manager,
//! a kubelet with Debian's containerd and runc, kube-proxy and a cluster
//! DNS) runs the vault, the controller and the webhook as pods from images
//! built here without docker (`tests/node/images.sh`), installed with helm.
//! Opted-in pods are admitted by the webhook's pod, and reach the vault
//! through its Service. Nothing plays the kubelet's part: the kubelet mounts
//! the projected service-account token, runs `signet-init` as a native
//! sidecar with its startup probe, and starts the app container after it.
//!
//! Needs root and a control-plane build with the node's components
//! (`bash tests/control-plane/build.sh`); installs containerd, runc, the CNI
//! plugins and dnsmasq with apt-get when missing. Ignored by `cargo test
//! --workspace`; `.ci/run` runs it in its own step, where it fails (never
//! skips) when it cannot run:
//!
//! ```sh
//! cargo test --workspace --test node -- --ignored --exact injected_pods_on_a_real_node
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command, time::Instant};

use serde_json::{Value, json};
use signet_e2e::{
    eventually,
    node::{
        cluster::{
            APP_NS, APP_UID, Binaries, CLUSTER, Cluster, Diagnostics, FS_GROUP, IDENTITY_TOKEN,
            INIT_IMAGE, MOUNT_PATH, ROTATOR_DEPLOYMENT, SYSTEM_NS, UNDELEGATED_NS, WAIT, app_pod,
            container_exit, is_ready, sidecar_pid, sidecar_pod, unix_ms,
        },
        processes_with_env, resident_kib,
        rotation::{ADMIN_USER, Postgres, Relay, env_value, step_logged_ms},
    },
    output, run, work_dir,
};

#[test]
#[ignore = "needs root and a real node (containerd, runc, the kubelet): .ci/run runs it in its own step"]
fn injected_pods_on_a_real_node() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[node {:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let bins = Binaries::find(Path::new(env!("CARGO_BIN_EXE_signet-node-app")))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let work = work_dir("signet-node.").unwrap();
    let cluster = Cluster::start(work.path(), &bins, &step).unwrap_or_else(|e| panic!("{e:#}"));
    let _diagnostics = Diagnostics::of(work.path(), &cluster.cp_bin);
    let node_name = cluster.node.name().to_owned();

    // ---- 1. an injected pod, run by the kubelet ----------------------------------
    step("pod `app`: mutated by the webhook, run by the kubelet");
    let created_ms = unix_ms();
    cluster.create_pod(&sidecar_pod("app", &node_name)).unwrap();
    let pod = cluster.wait_pod("app", "Ready", is_ready).unwrap();
    step(&format!(
        "pod `app` Ready {} ms after create",
        unix_ms() - created_ms
    ));
    assert_eq!(
        pod["metadata"]["annotations"]["signet.dev/injected"],
        "true"
    );
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_owned();
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "signet-init");
    assert_eq!(init["image"], INIT_IMAGE);
    assert_eq!(init["restartPolicy"], "Always", "a native sidecar");
    // The chart's vault URL (its Service, by the cluster DNS), over TLS
    // with the CA the webhook read from its ConfigMap.
    let env = |name: &str| {
        init["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env("SIGNET_VAULT"),
        Some(json!("https://signet-vault.signet-system.svc:8200"))
    );
    assert!(
        env("SIGNET_CA_PEM").is_some_and(|pem| pem
            .as_str()
            .is_some_and(|pem| pem.contains("BEGIN CERTIFICATE"))),
        "the vault's CA injected"
    );
    let sidecar_status = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(sidecar_status["started"], true);
    assert!(
        sidecar_status["state"]["running"].is_object(),
        "{sidecar_status}"
    );
    assert_eq!(
        sidecar_status["restartCount"], 0,
        "signet-init never restarted"
    );
    assert!(pod["status"]["containerStatuses"][0]["state"]["running"].is_object());

    // What the app saw when it started: the startup probe held it back until
    // every file was there.
    let reports = cluster.app_reports("app").unwrap();
    let first = reports.first().expect("the app's first report");
    assert_eq!(first["event"], "start");
    let files = &first["files"];
    assert_eq!(
        files["api-key"]["content"], "key-v1",
        "the app started before its secrets were written: {first}"
    );
    assert_eq!(
        files["db.env"]["content"],
        "password='it'\\''s-a-secret'\nuser='shop'\n"
    );
    for file in ["api-key", "db.env"] {
        assert_eq!(files[file]["mode"], "440", "{file}: {}", files[file]);
        assert_eq!(files[file]["uid"], 65532, "{file} is signet-init's");
        assert_eq!(
            files[file]["gid"], FS_GROUP,
            "{file} belongs to the pod's fsGroup"
        );
    }
    let mut names: Vec<&String> = files.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        [".signet-ready", "api-key", "db.env"],
        "nothing else in the volume"
    );
    assert_eq!(first["process"]["uid"], APP_UID.to_string());
    assert!(
        first["process"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!(FS_GROUP.to_string()))
    );
    // A real tmpfs, read-only for the app, sized by the webhook's sizeLimit.
    let mount = &first["mount"];
    assert_eq!(mount["fstype"], "tmpfs", "{mount}");
    let options: Vec<&str> = mount["options"].as_str().unwrap().split(',').collect();
    assert!(options.contains(&"ro"), "{mount}");
    assert!(options.contains(&"size=1024k"), "{mount}");
    // The same through `kubectl exec`; and the pod's identity token is
    // signet-init's alone.
    let plane = cluster.node.plane();
    let exec = |path: &str| {
        output(plane.kubectl().args([
            "-n",
            APP_NS,
            "exec",
            "app",
            "-c",
            "app",
            "--",
            "/signet-node-app",
            "cat",
            path,
        ]))
        .unwrap()
    };
    let mounts = String::from_utf8(exec("/proc/mounts").stdout).unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with(&format!("tmpfs {MOUNT_PATH} tmpfs ro,"))),
        "{mounts}"
    );
    assert!(
        !exec(IDENTITY_TOKEN).status.success(),
        "the app can read the pod's vault identity token"
    );

    let cli = &cluster.cli;
    let machines = cli.live_machines_of_pod(&uid).unwrap();
    assert_eq!(machines.len(), 1, "one machine for the pod: {machines:?}");
    let machine = machines[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(machines[0]["name"], "apps-app");
    assert_eq!(machines[0]["kubernetes"]["namespace"], APP_NS);
    assert_eq!(machines[0]["kubernetes"]["pod_name"], "app");
    assert_eq!(machines[0]["kubernetes"]["service_account"], "default");
    let sidecar = sidecar_pid(&uid).unwrap();
    step(&format!(
        "signet-init (host pid {sidecar}): {} KiB resident",
        resident_kib(sidecar).unwrap()
    ));

    // ---- 2. a new version reaches the file -----------------------------------------
    step("new version of api-key reaches the app");
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v2"])
        .unwrap();
    let changed = eventually("the app to see key-v2", WAIT, || {
        Ok(cluster
            .app_reports("app")?
            .into_iter()
            .find(|r| r["files"]["api-key"]["content"] == "key-v2"))
    })
    .unwrap();
    assert_eq!(changed["event"], "change");
    assert_eq!(changed["files"]["api-key"]["mode"], "440");
    assert_eq!(
        changed["files"]["db.env"]["content"],
        files["db.env"]["content"]
    );

    // ---- 2b. signet-init killed: the kubelet restarts it, it re-enrolls ---------
    // A crash (SIGKILL) loses the sidecar's in-memory key and revokes
    // nothing; the kubelet restarts the native sidecar in the same pod, and
    // its new enrollment revokes the pod's previous machine.
    step("signet-init killed: the kubelet restarts it; new machine, the previous one revoked");
    run(Command::new("kill").args(["-KILL", &sidecar.to_string()])).unwrap();
    let pod = cluster
        .wait_pod("app", "signet-init restarted by the kubelet", |p| {
            p["status"]["initContainerStatuses"][0]["restartCount"] == 1
                && p["status"]["initContainerStatuses"][0]["started"] == true
        })
        .unwrap();
    let killed = &pod["status"]["initContainerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(killed["exitCode"], 137, "killed by SIGKILL: {killed}");
    let first_machine = machine;
    let machine = eventually("the restarted sidecar's machine", WAIT, || {
        cli.machine_replacing(&uid, &first_machine)
    })
    .unwrap();
    cli.ensure_replacement_audited(&first_machine, &machine)
        .unwrap();
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "the app container kept running"
    );
    let sidecar = sidecar_pid(&uid).unwrap();

    // ---- 3. the pod goes, the controller revokes its machine -----------------------
    // Frozen, the sidecar cannot revoke itself when the kubelet stops it
    // (SIGTERM stays pending, then SIGKILL): only the controller can, by the
    // pod UID the vault attested.
    step("sidecar frozen, pod deleted: the controller revokes the machine");
    // The pod's projected token, kept to be presented once the pod is gone.
    let old_token = cluster.identity_token(&uid).unwrap();
    run(Command::new("kill").args(["-STOP", &sidecar.to_string()])).unwrap();
    let self_revocations = cli.audited("machine.revoke_self").unwrap().len();
    plane
        .kubectl_ok(&["-n", APP_NS, "delete", "pod", "app", "--wait=false"])
        .unwrap();
    eventually("the controller to revoke the pod's machine", WAIT, || {
        cluster.ensure_running("controller")?;
        Ok(cli.live_machines_of_pod(&uid)?.is_empty().then_some(()))
    })
    .unwrap();
    let revoked_by = cli
        .audited("machine.revoke")
        .unwrap()
        .into_iter()
        .find(|e| e["target"] == format!("machine:{machine}"))
        .expect("an audited machine.revoke of the pod's machine");
    assert_eq!(
        revoked_by["actor"],
        cluster.agent_id.as_str(),
        "{revoked_by}"
    );
    assert_eq!(
        cli.audited("machine.revoke_self").unwrap().len(),
        self_revocations
    );
    eventually("pod `app` gone and its processes with it", WAIT, || {
        Ok((plane.get_json(Some(APP_NS), "pod", "app")?.is_none()
            && processes_with_env("SIGNET_POD_UID", &uid).is_empty())
        .then_some(()))
    })
    .unwrap();

    // ---- 3b. the pod's token outlives it; a new pod of the same name --------------
    // The kubelet's token is bound to the pod's UID: once that pod is gone,
    // and once another pod holds the name, the vault refuses it; the new
    // pod enrolls as a new machine and the old one stays revoked.
    step("the deleted pod's token refused; `app` recreated: a new UID, a new machine");
    let present = |token: &str| {
        cli.enroll_attested(CLUSTER, "shop", token.to_owned())
            .unwrap()
    };
    assert_eq!(
        present(&old_token),
        Err("attestation_pod_gone".to_owned()),
        "the token of a deleted pod"
    );
    cluster.create_pod(&sidecar_pod("app", &node_name)).unwrap();
    let reborn = cluster.wait_pod("app", "Ready", is_ready).unwrap();
    let reborn_uid = reborn["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_ne!(reborn_uid, uid);
    let reborn_machines = cli.live_machines_of_pod(&reborn_uid).unwrap();
    let [reborn_machine] = reborn_machines.as_slice() else {
        panic!("one machine for the new pod: {reborn_machines:?}");
    };
    assert_ne!(reborn_machine["id"], machine.as_str());
    assert_ne!(reborn_machine["id"], first_machine.as_str());
    assert_eq!(reborn_machine["kubernetes"]["pod_name"], "app");
    assert!(
        cli.live_machines_of_pod(&uid).unwrap().is_empty(),
        "the old pod's machine came back"
    );
    assert_eq!(
        present(&old_token),
        Err("attestation_pod_mismatch".to_owned()),
        "the token of the pod that had the name before"
    );
    for code in ["attestation_pod_gone", "attestation_pod_mismatch"] {
        assert_eq!(
            cli.denials(code).unwrap().len(),
            1,
            "one audit row for {code}"
        );
    }
    let reborn_now = cli.live_machines_of_pod(&reborn_uid).unwrap();
    assert!(
        matches!(reborn_now.as_slice(), [one] if one["id"] == reborn_machine["id"]),
        "a refused token replaced the new pod's machine: {reborn_now:?}"
    );

    // ---- 4. a Job-style pod: init mode, the pod completes --------------------------
    step("pod `job`: init mode, completes");
    cluster
        .create_pod(&app_pod(
            "job",
            &node_name,
            Some("init"),
            "Never",
            &["once", MOUNT_PATH, "api-key", "db.env"],
        ))
        .unwrap();
    let job = cluster
        .wait_pod("job", "Succeeded", |p| p["status"]["phase"] == "Succeeded")
        .unwrap();
    let job_uid = job["metadata"]["uid"].as_str().unwrap().to_owned();
    assert!(
        job["spec"]["initContainers"][0]
            .get("restartPolicy")
            .is_none()
    );
    assert_eq!(
        job["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        job["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    let once = cluster.app_reports("job").unwrap();
    assert_eq!(once[0]["event"], "once");
    assert_eq!(once[0]["files"]["api-key"]["content"], "key-v2");
    // signet-init revokes its machine before it exits in init mode.
    assert!(cli.live_machines_of_pod(&job_uid).unwrap().is_empty());
    assert_eq!(
        cli.audited("machine.revoke_self").unwrap().len(),
        self_revocations + 1
    );

    // ---- 5. refused enrollments: the app never starts -----------------------------
    // Pods in `apps` that skip the webhook (already marked injected, so it
    // leaves them alone) with the sidecar it would inject, altered: the
    // vault is the boundary, not the webhook. Another service account;
    // another policy; a projected token the kubelet makes for another
    // audience; in the identity volume's place, a token of the pod's own
    // service account that no pod is bound to (TokenRequest without a
    // bound object), or the legacy token the controller-manager writes into
    // a service-account-token Secret. And an opted-in pod of a namespace
    // whose EnrollmentToken the controller could not turn into a vault
    // policy, because nothing was delegated for that namespace.
    step(
        "refused enrollments: a service account not allowed, an unknown policy, another audience, \
         tokens bound to no pod, no delegation",
    );
    plane
        .kubectl_ok(&["-n", APP_NS, "create", "serviceaccount", "intruder"])
        .unwrap();
    let intruder = forged_pod(&cluster, "intruder", &node_name, |pod| {
        pod["spec"]["serviceAccountName"] = json!("intruder");
    });
    cluster.create_pod(&intruder).unwrap();
    let unknown = forged_pod(&cluster, "unknown-policy", &node_name, |pod| {
        let env = pod["spec"]["initContainers"][0]["env"]
            .as_array_mut()
            .unwrap();
        let policy = env
            .iter_mut()
            .find(|e| e["name"] == "SIGNET_POLICY")
            .expect("the sidecar's SIGNET_POLICY");
        policy["value"] = json!("no-such-policy");
    });
    cluster.create_pod(&unknown).unwrap();
    let audience = forged_pod(&cluster, "other-audience", &node_name, |pod| {
        let projection =
            &mut identity_volume(pod)["projected"]["sources"][0]["serviceAccountToken"];
        assert_eq!(projection["audience"], "signet", "{projection}");
        projection["audience"] = json!("another-audience");
    });
    cluster.create_pod(&audience).unwrap();
    let unbound = plane.token(APP_NS, "default", "signet", 600, None).unwrap();
    plane
        .kubectl_ok(&[
            "-n",
            APP_NS,
            "create",
            "secret",
            "generic",
            "unbound-token",
            &format!("--from-literal=token={unbound}"),
        ])
        .unwrap();
    plane.apply(APP_NS, LEGACY_TOKEN_SECRET).unwrap();
    eventually("the controller-manager's legacy token", WAIT, || {
        Ok(plane
            .get_json(Some(APP_NS), "secret", "legacy-token")?
            .filter(|secret| secret["data"]["token"].is_string()))
    })
    .unwrap();
    for (name, secret) in [("unbound", "unbound-token"), ("legacy", "legacy-token")] {
        let pod = forged_pod(&cluster, name, &node_name, |pod| {
            *identity_volume(pod) = json!({
                "name": "signet-identity",
                "secret": {
                    "secretName": secret,
                    "items": [{ "key": "token", "path": "token" }],
                },
            });
        });
        cluster.create_pod(&pod).unwrap();
    }
    plane
        .kubectl_ok(&[
            "-n",
            UNDELEGATED_NS,
            "wait",
            "--for=jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=NotDelegated",
            "--timeout=60s",
            "enrollmenttoken/shop",
        ])
        .unwrap();
    cluster
        .create_pod_in(UNDELEGATED_NS, &sidecar_pod("app", &node_name))
        .unwrap();
    // The legacy token carries no expiry, no audience and no pod: any of
    // the attestation codes is a refusal for the right reason.
    for (namespace, name, code) in [
        (APP_NS, "intruder", "service_account_not_allowed"),
        (APP_NS, "unknown-policy", "unknown_policy"),
        (APP_NS, "other-audience", "attestation_audience"),
        (APP_NS, "unbound", "attestation_not_pod_bound"),
        (APP_NS, "legacy", "attestation_not_pod_bound"),
        (UNDELEGATED_NS, "app", "unknown_policy"),
    ] {
        let (exit_code, log) = refused_sidecar(&cluster, namespace, name);
        step(&format!(
            "{namespace}/{name}: signet-init exited {exit_code}: {}",
            log.lines().last().unwrap_or_default()
        ));
        assert_eq!(
            exit_code, 4,
            "{namespace}/{name}: the enrollment refused: {log}"
        );
        assert!(
            log.contains("refused the enrollment"),
            "{namespace}/{name}: {log}"
        );
        // The code signet-init names is the vault's, and the vault audited
        // the refusal with it as the reason.
        let named = log
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|word| word.starts_with(code))
            .unwrap_or_else(|| panic!("{namespace}/{name}: signet-init should name {code}: {log}"));
        let denials = cli.denials(named).unwrap();
        assert!(
            denials.iter().any(|d| d["action"] == "enroll"),
            "{namespace}/{name}: no audited refusal {named}: {denials:?}"
        );
        let pod = plane
            .get_json(Some(namespace), "pod", name)
            .unwrap()
            .unwrap();
        let app = &pod["status"]["containerStatuses"][0];
        assert_eq!(app["started"], false, "{namespace}/{name}: {app}");
        assert_eq!(
            app["state"]["waiting"]["reason"], "PodInitializing",
            "{namespace}/{name}: the app never started: {app}"
        );
        let uid = pod["metadata"]["uid"].as_str().unwrap();
        assert!(
            cli.live_machines_of_pod(uid).unwrap().is_empty(),
            "{namespace}/{name} has a machine"
        );
    }

    // ---- 5b. reload actions: a signal, a rolling restart -----------------------------
    // `signet.dev/reload: signal`: the app's main process gets SIGHUP once
    // the new file is in place, within a second of the new version.
    step("pod `signalled`: reload by SIGHUP after a new version");
    let mut signalled: Value = serde_json::from_str(&sidecar_pod("signalled", &node_name)).unwrap();
    signalled["metadata"]["annotations"]["signet.dev/reload"] = json!("signal");
    cluster.create_pod(&signalled.to_string()).unwrap();
    let pod = cluster.wait_pod("signalled", "Ready", is_ready).unwrap();
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    let signals = |pod: &str| -> Vec<Value> {
        cluster
            .app_reports(pod)
            .unwrap()
            .into_iter()
            .filter(|r| r["event"] == "signal")
            .collect()
    };
    assert!(
        signals("signalled").is_empty(),
        "signalled at the first write"
    );
    let set_ms = unix_ms();
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v3"])
        .unwrap();
    let signal = eventually("the app to be signalled", WAIT, || {
        Ok(signals("signalled").into_iter().next())
    })
    .unwrap();
    assert_eq!(
        signal["files"]["api-key"]["content"], "key-v3",
        "signalled before the file was rewritten: {signal}"
    );
    let after_ms = u128::from(signal["at_ms"].as_u64().unwrap()).saturating_sub(set_ms);
    step(&format!(
        "file rewritten and app signalled {after_ms} ms after `secret set`"
    ));
    assert!(
        after_ms < 1000,
        "signalled {after_ms} ms after the new version"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(signals("signalled").len(), 1, "one signal per change");

    // `signet.dev/reload: restart`: the controller rolls the Deployment
    // out, and its new pods start with the new version.
    step("Deployment `reloaded`: rolled out by the controller after a new version");
    let template: Value = serde_json::from_str(&sidecar_pod("reloaded", &node_name)).unwrap();
    let mut metadata = template["metadata"].clone();
    metadata.as_object_mut().unwrap().remove("name");
    metadata["labels"]["app"] = json!("reloaded");
    metadata["annotations"]["signet.dev/reload"] = json!("restart");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reloaded"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reloaded"}},
            "template": {"metadata": metadata, "spec": template["spec"]},
        },
    });
    let created = plane
        .kubectl_stdin(
            &["-n", APP_NS, "create", "-f", "-"],
            &deployment.to_string(),
        )
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let ready_pods = || -> Vec<(String, String)> {
        let list = plane
            .kubectl_ok(&[
                "-n",
                APP_NS,
                "get",
                "pods",
                "-l",
                "app=reloaded",
                "-o",
                "json",
            ])
            .unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    p["metadata"]["uid"].as_str().unwrap().to_owned(),
                    is_ready(p) && p["metadata"]["deletionTimestamp"].is_null(),
                )
            })
            .filter(|(_, _, ready)| *ready)
            .map(|(name, uid, _)| (name, uid))
            .collect()
    };
    let before = eventually("the Deployment's pod Ready", WAIT, || {
        let pods = ready_pods();
        Ok((pods.len() == 1).then_some(pods))
    })
    .unwrap();
    cli.ok(&["secret", "set", "shop/api-key", "--value", "key-v4"])
        .unwrap();
    let after = eventually("the Deployment's pod replaced", WAIT, || {
        let pods = ready_pods();
        let replaced = pods.len() == 1 && pods.iter().all(|p| !before.contains(p));
        Ok(replaced.then_some(pods))
    })
    .unwrap();
    let started = cluster.app_reports(&after[0].0).unwrap();
    assert_eq!(
        started[0]["files"]["api-key"]["content"], "key-v4",
        "the new pod started with the new version"
    );
    let rolled = plane
        .get_json(Some(APP_NS), "deployment", "reloaded")
        .unwrap()
        .unwrap();
    assert!(
        rolled["spec"]["template"]["metadata"]["annotations"]["signet.dev/secret-versions"]
            .is_string(),
        "{rolled}"
    );
    step(&format!("pod {} replaced by {}", before[0].0, after[0].0));

    // ---- 5c. a rotation's promotion reaches a signalled sidecar ---------------------
    rotation_reaches_a_sidecar(&cluster, &node_name, &step);

    // ---- 6. the webhook down: opted-in pods refused, others admitted ---------------
    step("webhook scaled to 0: opted-in pods refused, others admitted");
    plane
        .kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "scale",
            "deployment/signet-webhook",
            "--replicas=0",
        ])
        .unwrap();
    eventually("the webhook's pod gone", WAIT, || {
        let pods = plane.kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=webhook",
            "-o",
            "name",
        ])?;
        Ok(pods.trim().is_empty().then_some(()))
    })
    .unwrap();
    let refused = plane
        .kubectl_stdin(
            &["-n", APP_NS, "create", "-f", "-"],
            &sidecar_pod("outage", &node_name),
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "an opted-in pod was admitted without the webhook"
    );
    assert!(
        stderr.contains("failed calling webhook \"inject.signet.dev\""),
        "{stderr}"
    );
    assert!(
        plane
            .get_json(Some(APP_NS), "pod", "outage")
            .unwrap()
            .is_none()
    );
    step(&format!("refused: {}", stderr.trim()));
    cluster
        .create_pod(&app_pod("plain", &node_name, None, "Always", &["pause"]))
        .unwrap();
    let plain = cluster.wait_pod("plain", "Ready", is_ready).unwrap();
    assert!(
        plain["spec"]["initContainers"].is_null(),
        "nothing injected"
    );

    cluster.ensure_running("controller").unwrap();
    cluster.ensure_running("vault").unwrap();
    step("done");
}

/// The EnrollmentToken and SecretGrant `rotated`: the rotated credential
/// `pg` as an env file `pg.env`.
const ROTATED_POLICY: &str = r#"apiVersion: signet.dev/v1alpha1
kind: EnrollmentToken
metadata:
  name: rotated
spec:
  project: shop
  maxUses: 10
  tokenTtl: 1h
  machineLifetime: 1h
  nameTemplate: "{namespace}-{pod}"
  allowedServiceAccounts: [default]
---
apiVersion: signet.dev/v1alpha1
kind: SecretGrant
metadata:
  name: rotated
spec:
  enrollmentToken: rotated
  mountPath: /var/run/secrets/signet
  refresh: 1m
  secrets:
    - secret: pg
      fields: [username, password]
      file: pg.env
      format: env
"#;

/// Step 5c: a PostgreSQL credential rotated with proof by the chart's
/// rotation agent (a pod), promoted by the vault, and pushed to an injected
/// pod, whose app is signalled. The agent reaches the rotation PostgreSQL
/// (loopback only) through a relay on the node's bridge address. Without
/// that server the step is skipped, except under `CI`, where it fails.
fn rotation_reaches_a_sidecar(cluster: &Cluster, node_name: &str, step: &dyn Fn(&str)) {
    let Some(pg) = Postgres::find().unwrap_or_else(|e| panic!("{e:#}")) else {
        step(
            "SKIPPED rotation: PostgreSQL does not answer (tests/rotation/start-servers.sh starts it)",
        );
        return;
    };
    step("rotation: a PostgreSQL credential, the chart's rotation agent, a signalled pod");
    let (cli, plane) = (&cluster.cli, cluster.plane());
    let db = pg.create_database().unwrap();
    let relay = Relay::start(
        &format!("{}:{}", cluster.node.ip(), pg.port),
        ([127, 0, 0, 1], pg.port).into(),
    )
    .unwrap();
    // Scaled up now, so that it starts while the pod does.
    plane
        .kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "scale",
            &format!("deployment/{ROTATOR_DEPLOYMENT}"),
            "--replicas=1",
        ])
        .unwrap();
    let field = |name: &str, value: &str| format!("{name}={value}");
    cli.ok(&[
        "secret",
        "set",
        "shop/pg",
        "--field",
        &field("username", &db.user),
        "--field",
        &field("password", &db.password),
    ])
    .unwrap();
    cli.ok(&[
        "secret",
        "set",
        "shop/pg-admin",
        "--field",
        &field("username", ADMIN_USER),
        "--field",
        &field("password", &pg.admin_password),
    ])
    .unwrap();
    let port = relay.addr().port().to_string();
    let rotation = cli
        .json(&[
            "rotation",
            "create",
            "shop/pg",
            "--provider",
            "postgresql",
            "--host",
            cluster.node.ip(),
            "--port",
            &port,
            "--role",
            &db.group,
            "--database",
            &db.name,
            "--admin-secret",
            "pg-admin",
            "--agent",
            &cluster.rotator_id,
            // The old login is retired as soon as the new one is live.
            "--grace",
            "0s",
        ])
        .unwrap();
    let rotation = rotation["id"].as_str().unwrap().to_owned();
    cli.ok(&[
        "delegation",
        "add",
        "--agent",
        &cluster.agent_id,
        "--project",
        "shop",
        "--secret",
        "pg",
        "--field",
        "username",
        "--field",
        "password",
        "--cluster",
        CLUSTER,
        "--namespace",
        APP_NS,
    ])
    .unwrap();
    plane.apply(APP_NS, ROTATED_POLICY).unwrap();
    for object in ["enrollmenttoken/rotated", "secretgrant/rotated"] {
        plane
            .kubectl_ok(&[
                "-n",
                APP_NS,
                "wait",
                "--for=condition=Ready",
                "--timeout=60s",
                object,
            ])
            .unwrap();
    }
    let mut pod: Value = serde_json::from_str(&sidecar_pod("rotated", node_name)).unwrap();
    pod["metadata"]["annotations"]["signet.dev/enrollment-token"] = json!("rotated");
    pod["metadata"]["annotations"]["signet.dev/reload"] = json!("signal");
    cluster.create_pod(&pod.to_string()).unwrap();
    cluster.wait_pod("rotated", "Ready", is_ready).unwrap();
    let first = cluster.app_reports("rotated").unwrap();
    let first = first[0]["files"]["pg.env"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        env_value(&first, "username").as_deref(),
        Some(db.user.as_str())
    );
    plane
        .kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "rollout",
            "status",
            &format!("deployment/{ROTATOR_DEPLOYMENT}"),
            "--timeout=60s",
        ])
        .unwrap();
    step("rotation: pod `rotated` Ready with version 1, the agent running; trigger");

    let triggered = cli.json(&["rotation", "trigger", &rotation]).unwrap();
    let triggered_ms = unix_ms();
    let job = triggered["id"].as_str().unwrap().to_owned();
    let signals = || -> Vec<Value> {
        cluster
            .app_reports("rotated")
            .unwrap()
            .into_iter()
            .filter(|r| r["event"] == "signal")
            .collect()
    };
    let signal = eventually(
        "the app signalled with the rotated credential",
        WAIT,
        || {
            if let Some(signal) = signals().into_iter().next() {
                return Ok(Some(signal));
            }
            // A failed job ends the wait with its reason.
            let jobs = cli.json(&["rotation", "history", &rotation])?;
            if jobs["jobs"][0]["state"] == "failed" {
                anyhow::bail!(
                    "the rotation failed: {}\n{}",
                    jobs["jobs"][0],
                    rotator_log(cluster)
                );
            }
            Ok(None)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let file = signal["files"]["pg.env"]["content"].as_str().unwrap();
    let (user, password) = (
        env_value(file, "username").unwrap(),
        env_value(file, "password").unwrap(),
    );
    assert_ne!(
        user, db.user,
        "signalled before the file was rewritten: {signal}"
    );

    // The agent's history: promoted to version 2, then the old login retired.
    let history = eventually("the rotation's job retired", WAIT, || {
        let jobs = cli.json(&["rotation", "history", &rotation])?;
        let job = jobs["jobs"][0].clone();
        Ok((job["state"] == "retired").then_some(job))
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", rotator_log(cluster)));
    assert_eq!(history["id"], job.as_str());
    assert_eq!(
        (
            history["from_version"].as_u64(),
            history["to_version"].as_u64()
        ),
        (Some(1), Some(2))
    );

    // When the agent logged its confirmed step, before it reported it: the
    // promotion came after that, so this overstates promotion to signal.
    let log = rotator_log(cluster);
    let confirmed_ms = step_logged_ms(&log, &job, "Confirmed")
        .unwrap()
        .unwrap_or_else(|| panic!("the agent logged no confirmed step of {job}: {log}"));
    let signal_ms = u128::from(signal["at_ms"].as_u64().unwrap());
    let after_ms = signal_ms.saturating_sub(confirmed_ms);
    step(&format!(
        "rotation: file rewritten and app signalled {after_ms} ms after the agent's confirmed step \
         ({} ms after `rotation trigger` returned)",
        signal_ms.saturating_sub(triggered_ms)
    ));
    assert!(
        after_ms < 1000,
        "signalled {after_ms} ms after the promotion"
    );

    // The database: the new login works, the old one is gone.
    assert_eq!(
        pg.login(&user, &password, &db.name).unwrap(),
        Ok(user.clone())
    );
    let old = pg.login(&db.user, &db.password, &db.name).unwrap();
    assert!(
        old.as_ref()
            .is_err_and(|e| e.contains("password authentication failed")),
        "the old login still works: {old:?}"
    );
    assert_eq!(signals().len(), 1, "one signal per change");
    drop(relay);
}

/// The chart's rotation agent's log.
fn rotator_log(cluster: &Cluster) -> String {
    cluster
        .plane()
        .kubectl_ok(&[
            "-n",
            SYSTEM_NS,
            "logs",
            &format!("deployment/{ROTATOR_DEPLOYMENT}"),
        ])
        .unwrap_or_else(|e| format!("(no log: {e:#})"))
}

/// A Secret the controller-manager's token controller fills with a legacy,
/// never-expiring token of ServiceAccount `default`.
const LEGACY_TOKEN_SECRET: &str = r#"apiVersion: v1
kind: Secret
metadata:
  name: legacy-token
  annotations:
    kubernetes.io/service-account.name: default
type: kubernetes.io/service-account-token
"#;

/// The volume signet-init reads the pod's token from, in a mutated pod.
fn identity_volume(pod: &mut Value) -> &mut Value {
    pod["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|v| v["name"] == "signet-identity")
        .expect("the webhook's identity volume")
}

/// An opted-in pod `name` as the webhook mutates it (a server-side dry
/// run), changed by `edit`, as a manifest the webhook then leaves alone: it
/// is marked injected already.
fn forged_pod(cluster: &Cluster, name: &str, node: &str, edit: impl FnOnce(&mut Value)) -> String {
    let manifest = sidecar_pod(name, node);
    let out = cluster
        .plane()
        .kubectl_stdin(
            &[
                "-n",
                APP_NS,
                "create",
                "--dry-run=server",
                "-o",
                "json",
                "-f",
                "-",
            ],
            &manifest,
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pod: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["signet.dev/injected"],
        "true"
    );
    let metadata = pod["metadata"].as_object_mut().unwrap();
    for server_field in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        metadata.remove(server_field);
    }
    pod.as_object_mut().unwrap().remove("status");
    // The deprecated twin of serviceAccountName, which the API server fills.
    pod["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccount");
    edit(&mut pod);
    pod.to_string()
}

/// The exit code and log of the first failed run of pod `name`'s
/// signet-init (the kubelet restarts a native sidecar, so it may be the
/// previous run's).
fn refused_sidecar(cluster: &Cluster, namespace: &str, name: &str) -> (i64, String) {
    let plane = cluster.plane();
    eventually(
        &format!("{namespace}/{name}: signet-init to fail"),
        WAIT,
        || {
            let Some(pod) = plane.get_json(Some(namespace), "pod", name)? else {
                return Ok(None);
            };
            let status = &pod["status"]["initContainerStatuses"][0];
            Ok(
                container_exit(plane, namespace, name, "signet-init", status)?
                    .and_then(|(terminated, log)| Some((terminated["exitCode"].as_i64()?, log))),
            )
        },
    )
    .unwrap()
}
