//! Issue 16: the `policies` and `audit` scopes, which let an agent (an AI
//! assistant through `signet mcp`, say) tighten the policy of a secret
//! delegated to it and read the audit log, and nothing more: never loosen
//! an admin's rule, never add a canary, never touch a secret it does not
//! hold whole, and never see a value.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::http::StatusCode;
use kit::{Harness, Reply, Signer};
use serde_json::{Value, json};

async fn delegate(h: &Harness, agent: &Signer, body: Value) {
    let mut body = body;
    body["agent_id"] = json!(agent.id);
    let r = h.admin("POST", "/v1/delegations", Some(body)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
}

async fn set_policy(h: &Harness, who: &Signer, secret: &str, policy: Value) -> Reply {
    let target = format!("/v1/projects/app/secrets/{secret}/policy");
    h.call(who, "PUT", &target, Some(policy)).await
}

/// An agent delegated `app/db` whole and `app/api` for one field only.
async fn setup(scopes: &[&str]) -> (Harness, Signer) {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "s3cret-db").await;
    h.write_fields("app", "api", json!({"key": "s3cret-api", "user": "u"}))
        .await;
    let agent = h.agent(scopes).await;
    delegate(&h, &agent, json!({"project": "app", "secret": "db"})).await;
    delegate(
        &h,
        &agent,
        json!({"project": "app", "secret": "api", "fields": ["user"]}),
    )
    .await;
    (h, agent)
}

#[tokio::test]
async fn without_the_scopes_an_agent_sets_no_policy_and_reads_no_audit() {
    let (h, agent) = setup(&["metadata"]).await;
    let r = set_policy(&h, &agent, "db", json!({"cosign": true})).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("policies")
    );
    for (method, target) in [
        ("GET", "/v1/audit"),
        ("GET", "/v1/audit/checkpoint"),
        ("GET", "/v1/audit/checkpoint-key"),
        ("POST", "/v1/audit/verify"),
    ] {
        let r = h.call(&agent, method, target, None).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{method} {target}"
        );
    }
}

#[tokio::test]
async fn an_agent_with_the_audit_scope_reads_and_verifies_the_log_without_values() {
    let (h, agent) = setup(&["audit"]).await;
    let machine = h.machine("app", &["db"]).await;
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);

    let page = h.call(&agent, "GET", "/v1/audit?limit=1000", None).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    let text = page.body.to_string();
    assert!(text.contains("secret.read"), "the read is in the log");
    assert!(!text.contains("s3cret"), "no value in the log");
    let verified = h.call(&agent, "POST", "/v1/audit/verify", None).await;
    assert_eq!(verified.status, StatusCode::OK, "{:?}", verified.body);
    assert!(
        verified.body["entries"].as_u64().unwrap() > 5,
        "{:?}",
        verified.body
    );
    assert!(verified.body.get("broken").is_none(), "{:?}", verified.body);
    for target in ["/v1/audit/checkpoint", "/v1/audit/checkpoint-key"] {
        let r = h.call(&agent, "GET", target, None).await;
        assert_eq!(r.status, StatusCode::OK, "{target}: {:?}", r.body);
    }
    // The audit scope is not the policies scope.
    let r = set_policy(&h, &agent, "db", json!({"cosign": true})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_agent_tightens_the_policy_of_a_secret_it_holds_whole() {
    let (h, agent) = setup(&["policies"]).await;
    let machine = h.machine("app", &["db"]).await;

    let r = set_policy(
        &h,
        &agent,
        "db",
        json!({"ip_allowlist": ["10.0.0.0/8"], "daily_read_cap": 10}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["policy"]["daily_read_cap"],
        json!(10),
        "{:?}",
        r.body
    );
    // Tighter still: a smaller CIDR inside the old one, a lower cap.
    let r = set_policy(
        &h,
        &agent,
        "db",
        json!({"ip_allowlist": ["10.1.0.0/16"], "daily_read_cap": 2}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    // The policy binds: a read from outside the new allowlist is refused.
    let outside = h.read_from(&machine, "app", "db", "10.2.0.1").await;
    assert_eq!(outside.code(), "policy_ip");
    assert_eq!(
        h.read_from(&machine, "app", "db", "10.1.0.1").await.status,
        StatusCode::OK
    );
    assert_eq!(h.last_audit().actor, machine.id);
}

#[tokio::test]
async fn an_agent_never_loosens_an_admins_policy_nor_sets_a_canary() {
    let (h, agent) = setup(&["policies"]).await;
    let admin_policy = json!({
        "timezone": "Europe/Berlin",
        "window": {"days": [], "start": "08:00", "end": "18:00"},
        "ip_allowlist": ["10.1.0.0/16"],
        "daily_read_cap": 5,
        "cosign": true
    });
    let r = h
        .admin(
            "PUT",
            "/v1/projects/app/secrets/db/policy",
            Some(admin_policy.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    let with = |key: &str, value: Value| {
        let mut p = admin_policy.clone();
        match value {
            Value::Null => {
                p.as_object_mut().unwrap().remove(key);
            }
            v => p[key] = v,
        }
        p
    };
    let loosening = [
        ("the co-sign requirement", with("cosign", json!(false))),
        ("the daily read cap", with("daily_read_cap", json!(6))),
        ("the daily read cap", with("daily_read_cap", Value::Null)),
        (
            "the IP allowlist",
            with("ip_allowlist", json!(["10.0.0.0/8"])),
        ),
        (
            "the IP allowlist",
            with("ip_allowlist", json!(["10.1.0.0/16", "192.168.0.0/24"])),
        ),
        ("the IP allowlist", with("ip_allowlist", json!([]))),
        (
            "the time window",
            with(
                "window",
                json!({"days": [], "start": "07:00", "end": "18:00"}),
            ),
        ),
        ("the time window", with("window", Value::Null)),
        ("the time zone", with("timezone", json!("America/New_York"))),
        ("the canary", with("canary", json!(true))),
        ("the policy", json!({})),
    ];
    for (what, policy) in loosening {
        let r = set_policy(&h, &agent, "db", policy.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{what}: {policy}"
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("only tighten"), "{message}");
    }
    // The stored policy is still the admin's, and every refusal is audited.
    let meta = h.admin("GET", "/v1/projects/app/secrets/db", None).await;
    assert_eq!(
        meta.body["policy"]["cosign"],
        json!(true),
        "{:?}",
        meta.body
    );
    assert_eq!(meta.body["policy"]["daily_read_cap"], json!(5));
    assert_eq!(h.denials("forbidden").len(), 11);
    // Tightening the admin's policy is fine.
    let r = set_policy(&h, &agent, "db", with("daily_read_cap", json!(4))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn an_agent_sets_no_policy_on_a_secret_it_does_not_hold_whole() {
    let (h, agent) = setup(&["policies"]).await;
    h.write("app", "other", "s3cret-other").await;
    for secret in ["api", "other"] {
        let r = set_policy(&h, &agent, secret, json!({"daily_read_cap": 1})).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::FORBIDDEN, "not_delegated"),
            "{secret}"
        );
    }
    assert_eq!(h.denials("not_delegated").len(), 2);
    // A canary is refused even on a secret held whole, with no policy yet.
    let r = set_policy(&h, &agent, "db", json!({"canary": true})).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "forbidden"));
}
