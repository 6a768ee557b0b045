//! The controller against a real kube-apiserver (tests/control-plane) and a
//! real vault served in-process on a loopback port, which checks pods'
//! service-account tokens with that API server's TokenReview API.
//!
//! Skipped, with a message, only when the control-plane binaries have not
//! been built (`tests/control-plane/build.sh`). The control plane and the
//! polling come from the end-to-end harness (`signet-e2e`), the one copy.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Namespace, Pod, Secret, ServiceAccount},
    rbac::v1::ClusterRoleBinding,
};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use signet_client::{
    api::{
        Attestation, CreateDelegation, CreateIdentity, NamespaceRef, RegisterCluster, Scope,
        WriteSecret,
    },
    identity::Identity,
    sdk::{self, Options},
};
use signet_e2e::{ControlPlane, control_plane_bin, eventually_async, repo_root};
use signet_init::contract::{META_NAMESPACE, META_POD_NAME, META_POD_UID};
use signet_operator::{
    controller::{self, Context, Settings},
    crd::{EnrollmentToken, SecretGrant},
};
use signet_vault::{
    clock::SystemClock,
    crypto::RootKey,
    server,
    service::enroll::create_bootstrap_token,
    store::SqliteStore,
    vault::{Config, Vault},
};

const NS: &str = "signet-it";
/// The name the vault knows the control plane by.
const CLUSTER: &str = "it";
/// The audience of pods' projected tokens (the vault's default).
const AUDIENCE: &str = "signet";

/// A Kubernetes client with the control plane's cluster-admin kubeconfig.
async fn kube_client(plane: &ControlPlane) -> Client {
    let kubeconfig = Kubeconfig::read_from(plane.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// A vault on a loopback port, and an admin client for it.
async fn start_vault(data: &Path) -> (String, sdk::Client) {
    let store = Arc::new(SqliteStore::open(data).unwrap());
    let config = Config {
        skew_seconds: 30,
        max_body_bytes: 64 * 1024,
    };
    let vault =
        Arc::new(Vault::open(store, RootKey::generate(), Arc::new(SystemClock), config).unwrap());
    let bootstrap = vault
        .with_tx(|tx, now| create_bootstrap_token(tx, now))
        .unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let listener = server::bind(addr).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(vault, listener, None));
    let mut admin = sdk::Client::new(&url, Identity::generate(), &Options::default()).unwrap();
    admin.enroll_admin(&bootstrap, "test-admin").await.unwrap();
    (url, admin)
}

/// A token of service account `account` from the TokenRequest API: for the
/// API server itself when `audience` is None, bound to `pod` when given.
async fn token_request(
    kube: &Client,
    account: &str,
    audience: Option<&str>,
    pod: Option<&Pod>,
) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.clone(), NS);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.map(|a| vec![a.to_owned()]).unwrap_or_default(),
            expiration_seconds: Some(600),
            bound_object_ref: pod.map(|pod| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// Creates an injected-looking pod (no kubelet runs it) and returns it.
async fn create_pod(kube: &Client, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(kube.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"signet.dev/inject": "true"},
                     "annotations": {"signet.dev/injected": "true",
                                     "signet.dev/enrollment-token": "web"}},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "example.invalid/app"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap()
}

/// Enrolls as `pod` the way signet-init does, with a projected token the
/// API server bound to it.
async fn enroll_as_pod(kube: &Client, url: &str, pod: &Pod) -> (sdk::Client, Vec<String>) {
    let token = token_request(kube, "default", Some(AUDIENCE), Some(pod)).await;
    let attestation = Attestation {
        cluster: CLUSTER.into(),
        policy: "web".into(),
        service_account_token: token,
    };
    let name = pod.metadata.name.clone().unwrap();
    let (client, answer) = sdk::Client::enroll_attested(
        url,
        attestation,
        &name,
        BTreeMap::new(),
        &Options::default(),
    )
    .await
    .unwrap();
    let granted = answer.grants.iter().map(|g| g.secret.clone()).collect();
    (client, granted)
}

/// The vault token id and the raw token in the operator's Secret, once it
/// holds both.
fn held_token(secret: Option<Secret>) -> Option<(String, String)> {
    let secret = secret?;
    let id = secret
        .metadata
        .annotations?
        .get("signet.dev/token-id")?
        .clone();
    let raw = String::from_utf8(secret.data?.get("token")?.0.clone()).ok()?;
    Some((id, raw))
}

