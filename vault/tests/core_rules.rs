//! Rules of the pipeline and the secret service that a user or an attacker
//! would notice, each written so that breaking the rule fails the test
//! (they were found unguarded by mutation testing).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::{Harness, Signer};
use serde_json::{Value, json};
use signet_client::protocol::{self, IdentityKey};
use signet_vault::clock::Clock as _;

#[tokio::test]
async fn an_agent_may_use_only_the_routes_of_its_scopes() {
    let h = Harness::new();
    h.seed("shop").await;
    let routes: [(&str, &str, &str, Option<Value>); 4] = [
        ("metadata", "GET", "/v1/projects", None),
        ("tokens", "GET", "/v1/enrollment-tokens", None),
        ("grants", "GET", "/v1/grants", None),
        ("machines", "GET", "/v1/machines", None),
    ];
    for (scope, ..) in &routes {
        let agent = h.agent(&[scope]).await;
        for (needed, method, target, body) in &routes {
            let r = h.call(&agent, method, target, body.clone()).await;
            if needed == scope {
                assert_eq!(
                    r.status,
                    StatusCode::OK,
                    "{scope} on {target}: {:?}",
                    r.body
                );
            } else {
                assert_eq!(
                    (r.status, r.code()),
                    (StatusCode::FORBIDDEN, "forbidden"),
                    "an agent with only {scope} reached {target}"
                );
            }
        }
    }
    // Admin-only routes stay closed to an agent holding every scope.
    let all = h.agent(&["metadata", "tokens", "grants", "machines"]).await;
    let r = h
        .call(&all, "POST", "/v1/projects", Some(json!({"name": "x"})))
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test]
async fn a_deleted_secret_is_gone_for_admins_and_machines() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    assert_eq!(
        h.read(&machine, "shop", "api-key").await.status,
        StatusCode::OK
    );
    let r = h
        .admin("DELETE", "/v1/projects/shop/secrets/api-key", None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = h
        .admin("GET", "/v1/projects/shop/secrets/api-key", None)
        .await;
    assert_eq!(r.code(), "not_found");
    assert_eq!(
        h.read(&machine, "shop", "api-key").await.code(),
        "not_granted"
    );
    let list = h.admin("GET", "/v1/projects/shop/secrets", None).await;
    let names: Vec<&str> = list.body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["db"]);
}

/// The same request, byte for byte, signed at `timestamp` with `nonce`.
fn fixed(signer: &Signer, target: &str, timestamp: i64, nonce: &str) -> Request<Body> {
    let headers = protocol::sign(
        &signer.key,
        &signer.id,
        "GET",
        target,
        b"",
        u64::try_from(timestamp).unwrap(),
        nonce,
    );
    let mut builder = Request::builder().method("GET").uri(target);
    for (name, value) in headers.pairs() {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_nonce_is_kept_as_long_as_its_request_could_be_replayed() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    let skew = h.vault.config().skew_seconds;
    let sent = h.clock.now();
    let nonce = protocol::fresh_nonce();
    let target = "/v1/secrets/shop/api-key";
    let r = h.raw(fixed(&machine, target, sent, &nonce)).await;
    assert_eq!(r.status, StatusCode::OK);

    // At the far edge of the skew window the timestamp still passes, so
    // only the remembered nonce stops the replay, even after a sweep.
    h.clock.set(sent + skew);
    let report = h.vault.sweep(h.clock.now()).unwrap();
    assert_eq!(report.nonces, 0, "a nonce was forgotten while still needed");
    let r = h.raw(fixed(&machine, target, sent, &nonce)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "nonce_replayed")
    );

    // Past the window the timestamp refuses the replay, and the nonces are
    // forgotten.
    h.clock.set(sent + skew + 2);
    let r = h.raw(fixed(&machine, target, sent, &nonce)).await;
    assert_eq!(r.code(), "timestamp_skew");
    let report = h.vault.sweep(h.clock.now()).unwrap();
    assert!(report.nonces > 0, "spent nonces are never forgotten");
}

#[tokio::test]
async fn a_refused_request_leaves_nothing_behind() {
    let h = Harness::new();
    h.seed("shop").await;
    let r = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(
                json!({"project": "shop", "ttl_seconds": 60, "machine_lifetime_seconds": 60,
                        "grants": [{"secret": "api-key"}, {"secret": "missing"}]}),
            ),
        )
        .await;
    assert_eq!(r.code(), "not_found", "{:?}", r.body);
    let tokens = h.admin("GET", "/v1/enrollment-tokens", None).await;
    assert_eq!(
        tokens.body["tokens"],
        json!([]),
        "a half-made token was kept"
    );
    let grants = h.admin("GET", "/v1/grants", None).await;
    assert_eq!(grants.body["grants"], json!([]));
}

