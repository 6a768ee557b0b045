//! The webhook's answer to real AdmissionReview requests, as kube-apiserver
//! sends them (fixtures under `tests/fixtures/`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::api::resource::Quantity,
};
use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde_json::Value;
use signet_operator::{
    crd::{EnrollmentTokenSpec, FileFormat, GrantedSecret, SecretGrantSpec},
    webhook::{
        contract::FileSpec,
        lookup::InMemoryGrants,
        mutate::InjectConfig,
        server::{AppState, MAX_BODY_BYTES, admit, app},
    },
};
use tower::ServiceExt as _;

const MOUNT_PATH: &str = "/var/run/secrets/signet";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn request(name: &str) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_str(&fixture(name)).unwrap();
    review.try_into().unwrap()
}

fn config() -> InjectConfig {
    InjectConfig {
        vault_url: "https://signet.signet-system.svc:8443".into(),
        image: "registry.example/signet/signet-init:0.1.0".into(),
        image_pull_policy: Some("IfNotPresent".into()),
        size_limit: Quantity("1Mi".into()),
        vault_ca_pem: None,
        cluster: "prod".into(),
        audience: "signet".into(),
    }
}

fn token_spec(allowed_service_accounts: &[&str]) -> EnrollmentTokenSpec {
    EnrollmentTokenSpec {
        project: "shop".into(),
        max_uses: None,
        token_ttl: "24h".into(),
        machine_lifetime: "24h".into(),
        name_template: Some("{namespace}-{pod}".into()),
        allowed_service_accounts: allowed_service_accounts
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        hostname_regex: None,
        source_cidrs: vec![],
        raw_token: false,
    }
}

fn grant(refresh: &str, secrets: Vec<GrantedSecret>) -> SecretGrantSpec {
    SecretGrantSpec {
        enrollment_token: "shop-api".into(),
        mount_path: MOUNT_PATH.into(),
        refresh: refresh.into(),
        secrets,
    }
}

fn secret(name: &str, fields: &[&str], file: Option<&str>, format: FileFormat) -> GrantedSecret {
    GrantedSecret {
        secret: name.into(),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        file: file.map(str::to_owned),
        format,
    }
}

/// The `shop` namespace: token `shop-api` (attested, the default) with two
/// grants (listed out of name order on purpose), plus a grant for another
/// token.
fn cluster() -> InMemoryGrants {
    cluster_with(token_spec(&["shop-api", "default"]))
}

/// The same namespace with `rawToken: true` on `shop-api`.
fn raw_cluster() -> InMemoryGrants {
    cluster_with(EnrollmentTokenSpec {
        raw_token: true,
        ..token_spec(&["shop-api", "default"])
    })
}

fn cluster_with(shop_api: EnrollmentTokenSpec) -> InMemoryGrants {
    InMemoryGrants::new()
        .with_token("shop", "shop-api", shop_api)
        .with_grant(
            "shop",
            "shop-api-tls",
            grant("1m", vec![secret("tls", &[], None, FileFormat::Json)]),
        )
        .with_grant(
            "shop",
            "shop-api-db",
            grant(
                "5m",
                vec![
                    secret("db", &["user", "password"], Some("db.env"), FileFormat::Env),
                    secret("stripe-key", &[], None, FileFormat::Raw),
                ],
            ),
        )
        .with_token("other", "shop-api", token_spec(&[]))
}

fn expected_files() -> Vec<FileSpec> {
    let spec = |secret: &str, fields: &[&str], file: &str, format| FileSpec {
        secret: secret.into(),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        file: file.into(),
        format,
    };
    vec![
        spec("db", &["user", "password"], "db.env", FileFormat::Env),
        spec("stripe-key", &[], "stripe-key", FileFormat::Raw),
        spec("tls", &[], "tls", FileFormat::Json),
    ]
}

fn object_json(request: &AdmissionRequest<DynamicObject>) -> Value {
    serde_json::to_value(request.object.as_ref().unwrap()).unwrap()
}

fn patch_of(response: &AdmissionResponse) -> Option<json_patch::Patch> {
    response
        .patch
        .as_ref()
        .map(|bytes| serde_json::from_slice(bytes).unwrap())
}