/// Runs the controller in-process until the returned sender fires.
fn start_controller(
    url: &str,
    identity_file: &Path,
    agent_id: &str,
    kube: &Client,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let vault_client = controller::connect(url, identity_file, Some(agent_id), None).unwrap();
    let settings = Settings {
        cluster: CLUSTER.into(),
        resync: Duration::from_secs(5),
        waiting_retry: Duration::from_secs(2),
        sweep_interval: Duration::from_secs(2),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(kube.clone(), vault_client, settings));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(controller::run(ctx, async move {
        let _ = stopped.await;
    }));
    (stop, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_against_real_apiserver_and_vault() {
    let bin = match control_plane_bin() {
        Ok(bin) => bin,
        // Locally a missing control plane skips with the reason; in CI a
        // skip would pass unseen, so it fails instead.
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the real-apiserver test cannot run in CI: {error:#}")
        }
        Err(error) => {
            println!("SKIPPED controller_against_real_apiserver_and_vault: {error:#}");
            return;
        }
    };
    tokio::time::timeout(Duration::from_secs(240), scenario(bin))
        .await
        .expect("the scenario did not finish within 4 minutes");
}

async fn scenario(bin: PathBuf) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("signet_operator=info")),
        )
        .with_test_writer()
        .try_init();
    // Declared first so it is removed last, after the plane has stopped.
    let work = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(&bin, work.path()).unwrap();
    plane
        .kubectl_ok(&["apply", "-f", repo_root().join("crds").to_str().unwrap()])
        .unwrap();
    plane
        .kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "crd/enrollmenttokens.signet.dev",
            "crd/secretgrants.signet.dev",
            "--timeout=60s",
        ])
        .unwrap();
    let kube = kube_client(&plane).await;

    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    // No controller-manager here: service accounts are made by hand. The
    // reviewer stands in for the vault's own account (the chart's
    // `system:auth-delegator` binding).
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.clone(), NS);
    for name in ["default", "reviewer"] {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(kube.clone());
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "signet-it-reviewer"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": "reviewer", "namespace": NS}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let reviewer_token = token_request(&kube, "reviewer", None, None).await;

    // ---- vault: admin, cluster, agent, project, secrets, delegation -------
    let data = tempfile::tempdir().unwrap();
    let (url, admin) = start_vault(data.path()).await;
    admin
        .register_cluster(&RegisterCluster {
            name: CLUSTER.into(),
            api_url: plane.env("SIGNET_CP_SERVER").unwrap(),
            ca_pem: std::fs::read_to_string(plane.env("SIGNET_CP_CA").unwrap()).unwrap(),
            audience: None,
            reviewer_token: Some(reviewer_token),
        })
        .await
        .unwrap();
    admin.create_project("demo").await.unwrap();
    for (name, value) in [("db", "s3cret"), ("undelegated", "nope")] {
        admin
            .write_secret(
                "demo",
                name,
                &WriteSecret {
                    value: Some(value.into()),
                    fields: None,
                },
            )
            .await
            .unwrap();
    }
    // As `signet keygen` leaves it: an unregistered key pair; the id comes
    // from `signet agent create`.
    let agent = Identity::generate();
    let view = admin
        .create_agent(&CreateIdentity {
            name: "signet-operator".into(),
            public_key: agent.key.public_key(),
            scopes: vec![
                Scope::Metadata,
                Scope::Tokens,
                Scope::Grants,
                Scope::Machines,
            ],
        })
        .await
        .unwrap();
    let identity_file = data.path().join("agent.json");
    agent.save(&identity_file, false).unwrap();
    assert!(matches!(
        controller::connect(&url, &identity_file, None, None),
        Err(controller::Error::NotAnAgent(_))
    ));
    // The operator may hand out `db` to pods of NS, and nothing else.
    admin
        .create_delegation(&CreateDelegation {
            agent_id: view.id.clone(),
            project: "demo".into(),
            secret: "db".into(),
            fields: None,
            kubernetes: Some(NamespaceRef {
                cluster: CLUSTER.into(),
                namespace: NS.into(),
            }),
        })
        .await
        .unwrap();

    let (stop, running) = start_controller(&url, &identity_file, &view.id, &kube);

    // ---- EnrollmentToken → attested policy, no Secret, Ready status --------
    let tokens: Api<EnrollmentToken> = Api::namespaced(kube.clone(), NS);
    let token: EnrollmentToken = serde_json::from_value(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "EnrollmentToken",
        "metadata": {"name": "web"},
        "spec": {"project": "demo", "tokenTtl": "1h", "machineLifetime": "1h",
                 "allowedServiceAccounts": ["default"]},
    }))
    .unwrap();
    tokens.create(&PostParams::default(), &token).await.unwrap();
    let token_id = eventually_async("EnrollmentToken Ready", Duration::from_secs(60), || async {
        let Some(status) = tokens.get("web").await?.status else {
            return Ok(None);
        };
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(status.token_id.filter(|_| ready))
    })
    .await
    .unwrap();
    let status = tokens.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.secret_name, None);
    assert_eq!(status.uses, Some(0));
    assert!(status.expires_at.is_some());
    assert_eq!(status.observed_generation, Some(1));
    let vault_tokens = admin.tokens().await.unwrap().tokens;
    let policy = vault_tokens.iter().find(|t| t.id == token_id).unwrap();
    assert!(!policy.revoked);
    assert_eq!(policy.project, "demo");
    let binding = policy.kubernetes.as_ref().unwrap();
    assert_eq!(
        (binding.cluster.as_str(), binding.namespace.as_str()),
        (CLUSTER, NS)
    );
    assert_eq!(binding.policy, "web");
    assert!(!binding.raw_token);
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), NS);
    assert!(
        secrets.get_opt("signet-token-web").await.unwrap().is_none(),
        "an attested policy writes no Secret"
    );

    // ---- SecretGrant: delegated, missing and undelegated secrets ----------
    let grants: Api<SecretGrant> = Api::namespaced(kube.clone(), NS);
    let grant: SecretGrant = serde_json::from_value(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "SecretGrant",
        "metadata": {"name": "app"},
        "spec": {"enrollmentToken": "web",
                 "secrets": [{"secret": "db"}, {"secret": "missing"}, {"secret": "undelegated"}]},
    }))
    .unwrap();
    grants.create(&PostParams::default(), &grant).await.unwrap();
    let status = eventually_async("SecretGrant status", Duration::from_secs(60), || async {
        let status = grants.get("app").await?.status;
        Ok(status.filter(|status| status.unresolved.len() == 2))
    })
    .await
    .unwrap();
    assert_eq!(status.resolved, ["db"]);
    let reasons: BTreeMap<&str, &str> = status
        .unresolved
        .iter()
        .map(|u| (u.secret.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("missing", "SecretNotFound"),
            ("undelegated", "NotDelegated")
        ])
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "NotDelegated");
    assert!(ready.message.contains("delegation"), "{}", ready.message);

    // ---- pods enroll by attestation --------------------------------------
    let live = create_pod(&kube, "live").await;
    let live_uid = live.metadata.uid.clone().unwrap();
    let (live_machine, granted) = enroll_as_pod(&kube, &url, &live).await;
    assert_eq!(granted, ["db"]);
    let value = live_machine.read_secret("demo", "db", None).await.unwrap();
    assert_eq!(value.value.as_deref(), Some("s3cret"));
    let live_id = live_machine.identity().id.clone().unwrap();
    let attested = admin
        .machines()
        .await
        .unwrap()
        .machines
        .into_iter()
        .find(|m| m.id == live_id)
        .unwrap()
        .kubernetes
        .unwrap();
    assert!(attested.attested);
    assert_eq!(attested.pod_uid.as_deref(), Some(live_uid.as_str()));

    // ---- raw token (opt-in): Secret, renewal sharing uses ----------------
    let raw_token: EnrollmentToken = serde_json::from_value(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "EnrollmentToken",
        "metadata": {"name": "raw"},
        "spec": {"project": "demo", "tokenTtl": "24s", "machineLifetime": "1h",
                 "maxUses": 5, "rawToken": true},
    }))
    .unwrap();
    tokens
        .create(&PostParams::default(), &raw_token)
        .await
        .unwrap();
    let (raw_id, raw) = eventually_async("raw token Secret", Duration::from_secs(60), || async {
        let current = tokens.get("raw").await?.status.and_then(|s| s.token_id);
        let held = held_token(secrets.get_opt("signet-token-raw").await?);
        Ok(held.filter(|(id, _)| current.as_ref() == Some(id)))
    })
    .await
    .unwrap();
    assert_eq!(
        tokens
            .get("raw")
            .await
            .unwrap()
            .status
            .unwrap()
            .secret_name
            .as_deref(),
        Some("signet-token-raw")
    );
    // A raw-token machine that claims to run in the live pod.
    let (impostor, _) = sdk::Client::enroll(
        &url,
        &raw,
        "impostor",
        BTreeMap::from([
            (META_POD_UID.to_owned(), live_uid.clone()),
            (META_POD_NAME.to_owned(), "live".to_owned()),
            (META_NAMESPACE.to_owned(), NS.to_owned()),
        ]),
        &Options::default(),
    )
    .await
    .unwrap();
    let impostor_id = impostor.identity().id.clone().unwrap();
    // Renewed at two thirds of 24 s: a successor sharing the spent use.
    let (renewed_id, renewed_raw) =
        eventually_async("the raw token renewed", Duration::from_secs(60), || async {
            let renewed = (tokens.get("raw").await?.status)
                .filter(|status| status.uses == Some(1))
                .and_then(|status| status.token_id)
                .filter(|id| *id != raw_id);
            let held = held_token(secrets.get_opt("signet-token-raw").await?);
            Ok(held.filter(|(id, _)| renewed.as_ref() == Some(id)))
        })
        .await
        .unwrap();
    assert_ne!(renewed_raw, raw);
    let line: Vec<_> = admin
        .tokens()
        .await
        .unwrap()
        .tokens
        .into_iter()
        .filter(|t| t.id == raw_id || t.id == renewed_id)
        .collect();
    assert_eq!(line.len(), 2);
    assert!(line.iter().all(|t| t.uses == 1 && t.max_uses == Some(5)));

    // ---- machine GC: the sweep after a restart, then pod deletion ---------
    let pods: Api<Pod> = Api::namespaced(kube.clone(), NS);
    let ghost = create_pod(&kube, "ghost").await;
    let (ghost_machine, _) = enroll_as_pod(&kube, &url, &ghost).await;
    let ghost_id = ghost_machine.identity().id.clone().unwrap();
    // The ghost's pod goes while the controller is down: only the sweep
    // can notice. An unscheduled pod is deleted at once.
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
    pods.delete("ghost", &DeleteParams::default())
        .await
        .unwrap();
    let (stop, running) = start_controller(&url, &identity_file, &view.id, &kube);

    // Revoking a machine deletes it in the vault; a disabled one counts too.
    let machine_revoked = |id: String| {
        let admin = &admin;
        async move {
            admin
                .machines()
                .await
                .unwrap()
                .machines
                .into_iter()
                .find(|m| m.id == id)
                .is_none_or(|m| m.disabled)
        }
    };
    eventually_async(
        "the sweep to revoke the ghost",
        Duration::from_secs(30),
        || {
            let check = machine_revoked(ghost_id.clone());
            async move { Ok(check.await.then_some(())) }
        },
    )
    .await
    .unwrap();
    assert!(
        !machine_revoked(live_id.clone()).await,
        "a machine whose pod exists is left alone"
    );
    assert!(ghost_machine.read_secret("demo", "db", None).await.is_err());
    // The watch revokes the deleted pod's attested machine, and only it: the
    // impostor's self-reported metadata names the same pod.
    pods.delete("live", &DeleteParams::default()).await.unwrap();
    eventually_async(
        "the deleted pod's machine revoked",
        Duration::from_secs(30),
        || {
            let check = machine_revoked(live_id.clone());
            async move { Ok(check.await.then_some(())) }
        },
    )
    .await
    .unwrap();
    assert!(
        !machine_revoked(impostor_id.clone()).await,
        "self-reported metadata revokes nothing"
    );

    // ---- deleting the SecretGrant withdraws the policy's grants ----------
    grants
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually_async("the SecretGrant gone", Duration::from_secs(30), || async {
        Ok(grants.get_opt("app").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    let left = admin
        .list_grants(None, Some(token_id.as_str()))
        .await
        .unwrap()
        .grants;
    assert!(left.is_empty(), "policy grants left: {left:?}");

    // ---- deleting the EnrollmentTokens revokes them in the vault ---------
    for name in ["web", "raw"] {
        tokens.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually_async(
        "the EnrollmentTokens gone",
        Duration::from_secs(30),
        || async {
            let web = tokens.get_opt("web").await?;
            let raw = tokens.get_opt("raw").await?;
            Ok((web.is_none() && raw.is_none()).then_some(()))
        },
    )
    .await
    .unwrap();
    let vault_tokens = admin.tokens().await.unwrap().tokens;
    for id in [&token_id, &renewed_id] {
        assert!(
            vault_tokens.iter().find(|t| &t.id == id).unwrap().revoked,
            "vault token {id} is revoked"
        );
    }
    assert!(
        sdk::Client::enroll(
            &url,
            &renewed_raw,
            "after",
            BTreeMap::new(),
            &Options::default()
        )
        .await
        .is_err(),
        "the revoked raw token no longer enrolls"
    );
    assert!(secrets.get_opt("signet-token-raw").await.unwrap().is_none());

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}