#[tokio::test]
async fn an_overlong_key_id_is_audited_cut_short_and_unverified() {
    let h = Harness::new();
    let long = format!("m_{}", "x".repeat(200));
    let key = IdentityKey::generate();
    let request = h.signed(&key, &long, "GET", "/v1/machine/grants", b"");
    let r = h.raw(request).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let row = h.last_audit();
    assert_eq!(row.outcome, "deny");
    // The claim is never taken for the actor: marked, and cut to 64.
    assert_eq!(row.actor, format!("unverified:{}", &long[..64]));

    // Refused before the pipeline (a body over the limit): the same rule,
    // and the target is cut short too.
    let long_target = format!("/v1/projects?{}", "q".repeat(5000));
    let body = vec![b'x'; 70 * 1024];
    let request = h.signed(&key, &"m_x".repeat(2000), "POST", &long_target, &body);
    let r = h.raw(request).await;
    assert_eq!(r.code(), "body_too_large");
    let row = h.last_audit();
    assert_eq!(
        row.actor,
        format!("unverified:{}", &"m_x".repeat(2000)[..64])
    );
    assert!(row.target.len() <= 256, "{}", row.target.len());
}

#[tokio::test]
async fn a_value_sent_in_the_wrong_shape_is_not_echoed() {
    let h = Harness::new();
    h.project("shop").await;
    let r = h
        .admin(
            "PUT",
            "/v1/projects/shop/secrets/db",
            Some(json!({"fields": "hunter2-top-secret"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "malformed_json")
    );
    assert!(!r.body.to_string().contains("hunter2"), "{:?}", r.body);
    let row = h.last_audit();
    assert!(!row.reason.contains("hunter2"), "{row:?}");
    // The field names a caller needs to fix the request stay.
    let r = h
        .admin(
            "PUT",
            "/v1/projects/shop/secrets/db",
            Some(json!({"valu": "x"})),
        )
        .await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("valu"),
        "{:?}",
        r.body
    );
}

#[tokio::test]
async fn metadata_shows_the_fields_of_the_live_version() {
    let h = Harness::new();
    h.project("shop").await;
    h.write_fields("shop", "db", json!({"user": "u"})).await;
    h.write_fields("shop", "db", json!({"user": "u", "password": "p"}))
        .await;
    let meta = "/v1/projects/shop/secrets/db";
    assert_eq!(
        h.admin("GET", meta, None).await.body["fields"],
        json!(["password", "user"])
    );
    let r = h
        .admin(
            "POST",
            "/v1/projects/shop/secrets/db/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.admin("GET", meta, None).await;
    assert_eq!(r.body["live_version"], 1);
    assert_eq!(r.body["fields"], json!(["user"]));
}

#[tokio::test]
async fn an_empty_fields_object_is_not_a_secret() {
    let h = Harness::new();
    h.project("shop").await;
    let r = h
        .admin(
            "PUT",
            "/v1/projects/shop/secrets/db",
            Some(json!({"fields": {}})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "invalid_request"),
        "{:?}",
        r.body
    );
    let r = h.admin("GET", "/v1/projects/shop/secrets/db", None).await;
    assert_eq!(r.code(), "not_found", "no version was written");
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_refused() {
    let config = signet_vault::vault::Config {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let h = Harness::with_config(config, Default::default());
    h.project("shop").await;
    let write = |value: String| {
        h.admin(
            "PUT",
            "/v1/projects/shop/secrets/big",
            Some(json!({ "value": value })),
        )
    };
    assert_eq!(write("x".repeat(900)).await.status, StatusCode::OK);
    let r = write("x".repeat(2000)).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
    );
}

/// The public key remembered for an id never outlives what the store says:
/// if the stored key of an id changes (an edited database, a restored
/// backup), a request signed by the old key is refused.
#[tokio::test]
async fn a_remembered_key_never_overrides_the_stored_one() {
    let h = Harness::new();
    h.seed("shop").await;
    let machine = h.machine("shop", &["api-key"]).await;
    // Signed and verified once: the vault now remembers the key.
    assert_eq!(
        h.read(&machine, "shop", "api-key").await.status,
        StatusCode::OK
    );
    let id = machine.id.clone();
    let other = IdentityKey::generate().public_key();
    h.vault
        .with_tx(move |tx, _| {
            let mut stored = tx.machine(&id)?.unwrap();
            tx.delete_machine(&id)?;
            stored.public_key = other;
            tx.insert_machine(&stored)?;
            Ok(())
        })
        .unwrap();
    let r = h.read(&machine, "shop", "api-key").await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::UNAUTHORIZED, "bad_signature"),
        "{:?}",
        r.body
    );
}