/// Admits `request` and returns the pod as the apiserver would store it.
fn admitted_pod(
    request: &AdmissionRequest<DynamicObject>,
    lookup: &InMemoryGrants,
) -> (Pod, AdmissionResponse) {
    let response = admit(request, &config(), lookup);
    assert!(response.allowed, "denied: {}", response.result.message);
    assert_eq!(response.uid, request.uid);
    let mut doc = object_json(request);
    if let Some(patch) = patch_of(&response) {
        json_patch::patch(&mut doc, &patch).unwrap();
    }
    (serde_json::from_value(doc).unwrap(), response)
}

fn signet_init(pod: &Pod) -> &Container {
    let init = pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap();
    assert_eq!(init[0].name, "signet-init", "signet-init must run first");
    &init[0]
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn field_ref<'a>(container: &'a Container, name: &str) -> &'a str {
    let var = container
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("{name} missing"));
    &var.value_from
        .as_ref()
        .unwrap()
        .field_ref
        .as_ref()
        .unwrap()
        .field_path
}

fn assert_reads_secrets_read_only(container: &Container) {
    let mounts = container.volume_mounts.as_ref().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.name == "signet-secrets")
        .unwrap_or_else(|| panic!("{} has no signet-secrets mount", container.name));
    assert_eq!(mount.mount_path, MOUNT_PATH);
    assert_eq!(mount.read_only, Some(true));
    assert!(
        mounts
            .iter()
            .all(|m| m.name != "signet-token" && m.name != "signet-identity"),
        "{} must not see signet-init's credential",
        container.name
    );
}

/// Attested: a projected service-account token for the vault, mounted
/// read-only into signet-init only, and no trace of a token Secret.
fn assert_attested_credential(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    let volumes = spec.volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.name != "signet-token"));
    assert!(
        volumes.iter().all(|v| v.secret.is_none()),
        "no Secret volume"
    );
    let identity = volumes
        .iter()
        .find(|v| v.name == "signet-identity")
        .unwrap();
    let sources = identity
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    assert_eq!(sources.len(), 1);
    let token = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(token.audience.as_deref(), Some("signet"));
    assert_eq!(token.expiration_seconds, Some(600));
    assert_eq!(token.path, "token");

    let init = signet_init(pod);
    let mounts = init.volume_mounts.as_ref().unwrap();
    let mount = mounts.iter().find(|m| m.name == "signet-identity").unwrap();
    assert_eq!(mount.mount_path, "/var/run/secrets/signet.dev/identity");
    assert_eq!(mount.read_only, Some(true));
    assert!(mounts.iter().all(|m| m.name != "signet-token"));
    assert_eq!(
        env(init, "SIGNET_SA_TOKEN_FILE"),
        Some("/var/run/secrets/signet.dev/identity/token")
    );
    assert_eq!(env(init, "SIGNET_CLUSTER"), Some("prod"));
    assert_eq!(env(init, "SIGNET_POLICY"), Some("shop-api"));
    assert_eq!(env(init, "SIGNET_TOKEN_FILE"), None);
}

/// Raw token (explicit opt-in): the token Secret, mounted into signet-init
/// only, and none of the attestation variables.
fn assert_raw_token_credential(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    let volumes = spec.volumes.as_ref().unwrap();
    assert!(volumes.iter().all(|v| v.name != "signet-identity"));
    let token = volumes.iter().find(|v| v.name == "signet-token").unwrap();
    let secret = token.secret.as_ref().unwrap();
    assert_eq!(secret.secret_name.as_deref(), Some("signet-token-shop-api"));
    assert_eq!(secret.items.as_ref().unwrap()[0].key, "token");

    let init = signet_init(pod);
    let mounts = init.volume_mounts.as_ref().unwrap();
    let mount = mounts.iter().find(|m| m.name == "signet-token").unwrap();
    assert_eq!(mount.mount_path, "/var/run/signet-token");
    assert_eq!(mount.read_only, Some(true));
    assert_eq!(
        env(init, "SIGNET_TOKEN_FILE"),
        Some("/var/run/signet-token/token")
    );
    for name in ["SIGNET_SA_TOKEN_FILE", "SIGNET_CLUSTER", "SIGNET_POLICY"] {
        assert_eq!(env(init, name), None, "{name}");
    }
}

