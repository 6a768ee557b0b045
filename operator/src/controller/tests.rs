//! Reconcile logic against a fake vault and tower-test's mock API server.
//!
//! The mock answers every request from a per-test routing function (with
//! defaults: POST and PATCH echo the body, GET and DELETE say 404) and
//! records the requests, so the tests assert on what the reconciler asked
//! of the API server and of the vault rather than on a fixed call order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{Method, Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::{Client, client::Body, runtime::controller::Action};
use serde_json::{Value, json};
use signet_client::api::{
    CreateGrant, CreateToken, CreatedToken, GrantRecord, KubernetesBinding, MachineKubernetes,
    MachineView, RenewToken, SecretMeta, TokenConstraints, TokenView, VersionMeta,
};
use signet_init::contract::{META_NAMESPACE, META_POD_NAME, META_POD_UID};

use super::{
    Context, Settings, enrollment_token, pods, restart, secret_grant,
    vault::{self, Grantee, VaultApi},
};
use crate::crd::{EnrollmentToken, SecretGrant};

// ---- fake vault -------------------------------------------------------------

#[derive(Default)]
struct FakeVault {
    /// Secret name to field names (`None`: plain secret).
    secrets: BTreeMap<String, Option<Vec<String>>>,
    tokens: Mutex<Vec<TokenView>>,
    created: Mutex<Vec<CreateToken>>,
    renewed: Mutex<Vec<(String, RenewToken)>>,
    revoked_tokens: Mutex<Vec<String>>,
    /// When set, token creation is refused with `not_delegated` and this message.
    refuse_tokens: Option<String>,
    /// Secrets whose grants are refused with `not_delegated`, and the message.
    refuse_grants: BTreeMap<String, String>,
    grants: Mutex<Vec<GrantRecord>>,
    machines: Mutex<Vec<MachineView>>,
    revoked_machines: Mutex<Vec<String>>,
    /// Live version and its creation time per secret (default: 1, unknown).
    live: Mutex<BTreeMap<String, (u32, String)>>,
}

fn not_found() -> vault::Error {
    vault::Error::Api {
        status: 404,
        code: "not_found".into(),
        message: "no such thing".into(),
    }
}

fn refused_not_delegated(message: &str) -> vault::Error {
    vault::Error::Api {
        status: 403,
        code: "not_delegated".into(),
        message: message.into(),
    }
}

/// The raw token the fake vault hands out for token `id`: only for raw
/// tokens and tokens outside Kubernetes, never for an attested policy.
fn raw_value(id: &str, binding: Option<&KubernetesBinding>) -> Option<String> {
    let attested = binding.is_some_and(|b| !b.raw_token);
    (!attested).then(|| format!("{id}.raw-secret"))
}

impl FakeVault {
    fn with_secret(mut self, name: &str, fields: Option<&[&str]>) -> Self {
        self.secrets.insert(
            name.to_owned(),
            fields.map(|f| f.iter().map(|s| (*s).to_owned()).collect()),
        );
        self
    }
}

impl VaultApi for FakeVault {
    async fn create_token(&self, body: &CreateToken) -> Result<CreatedToken, vault::Error> {
        self.created.lock().unwrap().push(body.clone());
        if let Some(message) = &self.refuse_tokens {
            return Err(refused_not_delegated(message));
        }
        if let Some(message) = body
            .grants
            .iter()
            .find_map(|g| self.refuse_grants.get(&g.secret))
        {
            return Err(refused_not_delegated(message));
        }
        let mut tokens = self.tokens.lock().unwrap();
        let id = format!("tok_{}", tokens.len() + 1);
        let view = TokenView {
            id: id.clone(),
            name: body.name.clone(),
            project: body.project.clone(),
            max_uses: body.max_uses,
            uses: 0,
            expires_at: "2030-01-02T00:00:00Z".into(),
            machine_lifetime_seconds: body.machine_lifetime_seconds,
            revoked: false,
            constraints: TokenConstraints::default(),
            kubernetes: body.kubernetes.clone(),
        };
        tokens.push(view.clone());
        Ok(CreatedToken {
            token: raw_value(&id, body.kubernetes.as_ref()),
            view,
        })
    }

    async fn renew_token(&self, id: &str, body: &RenewToken) -> Result<CreatedToken, vault::Error> {
        self.renewed
            .lock()
            .unwrap()
            .push((id.to_owned(), body.clone()));
        let mut tokens = self.tokens.lock().unwrap();
        let old = tokens
            .iter()
            .find(|t| t.id == id && !t.revoked)
            .cloned()
            .ok_or_else(not_found)?;
        // The successor carries the shared counter and everything else over.
        let view = TokenView {
            id: format!("tok_{}", tokens.len() + 1),
            expires_at: "2030-01-02T00:00:00Z".into(),
            ..old
        };
        tokens.push(view.clone());
        let mut grants = self.grants.lock().unwrap();
        let copies: Vec<GrantRecord> = grants
            .iter()
            .filter(|g| g.token_id.as_deref() == Some(id))
            .map(|g| GrantRecord {
                id: format!("{}-renewed", g.id),
                token_id: Some(view.id.clone()),
                ..g.clone()
            })
            .collect();
        grants.extend(copies);
        Ok(CreatedToken {
            token: raw_value(&view.id, view.kubernetes.as_ref()),
            view,
        })
    }

