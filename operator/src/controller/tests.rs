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
    CreateGrant, CreateToken, CreatedToken, GrantRecord, MachineView, SecretMeta, TokenConstraints,
    TokenView,
};

use super::{
    Context, Settings, enrollment_token, pods, secret_grant,
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
    revoked_tokens: Mutex<Vec<String>>,
    grants: Mutex<Vec<GrantRecord>>,
    machines: Mutex<Vec<MachineView>>,
    revoked_machines: Mutex<Vec<String>>,
}

fn not_found() -> vault::Error {
    vault::Error::Api {
        status: 404,
        code: "not_found".into(),
        message: "no such thing".into(),
    }
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
        };
        tokens.push(view.clone());
        self.created.lock().unwrap().push(body.clone());
        Ok(CreatedToken {
            token: format!("{id}.raw-secret"),
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
        Ok(SecretMeta {
            project: project.to_owned(),
            name: secret.to_owned(),
            live_version: 1,
            versions: vec![],
            fields: fields.clone(),
            policy: None,
        })
    }

    async fn create_grant(&self, body: &CreateGrant) -> Result<GrantRecord, vault::Error> {
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

fn context(client: Client, vault: FakeVault) -> Arc<Context<FakeVault>> {
    let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    Arc::new(Context::new(client, vault, Settings::default()).with_clock(Arc::new(move || now)))
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
        "spec": {"project": "demo", "tokenTtl": ttl, "machineLifetime": "1h", "maxUses": 5},
        "status": status,
    });
    if finalized {
        token["metadata"]["finalizers"] = json!([enrollment_token::FINALIZER]);
    }
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

// ---- EnrollmentToken ----------------------------------------------------------

#[tokio::test]
async fn new_token_is_issued_seeded_stored_and_reported() {
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
    assert_eq!(created[0].name, "k8s:ns/web:uid-web");
    // Seeded with the resolvable secret only, narrowed to its field.
    assert_eq!(created[0].grants.len(), 1);
    assert_eq!(created[0].grants[0].secret, "db");
    assert_eq!(
        created[0].grants[0].fields,
        Some(vec!["password".to_owned()])
    );

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
        secret["metadata"]["ownerReferences"][0]["kind"],
        "EnrollmentToken"
    );
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], "uid-web");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);

    let status = calls_to(&calls, Method::PATCH, &format!("{TOKENS}/web/status"));
    assert_eq!(status.len(), 1);
    let status = &status[0].body["status"];
    assert_eq!(status["tokenId"], "tok_1");
    assert_eq!(status["secretName"], "signet-token-web");
    assert_eq!(status["uses"], 0);
    assert_eq!(status["expiresAt"], "2030-01-02T00:00:00Z");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");

    let events = calls_to(&calls, Method::POST, EVENTS);
    assert!(events.iter().any(|e| e.body["reason"] == "TokenIssued"));
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
async fn expiring_token_is_replaced_and_the_old_one_revoked() {
    let status = json!({"tokenId": "tok_1", "observedGeneration": 1});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{SECRETS}/signet-token-web") => Some((
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "signet-token-web", "namespace": "ns"},
                   "data": {"token": base64_encode("tok_1.old")}}),
        )),
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", vec![]))),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    // A 3h token that expires in 30 minutes: inside the last third.
    vault.tokens.lock().unwrap().push(TokenView {
        id: "tok_1".into(),
        name: "k8s:ns/web:uid-web".into(),
        project: "demo".into(),
        max_uses: Some(5),
        uses: 2,
        expires_at: "2030-01-01T00:30:00Z".into(),
        machine_lifetime_seconds: 3600,
        revoked: false,
        constraints: TokenConstraints::default(),
    });
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();

    assert_eq!(ctx.vault.created.lock().unwrap().len(), 1);
    assert_eq!(*ctx.vault.revoked_tokens.lock().unwrap(), ["tok_1"]);
    let status = calls_to(&calls, Method::PATCH, &format!("{TOKENS}/web/status"));
    assert_eq!(status[0].body["status"]["tokenId"], "tok_2");
}