fn assert_common_injection(pod: &Pod, mode: &str) {
    let annotations = pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["signet.dev/injected"], "true");

    let spec = pod.spec.as_ref().unwrap();
    let volumes = spec.volumes.as_ref().unwrap();
    let secrets = volumes.iter().find(|v| v.name == "signet-secrets").unwrap();
    let empty_dir = secrets.empty_dir.as_ref().unwrap();
    assert_eq!(empty_dir.medium.as_deref(), Some("Memory"));
    assert_eq!(empty_dir.size_limit, Some(Quantity("1Mi".into())));

    let init = signet_init(pod);
    assert_eq!(
        init.image.as_deref(),
        Some("registry.example/signet/signet-init:0.1.0")
    );
    assert_eq!(
        init.command.as_deref(),
        Some(&["/signet-init".to_owned()][..])
    );
    assert_eq!(
        env(init, "SIGNET_VAULT"),
        Some("https://signet.signet-system.svc:8443")
    );
    assert_eq!(env(init, "SIGNET_MOUNT_PATH"), Some(MOUNT_PATH));
    assert_eq!(env(init, "SIGNET_MODE"), Some(mode));
    // The shorter of the two grants' refresh periods.
    assert_eq!(env(init, "SIGNET_REFRESH_SECONDS"), Some("60"));
    let files: Vec<FileSpec> = serde_json::from_str(env(init, "SIGNET_FILES").unwrap()).unwrap();
    assert_eq!(files, expected_files());
    assert_eq!(field_ref(init, "SIGNET_POD_NAME"), "metadata.name");
    assert_eq!(
        field_ref(init, "SIGNET_POD_NAMESPACE"),
        "metadata.namespace"
    );
    assert_eq!(field_ref(init, "SIGNET_POD_UID"), "metadata.uid");

    let mounts = init.volume_mounts.as_ref().unwrap();
    let own = mounts.iter().find(|m| m.name == "signet-secrets").unwrap();
    assert_eq!((own.mount_path.as_str(), own.read_only), (MOUNT_PATH, None));
    assert_eq!(mounts.len(), 2, "the secrets and the credential only");

    let security = init.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(
        security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let resources = init.resources.as_ref().unwrap();
    assert_eq!(
        resources.requests.as_ref().unwrap()["memory"],
        Quantity("16Mi".into())
    );

    for container in &spec.containers {
        assert_reads_secrets_read_only(container);
    }
}

#[test]
fn single_container_pod_gets_a_native_sidecar() {
    let request = request("single-container.json");
    let (pod, response) = admitted_pod(&request, &cluster());

    // The pod had no volumes and no init containers: the arrays are created,
    // and the annotation key's "/" is escaped in the pointer.
    let patch = serde_json::to_value(patch_of(&response).unwrap()).unwrap();
    let paths: Vec<&str> = patch
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/metadata/annotations/signet.dev~1injected"));
    assert!(paths.contains(&"/spec/volumes"));
    assert!(paths.contains(&"/spec/initContainers"));
    assert!(paths.contains(&"/spec/containers/0/volumeMounts"));

    assert_common_injection(&pod, "sidecar");
    // The pod turned off the API token automount; the vault's own projected
    // token is injected regardless.
    assert_eq!(
        pod.spec.as_ref().unwrap().automount_service_account_token,
        Some(false)
    );
    assert_attested_credential(&pod);
    let init = signet_init(&pod);
    assert_eq!(init.restart_policy.as_deref(), Some("Always"));
    let probe = init.startup_probe.as_ref().unwrap();
    assert_eq!(
        probe.exec.as_ref().unwrap().command.as_deref(),
        Some(&["/signet-init".to_owned(), "probe".to_owned()][..])
    );
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 2);
    assert_eq!(spec.init_containers.as_ref().unwrap().len(), 1);
    // Everything else is untouched.
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()["signet.dev/enrollment-token"],
        "shop-api"
    );
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("registry.example/shop/api:1.4.2")
    );
}

#[test]
fn multi_container_pod_keeps_its_volumes_and_init_containers() {
    let request = request("multi-container.json");
    let (pod, _) = admitted_pod(&request, &cluster());
    assert_common_injection(&pod, "sidecar");
    assert_attested_credential(&pod);

    let spec = pod.spec.as_ref().unwrap();
    let volume_names: Vec<&str> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volume_names,
        [
            "config",
            "kube-api-access-9xk2m",
            "signet-secrets",
            "signet-identity"
        ]
    );
    assert_eq!(spec.containers.len(), 2);
    let api_mounts: Vec<&str> = spec.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        api_mounts,
        ["config", "kube-api-access-9xk2m", "signet-secrets"]
    );

    // signet-init goes first, so the app's own init container sees the files.
    let init = spec.init_containers.as_ref().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["signet-init", "migrate"]);
    assert_reads_secrets_read_only(&init[1]);
    assert_eq!(init[1].volume_mounts.as_ref().unwrap().len(), 3);
}

