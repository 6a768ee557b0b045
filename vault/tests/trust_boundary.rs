//! The trust boundary of issue "the pod is the credential": agents hand out
//! only what an admin delegated, per namespace; field grants never yield a
//! plain value; renewals share their uses; attestations the vault cannot
//! vouch for are refused with their own codes. Each test reproduces a hole
//! found on an earlier main and shows it closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use kit::{Harness, LOCAL_IP, Reply, Signer};
use serde_json::{Value, json};
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::Clock as _;

const CA_PEM: &str = include_str!("fixtures/cluster-ca.pem");

async fn register_cluster(h: &Harness, name: &str) {
    let r = h
        .admin(
            "POST",
            "/v1/clusters",
            Some(json!({"name": name, "api_url": "https://127.0.0.1:1", "ca_pem": CA_PEM})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

async fn delegate(h: &Harness, agent: &Signer, body: Value) -> Reply {
    let mut body = body;
    body["agent_id"] = json!(agent.id);
    h.admin("POST", "/v1/delegations", Some(body)).await
}

fn token_body(project: &str, grants: Value) -> Value {
    json!({"project": project, "ttl_seconds": 3600, "machine_lifetime_seconds": 3600, "grants": grants})
}

/// Hole 1: an agent with only the `tokens` scope minted a token with a
/// grant, enrolled a key of its own with it and read the value.
#[tokio::test]
async fn an_agent_cannot_hand_itself_an_undelegated_secret() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "stripe", "sk_live_123").await;
    let agent = h.agent(&["tokens"]).await;

    let r = h
        .call(
            &agent,
            "POST",
            "/v1/enrollment-tokens",
            Some(token_body("demo", json!([{"secret": "stripe"}]))),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "not_delegated"),
        "{:?}",
        r.body
    );
    // Not even an empty token in a project it holds nothing of.
    let r = h
        .call(
            &agent,
            "POST",
            "/v1/enrollment-tokens",
            Some(token_body("demo", json!([]))),
        )
        .await;
    assert_eq!(r.code(), "not_delegated", "{:?}", r.body);
    let denials = h.denials("not_delegated");
    assert_eq!(denials.len(), 2);
    assert!(
        denials
            .iter()
            .all(|e| e.actor == agent.id && e.outcome == "deny"),
        "{denials:?}"
    );
    assert!(denials[0].reason.contains("stripe"), "{:?}", denials[0]);

    // An admin is not limited by delegations.
    h.token(token_body("demo", json!([{"secret": "stripe"}])))
        .await;
}