    async fn revoke_token(&self, id: &str) -> Result<(), vault::Error> {
        self.revoked_tokens.lock().unwrap().push(id.to_owned());
        let mut tokens = self.tokens.lock().unwrap();
        let token = tokens
            .iter_mut()
            .find(|t| t.id == id)
            .ok_or_else(not_found)?;
        token.revoked = true;
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenView>, vault::Error> {
        Ok(self.tokens.lock().unwrap().clone())
    }

    async fn secret_meta(&self, project: &str, secret: &str) -> Result<SecretMeta, vault::Error> {
        let fields = self.secrets.get(secret).ok_or_else(not_found)?;
        let live = self.live.lock().unwrap().get(secret).cloned();
        Ok(SecretMeta {
            project: project.to_owned(),
            name: secret.to_owned(),
            live_version: live.as_ref().map_or(1, |l| l.0),
            versions: live
                .map(|(version, created_at)| VersionMeta {
                    version,
                    created_at,
                    created_by: "admin".into(),
                })
                .into_iter()
                .collect(),
            fields: fields.clone(),
            policy: None,
        })
    }

    async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord, vault::Error> {
        if let Some(message) = self.refuse_grants.get(&body.secret) {
            return Err(refused_not_delegated(message));
        }
        let mut grants = self.grants.lock().unwrap();
        let record = GrantRecord {
            id: format!("grant_{}", grants.len() + 1),
            machine_id: body.machine_id.clone(),
            token_id: body.token_id.clone(),
            project: body.project.clone(),
            secret: body.secret.clone(),
            fields: body.fields.clone(),
        };
        grants.push(record.clone());
        Ok(record)
    }

    async fn grants_of(&self, grantee: Grantee<'_>) -> Result<Vec<GrantRecord>, vault::Error> {
        Ok(self
            .grants
            .lock()
            .unwrap()
            .iter()
            .filter(|g| match grantee {
                Grantee::Machine(id) => g.machine_id.as_deref() == Some(id),
                Grantee::Token(id) => g.token_id.as_deref() == Some(id),
            })
            .cloned()
            .collect())
    }

    async fn delete_grant(&self, id: &str) -> Result<(), vault::Error> {
        let mut grants = self.grants.lock().unwrap();
        let before = grants.len();
        grants.retain(|g| g.id != id);
        if grants.len() == before {
            return Err(not_found());
        }
        Ok(())
    }

    async fn machines(&self) -> Result<Vec<MachineView>, vault::Error> {
        Ok(self.machines.lock().unwrap().clone())
    }

    async fn revoke_machine(&self, id: &str) -> Result<(), vault::Error> {
        self.revoked_machines.lock().unwrap().push(id.to_owned());
        let mut machines = self.machines.lock().unwrap();
        let machine = machines
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(not_found)?;
        machine.disabled = true;
        Ok(())
    }
}

// ---- mock API server --------------------------------------------------------

/// One request the reconciler sent to the API server.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    body: Value,
}

type Routes = Box<dyn Fn(&Method, &str) -> Option<(u16, Value)> + Send + Sync>;

/// Starts the mock API server; returns a client for it and the call log.
fn mock_api(routes: Routes) -> (Client, Arc<Mutex<Vec<Call>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            log.lock().unwrap().push(Call {
                method: method.clone(),
                path: path.clone(),
                body: body.clone(),
            });
            let (status, answer) = routes(&method, &path).unwrap_or_else(|| match method {
                Method::POST => (201, body),
                Method::PATCH => (200, body),
                _ => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            });
            let response = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (Client::new(service, "default"), calls)
}

/// The cluster the tests' controller runs for.
const CLUSTER: &str = "prod";

fn context(client: Client, vault: FakeVault) -> Arc<Context<FakeVault>> {
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let settings = Settings {
        cluster: CLUSTER.to_owned(),
        ..Settings::default()
    };
    Arc::new(Context::new(client, vault, settings).with_clock(Arc::new(move || now)))
}

/// Every call the reconciler made to the API server's Secrets.
fn secret_calls(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path.contains("/secrets"))
        .cloned()
        .collect()
}

fn calls_to(calls: &Arc<Mutex<Vec<Call>>>, method: Method, path: &str) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == method && c.path == path)
        .cloned()
        .collect()
}

const TOKENS: &str = "/apis/signet.dev/v1alpha1/namespaces/ns/enrollmenttokens";
const GRANTS: &str = "/apis/signet.dev/v1alpha1/namespaces/ns/secretgrants";
const SECRETS: &str = "/api/v1/namespaces/ns/secrets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

fn token_json(finalized: bool, ttl: &str, status: Value) -> Value {
    let mut token = json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "EnrollmentToken",
        "metadata": {"name": "web", "namespace": "ns", "uid": "uid-web", "generation": 1},
        "spec": {"project": "demo", "tokenTtl": ttl, "machineLifetime": "1h", "maxUses": 5,
                 "allowedServiceAccounts": ["web"]},
        "status": status,
    });
    if finalized {
        token["metadata"]["finalizers"] = json!([enrollment_token::FINALIZER]);
    }
    token
}

/// The same EnrollmentToken with `rawToken: true`.
fn raw_token_json(ttl: &str, status: Value) -> Value {
    let mut token = token_json(true, ttl, status);
    token["spec"]["rawToken"] = json!(true);
    token
}

fn grant_json(name: &str, secrets: Value) -> Value {
    json!({
        "apiVersion": "signet.dev/v1alpha1",
        "kind": "SecretGrant",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                     "generation": 1, "finalizers": [secret_grant::FINALIZER]},
        "spec": {"enrollmentToken": "web", "secrets": secrets},
    })
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "signet.dev/v1alpha1", "kind": format!("{kind}List"),
           "metadata": {"resourceVersion": "1"}, "items": items})
}

async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .expect("reconcile did not finish in time")
}

/// Name of the vault tokens of the `web` fixture.
const WEB_TOKEN_NAME: &str = "k8s:ns/web:uid-web";

/// The binding the `web` fixture asks for.
fn web_binding(raw_token: bool) -> KubernetesBinding {
    KubernetesBinding {
        cluster: CLUSTER.into(),
        namespace: "ns".into(),
        policy: "web".into(),
        service_accounts: vec!["web".into()],
        raw_token,
    }
}

/// A live vault token named `name`, bound like the `web` fixture.
fn vault_token(id: &str, name: &str, expires_at: &str, raw_token: bool) -> TokenView {
    TokenView {
        id: id.into(),
        name: name.into(),
        project: "demo".into(),
        max_uses: Some(5),
        uses: 2,
        expires_at: expires_at.into(),
        machine_lifetime_seconds: 3600,
        revoked: false,
        constraints: TokenConstraints::default(),
        kubernetes: Some(web_binding(raw_token)),
    }
}