#[test]
fn job_pod_in_init_mode_gets_a_one_shot_init_container() {
    let request = request("job-init-mode.json");
    let (pod, _) = admitted_pod(&request, &cluster());
    assert_common_injection(&pod, "init");
    assert_attested_credential(&pod);
    let init = signet_init(&pod);
    assert_eq!(init.restart_policy, None);
    assert_eq!(init.startup_probe, None);
}

#[test]
fn raw_token_policy_keeps_the_token_secret_mount() {
    for (fixture, mode) in [
        ("single-container.json", "sidecar"),
        ("multi-container.json", "sidecar"),
        ("job-init-mode.json", "init"),
    ] {
        let request = request(fixture);
        let (pod, _) = admitted_pod(&request, &raw_cluster());
        assert_common_injection(&pod, mode);
        assert_raw_token_credential(&pod);

        // The two modes differ in the credential only.
        let (attested, _) = admitted_pod(&request, &cluster());
        let strip = |pod: &Pod| {
            let mut pod = pod.clone();
            let spec = pod.spec.as_mut().unwrap();
            spec.volumes
                .as_mut()
                .unwrap()
                .retain(|v| v.name != "signet-token" && v.name != "signet-identity");
            let init = &mut spec.init_containers.as_mut().unwrap()[0];
            init.volume_mounts
                .as_mut()
                .unwrap()
                .retain(|m| m.name == "signet-secrets");
            init.env.as_mut().unwrap().retain(|e| {
                ![
                    "SIGNET_TOKEN_FILE",
                    "SIGNET_SA_TOKEN_FILE",
                    "SIGNET_CLUSTER",
                    "SIGNET_POLICY",
                ]
                .contains(&e.name.as_str())
            });
            pod
        };
        assert_eq!(strip(&pod), strip(&attested), "{fixture}");
    }
}

#[test]
fn cluster_and_audience_come_from_the_configuration() {
    let request = request("single-container.json");
    let custom = InjectConfig {
        cluster: "eu-west".into(),
        audience: "https://vault.example".into(),
        ..config()
    };
    let response = admit(&request, &custom, &cluster());
    let mut doc = object_json(&request);
    json_patch::patch(&mut doc, &patch_of(&response).unwrap()).unwrap();
    let pod: Pod = serde_json::from_value(doc).unwrap();
    assert_eq!(env(signet_init(&pod), "SIGNET_CLUSTER"), Some("eu-west"));
    let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    let identity = volumes
        .iter()
        .find(|v| v.name == "signet-identity")
        .unwrap();
    let sources = identity
        .projected
        .as_ref()
        .unwrap()
        .sources
        .as_ref()
        .unwrap();
    assert_eq!(
        sources[0]
            .service_account_token
            .as_ref()
            .unwrap()
            .audience
            .as_deref(),
        Some("https://vault.example")
    );
}

#[test]
fn pod_with_a_volume_named_like_signets_is_denied() {
    for name in ["signet-identity", "signet-token", "signet-secrets"] {
        let mut request = request("single-container.json");
        let mut doc = object_json(&request);
        doc["spec"]["volumes"] = serde_json::json!([{"name": name, "emptyDir": {}}]);
        request.object = Some(serde_json::from_value(doc).unwrap());
        let response = admit(&request, &config(), &cluster());
        assert!(!response.allowed, "{name}");
        assert_eq!(
            response.result.message,
            format!("pod already has a volume named {name}, which signet needs")
        );
    }
}

#[test]
fn mount_path_over_a_credential_directory_is_denied() {
    for (path, reserved) in [
        (
            "/var/run/secrets/signet.dev",
            "/var/run/secrets/signet.dev/identity",
        ),
        (
            "/var/run/secrets/signet.dev/identity/x",
            "/var/run/secrets/signet.dev/identity",
        ),
        ("/var/run/signet-token", "/var/run/signet-token"),
    ] {
        let request = request("single-container.json");
        let lookup = InMemoryGrants::new()
            .with_token("shop", "shop-api", token_spec(&[]))
            .with_grant(
                "shop",
                "g",
                SecretGrantSpec {
                    mount_path: path.into(),
                    ..grant("5m", vec![secret("db", &[], None, FileFormat::Raw)])
                },
            );
        let response = admit(&request, &config(), &lookup);
        assert!(!response.allowed, "{path}");
        assert_eq!(
            response.result.message,
            format!("mountPath {path} overlaps {reserved}, reserved for signet-init's credential")
        );
    }
}

