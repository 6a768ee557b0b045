//! Bad input gets its docs/protocol.md code, an audit row, and no change to
//! stored data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::{Harness, LOCAL_IP, Reply, Signer};
use serde_json::{Value, json};
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::Clock as _;
use signet_vault::vault::{Config, Settings};

/// Runs `attempt` and checks the status, the code, the audit row and that
/// nothing but the audit log (and nonces) changed.
async fn denied<F, Fut>(h: &Harness, status: StatusCode, code: &str, attempt: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let before = h.snapshot();
    let audit_before = h.audit().len();
    let reply = attempt().await;
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.code(), code, "{}", reply.body);
    assert!(!reply.body["error"]["message"].as_str().unwrap().is_empty());
    assert_eq!(h.snapshot(), before, "a denied request changed stored data");
    let audit = h.audit();
    assert_eq!(
        audit.len(),
        audit_before + 1,
        "exactly one audit row per denial"
    );
    let last = audit.last().unwrap();
    assert_eq!(last.outcome, "deny");
    assert!(
        last.reason.starts_with(code),
        "audit reason {:?} names {code}",
        last.reason
    );
}

/// A captured body-less request that can be sent again and again, byte for
/// byte, as an attacker replaying it would.
fn replayable(request: Request<Body>) -> impl Fn() -> Request<Body> {
    let (parts, _) = request.into_parts();
    move || {
        let mut builder = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone());
        for (name, value) in &parts.headers {
            builder = builder.header(name, value);
        }
        builder.body(Body::empty()).unwrap()
    }
}

/// A vault with project `payments` seeded, an admin enrolled with a
/// bootstrap token, and a machine granted `api-key` and `db`'s `user`.
async fn setup() -> (Harness, Signer, Signer) {
    let h = Harness::new();
    let admin = h.bootstrap_admin().await;
    h.seed("payments").await;
    let machine = h.seeded_machine("payments").await;
    (h, admin, machine)
}

/// An enrollment token body for `payments`.
fn payments_token(grants: Value, max_uses: Option<u32>) -> Value {
    json!({
        "project": "payments", "ttl_seconds": 3600, "machine_lifetime_seconds": 86400,
        "max_uses": max_uses, "grants": grants
    })
}

/// Enrolls a fresh key with `token`, as a runner would.
async fn enroll(h: &Harness, token: &str) -> (Reply, Option<Signer>) {
    h.enroll(token, "runner-1", json!({"k8s.pod.uid": "uid-1"}), LOCAL_IP)
        .await
}

#[tokio::test]
async fn a_granted_read_succeeds_and_is_audited() {
    let (h, _admin, machine) = setup().await;
    let r = h
        .call(&machine, "GET", "/v1/secrets/payments/api-key", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["value"], "sk_live_plain_value");
    assert_eq!(r.body["version"], 1);
    let last = h.last_audit();
    assert_eq!(
        (
            last.actor.as_str(),
            last.action.as_str(),
            last.outcome.as_str()
        ),
        (machine.id.as_str(), "secret.read", "allow")
    );
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let (h, _admin, machine) = setup().await;
    let request = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    let copy = replayable(request);
    assert_eq!(h.raw(copy()).await.status, StatusCode::OK);
    denied(&h, StatusCode::UNAUTHORIZED, "nonce_replayed", || {
        h.raw(copy())
    })
    .await;
}

#[tokio::test]
async fn a_refused_request_stays_refused_when_replayed_after_a_grant() {
    let (h, admin, machine) = setup().await;
    let r = h
        .call(
            &admin,
            "PUT",
            "/v1/projects/payments/secrets/later",
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let request = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/later",
        b"",
    );
    let copy = replayable(request);
    assert_eq!(h.raw(copy()).await.code(), "not_granted");
    let grant = h
        .call(
            &admin,
            "POST",
            "/v1/grants",
            Some(json!({"machine_id": machine.id, "project": "payments", "secret": "later"})),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED, "{}", grant.body);
    // The captured request is worthless even now that it would be allowed.
    denied(&h, StatusCode::UNAUTHORIZED, "nonce_replayed", || {
        h.raw(copy())
    })
    .await;
    // A fresh request from the machine itself reads it.
    let fresh = h
        .call(&machine, "GET", "/v1/secrets/payments/later", None)
        .await;
    assert_eq!(fresh.status, StatusCode::OK);
}