/// The token Secret of `web`, holding vault token `id`.
fn token_secret(id: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "signet-token-web", "namespace": "ns",
                        "annotations": {"signet.dev/token-id": id}},
           "data": {"token": base64_encode(&format!("{id}.old"))}})
}

fn status_patches(calls: &Arc<Mutex<Vec<Call>>>) -> Vec<Value> {
    calls_to(calls, Method::PATCH, &format!("{TOKENS}/web/status"))
        .into_iter()
        .map(|c| c.body["status"].clone())
        .collect()
}

// ---- EnrollmentToken ----------------------------------------------------------

#[tokio::test]
async fn attested_policy_is_issued_seeded_and_reported_without_a_secret() {
    let token = token_json(true, "3h", json!(null));
    let answer = token.clone();
    let grant = grant_json(
        "app",
        json!([{"secret": "db", "fields": ["password"]}, {"secret": "missing"}]),
    );
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![grant.clone()]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default().with_secret("db", Some(&["user", "password"]));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();

    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    // Renewal at two thirds of 3h is 2h after issue; the resync (5m) is sooner.
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    let created = ctx.vault.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].project, "demo");
    assert_eq!(created[0].ttl_seconds, 3 * 3600);
    assert_eq!(created[0].machine_lifetime_seconds, 3600);
    assert_eq!(created[0].max_uses, Some(5));
    assert_eq!(created[0].name, WEB_TOKEN_NAME);
    // Bound to this cluster, namespace and object name; no raw token.
    assert_eq!(created[0].kubernetes, Some(web_binding(false)));
    // Seeded with the resolvable secret only, narrowed to its field.
    assert_eq!(created[0].grants.len(), 1);
    assert_eq!(created[0].grants[0].secret, "db");
    assert_eq!(
        created[0].grants[0].fields,
        Some(vec!["password".to_owned()])
    );

    // No Secret is read, written or required.
    assert_eq!(secret_calls(&calls).len(), 0, "{:?}", secret_calls(&calls));

    let status = status_patches(&calls);
    assert_eq!(status.len(), 1);
    let status = &status[0];
    assert_eq!(status["tokenId"], "tok_1");
    assert_eq!(status.get("secretName"), None);
    assert_eq!(status["uses"], 0);
    assert_eq!(status["expiresAt"], "2030-01-02T00:00:00Z");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(
        status["conditions"][0]["message"],
        "vault policy tok_1 is live"
    );

    let events = calls_to(&calls, Method::POST, EVENTS);
    assert!(events.iter().any(|e| e.body["reason"] == "TokenIssued"));
}

#[tokio::test]
async fn raw_token_is_issued_into_its_secret_and_nowhere_else() {
    let token = raw_token_json("3h", json!(null));
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let ctx = context(client, FakeVault::default());
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    let created = ctx.vault.created.lock().unwrap().clone();
    assert_eq!(created[0].kubernetes, Some(web_binding(true)));

    let applied = calls_to(
        &calls,
        Method::PATCH,
        &format!("{SECRETS}/signet-token-web"),
    );
    assert_eq!(applied.len(), 1, "the Secret is server-side applied once");
    let secret = &applied[0].body;
    assert_eq!(
        secret["data"]["token"],
        json!(base64_encode("tok_1.raw-secret"))
    );
    assert_eq!(
        secret["metadata"]["annotations"]["signet.dev/token-id"],
        "tok_1"
    );
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "EnrollmentToken"
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-web");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);

    let status = &status_patches(&calls)[0];
    assert_eq!(status["tokenId"], "tok_1");
    assert_eq!(status["secretName"], "signet-token-web");
    assert_eq!(
        status["conditions"][0]["message"],
        "vault token tok_1 is live"
    );

    // The raw token goes to the Secret only: never into an event or status.
    for call in calls.lock().unwrap().iter() {
        if !call.path.starts_with(SECRETS) {
            assert!(!call.body.to_string().contains("raw-secret"), "{call:?}");
        }
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn attested_policy_near_expiry_is_renewed_not_replaced() {
    let status = json!({"tokenId": "tok_1", "observedGeneration": 1});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    // A 3h policy that expires in 30 minutes: inside the last third.
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T00:30:00Z",
        false,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    assert!(ctx.vault.created.lock().unwrap().is_empty());
    let renewed = ctx.vault.renewed.lock().unwrap().clone();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].0, "tok_1");
    assert_eq!(renewed[0].1.ttl_seconds, 3 * 3600);
    // Nobody holds an attested policy: the successor replaces it at once.
    assert_eq!(renewed[0].1.grace_seconds, 0);
    assert!(ctx.vault.revoked_tokens.lock().unwrap().is_empty());
    assert_eq!(secret_calls(&calls).len(), 0);
    let status = &status_patches(&calls)[0];
    assert_eq!(status["tokenId"], "tok_2");
    // The successor shares the spent uses.
    assert_eq!(status["uses"], 2);
    let events = calls_to(&calls, Method::POST, EVENTS);
    assert!(events.iter().any(|e| e.body["reason"] == "TokenRenewed"));
}

#[tokio::test]
async fn raw_token_near_expiry_is_renewed_with_grace_and_rewritten() {
    let status =
        json!({"tokenId": "tok_1", "observedGeneration": 1, "secretName": "signet-token-web"});
    let token = raw_token_json("3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{SECRETS}/signet-token-web") => {
            Some((200, token_secret("tok_1")))
        }
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T00:30:00Z",
        true,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    assert!(ctx.vault.created.lock().unwrap().is_empty());
    let renewed = ctx.vault.renewed.lock().unwrap().clone();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].0, "tok_1");
    // Pods that read the old Secret keep enrolling while the kubelet catches up.
    assert_eq!(renewed[0].1.grace_seconds, 600);
    assert!(
        ctx.vault.revoked_tokens.lock().unwrap().is_empty(),
        "the predecessor lives out its grace"
    );
    let applied = calls_to(
        &calls,
        Method::PATCH,
        &format!("{SECRETS}/signet-token-web"),
    );
    assert_eq!(applied.len(), 1);
    assert_eq!(
        applied[0].body["data"]["token"],
        json!(base64_encode("tok_2.raw-secret"))
    );
    assert_eq!(
        applied[0].body["metadata"]["annotations"]["signet.dev/token-id"],
        "tok_2"
    );
    assert_eq!(status_patches(&calls)[0]["tokenId"], "tok_2");
}