#[test]
fn mutating_twice_equals_mutating_once() {
    for lookup in [cluster(), raw_cluster()] {
        for fixture in [
            "single-container.json",
            "multi-container.json",
            "job-init-mode.json",
        ] {
            let first = request(fixture);
            let (once, response) = admitted_pod(&first, &lookup);
            assert!(response.patch.is_some());

            // The apiserver reinvokes the webhook with the mutated pod.
            let mut second = first.clone();
            second.object =
                Some(serde_json::from_value(serde_json::to_value(&once).unwrap()).unwrap());
            let (twice, response) = admitted_pod(&second, &lookup);
            assert_eq!(
                response.patch, None,
                "{fixture}: second pass must not patch"
            );
            assert_eq!(twice, once, "{fixture}");
        }
    }
}

#[test]
fn already_mutated_pod_gets_no_patch() {
    let request = request("already-mutated.json");
    let (pod, response) = admitted_pod(&request, &cluster());
    assert_eq!(response.patch, None);
    assert_eq!(serde_json::to_value(&pod).unwrap(), object_json(&request));
}

#[test]
fn signet_init_runs_its_run_command_pulled_as_configured_and_probed_every_second() {
    let request = request("single-container.json");
    let (pod, _) = admitted_pod(&request, &cluster());
    let init = signet_init(&pod);
    // Without `run`, the binary prints its usage and the pod never starts.
    assert_eq!(
        init.command.as_deref(),
        Some(&["/signet-init".to_owned()][..])
    );
    assert_eq!(init.args.as_deref(), Some(&["run".to_owned()][..]));
    assert_eq!(init.image_pull_policy.as_deref(), Some("IfNotPresent"));
    // The app starts within a second of the files being there, and a
    // signet-init still retrying its vault is given two minutes.
    let probe = init.startup_probe.as_ref().unwrap();
    assert_eq!(
        (
            probe.period_seconds,
            probe.failure_threshold,
            probe.timeout_seconds
        ),
        (Some(1), Some(120), Some(2))
    );
    let exec = probe.exec.as_ref().unwrap().command.as_deref().unwrap();
    assert_eq!(exec, ["/signet-init", "probe"]);
    // Its last words explain a failure in `kubectl describe pod`.
    assert_eq!(
        init.termination_message_policy.as_deref(),
        Some("FallbackToLogsOnError")
    );
    // Bounded memory, and a group of its own, not the image's root group.
    let limits = init.resources.as_ref().unwrap().limits.as_ref().unwrap();
    assert_eq!(limits["memory"].0, "32Mi");
    let context = init.security_context.as_ref().unwrap();
    assert_eq!(context.run_as_group, Some(65532));
}

/// `name`'s review with its pod changed by `edit` first.
fn edited_request(name: &str, edit: impl FnOnce(&mut Value)) -> AdmissionRequest<DynamicObject> {
    let mut review: Value = serde_json::from_str(&fixture(name)).unwrap();
    edit(&mut review["request"]["object"]);
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
    review.try_into().unwrap()
}

#[test]
fn a_pod_marked_injected_or_holding_signet_init_is_not_injected_again() {
    // The mark alone: a pod whose signet-init was taken out of its spec.
    let marked = edited_request("already-mutated.json", |pod| {
        let init = pod["spec"]["initContainers"].as_array_mut().unwrap();
        init.retain(|c| c["name"] != "signet-init");
    });
    let (_, response) = admitted_pod(&marked, &cluster());
    assert_eq!(response.patch, None, "marked injected, without signet-init");
    // The container alone: a pod whose mark was taken off.
    let holding = edited_request("already-mutated.json", |pod| {
        let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
        annotations.remove("signet.dev/injected");
    });
    let (_, response) = admitted_pod(&holding, &cluster());
    assert_eq!(
        response.patch, None,
        "signet-init present, without the mark"
    );
    // A mark that says anything but "true" is no mark.
    let unmarked = edited_request("single-container.json", |pod| {
        pod["metadata"]["annotations"]["signet.dev/injected"] = "false".into();
    });
    let (pod, _) = admitted_pod(&unmarked, &cluster());
    assert_eq!(signet_init(&pod).name, "signet-init");
}

