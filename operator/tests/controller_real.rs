//! The controller against a real kube-apiserver (tests/control-plane) and a
//! real vault served in-process on a loopback port.
//!
//! Skipped, with a message, only when the control-plane binaries have not
//! been built (`tests/control-plane/build.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde_json::json;
use signet_client::{
    api::{CreateIdentity, Scope, WriteSecret},
    identity::Identity,
    sdk::{self, Options},
};
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

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The bin folder of a complete control-plane build, without building.
fn control_plane_bin() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["etcd", "kube-apiserver", "kubectl"]
            .iter()
            .all(|tool| dir.join(tool).is_file())
    };
    if let Some(bin) = std::env::var_os("SIGNET_CP_BIN").map(PathBuf::from) {
        return complete(&bin).then_some(bin);
    }
    let cache = std::env::var_os("SIGNET_CP_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".cache/signet-control-plane"))
        })?;
    let mut builds: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| complete(bin))
        .collect();
    builds.sort();
    builds.pop()
}

/// A running etcd + kube-apiserver, stopped on drop.
struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl ControlPlane {
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(repo_root().join("tests/control-plane/start.sh"))
            .arg(dir.path())
            .env("SIGNET_CP_BIN", &bin)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "start.sh failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let kubeconfig = PathBuf::from(stdout.lines().last().unwrap().trim());
        Self {
            dir,
            bin,
            kubeconfig,
        }
    }

    fn kubectl(&self, args: &[&str]) {
        let output = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .unwrap();
        Client::try_from(config).unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("tests/control-plane/start.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
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

/// Polls `check` every 250 ms until it yields a value or `what` times out.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pod_metadata(uid: &str, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("k8s.pod.uid".to_owned(), uid.to_owned()),
        ("k8s.pod.name".to_owned(), name.to_owned()),
        ("k8s.namespace".to_owned(), NS.to_owned()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_against_real_apiserver_and_vault() {
    let Some(bin) = control_plane_bin() else {
        println!(
            "SKIPPED controller_against_real_apiserver_and_vault: the control-plane binaries are not built; run tests/control-plane/build.sh"
        );
        return;
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
    let plane = ControlPlane::start(bin);
    plane.kubectl(&["apply", "-f", repo_root().join("crds").to_str().unwrap()]);
    plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/enrollmenttokens.signet.dev",
        "crd/secretgrants.signet.dev",
        "--timeout=60s",
    ]);
    let kube = plane.client().await;

    // ---- vault: admin, agent identity, project and a secret --------------
    let data = tempfile::tempdir().unwrap();
    let (url, admin) = start_vault(data.path()).await;
    admin.create_project("demo").await.unwrap();
    admin
        .write_secret(
            "demo",
            "db",
            &WriteSecret {
                value: Some("s3cret".into()),
                fields: None,
            },
        )
        .await
        .unwrap();
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
    let vault_client = controller::connect(&url, &identity_file, Some(&view.id), None).unwrap();

    // ---- the controller, in-process ---------------------------------------
    let settings = Settings {
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

    let namespaces: Api<Namespace> = Api::all(kube.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    // No controller-manager here: pods need their service account made by hand.
    let accounts: Api<ServiceAccount> = Api::namespaced(kube.clone(), NS);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap(),
        )
        .await
        .unwrap();

    // ---- EnrollmentToken → vault token + Secret + Ready status ------------
    let tokens: Api<EnrollmentToken> = Api::namespaced(kube.clone(), NS);
    let token: EnrollmentToken = serde_json::from_value(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "EnrollmentToken",
        "metadata": {"name": "web"},
        "spec": {"project": "demo", "tokenTtl": "1h", "machineLifetime": "1h"},
    }))
    .unwrap();
    tokens.create(&PostParams::default(), &token).await.unwrap();
    let token_id = eventually("EnrollmentToken Ready", Duration::from_secs(60), || async {
        let token = tokens.get("web").await.ok()?;
        let status = token.status?;
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready { status.token_id } else { None }
    })
    .await;
    let status = tokens.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.secret_name.as_deref(), Some("signet-token-web"));
    assert_eq!(status.uses, Some(0));
    assert!(status.expires_at.is_some());
    assert_eq!(status.observed_generation, Some(1));
    let vault_tokens = admin.tokens().await.unwrap().tokens;
    let vault_token = vault_tokens.iter().find(|t| t.id == token_id).unwrap();
    assert!(!vault_token.revoked);
    assert_eq!(vault_token.project, "demo");

    let secrets: Api<Secret> = Api::namespaced(kube.clone(), NS);
    let secret = secrets.get("signet-token-web").await.unwrap();
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "EnrollmentToken");
    assert_eq!(owner.name, "web");
    let raw = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    assert!(
        raw.starts_with(&token_id),
        "the Secret holds the status' token"
    );
    let (early_machine, enrolled) =
        sdk::Client::enroll(&url, &raw, "early", BTreeMap::new(), &Options::default())
            .await
            .unwrap();
    assert!(enrolled.grants.is_empty(), "no SecretGrant yet");

    // ---- SecretGrant: one secret exists, one does not ----------------------
    let grants: Api<SecretGrant> = Api::namespaced(kube.clone(), NS);
    let grant: SecretGrant = serde_json::from_value(json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "SecretGrant",
        "metadata": {"name": "app"},
        "spec": {"enrollmentToken": "web",
                 "secrets": [{"secret": "db"}, {"secret": "missing"}]},
    }))
    .unwrap();
    grants.create(&PostParams::default(), &grant).await.unwrap();
    let status = eventually("SecretGrant status", Duration::from_secs(60), || async {
        let status = grants.get("app").await.ok()?.status?;
        (!status.resolved.is_empty()).then_some(status)
    })
    .await;
    assert_eq!(status.resolved, ["db"]);
    assert_eq!(status.unresolved.len(), 1);
    assert_eq!(status.unresolved[0].secret, "missing");
    assert_eq!(status.unresolved[0].reason, "SecretNotFound");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "SecretsUnresolved");

    // The grant reached the machine enrolled before it, and new machines.
    let value = early_machine.read_secret("demo", "db", None).await.unwrap();
    assert_eq!(value.value.as_deref(), Some("s3cret"));
    let (_late, enrolled) =
        sdk::Client::enroll(&url, &raw, "late", BTreeMap::new(), &Options::default())
            .await
            .unwrap();
    assert_eq!(enrolled.grants.len(), 1);
    assert_eq!(enrolled.grants[0].secret, "db");

    // ---- machine GC: sweep and pod deletion ---------------------------------
    let pods: Api<Pod> = Api::namespaced(kube.clone(), NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "live", "labels": {"signet.dev/inject": "true"},
                     "annotations": {"signet.dev/injected": "true"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app"}]},
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let live_uid = pod.metadata.uid.clone().unwrap();
    let (live_machine, _) = sdk::Client::enroll(
        &url,
        &raw,
        "live",
        pod_metadata(&live_uid, "live"),
        &Options::default(),
    )
    .await
    .unwrap();
    let (ghost_machine, _) = sdk::Client::enroll(
        &url,
        &raw,
        "ghost",
        pod_metadata("00000000-0000-0000-0000-00000000dead", "ghost"),
        &Options::default(),
    )
    .await
    .unwrap();
    let ghost_id = ghost_machine.identity().id.clone().unwrap();
    let live_id = live_machine.identity().id.clone().unwrap();
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
    eventually(
        "the sweep to revoke the ghost",
        Duration::from_secs(30),
        || {
            let check = machine_revoked(ghost_id.clone());
            async move { check.await.then_some(()) }
        },
    )
    .await;
    assert!(
        !machine_revoked(live_id.clone()).await,
        "a machine whose pod exists is left alone"
    );
    // An unscheduled pod is deleted at once; the watch revokes its machine.
    pods.delete("live", &DeleteParams::default()).await.unwrap();
    eventually(
        "the deleted pod's machine revoked",
        Duration::from_secs(30),
        || {
            let check = machine_revoked(live_id.clone());
            async move { check.await.then_some(()) }
        },
    )
    .await;
    assert!(ghost_machine.read_secret("demo", "db", None).await.is_err());

    // ---- deleting the SecretGrant withdraws the token's grants -------------
    grants
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the SecretGrant gone", Duration::from_secs(30), || async {
        grants.get_opt("app").await.unwrap().is_none().then_some(())
    })
    .await;
    let left = admin
        .list_grants(None, Some(token_id.as_str()))
        .await
        .unwrap()
        .grants;
    assert!(left.is_empty(), "token grants left: {left:?}");

    // ---- deleting the EnrollmentToken revokes it in the vault --------------
    tokens
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the EnrollmentToken gone",
        Duration::from_secs(30),
        || async { tokens.get_opt("web").await.unwrap().is_none().then_some(()) },
    )
    .await;
    let vault_tokens = admin.tokens().await.unwrap().tokens;
    assert!(
        vault_tokens
            .iter()
            .find(|t| t.id == token_id)
            .unwrap()
            .revoked,
        "the vault token is revoked"
    );
    assert!(
        sdk::Client::enroll(&url, &raw, "after", BTreeMap::new(), &Options::default())
            .await
            .is_err(),
        "the revoked token no longer enrolls"
    );
    assert!(secrets.get_opt("signet-token-web").await.unwrap().is_none());

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), running).await;
}