#[tokio::test]
async fn lost_raw_token_secret_is_healed_by_a_renewal_without_grace() {
    let status =
        json!({"tokenId": "tok_1", "observedGeneration": 1, "secretName": "signet-token-web"});
    let token = raw_token_json("3h", status);
    let answer = token.clone();
    // The Secret is gone (GET says 404): a fresh token would reset maxUses.
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T03:00:00Z",
        true,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    assert!(ctx.vault.created.lock().unwrap().is_empty());
    let renewed = ctx.vault.renewed.lock().unwrap().clone();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0].1.grace_seconds, 0);
    let applied = calls_to(
        &calls,
        Method::PATCH,
        &format!("{SECRETS}/signet-token-web"),
    );
    assert_eq!(
        applied[0].body["data"]["token"],
        json!(base64_encode("tok_2.raw-secret"))
    );
}

#[tokio::test]
async fn token_from_before_attestation_is_replaced_by_a_bound_policy() {
    let status = json!({"tokenId": "tok_1", "observedGeneration": 1});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    let mut unbound = vault_token("tok_1", WEB_TOKEN_NAME, "2030-01-01T03:00:00Z", false);
    unbound.kubernetes = None;
    vault.tokens.lock().unwrap().push(unbound);
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    let created = ctx.vault.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].kubernetes, Some(web_binding(false)));
    assert_eq!(*ctx.vault.revoked_tokens.lock().unwrap(), ["tok_1"]);
    assert_eq!(status_patches(&calls)[0]["tokenId"], "tok_2");
}

#[tokio::test]
async fn healthy_token_only_refreshes_its_status() {
    let status = json!({"tokenId": "tok_1", "observedGeneration": 1, "uses": 0});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    let mut current = vault_token("tok_1", WEB_TOKEN_NAME, "2030-01-01T03:00:00Z", false);
    current.uses = 3;
    vault.tokens.lock().unwrap().push(current);
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert!(ctx.vault.created.lock().unwrap().is_empty());
    assert!(ctx.vault.renewed.lock().unwrap().is_empty());
    assert!(ctx.vault.revoked_tokens.lock().unwrap().is_empty());
    assert_eq!(secret_calls(&calls).len(), 0);
    assert_eq!(status_patches(&calls)[0]["uses"], 3);
}

#[tokio::test]
async fn healthy_raw_token_with_its_secret_is_left_alone() {
    let status =
        json!({"tokenId": "tok_1", "observedGeneration": 1, "secretName": "signet-token-web"});
    let token = raw_token_json("3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{SECRETS}/signet-token-web") => {
            Some((200, token_secret("tok_1")))
        }
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T03:00:00Z",
        true,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert!(ctx.vault.created.lock().unwrap().is_empty());
    assert!(ctx.vault.renewed.lock().unwrap().is_empty());
    assert!(
        calls_to(
            &calls,
            Method::PATCH,
            &format!("{SECRETS}/signet-token-web")
        )
        .is_empty()
    );
}

#[tokio::test]
async fn status_token_id_of_another_object_is_never_revoked() {
    // A tenant pointed the status at another resource's vault token.
    let status = json!({"tokenId": "tok_other", "observedGeneration": 1});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_other",
        "k8s:other/db:uid-db",
        "2030-01-01T00:10:00Z",
        false,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(
        Arc::new(object.clone()),
        ctx.clone(),
    ))
    .await
    .unwrap();

    // Neither renewed (although near expiry) nor revoked: a token of its own
    // is created, and the status corrected.
    assert!(ctx.vault.renewed.lock().unwrap().is_empty());
    assert!(ctx.vault.revoked_tokens.lock().unwrap().is_empty());
    assert_eq!(ctx.vault.created.lock().unwrap().len(), 1);
    assert_eq!(status_patches(&calls)[0]["tokenId"], "tok_2");

    // Deleting the resource revokes its own token only.
    let mut deleting = serde_json::to_value(&object).unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    let object: EnrollmentToken = serde_json::from_value(deleting).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(*ctx.vault.revoked_tokens.lock().unwrap(), ["tok_2"]);
}

#[tokio::test]
async fn not_delegated_is_a_condition_and_a_warning_naming_the_delegation() {
    const MESSAGE: &str = "agent signet-operator has no delegation for secret demo/db in prod/ns";
    let token = token_json(true, "3h", json!(null));
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault {
        refuse_tokens: Some(MESSAGE.to_owned()),
        ..FakeVault::default()
    };
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    // Waiting for the vault's admin, not an error loop.
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));

    let status = &status_patches(&calls)[0];
    let condition = &status["conditions"][0];
    assert_eq!(condition["type"], "Ready");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "NotDelegated");
    assert!(
        condition["message"].as_str().unwrap().contains(MESSAGE),
        "{condition}"
    );
    let events = calls_to(&calls, Method::POST, EVENTS);
    let warning = events
        .iter()
        .find(|e| e.body["reason"] == "NotDelegated")
        .expect("a NotDelegated event");
    assert_eq!(warning.body["type"], "Warning");
    assert!(
        warning.body["note"].as_str().unwrap().contains(MESSAGE),
        "{warning:?}"
    );
}