#[test]
fn vault_ca_reaches_signet_init_as_signet_ca_pem_only_when_configured() {
    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let with_ca = InjectConfig {
        vault_ca_pem: Some(PEM.to_owned()),
        ..config()
    };
    for fixture in ["single-container.json", "job-init-mode.json"] {
        let request = request(fixture);

        let (plain, _) = admitted_pod(&request, &cluster());
        assert_eq!(env(signet_init(&plain), "SIGNET_CA_PEM"), None, "{fixture}");

        let response = admit(&request, &with_ca, &cluster());
        assert!(response.allowed, "denied: {}", response.result.message);
        let mut doc = object_json(&request);
        json_patch::patch(&mut doc, &patch_of(&response).unwrap()).unwrap();
        let pod: Pod = serde_json::from_value(doc).unwrap();
        let init = signet_init(&pod);
        assert_eq!(env(init, "SIGNET_CA_PEM"), Some(PEM), "{fixture}");

        // The variable is the only difference.
        let mut without = init.clone();
        without
            .env
            .as_mut()
            .unwrap()
            .retain(|e| e.name != "SIGNET_CA_PEM");
        assert_eq!(&without, signet_init(&plain), "{fixture}");

        // Still idempotent.
        let mut second = request.clone();
        second.object = Some(serde_json::from_value(serde_json::to_value(&pod).unwrap()).unwrap());
        assert_eq!(patch_of(&admit(&second, &with_ca, &cluster())), None);
    }
}

#[test]
fn missing_token_annotation_is_denied_with_a_clear_message() {
    let request = request("missing-token.json");
    let response = admit(&request, &config(), &cluster());
    assert!(!response.allowed);
    assert_eq!(response.uid, request.uid);
    assert_eq!(response.patch, None);
    assert!(
        response
            .result
            .message
            .contains("no signet.dev/enrollment-token annotation"),
        "{}",
        response.result.message
    );
}

#[test]
fn pod_that_did_not_opt_in_is_allowed_unchanged() {
    let request = request("not-opted-in.json");
    let response = admit(&request, &config(), &InMemoryGrants::new());
    assert!(response.allowed);
    assert_eq!(response.patch, None);
}

#[test]
fn unknown_token_is_denied() {
    let request = request("single-container.json");
    let response = admit(&request, &config(), &InMemoryGrants::new());
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "EnrollmentToken shop/shop-api does not exist"
    );
}

#[test]
fn token_without_grants_is_denied() {
    let request = request("single-container.json");
    let lookup = InMemoryGrants::new().with_token("shop", "shop-api", token_spec(&[]));
    let response = admit(&request, &config(), &lookup);
    assert!(!response.allowed);
    assert_eq!(
        response.result.message,
        "no SecretGrant in namespace shop references EnrollmentToken shop-api"
    );
}

#[test]
fn service_account_outside_the_allow_list_is_denied() {
    let request = request("single-container.json");
    let lookup = InMemoryGrants::new()
        .with_token("shop", "shop-api", token_spec(&["billing"]))
        .with_grant(
            "shop",
            "g",
            grant("5m", vec![secret("db", &[], None, FileFormat::Raw)]),
        );
    let response = admit(&request, &config(), &lookup);
    assert!(!response.allowed);
    assert!(
        response
            .result
            .message
            .contains("service account shop-api may not use")
    );
}

#[test]
fn unknown_mode_is_denied() {
    let mut request = request("single-container.json");
    let mut doc = object_json(&request);
    doc["metadata"]["annotations"]["signet.dev/mode"] = "daemon".into();
    request.object = Some(serde_json::from_value(doc).unwrap());
    let response = admit(&request, &config(), &cluster());
    assert!(!response.allowed);
    assert!(response.result.message.contains("\"daemon\""));
}

#[test]
fn existing_mount_at_the_mount_path_is_denied() {
    let mut request = request("single-container.json");
    let mut doc = object_json(&request);
    doc["spec"]["containers"][0]["volumeMounts"] =
        serde_json::json!([{"name": "x", "mountPath": MOUNT_PATH}]);
    request.object = Some(serde_json::from_value(doc).unwrap());
    let response = admit(&request, &config(), &cluster());
    assert!(!response.allowed);
    assert!(
        response
            .result
            .message
            .contains("container api already mounts")
    );
}

