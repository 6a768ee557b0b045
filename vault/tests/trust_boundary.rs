//! The trust boundary of issue "the pod is the credential": agents hand out
//! only what an admin delegated, per namespace; field grants never yield a
//! plain value; renewals share their uses; attestations the vault cannot
//! vouch for are refused with their own codes. Each test reproduces a hole
//! found on an earlier main and shows it closed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::http::StatusCode;
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
/// its own code and audit row. (The cluster-side refusals run against a
/// real kube-apiserver in tests/e2e.)
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