#[tokio::test]
async fn raw_token_without_secrets_access_mints_nothing_and_says_why() {
    let token = raw_token_json("3h", json!(null));
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (_, p) if p.starts_with(SECRETS) => Some((
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "reason": "Forbidden", "code": 403,
                   "message": "secrets \"signet-token-web\" is forbidden"}),
        )),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let ctx = context(client, FakeVault::default());
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert!(
        ctx.vault.created.lock().unwrap().is_empty(),
        "no raw token without a Secret to hold it"
    );
    let condition = &status_patches(&calls)[0]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "SecretsForbidden");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("operator.rawTokens"),
        "{condition}"
    );
    let events = calls_to(&calls, Method::POST, EVENTS);
    assert!(
        events
            .iter()
            .any(|e| e.body["reason"] == "SecretsForbidden")
    );
}

#[tokio::test]
async fn an_undelegated_seed_grant_does_not_hold_back_the_policy() {
    const MESSAGE: &str =
        "agent a has no delegation of the whole secret of demo/admin-only for namespace prod/ns";
    let token = token_json(true, "3h", json!(null));
    let answer = token.clone();
    let grant = grant_json("app", json!([{"secret": "db"}, {"secret": "admin-only"}]));
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![grant.clone()]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let mut vault = FakeVault::default()
        .with_secret("db", None)
        .with_secret("admin-only", None);
    vault
        .refuse_grants
        .insert("admin-only".to_owned(), MESSAGE.to_owned());
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    // Refused with its seed grants, then created bare.
    let created = ctx.vault.created.lock().unwrap().clone();
    assert_eq!(created.len(), 2);
    assert_eq!(created[0].grants.len(), 2);
    assert!(created[1].grants.is_empty());
    let status = &status_patches(&calls)[0];
    assert_eq!(status["tokenId"], "tok_1");
    assert_eq!(status["conditions"][0]["status"], "True");
    let events = calls_to(&calls, Method::POST, EVENTS);
    let warning = events
        .iter()
        .find(|e| e.body["reason"] == "NotDelegated")
        .expect("a NotDelegated event");
    assert!(warning.body["note"].as_str().unwrap().contains(MESSAGE));
}

#[tokio::test]
async fn invalid_duration_is_a_condition_not_a_crash() {
    let token = token_json(true, "soon", json!(null));
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let ctx = context(client, FakeVault::default());
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(ctx.vault.created.lock().unwrap().is_empty());
    let status = calls_to(&calls, Method::PATCH, &format!("{TOKENS}/web/status"));
    let condition = &status[0].body["status"]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "InvalidSpec");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .starts_with("tokenTtl")
    );
    let events = calls_to(&calls, Method::POST, EVENTS);
    assert_eq!(events[0].body["reason"], "InvalidSpec");
    assert_eq!(events[0].body["type"], "Warning");
}

#[tokio::test]
async fn deletion_revokes_the_tokens_by_name_and_tolerates_not_found() {
    let mut token = raw_token_json("3h", json!({"tokenId": "tok_gone"}));
    token["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().extend([
        vault_token("tok_older", WEB_TOKEN_NAME, "2030-01-01T03:00:00Z", true),
        // Expired but never revoked: revoked too.
        vault_token("tok_expired", WEB_TOKEN_NAME, "2029-12-01T00:00:00Z", true),
    ]);
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    // Every token with this resource's name; the recorded id means nothing.
    assert_eq!(
        *ctx.vault.revoked_tokens.lock().unwrap(),
        ["tok_older", "tok_expired"]
    );
    // The raw token's Secret was deleted (404 is fine) and the finalizer removed.
    assert_eq!(
        calls_to(
            &calls,
            Method::DELETE,
            &format!("{SECRETS}/signet-token-web")
        )
        .len(),
        1
    );
    let patches = calls_to(&calls, Method::PATCH, &format!("{TOKENS}/web"));
    assert!(
        patches
            .iter()
            .any(|p| p.body.to_string().contains("/metadata/finalizers")),
        "{patches:?}"
    );
}

#[tokio::test]
async fn deleting_an_attested_policy_touches_no_secret() {
    let mut token = token_json(true, "3h", json!({"tokenId": "tok_1"}));
    token["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T03:00:00Z",
        false,
    ));
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(*ctx.vault.revoked_tokens.lock().unwrap(), ["tok_1"]);
    assert_eq!(secret_calls(&calls).len(), 0);
}

// ---- SecretGrant ----------------------------------------------------------------

/// The `web` EnrollmentToken as the API server returns it; its status names
/// `token_id` (which the reconciler must ignore).
fn ready_token(token_id: &str) -> Value {
    token_json(
        true,
        "3h",
        json!({"tokenId": token_id, "observedGeneration": 1}),
    )
}

#[tokio::test]
async fn grant_resolves_present_secrets_and_reports_missing_ones() {
    let mine = grant_json(
        "app",
        json!([{"secret": "db", "fields": ["user"]}, {"secret": "missing"},
               {"secret": "plain", "fields": ["x"]}]),
    );
    let sibling = grant_json("other", json!([{"secret": "db", "fields": ["password"]}]));
    let answer = mine.clone();
    let all = vec![mine.clone(), sibling];
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{TOKENS}/web") => Some((200, ready_token("tok_1"))),
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", all.clone()))),
        (&Method::PATCH, p) if p.starts_with(GRANTS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default()
        .with_secret("db", Some(&["user", "password"]))
        .with_secret("plain", None);
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T03:00:00Z",
        false,
    ));
    // A stale grant of the token that no SecretGrant wants, and its copy on
    // a machine enrolled through the token.
    vault.grants.lock().unwrap().extend([
        GrantRecord {
            id: "grant_stale".into(),
            machine_id: None,
            token_id: Some("tok_1".into()),
            project: "demo".into(),
            secret: "old".into(),
            fields: None,
        },
        GrantRecord {
            id: "grant_stale_copy".into(),
            machine_id: Some("m_1".into()),
            token_id: None,
            project: "demo".into(),
            secret: "old".into(),
            fields: None,
        },
    ]);
    vault.machines.lock().unwrap().push(machine(
        "m_1",
        Some("tok_1"),
        attested("ns", "pod-1", "uid-1"),
    ));
    let ctx = context(client, vault);
    let object: SecretGrant = serde_json::from_value(mine).unwrap();
    let action = bounded(secret_grant::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));

    let grants = ctx.vault.grants.lock().unwrap().clone();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0].token_id.as_deref(), Some("tok_1"));
    assert_eq!(grants[0].secret, "db");
    // The union of both SecretGrants' fields.
    assert_eq!(
        grants[0].fields,
        Some(vec!["password".to_owned(), "user".to_owned()])
    );

    let status = calls_to(&calls, Method::PATCH, &format!("{GRANTS}/app/status"));
    let status = &status[0].body["status"];
    assert_eq!(status["resolved"], json!(["db"]));
    assert_eq!(
        status["unresolved"],
        json!([{"secret": "missing", "reason": "SecretNotFound"},
               {"secret": "plain", "reason": "SecretHasNoFields"}])
    );
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "SecretsUnresolved");
}