#[test]
fn updates_are_not_touched() {
    let mut request = request("single-container.json");
    request.operation = Operation::Update;
    let response = admit(&request, &config(), &InMemoryGrants::new());
    assert!(response.allowed);
    assert_eq!(response.patch, None);
}

fn router() -> axum::Router {
    app(AppState {
        config: Arc::new(config()),
        lookup: Arc::new(cluster()),
    })
}

async fn post(body: impl Into<Body>) -> (StatusCode, Value) {
    let response = router()
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn server_answers_an_admission_review() {
    let (status, body) = post(fixture("single-container.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(
        body["response"]["uid"],
        "b7c1d5a4-2f6e-4c8b-9d3a-1e5f7a9b0c21"
    );
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(body["response"]["patchType"], "JSONPatch");
    // kube-core writes the patch bytes as a JSON array of numbers, which the
    // apiserver's decoder accepts for a []byte field.
    let bytes: Vec<u8> = serde_json::from_value(body["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    assert!(!patch.0.is_empty());
}

#[tokio::test]
async fn server_rejects_malformed_and_oversized_bodies() {
    let (status, body) = post("{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["response"]["allowed"], false);

    let (status, _) =
        post(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = post(vec![b' '; MAX_BODY_BYTES + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn health_and_readiness() {
    for path in ["/healthz", "/readyz"] {
        let response = router()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

/// `request` with extra annotations and a JSON edit of the pod.
fn with_annotations(
    name: &str,
    annotations: &[(&str, &str)],
    edit: impl FnOnce(&mut Value),
) -> AdmissionRequest<DynamicObject> {
    let mut request = request(name);
    let mut doc = object_json(&request);
    for (key, value) in annotations {
        doc["metadata"]["annotations"][*key] = (*value).into();
    }
    edit(&mut doc);
    request.object = Some(serde_json::from_value(doc).unwrap());
    request
}

fn denial(request: &AdmissionRequest<DynamicObject>) -> String {
    let response = admit(request, &config(), &cluster());
    assert!(!response.allowed, "admitted");
    response.result.message
}

#[test]
fn reload_signal_shares_the_process_namespace_and_marks_the_target() {
    let request = with_annotations(
        "multi-container.json",
        &[
            ("signet.dev/reload", "signal"),
            ("signet.dev/reload-container", "log-shipper"),
            ("signet.dev/reload-signal", "SIGUSR1"),
        ],
        |doc| {
            doc["spec"]["securityContext"]["runAsUser"] = 1000.into();
            doc["spec"]["securityContext"]["runAsGroup"] = 3000.into();
        },
    );
    let (pod, _) = admitted_pod(&request, &cluster());
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.share_process_namespace, Some(true));
    let init = signet_init(&pod);
    assert_eq!(env(init, "SIGNET_RELOAD_SIGNAL"), Some("SIGUSR1"));
    assert_eq!(env(init, "SIGNET_RELOAD_CONTAINER"), Some("log-shipper"));
    let context = init.security_context.as_ref().unwrap();
    assert_eq!(context.run_as_user, Some(1000));
    assert_eq!(context.run_as_group, Some(3000));
    assert_eq!(
        context.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert!(context.capabilities.as_ref().unwrap().add.is_none());
    let shipper = spec
        .containers
        .iter()
        .find(|c| c.name == "log-shipper")
        .unwrap();
    assert_eq!(env(shipper, "SIGNET_RELOAD_TARGET"), Some("log-shipper"));
    let api = spec.containers.iter().find(|c| c.name == "api").unwrap();
    assert_eq!(env(api, "SIGNET_RELOAD_TARGET"), None);

    // Mutating twice equals mutating once.
    let mut again = request.clone();
    again.object = Some(serde_json::from_value(serde_json::to_value(&pod).unwrap()).unwrap());
    assert!(patch_of(&admit(&again, &config(), &cluster())).is_none());
}

#[test]
fn reload_signal_defaults_to_sighup_on_the_only_container_and_its_user() {
    let request = with_annotations(
        "single-container.json",
        &[("signet.dev/reload", "signal")],
        |doc| {
            doc["spec"]["containers"][0]["securityContext"] =
                serde_json::json!({"runAsUser": 4242, "runAsGroup": 4243})
        },
    );
    let (pod, _) = admitted_pod(&request, &cluster());
    let init = signet_init(&pod);
    assert_eq!(env(init, "SIGNET_RELOAD_SIGNAL"), Some("SIGHUP"));
    assert_eq!(env(init, "SIGNET_RELOAD_CONTAINER"), Some("api"));
    assert_eq!(
        init.security_context.as_ref().unwrap().run_as_user,
        Some(4242)
    );
    assert_eq!(
        init.security_context.as_ref().unwrap().run_as_group,
        Some(4243)
    );
    let api = &pod.spec.as_ref().unwrap().containers[0];
    assert_eq!(env(api, "SIGNET_RELOAD_TARGET"), Some("api"));
}

#[test]
fn no_reload_annotation_changes_nothing_about_processes() {
    for value in [None, Some("none"), Some("restart")] {
        let annotations: Vec<(&str, &str)> = value
            .map(|v| ("signet.dev/reload", v))
            .into_iter()
            .collect();
        let (pod, _) = admitted_pod(
            &with_annotations("single-container.json", &annotations, |_| {}),
            &cluster(),
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.share_process_namespace, None, "{value:?}");
        let init = signet_init(&pod);
        assert_eq!(env(init, "SIGNET_RELOAD_SIGNAL"), None, "{value:?}");
        assert_eq!(
            init.security_context.as_ref().unwrap().run_as_user,
            Some(65532),
            "{value:?}"
        );
        assert_eq!(env(&spec.containers[0], "SIGNET_RELOAD_TARGET"), None);
    }
}

#[test]
fn bad_reload_annotations_are_denied_with_what_to_fix() {
    let user = |doc: &mut Value| {
        doc["spec"]["securityContext"]["runAsUser"] = 1000.into();
        doc["spec"]["securityContext"]["runAsGroup"] = 1000.into();
    };
    let cases: Vec<(AdmissionRequest<DynamicObject>, &str)> = vec![
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "hup")],
                user,
            ),
            "\"none\", \"signal\" or \"restart\", not \"hup\"",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload-signal", "SIGHUP")],
                user,
            ),
            "signet.dev/reload-signal only applies with signet.dev/reload: signal",
        ),
        (
            with_annotations(
                "multi-container.json",
                &[("signet.dev/reload", "signal")],
                user,
            ),
            "needs signet.dev/reload-container naming one of the pod's containers (api, log-shipper)",
        ),
        (
            with_annotations(
                "single-container.json",
                &[
                    ("signet.dev/reload", "signal"),
                    ("signet.dev/reload-container", "web"),
                ],
                user,
            ),
            "names \"web\", which is not one of the pod's containers (api)",
        ),
        (
            with_annotations(
                "single-container.json",
                &[
                    ("signet.dev/reload", "signal"),
                    ("signet.dev/reload-signal", "SIGKILL"),
                ],
                user,
            ),
            "must be one of SIGHUP, SIGUSR1",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "signal")],
                |_| {},
            ),
            "needs runAsUser and runAsGroup on container api or on the pod",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "signal")],
                |doc| doc["spec"]["securityContext"]["runAsUser"] = 1000.into(),
            ),
            "needs runAsUser and runAsGroup",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "signal")],
                |doc| {
                    doc["spec"]["securityContext"]["runAsUser"] = 0.into();
                    doc["spec"]["securityContext"]["runAsGroup"] = 0.into();
                },
            ),
            "runs as root",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "signal"), ("signet.dev/mode", "init")],
                user,
            ),
            "needs signet.dev/mode: sidecar",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "restart")],
                |doc| {
                    doc["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("ownerReferences");
                },
            ),
            "restart needs a pod created by a Deployment or a StatefulSet; this pod's controller is none",
        ),
        (
            with_annotations(
                "single-container.json",
                &[("signet.dev/reload", "restart")],
                |doc| {
                    doc["metadata"]["ownerReferences"][0]["kind"] = "Job".into();
                    doc["metadata"]["ownerReferences"][0]["apiVersion"] = "batch/v1".into();
                },
            ),
            "this pod's controller is Job shop-api-7d4b9c8f5",
        ),
    ];
    for (request, expected) in cases {
        let message = denial(&request);
        assert!(message.contains(expected), "{message:?} lacks {expected:?}");
    }
}