#[tokio::test]
async fn a_delegation_covers_its_secret_fields_and_scope_only() {
    let h = Harness::new();
    h.project("demo").await;
    h.write_fields("demo", "db", json!({"user": "app", "password": "hunter2"}))
        .await;
    h.write("demo", "other", "x").await;
    register_cluster(&h, "c1").await;
    let agent = h.agent(&["tokens", "grants", "metadata"]).await;
    let r = delegate(
        &h,
        &agent,
        json!({"project": "demo", "secret": "db", "fields": ["user"],
               "kubernetes": {"cluster": "c1", "namespace": "team-a"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);

    let policy = |namespace: &str, grants: Value| {
        let mut body = token_body("demo", grants);
        body["kubernetes"] = json!({"cluster": "c1", "namespace": namespace, "policy": "app"});
        body
    };
    let create = |body: Value| h.call(&agent, "POST", "/v1/enrollment-tokens", Some(body));

    // Within the delegation: an attested policy, with no raw token at all.
    let r = create(policy(
        "team-a",
        json!([{"secret": "db", "fields": ["user"]}]),
    ))
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body.get("token").is_none(), "{:?}", r.body);
    let policy_id = r.body["id"].as_str().unwrap().to_owned();

    // Another namespace, the whole secret, another field, another secret,
    // or machines outside Kubernetes: each refused.
    for (body, what) in [
        (policy("team-b", json!([])), "namespace c1/team-b"),
        (
            policy("team-a", json!([{"secret": "db"}])),
            "the whole secret",
        ),
        (
            policy("team-a", json!([{"secret": "db", "fields": ["password"]}])),
            "field \"password\"",
        ),
        (policy("team-a", json!([{"secret": "other"}])), "demo/other"),
        (
            token_body("demo", json!([{"secret": "db", "fields": ["user"]}])),
            "outside Kubernetes",
        ),
    ] {
        let r = create(body).await;
        assert_eq!(r.code(), "not_delegated", "{what}: {:?}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(what), "{what}: {message}");
    }

    // Grants on the policy follow the same rule.
    let grant = |fields: Value| {
        h.call(
            &agent,
            "POST",
            "/v1/grants",
            Some(
                json!({"token_id": policy_id, "project": "demo", "secret": "db", "fields": fields}),
            ),
        )
    };
    assert_eq!(grant(json!(["password"])).await.code(), "not_delegated");
    // A raw-token machine of another namespace cannot be granted either.
    let mut raw = token_body("demo", json!([]));
    raw["kubernetes"] =
        json!({"cluster": "c1", "namespace": "team-b", "policy": "raw", "raw_token": true});
    let token = h.token(raw).await;
    let (reply, machine) = h.enroll(&token, "host", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let machine = machine.unwrap();
    let r = h
        .call(
            &agent,
            "POST",
            "/v1/grants",
            Some(json!({"machine_id": machine.id, "project": "demo", "secret": "db", "fields": ["user"]})),
        )
        .await;
    assert_eq!(r.code(), "not_delegated", "{:?}", r.body);
    assert_eq!(h.read(&machine, "demo", "db").await.code(), "not_granted");

    // Once the delegation is gone, nothing new can be handed out.
    let list = h.call(&agent, "GET", "/v1/delegations", None).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let id = list.body["delegations"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = h
        .admin("DELETE", &format!("/v1/delegations/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = create(policy(
        "team-a",
        json!([{"secret": "db", "fields": ["user"]}]),
    ))
    .await;
    assert_eq!(r.code(), "not_delegated", "{:?}", r.body);
}

#[tokio::test]
async fn only_admins_delegate() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "stripe", "v").await;
    let agent = h.agent(&["tokens", "grants", "machines", "metadata"]).await;
    let r = h
        .call(
            &agent,
            "POST",
            "/v1/delegations",
            Some(json!({"agent_id": agent.id, "project": "demo", "secret": "stripe"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    let r = h
        .call(
            &agent,
            "POST",
            "/v1/clusters",
            Some(json!({"name": "c9", "api_url": "https://127.0.0.1:1", "ca_pem": CA_PEM})),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    // A delegation to an unregistered cluster is refused.
    let r = delegate(
        &h,
        &agent,
        json!({"project": "demo", "secret": "stripe", "kubernetes": {"cluster": "nope", "namespace": "a"}}),
    )
    .await;
    assert_eq!(r.code(), "invalid_request", "{:?}", r.body);
}

/// Hole 4: with a grant limited to field `user`, reading version 1 (a plain
/// value) printed the whole value.
#[tokio::test]
async fn a_field_grant_never_returns_a_plain_version() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "db2", "app:hunter2").await;
    h.write_fields("demo", "db2", json!({"user": "app", "password": "hunter2"}))
        .await;
    let token = h
        .token(token_body(
            "demo",
            json!([{"secret": "db2", "fields": ["user"]}]),
        ))
        .await;
    let (_, machine) = h.enroll(&token, "host", json!({}), LOCAL_IP).await;
    let machine = machine.unwrap();

    let r = h
        .call(&machine, "GET", "/v1/secrets/demo/db2?version=1", None)
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::FORBIDDEN, "field_not_granted"),
        "{:?}",
        r.body
    );
    assert!(!r.body.to_string().contains("hunter2"));
    let r = h.read(&machine, "demo", "db2").await;
    assert_eq!(r.body["fields"], json!({"user": "app"}), "{:?}", r.body);

    // Rolled back to the plain version, the rule holds for the live read.
    let r = h
        .admin(
            "POST",
            "/v1/projects/demo/secrets/db2/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = h.read(&machine, "demo", "db2").await;
    assert_eq!(r.code(), "field_not_granted", "{:?}", r.body);
    assert!(!r.body.to_string().contains("hunter2"));
}

/// Hole 3 (raw tokens): every renewal minted a token with fresh uses.
#[tokio::test]
async fn a_renewal_shares_the_remaining_uses_and_the_old_token_lasts_the_grace() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    let mut body = token_body("demo", json!([{"secret": "s"}]));
    body["max_uses"] = json!(3);
    let r = h.admin("POST", "/v1/enrollment-tokens", Some(body)).await;
    let old = r.body["token"].as_str().unwrap().to_owned();
    let old_id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        h.enroll(&old, "h1", json!({}), LOCAL_IP).await.0.status,
        StatusCode::CREATED
    );

    let r = h
        .admin(
            "POST",
            &format!("/v1/enrollment-tokens/{old_id}/renew"),
            Some(json!({"ttl_seconds": 3600, "grace_seconds": 60})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["uses"], 1, "{:?}", r.body);
    let new = r.body["token"].as_str().unwrap().to_owned();

    // Old and new draw on one count of three.
    let (reply, machine) = h.enroll(&new, "h2", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(
        h.read(&machine.unwrap(), "demo", "s").await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.enroll(&old, "h3", json!({}), LOCAL_IP).await.0.status,
        StatusCode::CREATED
    );
    assert_eq!(
        h.enroll(&new, "h4", json!({}), LOCAL_IP).await.0.code(),
        "token_exhausted"
    );
    assert_eq!(
        h.enroll(&old, "h5", json!({}), LOCAL_IP).await.0.code(),
        "token_exhausted"
    );

    // After the grace, the old token is expired; the new one lives on.
    let mut body = token_body("demo", json!([]));
    body["max_uses"] = json!(5);
    let r = h.admin("POST", "/v1/enrollment-tokens", Some(body)).await;
    let (old, old_id) = (
        r.body["token"].as_str().unwrap().to_owned(),
        r.body["id"].as_str().unwrap().to_owned(),
    );
    let r = h
        .admin(
            "POST",
            &format!("/v1/enrollment-tokens/{old_id}/renew"),
            Some(json!({"ttl_seconds": 3600, "grace_seconds": 60})),
        )
        .await;
    let new = r.body["token"].as_str().unwrap().to_owned();
    h.clock.advance(60);
    assert_eq!(
        h.enroll(&old, "h6", json!({}), LOCAL_IP).await.0.code(),
        "token_expired"
    );
    assert_eq!(
        h.enroll(&new, "h7", json!({}), LOCAL_IP).await.0.status,
        StatusCode::CREATED
    );
}

/// A renewal is a new token made at the renewal by whoever renewed it: its
/// expiry counted from then, listed after the tokens made before it, its
/// maker on record, a raw token of its own that still enrolls (with the
/// old token's grants) once the old one is gone.
#[tokio::test]
async fn a_renewed_token_is_made_when_and_by_whom_it_was_renewed() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    let r = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(token_body("demo", json!([{"secret": "s"}]))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let old = r.body["token"].as_str().unwrap().to_owned();
    let old_id = r.body["id"].as_str().unwrap().to_owned();
    h.clock.advance(600);
    let r = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(token_body("demo", json!([]))),
        )
        .await;
    let between_id = r.body["id"].as_str().unwrap().to_owned();
    h.clock.advance(600);

    let second = h.second_admin().await;
    let renewed_at = h.clock.now();
    let r = h
        .call(
            &second,
            "POST",
            &format!("/v1/enrollment-tokens/{old_id}/renew"),
            Some(json!({"ttl_seconds": 7200, "grace_seconds": 0})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new_id = r.body["id"].as_str().unwrap().to_owned();
    let new = r.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body["expires_at"],
        signet_vault::clock::rfc3339(renewed_at + 7200),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["revoked"], false);
    assert_ne!(new, old);

    let (tokens, _) = h.pages("/v1/enrollment-tokens", "tokens", 10).await;
    let listed: Vec<&str> = tokens.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&old_id, &between_id, &new_id]);
    let id = new_id.clone();
    let stored = h
        .vault
        .with_tx(move |tx, _| Ok(tx.token(&id)?.unwrap()))
        .unwrap();
    assert_eq!(
        (stored.created_by.as_str(), stored.created_at),
        (second.id.as_str(), renewed_at)
    );

    // Past the old token's own expiry: the old one is gone (no grace), the
    // new one enrolls a machine that reads what the old one granted.
    h.clock.advance(3600);
    let (reply, _) = h.enroll(&old, "h1", json!({}), LOCAL_IP).await;
    assert_eq!(reply.code(), "token_expired", "{:?}", reply.body);
    let (reply, machine) = h.enroll(&new, "h2", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(
        h.read(&machine.unwrap(), "demo", "s").await.status,
        StatusCode::OK
    );
}

/// Only a live token is renewed: a revoked one (not yet expired) and an
/// expired one (never revoked) are refused with 409. The grace the old
/// token keeps is at most the longest token life, 366 days.
#[tokio::test]
async fn only_a_live_token_is_renewed_and_its_grace_is_bounded() {
    const DAY: u64 = 86_400;
    let h = &Harness::new();
    h.project("demo").await;
    let create = || async {
        let r = h
            .admin(
                "POST",
                "/v1/enrollment-tokens",
                Some(token_body("demo", json!([]))),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    };
    let renew = |id: String, grace: u64| async move {
        h.admin(
            "POST",
            &format!("/v1/enrollment-tokens/{id}/renew"),
            Some(json!({"ttl_seconds": 3600, "grace_seconds": grace})),
        )
        .await
    };

    let revoked = create().await;
    let r = h
        .admin("DELETE", &format!("/v1/enrollment-tokens/{revoked}"), None)
        .await;
    assert!(r.status.is_success(), "{:?}", r.body);
    let lapsed = create().await;
    h.clock.advance(3600);
    for id in [revoked, lapsed] {
        let r = renew(id, 0).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::CONFLICT, "conflict"),
            "{:?}",
            r.body
        );
    }

    let live = create().await;
    let r = renew(live.clone(), 366 * DAY + 1).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{:?}",
        r.body
    );
    let r = renew(live, 366 * DAY).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

/// A raw token bound to a namespace (`raw_token: true`, no attestation)
/// puts its machines in that namespace: their view says so (not attested),
/// and an agent delegated for that namespace may grant them a secret.
#[tokio::test]
async fn a_namespace_bound_raw_token_puts_its_machines_in_the_namespace() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    register_cluster(&h, "c1").await;
    let mut body = token_body("demo", json!([]));
    body["kubernetes"] =
        json!({"cluster": "c1", "namespace": "team-a", "policy": "raw", "raw_token": true});
    let token = h.token(body).await;
    let (reply, machine) = h.enroll(&token, "host", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let machine = machine.unwrap();

    let (machines, _) = h.pages("/v1/machines", "machines", 10).await;
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0]["id"], machine.id.as_str());
    assert_eq!(machines[0]["name"], "host");
    assert_eq!(
        machines[0]["kubernetes"],
        json!({"cluster": "c1", "namespace": "team-a", "attested": false})
    );

    let agent = h.agent(&["grants"]).await;
    let r = delegate(
        &h,
        &agent,
        json!({"project": "demo", "secret": "s", "kubernetes": {"cluster": "c1", "namespace": "team-a"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = h
        .call(
            &agent,
            "POST",
            "/v1/grants",
            Some(json!({"machine_id": machine.id, "project": "demo", "secret": "s"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(h.read(&machine, "demo", "s").await.status, StatusCode::OK);
}

fn jwt(claims: Value) -> String {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    format!("{}.{}.c2ln", b64(&json!({"alg": "RS256"})), b64(&claims))
}

async fn enroll_attested(h: &Harness, attestation: Value) -> Reply {
    let fields = json!({"hostname": "pod", "attestation": attestation});
    h.enroll_with(fields, LOCAL_IP).await.0
}

/// Attestations the vault can refuse without asking the cluster: each with
/// its own code and audit row. (The cluster's own refusals are answered by
/// [`FakeApiserver`] below, and by a real kube-apiserver in tests/e2e.)
#[tokio::test]
async fn attestations_are_refused_with_their_own_codes() {
    let h = Harness::new();
    register_cluster(&h, "c1").await;
    let now = h.clock.now();
    let claims = |exp: i64, aud: &str, pod: bool| {
        let mut k = json!({"namespace": "team-a", "serviceaccount": {"name": "app"}});
        if pod {
            k["pod"] = json!({"name": "web", "uid": "u-1"});
        }
        jwt(json!({"exp": exp, "aud": [aud], "kubernetes.io": k}))
    };
    let cases = [
        (
            "nope",
            claims(now + 600, "signet", true),
            StatusCode::UNAUTHORIZED,
            "unknown_cluster",
        ),
        (
            "c1",
            claims(now - 1, "signet", true),
            StatusCode::UNAUTHORIZED,
            "attestation_expired",
        ),
        (
            "c1",
            claims(now + 600, "kubernetes", true),
            StatusCode::UNAUTHORIZED,
            "attestation_audience",
        ),
        (
            "c1",
            claims(now + 600, "signet", false),
            StatusCode::UNAUTHORIZED,
            "attestation_not_pod_bound",
        ),
        // Plausible claims, but the registered apiserver does not answer.
        (
            "c1",
            claims(now + 600, "signet", true),
            StatusCode::SERVICE_UNAVAILABLE,
            "attestation_unavailable",
        ),
    ];
    for (cluster, token, status, code) in cases {
        let r = enroll_attested(
            &h,
            json!({"cluster": cluster, "policy": "app", "service_account_token": token}),
        )
        .await;
        assert_eq!((r.status, r.code()), (status, code), "{:?}", r.body);
        assert!(!r.body.to_string().contains(&token));
        let rows = h.denials(code);
        assert_eq!(rows.len(), 1, "{code}: {rows:?}");
        assert!(!rows[0].reason.contains(&token) && !rows[0].target.contains(&token));
    }
    // Nothing was enrolled.
    let r = h.admin("GET", "/v1/machines", None).await;
    assert_eq!(r.body["machines"], json!([]));
}

#[tokio::test]
async fn a_raw_token_cannot_open_an_attested_policy() {
    let h = Harness::new();
    h.project("demo").await;
    register_cluster(&h, "c1").await;
    let mut body = token_body("demo", json!([]));
    body["kubernetes"] = json!({"cluster": "c1", "namespace": "team-a", "policy": "app"});
    let r = h.admin("POST", "/v1/enrollment-tokens", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap();
    // Whatever secret part is guessed, the id of a policy enrolls nothing.
    for guess in ["", "x", "AAAA"] {
        let (reply, _) = h
            .enroll(&format!("{id}.{guess}"), "h", json!({}), LOCAL_IP)
            .await;
        assert_eq!(reply.code(), "invalid_token", "{:?}", reply.body);
    }
}

/// An attested enrollment of `enrolled`'s public key, signed by `signer`
/// at `timestamp`.
fn attested_request(
    signer: &IdentityKey,
    enrolled: &IdentityKey,
    timestamp: i64,
    token: &str,
) -> axum::http::Request<axum::body::Body> {
    let body = serde_json::to_vec(&json!({
        "public_key": enrolled.public_key(),
        "attestation": {"cluster": "c1", "policy": "app", "service_account_token": token},
    }))
    .unwrap();
    let headers = protocol::sign(
        signer,
        protocol::ENROLL_KEY_ID,
        "POST",
        "/v1/enroll",
        &body,
        u64::try_from(timestamp).unwrap(),
        &protocol::fresh_nonce(),
    );
    let mut builder = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/enroll")
        .header("content-type", "application/json");
    for (name, value) in headers.pairs() {
        builder = builder.header(name, value);
    }
    builder.body(axum::body::Body::from(body)).unwrap()
}

/// An enrollment whose signature does not hold, or that is stale, is
/// refused before the vault calls anything: a forger cannot make the vault
/// talk to a cluster's API server.
#[tokio::test]
async fn a_forged_enrollment_never_reaches_the_cluster() {
    let h = Harness::with_settings(signet_vault::vault::Settings {
        attestation_timeout: std::time::Duration::from_millis(500),
        ..Default::default()
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = h
        .admin(
            "POST",
            "/v1/clusters",
            Some(
                json!({"name": "c1", "api_url": format!("https://127.0.0.1:{port}"),
                        "ca_pem": CA_PEM, "reviewer_token": "reviewer"}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let connections = || {
        let mut count = 0;
        while listener.accept().is_ok() {
            count += 1;
        }
        count
    };
    let now = h.clock.now();
    let token = jwt(json!({"exp": now + 600, "aud": ["signet"],
        "kubernetes.io": {"namespace": "a", "pod": {"name": "p", "uid": "u"}}}));
    let enrolled = IdentityKey::generate();

    // Signed by another key than the one it enrolls.
    let forged = attested_request(&IdentityKey::generate(), &enrolled, now, &token);
    let r = h.raw(forged).await;
    assert_eq!(r.code(), "bad_signature", "{:?}", r.body);
    // Signed by its own key, but outside the skew window.
    let stale = now - h.vault.config().skew_seconds - 1;
    let r = h
        .raw(attested_request(&enrolled, &enrolled, stale, &token))
        .await;
    assert_eq!(r.code(), "timestamp_skew", "{:?}", r.body);
    assert_eq!(connections(), 0, "a refused enrollment reached the cluster");

    // Signed by its own key and fresh, the same attestation does reach it.
    let r = h
        .raw(attested_request(&enrolled, &enrolled, now, &token))
        .await;
    assert_eq!(r.code(), "attestation_unavailable", "{:?}", r.body);
    assert_eq!(connections(), 1);
}

#[tokio::test]
async fn an_agent_sees_only_its_own_delegations_and_namespaces_are_checked() {
    let h = Harness::new();
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    register_cluster(&h, "c1").await;
    let one = h.agent(&["metadata"]).await;
    let two = h.agent(&["metadata"]).await;
    for a in [&one, &two] {
        let r = delegate(
            &h,
            a,
            json!({"project": "demo", "secret": "s", "kubernetes": {"cluster": "c1", "namespace": "team-a"}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    // Asking for another agent's delegations still shows only one's own.
    let r = h
        .call(
            &one,
            "GET",
            &format!("/v1/delegations?agent_id={}", two.id),
            None,
        )
        .await;
    let owners: Vec<&str> = r.body["delegations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["agent_id"].as_str())
        .collect();
    assert_eq!(owners, [one.id.as_str()], "{:?}", r.body);
    // An admin sees both.
    let r = h.admin("GET", "/v1/delegations", None).await;
    assert_eq!(r.body["delegations"].as_array().unwrap().len(), 2);

    for bad in ["Team-A", "-a", "a-", "team_a", "", &"a".repeat(64)] {
        let r = delegate(
            &h,
            &one,
            json!({"project": "demo", "secret": "s", "kubernetes": {"cluster": "c1", "namespace": bad}}),
        )
        .await;
        assert_eq!(
            r.code(),
            "invalid_request",
            "namespace {bad:?}: {:?}",
            r.body
        );
    }
    let longest = "a".repeat(63);
    for good in ["a", "team-a", "0abc", longest.as_str()] {
        let r = delegate(
            &h,
            &one,
            json!({"project": "demo", "secret": "s", "kubernetes": {"cluster": "c1", "namespace": good}}),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "namespace {good:?}: {:?}",
            r.body
        );
    }
}

/// A kube-apiserver's TokenReview endpoint on 127.0.0.1, over TLS under a
/// CA of its own: it keeps the `Authorization` header and the body of each
/// review it is sent, and answers with the status and body it is given.
/// (The real apiserver needs etcd and runs in tests/e2e only.)
struct FakeApiserver {
    url: String,
    ca_pem: String,
    state: Arc<Mutex<FakeState>>,
}

struct FakeState {
    answer: (StatusCode, Value),
    seen: Vec<(String, Value)>,
}

impl FakeApiserver {
    async fn start() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .await
        .unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            answer: (StatusCode::OK, json!({})),
            seen: Vec::new(),
        }));
        let app = axum::Router::new()
            .route(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                axum::routing::post(Self::review),
            )
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
        tokio::spawn(server.serve(app.into_make_service()));
        Self { url, ca_pem, state }
    }

    async fn review(
        State(state): State<Arc<Mutex<FakeState>>>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let mut state = state.lock().unwrap();
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        state.seen.push((authorization, body));
        (state.answer.0, Json(state.answer.1.clone()))
    }

    /// The next reviews are answered with `status` and `body`.
    fn answer(&self, status: StatusCode, body: Value) {
        self.state.lock().unwrap().answer = (status, body);
    }

    /// The reviews received since the last call: `Authorization` and body.
    fn seen(&self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    /// Registers this apiserver as `name`, with `reviewer` as its
    /// TokenReview credential (the vault's own when `None`).
    async fn register(&self, h: &Harness, name: &str, reviewer: Option<&str>) {
        let mut body = json!({"name": name, "api_url": self.url, "ca_pem": self.ca_pem,
                              "audience": "vault.example"});
        if let Some(reviewer) = reviewer {
            body["reviewer_token"] = json!(reviewer);
        }
        let r = h.admin("POST", "/v1/clusters", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
}

/// What a kube-apiserver answers for a valid projected token of pod `web-1`
/// (UID `uid-1`) of service account `team-a/web`.
fn vouched() -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "status": {
            "authenticated": true,
            "audiences": ["vault.example"],
            "user": {
                "username": "system:serviceaccount:team-a:web",
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["web-1"],
                    "authentication.kubernetes.io/pod-uid": ["uid-1"]
                }
            }
        }
    })
}

/// A projected token as a pod of `team-a` would present it (its claims are
/// only prechecked; the review decides).
fn pod_token(h: &Harness) -> String {
    jwt(json!({"exp": h.clock.now() + 600, "aud": ["vault.example"],
        "kubernetes.io": {"namespace": "team-a", "pod": {"name": "web-1", "uid": "uid-1"}}}))
}

/// Creates the attested policy `app` of `cluster`/team-a in project `demo`,
/// granting its machines the secret `s`.
async fn attested_policy(h: &Harness, cluster: &str) {
    let mut body = token_body("demo", json!([{"secret": "s"}]));
    body["kubernetes"] = json!({"cluster": cluster, "namespace": "team-a", "policy": "app"});
    let r = h.admin("POST", "/v1/enrollment-tokens", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

/// A pod enrolls with what its cluster vouched for: the vault asks the
/// TokenReview API with the cluster's reviewer token (or, for a cluster
/// registered without one, the vault's own) for the cluster's audience,
/// and the machine is the pod the review named.
#[tokio::test]
async fn an_attested_pod_is_the_pod_the_cluster_vouched_for() {
    let reviewer_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(reviewer_file.path(), "vault-own-token\n").unwrap();
    let h = Harness::with_settings(signet_vault::vault::Settings {
        kube_token_file: reviewer_file.path().to_owned(),
        ..Default::default()
    });
    let api = FakeApiserver::start().await;
    api.register(&h, "c1", Some("c1-reviewer\n")).await;
    api.register(&h, "c2", None).await;
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    api.answer(StatusCode::OK, vouched());

    let h = &h;
    let enroll = |cluster: &'static str| async move {
        let token = pod_token(h);
        let fields = json!({"hostname": "", "attestation": {
            "cluster": cluster, "policy": "app", "service_account_token": token}});
        let (reply, machine) = h.enroll_with(fields, LOCAL_IP).await;
        (token, reply, machine)
    };
    let mut first = None;
    for (cluster, bearer) in [
        ("c1", "Bearer c1-reviewer"),
        ("c2", "Bearer vault-own-token"),
    ] {
        attested_policy(h, cluster).await;
        let (token, reply, machine) = enroll(cluster).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{cluster}: {:?}",
            reply.body
        );
        let machine = machine.unwrap();
        assert_eq!(
            api.seen(),
            [(
                bearer.to_owned(),
                json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                       "spec": {"token": token, "audiences": ["vault.example"]}})
            )]
        );
        assert_eq!(h.read(&machine, "demo", "s").await.status, StatusCode::OK);
        let (machines, _) = h.pages("/v1/machines", "machines", 10).await;
        let view = machines
            .iter()
            .find(|m| m["id"] == machine.id.as_str())
            .unwrap();
        assert_eq!(view["name"], "web-1");
        assert_eq!(
            view["kubernetes"],
            json!({"cluster": cluster, "namespace": "team-a", "service_account": "web",
                   "pod_name": "web-1", "pod_uid": "uid-1", "attested": true})
        );
        let row = h
            .audit()
            .into_iter()
            .find(|e| e.actor == machine.id && e.action == "enroll")
            .unwrap();
        assert_eq!(row.outcome, "allow");
        assert!(
            row.target
                .contains(&format!("pod:{cluster}/team-a/web-1 uid:uid-1 sa:web")),
            "{row:?}"
        );
        assert!(!row.target.contains("replaces"), "{row:?}");
        assert!(!row.target.contains(&token) && !row.reason.contains(&token));
        first.get_or_insert(machine);
    }

    // The same pod again (its sidecar restarted with a new key): the new
    // machine replaces the pod's earlier one, which no longer reads.
    let first = first.unwrap();
    let (_, reply, machine) = enroll("c1").await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let machine = machine.unwrap();
    let row = h
        .audit()
        .into_iter()
        .find(|e| e.actor == machine.id && e.action == "enroll")
        .unwrap();
    assert!(
        row.target
            .ends_with(&format!(" replaces machine:{}", first.id)),
        "{row:?}"
    );
    assert_eq!(h.read(&machine, "demo", "s").await.status, StatusCode::OK);
    let gone = h.read(&first, "demo", "s").await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED, "{:?}", gone.body);
}

/// Whatever the apiserver's body says, an answer that is not a 2xx
/// TokenReview is a refusal (`attestation_unavailable`, audited with the
/// status), and a review that does not authenticate the token is refused
/// with the cluster's reason: never an enrolled machine.
#[tokio::test]
async fn a_failed_token_review_is_never_an_acceptance() {
    let h = Harness::new();
    let api = FakeApiserver::start().await;
    api.register(&h, "c1", Some("c1-reviewer")).await;
    h.project("demo").await;
    h.write("demo", "s", "v").await;
    attested_policy(&h, "c1").await;

    let cases = [
        (
            StatusCode::UNAUTHORIZED,
            vouched(),
            "attestation_unavailable",
            "401",
        ),
        (
            StatusCode::FORBIDDEN,
            vouched(),
            "attestation_unavailable",
            "403",
        ),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            vouched(),
            "attestation_unavailable",
            "500",
        ),
        (
            StatusCode::OK,
            json!("ok"),
            "attestation_unavailable",
            "not a TokenReview",
        ),
        (
            StatusCode::OK,
            json!({"kind": "TokenReview", "status": {"authenticated": false,
                   "error": "service account token has expired"}}),
            "attestation_expired",
            "has expired",
        ),
    ];
    for (status, body, code, why) in cases {
        api.answer(status, body);
        let token = pod_token(&h);
        let (reply, machine) = h
            .enroll_with(
                json!({"hostname": "", "attestation": {
                    "cluster": "c1", "policy": "app", "service_account_token": token}}),
                LOCAL_IP,
            )
            .await;
        assert_eq!(reply.code(), code, "{status}: {:?}", reply.body);
        assert!(machine.is_none());
        assert_eq!(api.seen().len(), 1, "{status}");
        let row = h.last_audit();
        assert_eq!(
            (row.action.as_str(), row.outcome.as_str()),
            ("enroll", "deny")
        );
        assert!(
            row.reason.starts_with(&format!("{code}:")) && row.reason.contains(why),
            "{status}: {row:?}"
        );
    }
    let (machines, _) = h.pages("/v1/machines", "machines", 10).await;
    assert_eq!(machines, Vec::<Value>::new());
}