#[tokio::test]
async fn grant_goes_to_the_tokens_found_by_name_never_to_the_status_id() {
    let mine = grant_json("app", json!([{"secret": "db"}]));
    let answer = mine.clone();
    let all = vec![mine.clone()];
    // The EnrollmentToken's status points at another resource's vault token.
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{TOKENS}/web") => Some((200, ready_token("tok_other"))),
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", all.clone()))),
        (&Method::PATCH, p) if p.starts_with(GRANTS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default().with_secret("db", None);
    vault.tokens.lock().unwrap().extend([
        vault_token(
            "tok_other",
            "k8s:other/db:uid-db",
            "2030-01-01T03:00:00Z",
            false,
        ),
        // A renewed raw token's predecessor in its grace, and the successor.
        vault_token("tok_1", WEB_TOKEN_NAME, "2030-01-01T00:10:00Z", false),
        vault_token("tok_2", WEB_TOKEN_NAME, "2030-01-01T03:00:00Z", false),
    ]);
    let ctx = context(client, vault);
    let object: SecretGrant = serde_json::from_value(mine.clone()).unwrap();
    bounded(secret_grant::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    let mut granted: Vec<String> = ctx
        .vault
        .grants
        .lock()
        .unwrap()
        .iter()
        .map(|g| g.token_id.clone().unwrap())
        .collect();
    granted.sort();
    assert_eq!(granted, ["tok_1", "tok_2"], "never tok_other");
    let status = calls_to(&calls, Method::PATCH, &format!("{GRANTS}/app/status"));
    let condition = &status[0].body["status"]["conditions"][0];
    assert_eq!(condition["reason"], "Resolved");
    assert!(
        condition["message"].as_str().unwrap().contains("tok_2"),
        "{condition}"
    );

    // Without a token of its own, the grant waits: nothing goes to tok_other.
    ctx.vault
        .tokens
        .lock()
        .unwrap()
        .retain(|t| t.id == "tok_other");
    ctx.vault.grants.lock().unwrap().clear();
    let object: SecretGrant = serde_json::from_value(mine).unwrap();
    bounded(secret_grant::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert!(ctx.vault.grants.lock().unwrap().is_empty());
}

#[tokio::test]
async fn not_delegated_grant_is_a_condition_and_a_warning_naming_the_delegation() {
    const MESSAGE: &str = "secret demo/db field password is not delegated for prod/ns";
    let mine = grant_json(
        "app",
        json!([{"secret": "db", "fields": ["password"]}, {"secret": "api"}]),
    );
    let answer = mine.clone();
    let all = vec![mine.clone()];
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{TOKENS}/web") => Some((200, ready_token("tok_1"))),
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", all.clone()))),
        (&Method::PATCH, p) if p.starts_with(GRANTS) => Some((200, answer.clone())),
        _ => None,
    }));
    let mut vault = FakeVault::default()
        .with_secret("db", Some(&["user", "password"]))
        .with_secret("api", None);
    vault
        .refuse_grants
        .insert("db".to_owned(), MESSAGE.to_owned());
    vault.tokens.lock().unwrap().push(vault_token(
        "tok_1",
        WEB_TOKEN_NAME,
        "2030-01-01T03:00:00Z",
        false,
    ));
    let ctx = context(client, vault);
    let object: SecretGrant = serde_json::from_value(mine).unwrap();
    bounded(secret_grant::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    let granted: Vec<String> = ctx
        .vault
        .grants
        .lock()
        .unwrap()
        .iter()
        .map(|g| g.secret.clone())
        .collect();
    assert_eq!(granted, ["api"], "the delegated secret is still granted");
    let status = calls_to(&calls, Method::PATCH, &format!("{GRANTS}/app/status"));
    let status = &status[0].body["status"];
    assert_eq!(status["resolved"], json!(["api"]));
    assert_eq!(
        status["unresolved"],
        json!([{"secret": "db", "reason": "NotDelegated"}])
    );
    let condition = &status["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "NotDelegated");
    assert!(
        condition["message"].as_str().unwrap().contains(MESSAGE),
        "{condition}"
    );
    let events = calls_to(&calls, Method::POST, EVENTS);
    let warning = events
        .iter()
        .find(|e| e.body["reason"] == "NotDelegated")
        .expect("a NotDelegated event");
    assert_eq!(warning.body["type"], "Warning");
    assert!(warning.body["note"].as_str().unwrap().contains(MESSAGE));
}

#[tokio::test]
async fn grant_waits_for_its_token() {
    let mine = grant_json("app", json!([{"secret": "db"}]));
    let answer = mine.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{TOKENS}/web") => {
            Some((200, token_json(true, "3h", json!(null))))
        }
        (&Method::PATCH, p) if p.starts_with(GRANTS) => Some((200, answer.clone())),
        _ => None,
    }));
    let ctx = context(client, FakeVault::default().with_secret("db", None));
    let object: SecretGrant = serde_json::from_value(mine).unwrap();
    let action = bounded(secret_grant::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert!(ctx.vault.grants.lock().unwrap().is_empty());
    let status = calls_to(&calls, Method::PATCH, &format!("{GRANTS}/app/status"));
    assert_eq!(
        status[0].body["status"]["conditions"][0]["reason"],
        "TokenNotReady"
    );
}