#[tokio::test]
async fn healthy_token_only_refreshes_its_status() {
    let status = json!({"tokenId": "tok_1", "observedGeneration": 1, "uses": 0});
    let token = token_json(true, "3h", status);
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::GET, p) if p == format!("{SECRETS}/signet-token-web") => Some((
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "signet-token-web", "namespace": "ns"},
                   "data": {"token": base64_encode("tok_1.x")}}),
        )),
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(TokenView {
        id: "tok_1".into(),
        name: "k8s:ns/web:uid-web".into(),
        project: "demo".into(),
        max_uses: Some(5),
        uses: 3,
        expires_at: "2030-01-01T03:00:00Z".into(),
        machine_lifetime_seconds: 3600,
        revoked: false,
        constraints: TokenConstraints::default(),
    });
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert!(ctx.vault.created.lock().unwrap().is_empty());
    assert!(ctx.vault.revoked_tokens.lock().unwrap().is_empty());
    assert!(
        calls_to(
            &calls,
            Method::PATCH,
            &format!("{SECRETS}/signet-token-web")
        )
        .is_empty()
    );
    let status = calls_to(&calls, Method::PATCH, &format!("{TOKENS}/web/status"));
    assert_eq!(status[0].body["status"]["uses"], 3);
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
async fn deletion_revokes_the_token_and_tolerates_not_found() {
    let mut token = token_json(true, "3h", json!({"tokenId": "tok_gone"}));
    token["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    let answer = token.clone();
    let (client, calls) = mock_api(Box::new(move |method, path| match (method, path) {
        (&Method::PATCH, p) if p.starts_with(TOKENS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.tokens.lock().unwrap().push(TokenView {
        id: "tok_older".into(),
        name: "k8s:ns/web:uid-web".into(),
        project: "demo".into(),
        max_uses: None,
        uses: 0,
        expires_at: "2030-01-01T03:00:00Z".into(),
        machine_lifetime_seconds: 3600,
        revoked: false,
        constraints: TokenConstraints::default(),
    });
    let ctx = context(client, vault);
    let object: EnrollmentToken = serde_json::from_value(token).unwrap();
    let action = bounded(enrollment_token::reconcile(Arc::new(object), ctx.clone()))
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    // The orphan with this resource's name and the recorded (already gone) one.
    assert_eq!(
        *ctx.vault.revoked_tokens.lock().unwrap(),
        ["tok_older", "tok_gone"]
    );
    // The Secret was deleted (404 is fine) and the finalizer removed.
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

// ---- SecretGrant ----------------------------------------------------------------

fn ready_token() -> Value {
    token_json(
        true,
        "3h",
        json!({"tokenId": "tok_1", "observedGeneration": 1}),
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
        (&Method::GET, p) if p == format!("{TOKENS}/web") => Some((200, ready_token())),
        (&Method::GET, GRANTS) => Some((200, list("SecretGrant", all.clone()))),
        (&Method::PATCH, p) if p.starts_with(GRANTS) => Some((200, answer.clone())),
        _ => None,
    }));
    let vault = FakeVault::default()
        .with_secret("db", Some(&["user", "password"]))
        .with_secret("plain", None);
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
    vault
        .machines
        .lock()
        .unwrap()
        .push(machine("m_1", Some("tok_1"), "pod-1"));
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

fn machine(id: &str, token: Option<&str>, pod_uid: &str) -> MachineView {
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
            (pods::META_POD_UID.to_owned(), pod_uid.to_owned()),
            (pods::META_POD_NAME.to_owned(), format!("pod-{pod_uid}")),
            (pods::META_NAMESPACE.to_owned(), "ns".to_owned()),
        ]),
    }
}

#[tokio::test]
async fn sweep_revokes_machines_of_vanished_pods_only() {
    let (client, _calls) = mock_api(Box::new(|method, path| match (method, path) {
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
        _ => None,
    }));
    let vault = FakeVault::default();
    vault.machines.lock().unwrap().extend([
        machine("m_alive", None, "alive"),
        machine("m_relabelled", None, "relabelled"),
        machine("m_gone", None, "gone"),
    ]);
    let ctx = context(client, vault);
    let revoked = bounded(pods::sweep(&ctx)).await.unwrap();
    assert_eq!(revoked, ["m_gone"]);
    assert_eq!(*ctx.vault.revoked_machines.lock().unwrap(), ["m_gone"]);

    // A second pass has nothing left to do.
    let revoked = bounded(pods::sweep(&ctx)).await.unwrap();
    assert!(revoked.is_empty());
}

#[tokio::test]
async fn deleted_pod_revokes_its_machine() {
    let vault = FakeVault::default();
    vault
        .machines
        .lock()
        .unwrap()
        .extend([machine("m_1", None, "uid-1"), machine("m_2", None, "uid-2")]);
    let count = pods::revoke_pod_machines(&vault, "uid-1").await.unwrap();
    assert_eq!(count, 1);
    assert_eq!(*vault.revoked_machines.lock().unwrap(), ["m_1"]);
}
