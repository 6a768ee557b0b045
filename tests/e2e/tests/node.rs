//! Signet on a real node: pods opted in to injection run on a real kubelet
//! with Debian's containerd and runc (`tests/node/start.sh`), from images
//! built here without docker (`tests/node/images.sh`). The vault, the
//! operator's controller and webhook run as processes on the host; the
//! vault listens on the node's bridge address, which is how the pods reach
//! it. Nothing plays the kubelet's part: the kubelet mounts the projected
//! service-account token, runs `signet-init` as a native sidecar with its
//! startup probe, and starts the app container after it.
//!
//! Needs root and a control-plane build with the kubelet
//! (`bash tests/control-plane/build.sh`); installs containerd, runc and the
//! CNI plugins with apt-get when missing. Ignored by `cargo test
//! --workspace`; `.ci/run` runs it in its own step, where it fails (never
//! skips) when it cannot run:
//!
//! ```sh
//! cargo test --workspace --test node -- --ignored --exact injected_pods_on_a_real_node
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Command, time::Instant};

use serde_json::json;
use signet_e2e::{
    eventually,
    node::{
        cluster::{
            APP_NS, APP_UID, Binaries, Cluster, Diagnostics, FS_GROUP, IDENTITY_TOKEN, INIT_IMAGE,
            MOUNT_PATH, WAIT, app_pod, is_ready, sidecar_pid, unix_ms, work_dir,
        },
        processes_with_env, resident_kib,
    },
    output, run,
};

#[test]
#[ignore = "needs root and a real node (containerd, runc, the kubelet): .ci/run runs it in its own step"]
fn injected_pods_on_a_real_node() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[node {:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let bins = Binaries::find(Path::new(env!("CARGO_BIN_EXE_signet-node-app")))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let work = work_dir().unwrap();
    let mut cluster = Cluster::start(work.path(), &bins, &step).unwrap_or_else(|e| panic!("{e:#}"));
    let _diagnostics = Diagnostics::of(work.path(), &cluster.cp_bin);
    let node_name = cluster.node.name().to_owned();

    // ---- 1. an injected pod, run by the kubelet ----------------------------------
    step("pod `app`: mutated by the webhook, run by the kubelet");
    let created_ms = unix_ms();
    cluster
        .create_pod(&app_pod(
            "app",
            &node_name,
            Some("sidecar"),
            "Always",
            &["watch", MOUNT_PATH],
        ))
        .unwrap();
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

    // ---- 3. the pod goes, the controller revokes its machine -----------------------
    // Frozen, the sidecar cannot revoke itself when the kubelet stops it
    // (SIGTERM stays pending, then SIGKILL): only the controller can, by the
    // pod UID the vault attested.
    step("sidecar frozen, pod deleted: the controller revokes the machine");
    run(Command::new("kill").args(["-STOP", &sidecar.to_string()])).unwrap();
    let self_revocations = cli.audited("machine.revoke_self").unwrap().len();
    plane
        .kubectl_ok(&["-n", APP_NS, "delete", "pod", "app", "--wait=false"])
        .unwrap();
    eventually("the controller to revoke the pod's machine", WAIT, || {
        cluster.controller.ensure_running()?;
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

    cluster.controller.ensure_running().unwrap();
    cluster.webhook.ensure_running().unwrap();
    cluster.vault.ensure_running().unwrap();
    step("done");
}