// ---- machine garbage collection -----------------------------------------------

/// A pod identity the vault attested in this cluster.
fn attested(namespace: &str, pod: &str, uid: &str) -> Option<MachineKubernetes> {
    Some(MachineKubernetes {
        cluster: CLUSTER.into(),
        namespace: namespace.into(),
        service_account: Some("web".into()),
        pod_name: Some(pod.into()),
        pod_uid: Some(uid.into()),
        attested: true,
    })
}

/// A machine with `kubernetes` as its vault-side identity. Its self-reported
/// metadata always claims pod `claimed-uid` in `ns`, to show it is ignored.
fn machine(id: &str, token: Option<&str>, kubernetes: Option<MachineKubernetes>) -> MachineView {
    MachineView {
        id: id.into(),
        name: id.into(),
        project: "demo".into(),
        token_id: token.map(str::to_owned),
        hostname: "h".into(),
        created_at: "2030-01-01T00:00:00Z".into(),
        expires_at: "2030-01-02T00:00:00Z".into(),
        disabled: false,
        metadata: BTreeMap::from([
            (META_POD_UID.to_owned(), "claimed-uid".to_owned()),
            (META_POD_NAME.to_owned(), "claimed".to_owned()),
            (META_NAMESPACE.to_owned(), "ns".to_owned()),
        ]),
        kubernetes,
    }
}

#[tokio::test]
async fn sweep_revokes_attested_machines_of_vanished_pods_only() {
    let (client, calls) = mock_api(Box::new(|method, path| match (method, path) {
        (&Method::GET, "/api/v1/pods") => Some((
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                   "metadata": {"resourceVersion": "1"},
                   "items": [{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                              "metadata": {"name": "pod-alive", "namespace": "ns", "uid": "alive"}}]}),
        )),
        // Relabelled pod: not in the list, but still there under its name.
        (&Method::GET, "/api/v1/namespaces/ns/pods/pod-relabelled") => Some((
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": "pod-relabelled", "namespace": "ns", "uid": "relabelled"}}),
        )),
        // A pod of the same name but another UID: the attested one is gone.
        (&Method::GET, "/api/v1/namespaces/ns/pods/pod-recreated") => Some((
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": "pod-recreated", "namespace": "ns", "uid": "new-uid"}}),
        )),
        _ => None,
    }));
    let vault = FakeVault::default();
    let elsewhere = MachineKubernetes {
        cluster: "staging".into(),
        ..attested("ns", "pod-gone-there", "gone-there").unwrap()
    };
    let raw = MachineKubernetes {
        cluster: CLUSTER.into(),
        namespace: "ns".into(),
        attested: false,
        ..MachineKubernetes::default()
    };
    vault.machines.lock().unwrap().extend([
        machine("m_alive", None, attested("ns", "pod-alive", "alive")),
        machine(
            "m_relabelled",
            None,
            attested("ns", "pod-relabelled", "relabelled"),
        ),
        machine("m_gone", None, attested("ns", "pod-gone", "gone")),
        machine(
            "m_recreated",
            None,
            attested("ns", "pod-recreated", "old-uid"),
        ),
        // Not attested here: left to their lifetime, whatever they claim.
        machine("m_other_cluster", None, Some(elsewhere)),
        machine("m_raw", None, Some(raw)),
        machine("m_outside_kubernetes", None, None),
    ]);
    let ctx = context(client, vault);
    let revoked = bounded(pods::sweep(&ctx)).await.unwrap();
    assert_eq!(revoked, ["m_gone", "m_recreated"]);
    assert_eq!(
        *ctx.vault.revoked_machines.lock().unwrap(),
        ["m_gone", "m_recreated"]
    );
    // The self-reported pod ("claimed") was never even looked up.
    assert!(
        calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| !c.path.contains("claimed")),
    );

    // A second pass has nothing left to do.
    let revoked = bounded(pods::sweep(&ctx)).await.unwrap();
    assert!(revoked.is_empty());
}

#[tokio::test]
async fn deleted_pod_revokes_its_attested_machine_only() {
    let vault = FakeVault::default();
    let mut impostor = machine("m_claims", None, None);
    impostor
        .metadata
        .insert(META_POD_UID.to_owned(), "uid-1".to_owned());
    // Not attested, even if it named the pod: only `attested` counts.
    let raw_claims = MachineKubernetes {
        attested: false,
        ..attested("ns", "pod-1", "uid-1").unwrap()
    };
    let mut raw_impostor = machine("m_raw_claims", None, Some(raw_claims));
    raw_impostor
        .metadata
        .insert(META_POD_UID.to_owned(), "uid-1".to_owned());
    let elsewhere = MachineKubernetes {
        cluster: "staging".into(),
        ..attested("ns", "pod-1", "uid-1").unwrap()
    };
    vault.machines.lock().unwrap().extend([
        machine("m_1", None, attested("ns", "pod-1", "uid-1")),
        machine("m_2", None, attested("ns", "pod-2", "uid-2")),
        impostor,
        raw_impostor,
        machine("m_other_cluster", None, Some(elsewhere)),
    ]);
    let count = pods::revoke_pod_machines(&vault, CLUSTER, "uid-1")
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(*vault.revoked_machines.lock().unwrap(), ["m_1"]);
}

// ---- reload: restart ----------------------------------------------------------