/// A nonce pruned under a small skew cannot be replayed after a restart
/// with a larger one, and a nonce recorded before the restart is kept for
/// the larger one.
#[tokio::test]
async fn raising_the_skew_across_a_restart_opens_no_replay_window() {
    let small = Config {
        skew_seconds: 30,
        ..Config::default()
    };
    let h = Harness::with_config(small, Settings::default());
    h.seed("payments").await;
    let machine = h.seeded_machine("payments").await;
    let read = |h: &Harness| {
        replayable(h.signed(
            &machine.key,
            &machine.id,
            "GET",
            "/v1/secrets/payments/api-key",
            b"",
        ))
    };
    let early = read(&h);
    assert_eq!(h.raw(early()).await.status, StatusCode::OK);
    h.clock.advance(25);
    let late = read(&h);
    assert_eq!(h.raw(late()).await.status, StatusCode::OK);
    // `early` is stale under 30 s and its nonce is swept.
    h.clock.advance(15);
    assert!(h.vault.sweep(h.clock.now()).unwrap().nonces >= 1);
    assert_eq!(h.raw(early()).await.code(), "timestamp_skew");

    let large = Config {
        skew_seconds: 300,
        ..Config::default()
    };
    let h = h.reopen_with(large, Settings::default());
    h.vault.sweep(h.clock.now()).unwrap();
    // Its nonce gone, `early` is refused for its age; `late`'s nonce is kept.
    for (request, code) in [(&early, "timestamp_skew"), (&late, "nonce_replayed")] {
        let replay = h.raw(request()).await;
        assert_eq!(
            (replay.status, replay.code()),
            (StatusCode::UNAUTHORIZED, code),
            "{}",
            replay.body
        );
    }
    // `late`'s nonce outlives its old 30 s window: refused as a replay.
    h.clock.advance(60);
    h.vault.sweep(h.clock.now()).unwrap();
    assert_eq!(h.raw(late()).await.code(), "nonce_replayed");
    // Fresh requests are served under the larger skew.
    let fresh = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    assert_eq!(h.raw(fresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let (h, admin, _machine) = setup().await;
    let signed_body = serde_json::to_vec(&json!({"value": "new"})).unwrap();
    let request = h.signed(
        &admin.key,
        &admin.id,
        "PUT",
        "/v1/projects/payments/secrets/api-key",
        &signed_body,
    );
    let (parts, _) = request.into_parts();
    let tampered = Request::from_parts(parts, Body::from(r#"{"value":"evil"}"#));
    denied(&h, StatusCode::UNAUTHORIZED, "bad_signature", || {
        h.raw(tampered)
    })
    .await;
}

#[tokio::test]
async fn a_tampered_path_is_refused() {
    let (h, _admin, machine) = setup().await;
    let request = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    let (mut parts, body) = request.into_parts();
    parts.uri = "/v1/secrets/payments/db".parse().unwrap();
    denied(&h, StatusCode::UNAUTHORIZED, "bad_signature", || {
        h.raw(Request::from_parts(parts, body))
    })
    .await;
}

#[tokio::test]
async fn a_tampered_query_is_refused() {
    let (h, _admin, machine) = setup().await;
    let request = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/db?field=user",
        b"",
    );
    let (mut parts, body) = request.into_parts();
    parts.uri = "/v1/secrets/payments/db?field=password".parse().unwrap();
    denied(&h, StatusCode::UNAUTHORIZED, "bad_signature", || {
        h.raw(Request::from_parts(parts, body))
    })
    .await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let (h, _admin, machine) = setup().await;
    let skew = h.vault.config().skew_seconds;
    // Signed 31 s ago: the clock moved on after signing.
    let stale = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    h.clock.advance(skew + 1);
    denied(&h, StatusCode::UNAUTHORIZED, "timestamp_skew", || {
        h.raw(stale)
    })
    .await;
    // Signed 31 s in the future.
    h.clock.advance(2 * (skew + 1));
    let future = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    h.clock.advance(-2 * (skew + 1));
    denied(&h, StatusCode::UNAUTHORIZED, "timestamp_skew", || {
        h.raw(future)
    })
    .await;
    // Exactly at the edge of the window is still accepted.
    let edge = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    h.clock.advance(skew);
    assert_eq!(h.raw(edge).await.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_or_malformed_headers_are_refused() {
    let (h, _admin, machine) = setup().await;
    let bare = Request::builder()
        .uri("/v1/secrets/payments/api-key")
        .body(Body::empty())
        .unwrap();
    denied(
        &h,
        StatusCode::UNAUTHORIZED,
        "bad_signature_headers",
        || h.raw(bare),
    )
    .await;
    let request = h.signed(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/api-key",
        b"",
    );
    let (mut parts, body) = request.into_parts();
    parts
        .headers
        .insert("signet-timestamp", "0017".parse().unwrap());
    denied(
        &h,
        StatusCode::UNAUTHORIZED,
        "bad_signature_headers",
        || h.raw(Request::from_parts(parts, body)),
    )
    .await;
}

#[tokio::test]
async fn an_unknown_key_is_refused() {
    let (h, _admin, _machine) = setup().await;
    let stranger = Signer {
        id: "m_01HZX3K6Q8J9V2T4N5P7R8S9W0".into(),
        key: IdentityKey::generate(),
    };
    denied(&h, StatusCode::UNAUTHORIZED, "unknown_key", || {
        h.call(&stranger, "GET", "/v1/secrets/payments/api-key", None)
    })
    .await;
}

#[tokio::test]
async fn a_signature_by_another_key_is_refused() {
    let (h, _admin, machine) = setup().await;
    let impostor = Signer {
        id: machine.id.clone(),
        key: IdentityKey::generate(),
    };
    denied(&h, StatusCode::UNAUTHORIZED, "bad_signature", || {
        h.call(&impostor, "GET", "/v1/secrets/payments/api-key", None)
    })
    .await;
}

#[tokio::test]
async fn an_expired_machine_is_disabled() {
    let (h, _admin, machine) = setup().await;
    h.clock.advance(86_400);
    denied(&h, StatusCode::UNAUTHORIZED, "identity_disabled", || {
        h.call(&machine, "GET", "/v1/secrets/payments/api-key", None)
    })
    .await;
}

#[tokio::test]
async fn agents_and_admins_never_get_a_value() {
    let (h, admin, _machine) = setup().await;
    let agent_key = IdentityKey::generate();
    let r = h
        .call(&admin, "POST", "/v1/agents", Some(json!({"name": "operator", "public_key": agent_key.public_key(), "scopes": ["tokens", "grants", "machines", "metadata"]})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let agent = Signer {
        id: r.body["id"].as_str().unwrap().to_owned(),
        key: agent_key,
    };
    denied(&h, StatusCode::FORBIDDEN, "not_a_machine", || {
        h.call(&agent, "GET", "/v1/secrets/payments/api-key", None)
    })
    .await;
    denied(&h, StatusCode::FORBIDDEN, "not_a_machine", || {
        h.call(&admin, "GET", "/v1/secrets/payments/api-key", None)
    })
    .await;
    // The agent may manage what its scopes allow, but not write secrets.
    assert_eq!(
        h.call(&agent, "GET", "/v1/machines", None).await.status,
        StatusCode::OK
    );
    denied(&h, StatusCode::FORBIDDEN, "forbidden", || {
        h.call(
            &agent,
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            Some(json!({"value": "x"})),
        )
    })
    .await;
}

#[tokio::test]
async fn an_ungranted_secret_or_field_is_refused() {
    let (h, admin, machine) = setup().await;
    let r = h
        .call(
            &admin,
            "PUT",
            "/v1/projects/payments/secrets/other",
            Some(json!({"value": "v"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    denied(&h, StatusCode::FORBIDDEN, "not_granted", || {
        h.call(&machine, "GET", "/v1/secrets/payments/other", None)
    })
    .await;
    // A secret that does not exist answers exactly like an ungranted one.
    denied(&h, StatusCode::FORBIDDEN, "not_granted", || {
        h.call(&machine, "GET", "/v1/secrets/payments/nope", None)
    })
    .await;
    denied(&h, StatusCode::FORBIDDEN, "field_not_granted", || {
        h.call(
            &machine,
            "GET",
            "/v1/secrets/payments/db?field=password",
            None,
        )
    })
    .await;
    // Without a field, only the granted fields come back.
    let r = h
        .call(&machine, "GET", "/v1/secrets/payments/db", None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["fields"], json!({"user": "app_user"}));
}

#[tokio::test]
async fn malformed_json_is_refused() {
    let (h, admin, _machine) = setup().await;
    let request = h.signed(
        &admin.key,
        &admin.id,
        "PUT",
        "/v1/projects/payments/secrets/api-key",
        b"{\"value\": ",
    );
    denied(&h, StatusCode::BAD_REQUEST, "malformed_json", || {
        h.raw(request)
    })
    .await;
    let request = h.signed(
        &admin.key,
        &admin.id,
        "PUT",
        "/v1/projects/payments/secrets/api-key",
        b"{\"valu\": \"x\"}",
    );
    denied(&h, StatusCode::BAD_REQUEST, "malformed_json", || {
        h.raw(request)
    })
    .await;
    let key = IdentityKey::generate();
    let request = h.signed(&key, "enroll", "POST", "/v1/enroll", b"not json");
    denied(&h, StatusCode::BAD_REQUEST, "malformed_json", || {
        h.raw(request)
    })
    .await;
}

/// A value sent in the wrong place may be a secret: neither the error body
/// nor the audit row quotes it, whatever its type.
#[tokio::test]
async fn a_body_of_the_wrong_shape_is_refused_without_echoing_its_values() {
    let (h, admin, _machine) = setup().await;
    let cases = [
        (
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            json!({"value": 4_111_111_111_111_111_u64}),
            "4111111111111111",
        ),
        (
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            json!({"value": "hunter2", "fields": "hunter3"}),
            "hunter3",
        ),
        (
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            json!({"fields": {"password": 8_675_309}}),
            "8675309",
        ),
        (
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            json!({"value": ["correct", "horse"]}),
            "horse",
        ),
        (
            "POST",
            "/v1/agents",
            json!({"name": "a", "public_key": "k", "scopes": ["hunter2"]}),
            "hunter2",
        ),
        ("POST", "/v1/projects", json!({"name": 6.02214}), "6.02214"),
        (
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            json!({"s3cr3t\"val": "x"}),
            "s3cr3t",
        ),
    ];
    for (method, target, body, secret) in cases {
        let bytes = serde_json::to_vec(&body).unwrap();
        let request = h.signed(&admin.key, &admin.id, method, target, &bytes);
        denied(&h, StatusCode::BAD_REQUEST, "malformed_json", || {
            h.raw(request)
        })
        .await;
        let reply_and_row = format!("{:?}", h.last_audit());
        assert!(!reply_and_row.contains(secret), "{body}: {reply_and_row}");
        let request = h.signed(&admin.key, &admin.id, method, target, &bytes);
        let reply = h.raw(request).await;
        assert_eq!(reply.code(), "malformed_json", "{}", reply.body);
        assert!(
            !reply.body.to_string().contains(secret),
            "{body}: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let (h, admin, _machine) = setup().await;
    let limit = h.vault.config().max_body_bytes;
    let huge = serde_json::to_vec(&json!({"value": "x".repeat(limit)})).unwrap();
    let request = h.signed(
        &admin.key,
        &admin.id,
        "PUT",
        "/v1/projects/payments/secrets/api-key",
        &huge,
    );
    denied(&h, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", || {
        h.raw(request)
    })
    .await;
}

#[tokio::test]
async fn enrollment_signed_by_another_key_is_refused() {
    let (h, _admin, _machine) = setup().await;
    let token = h
        .token(payments_token(json!([{"secret": "api-key"}]), Some(1)))
        .await;
    let claimed = IdentityKey::generate();
    let body = serde_json::to_vec(
        &json!({"token": token, "public_key": claimed.public_key(), "hostname": "h"}),
    )
    .unwrap();
    let request = h.signed(
        &IdentityKey::generate(),
        "enroll",
        "POST",
        "/v1/enroll",
        &body,
    );
    denied(&h, StatusCode::UNAUTHORIZED, "bad_signature", || {
        h.raw(request)
    })
    .await;
    // The token was not spent by the failed attempt.
    assert_eq!(enroll(&h, &token).await.0.status, StatusCode::CREATED);
}

#[tokio::test]
async fn enrollment_tokens_are_checked() {
    let (h, _admin, _machine) = setup().await;
    let token = h.token(payments_token(json!([]), Some(1))).await;
    let (id, _) = token.split_once('.').unwrap();
    let forged = format!("{id}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let before = h.snapshot();
    assert_eq!(enroll(&h, &forged).await.0.code(), "invalid_token");
    assert_eq!(h.snapshot(), before);
    assert_eq!(enroll(&h, &token).await.0.status, StatusCode::CREATED);
    assert_eq!(enroll(&h, &token).await.0.code(), "token_exhausted");
    let expiring = h.token(payments_token(json!([]), None)).await;
    h.clock.advance(3601);
    assert_eq!(enroll(&h, &expiring).await.0.code(), "token_expired");
    assert_eq!(
        h.last_audit().reason.split(':').next(),
        Some("token_expired")
    );
}

#[tokio::test]
async fn a_revoked_machine_is_unknown() {
    let (h, _admin, machine) = setup().await;
    let r = h.call(&machine, "DELETE", "/v1/machine/self", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    denied(&h, StatusCode::UNAUTHORIZED, "unknown_key", || {
        h.call(&machine, "GET", "/v1/machine/grants", None)
    })
    .await;
}

#[tokio::test]
async fn versions_are_kept_and_readable() {
    let (h, admin, machine) = setup().await;
    let r = h
        .call(
            &admin,
            "PUT",
            "/v1/projects/payments/secrets/api-key",
            Some(json!({"value": "second"})),
        )
        .await;
    assert_eq!(r.body["live_version"], 2);
    let live = h
        .call(&machine, "GET", "/v1/secrets/payments/api-key", None)
        .await;
    assert_eq!(
        (live.body["version"].as_u64(), live.body["value"].as_str()),
        (Some(2), Some("second"))
    );
    let old = h
        .call(
            &machine,
            "GET",
            "/v1/secrets/payments/api-key?version=1",
            None,
        )
        .await;
    assert_eq!(old.body["value"], "sk_live_plain_value");
    let grants = h.call(&machine, "GET", "/v1/machine/grants", None).await;
    let api_key = grants.body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["secret"] == "api-key")
        .unwrap()
        .clone();
    assert_eq!(api_key["version"], 2);
}

#[tokio::test]
async fn the_audit_chain_verifies_and_detects_tampering() {
    let (h, _admin, machine) = setup().await;
    h.call(&machine, "GET", "/v1/secrets/payments/api-key", None)
        .await;
    let entries = h.audit();
    assert_eq!(
        entries.len(),
        7,
        "admin, project, two writes, token, enroll, read"
    );
    signet_client::audit::verify_links(&entries, Some(signet_client::audit::GENESIS)).unwrap();
    assert_eq!(h.verify_audit().broken, None);
    h.db()
        .execute("UPDATE audit SET outcome = 'deny' WHERE seq = 3", [])
        .unwrap();
    assert_eq!(h.verify_audit().broken.unwrap().seq, 3);
}

#[tokio::test]
async fn canonical_signing_matches_the_protocol_for_a_live_request() {
    // The SDK and the router agree on the target with a query string.
    let (h, _admin, machine) = setup().await;
    let ts = u64::try_from(kit::START).unwrap();
    let headers = protocol::sign(
        &machine.key,
        &machine.id,
        "GET",
        "/v1/secrets/payments/db?version=1&field=user",
        b"",
        ts,
        &protocol::fresh_nonce(),
    );
    let mut builder = Request::builder().uri("/v1/secrets/payments/db?version=1&field=user");
    for (n, v) in headers.pairs() {
        builder = builder.header(n, v);
    }
    let r = h.raw(builder.body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["fields"], json!({"user": "app_user"}));
}