/// The API server of one namespace with a Deployment `web` (template
/// annotation `current`), its ReplicaSet, and two injected pods created at
/// 2030-01-01T00:00:00Z and a minute later, asking for `reload`.
fn restart_api(reload: &'static str, current: Option<&'static str>) -> Routes {
    Box::new(move |method, path| {
        let pod = |name: &str, created: &str| {
            json!({"metadata": {"name": name, "namespace": "ns", "uid": name,
                "creationTimestamp": created,
                "labels": {"signet.dev/inject": "true"},
                "annotations": {"signet.dev/injected": "true", "signet.dev/reload": reload,
                                "signet.dev/enrollment-token": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-5d8f", "uid": "rs", "controller": true}]},
                "spec": {"containers": [{"name": "app"}]}})
        };
        match (method, path) {
            (&Method::GET, "/api/v1/pods") => Some((
                200,
                list(
                    "Pod",
                    vec![
                        pod("web-5d8f-b", "2030-01-01T00:01:00Z"),
                        pod("web-5d8f-a", "2030-01-01T00:00:00Z"),
                    ],
                ),
            )),
            (&Method::GET, "/apis/apps/v1/namespaces/ns/replicasets/web-5d8f") => Some((
                200,
                json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": "web-5d8f", "namespace": "ns",
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                            "name": "web", "uid": "d", "controller": true}]}}),
            )),
            (&Method::GET, "/apis/apps/v1/namespaces/ns/deployments/web") => {
                let annotations = current
                    .map(|c| json!({"signet.dev/secret-versions": c}))
                    .unwrap_or(json!({}));
                Some((
                    200,
                    json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "ns"},
                        "spec": {"selector": {}, "template": {"metadata": {"annotations": annotations},
                            "spec": {"containers": [{"name": "app"}]}}}}),
                ))
            }
            (&Method::GET, p) if p == format!("{TOKENS}/web") => {
                Some((200, token_json(true, "24h", json!({}))))
            }
            (&Method::GET, GRANTS) => Some((
                200,
                list(
                    "SecretGrant",
                    vec![
                        json!({"apiVersion": "signet.dev/v1alpha1", "kind": "SecretGrant",
                            "metadata": {"name": "web", "namespace": "ns"},
                            "spec": {"enrollmentToken": "web", "mountPath": "/s",
                                     "secrets": [{"secret": "db"}, {"secret": "api"}]}}),
                        json!({"apiVersion": "signet.dev/v1alpha1", "kind": "SecretGrant",
                            "metadata": {"name": "other", "namespace": "ns"},
                            "spec": {"enrollmentToken": "other", "mountPath": "/s",
                                     "secrets": [{"secret": "unrelated"}]}}),
                    ],
                ),
            )),
            _ => None,
        }
    })
}

fn restart_vault(db: (u32, &str)) -> FakeVault {
    let vault = FakeVault::default()
        .with_secret("db", None)
        .with_secret("api", None)
        .with_secret("unrelated", None);
    vault
        .live
        .lock()
        .unwrap()
        .insert("db".into(), (db.0, db.1.into()));
    vault
}

/// The hash of db at `version` and api at 1 (the fake's default), in the
/// project of `token_json`.
fn web_hash(version: u32) -> String {
    let project = token_json(true, "24h", json!({}))["spec"]["project"]
        .as_str()
        .unwrap()
        .to_owned();
    restart::versions_hash(&BTreeMap::from([
        (format!("{project}/api"), 1),
        (format!("{project}/db"), version),
    ]))
}

const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ns/deployments/web";

#[tokio::test]
async fn a_new_live_version_rolls_out_the_deployment_once() {
    let old = web_hash(1);
    let old: &'static str = Box::leak(old.into_boxed_str());
    let (client, calls) = mock_api(restart_api("restart", Some(old)));
    let ctx = context(client, restart_vault((2, "2030-01-01T00:05:00Z")));
    let patched = bounded(restart::pass(&ctx)).await.unwrap();
    assert_eq!(
        patched,
        [restart::Workload::Deployment("ns".into(), "web".into())]
    );
    let patches = calls_to(&calls, Method::PATCH, DEPLOYMENT);
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].body,
        json!({"spec": {"template": {"metadata": {"annotations":
            {"signet.dev/secret-versions": web_hash(2)}}}}})
    );
}

#[tokio::test]
async fn unchanged_versions_leave_the_deployment_alone() {
    let current: &'static str = Box::leak(web_hash(2).into_boxed_str());
    let (client, calls) = mock_api(restart_api("restart", Some(current)));
    let ctx = context(client, restart_vault((2, "2030-01-01T00:05:00Z")));
    assert!(bounded(restart::pass(&ctx)).await.unwrap().is_empty());
    assert!(calls_to(&calls, Method::PATCH, DEPLOYMENT).is_empty());
}

#[tokio::test]
async fn without_a_hash_only_a_version_newer_than_the_oldest_pod_rolls_out() {
    // Written before the oldest pod started: the pods read it.
    let (client, calls) = mock_api(restart_api("restart", None));
    let ctx = context(client, restart_vault((2, "2029-12-31T23:59:59Z")));
    assert!(bounded(restart::pass(&ctx)).await.unwrap().is_empty());
    assert!(calls_to(&calls, Method::PATCH, DEPLOYMENT).is_empty());

    // Written after the oldest pod started (though before the newest).
    let (client, calls) = mock_api(restart_api("restart", None));
    let ctx = context(client, restart_vault((2, "2030-01-01T00:00:30Z")));
    assert_eq!(bounded(restart::pass(&ctx)).await.unwrap().len(), 1);
    assert_eq!(calls_to(&calls, Method::PATCH, DEPLOYMENT).len(), 1);
}

#[tokio::test]
async fn pods_without_reload_restart_are_never_rolled_out() {
    for reload in ["none", "signal"] {
        let (client, calls) = mock_api(restart_api(reload, Some("stale")));
        let ctx = context(client, restart_vault((2, "2030-01-01T00:05:00Z")));
        assert!(bounded(restart::pass(&ctx)).await.unwrap().is_empty());
        assert!(calls_to(&calls, Method::PATCH, DEPLOYMENT).is_empty());
        assert!(calls_to(&calls, Method::GET, DEPLOYMENT).is_empty());
    }
}
