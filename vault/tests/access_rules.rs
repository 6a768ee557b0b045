//! Issue 3: enrollment constraints, machine lifecycle, access policies,
//! co-sign, canaries, rollback and audit retention, each rule shown holding
//! and each denial shown audited with its reason. Real SQLite, the real
//! router, a manual clock instead of sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use axum::http::StatusCode;
use kit::{Harness, LOCAL_IP, START};
use serde_json::json;
use signet_vault::store::Cosign;
use signet_vault::vault::Settings;

const DAY: i64 = 86_400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_use_exactly_the_tokens_uses() {
    let h = Harness::new();
    h.project("app").await;
    let token = h
        .token(json!({"project": "app", "max_uses": 5, "ttl_seconds": 3600, "machine_lifetime_seconds": 3600}))
        .await;
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (h, token) = (h.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            h.enroll(&token, &format!("host-{i}"), json!({}), LOCAL_IP)
                .await
                .0
        }));
    }
    let mut created = 0;
    let mut exhausted = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::CREATED => created += 1,
            StatusCode::FORBIDDEN if reply.code() == "token_exhausted" => exhausted += 1,
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert_eq!((created, exhausted), (5, 15));
    let machines = h.admin("GET", "/v1/machines", None).await;
    assert_eq!(machines.body["machines"].as_array().unwrap().len(), 5);
    assert_eq!(h.denials("token_exhausted").len(), 15);
}

#[tokio::test]
async fn enrollment_checks_hostname_source_and_names_the_machine() {
    let h = Harness::new();
    h.project("app").await;
    let token = h
        .token(json!({
            "project": "app", "ttl_seconds": 3600, "machine_lifetime_seconds": 3600,
            "constraints": {
                "hostname_regex": "web-[0-9]+",
                "source_cidrs": ["10.0.0.0/8"],
                "name_template": "{namespace}-{pod}-{token}"
            },
            "name": "tok"
        }))
        .await;
    // The regex is anchored: a suffix does not sneak through.
    let (reply, _) = h
        .enroll(&token, "web-1.evil.example", json!({}), LOCAL_IP)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "hostname_not_allowed")
    );
    let (reply, _) = h.enroll(&token, "web-1", json!({}), "192.168.1.1").await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "source_not_allowed")
    );
    let meta = json!({"k8s.namespace": "prod", "k8s.pod.name": "api-7"});
    let (reply, machine) = h.enroll(&token, "web-1", meta, LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let machine = machine.unwrap();
    let list = h.admin("GET", "/v1/machines", None).await;
    let listed = &list.body["machines"][0];
    assert_eq!(listed["id"], machine.id.as_str());
    assert_eq!(listed["name"], "prod-api-7-tok");
    assert_eq!(h.denials("hostname_not_allowed").len(), 1);
    assert_eq!(h.denials("source_not_allowed").len(), 1);
    // Bad constraints are refused at creation.
    for constraints in [
        json!({"hostname_regex": "(unclosed"}),
        json!({"source_cidrs": ["10.0.0.0/40"]}),
        json!({"name_template": "{nope}"}),
    ] {
        let reply = h
            .admin("POST", "/v1/enrollment-tokens", Some(json!({
                "project": "app", "ttl_seconds": 60, "machine_lifetime_seconds": 60, "constraints": constraints
            })))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{constraints}");
    }
}

/// A pattern that closes the anchoring group itself (`a)|(.*`) would match
/// every hostname once wrapped; it does not compile alone and is refused.
#[tokio::test]
async fn a_hostname_regex_cannot_escape_its_anchors() {
    let h = Harness::new();
    h.project("app").await;
    for pattern in ["a)|(.*", "web-1)|(?:.*", "x)|.*|(y"] {
        let reply = h
            .admin(
                "POST",
                "/v1/enrollment-tokens",
                Some(json!({
                    "project": "app", "ttl_seconds": 60, "machine_lifetime_seconds": 60,
                    "constraints": {"hostname_regex": pattern}
                })),
            )
            .await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{pattern}: {:?}",
            reply.body
        );
    }
    // An alternation of its own stays anchored as a whole.
    let token = h
        .token(json!({
            "project": "app", "ttl_seconds": 3600, "machine_lifetime_seconds": 3600,
            "constraints": {"hostname_regex": "web|db"}
        }))
        .await;
    let (reply, _) = h
        .enroll(&token, "web.evil.example", json!({}), LOCAL_IP)
        .await;
    assert_eq!(
        (reply.status, reply.code()),
        (StatusCode::FORBIDDEN, "hostname_not_allowed")
    );
    let (reply, _) = h.enroll(&token, "db", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

#[tokio::test]
async fn bootstrap_tokens_are_single_use_and_restrict_their_machine() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "s3cret").await;
    // Machine lifetime must be 1 h to 12 months.
    let short = h
        .admin(
            "POST",
            "/v1/enrollment-tokens",
            Some(json!({
                "project": "app", "ttl_seconds": 600, "machine_lifetime_seconds": 600,
                "constraints": {"bootstrap": true}
            })),
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    let token = h
        .token(json!({
            "project": "app", "ttl_seconds": 600, "machine_lifetime_seconds": 7200,
            "grants": [{"secret": "db"}],
            "constraints": {
                "bootstrap": true,
                "machine_ip_allowlist": ["10.1.0.0/16"],
                "machine_timezone": "America/New_York",
                "machine_window": {"days": ["mon","tue","wed","thu","fri"], "start": "06:00", "end": "07:30"}
            }
        }))
        .await;
    let (reply, machine) = h.enroll(&token, "boot", json!({}), LOCAL_IP).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let machine = machine.unwrap();
    let (again, _) = h.enroll(&token, "boot-2", json!({}), LOCAL_IP).await;
    assert_eq!(again.code(), "token_exhausted", "single use");
    // START is Monday 10:00 UTC = 06:00 in New York (EDT): inside the window.
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
    let outside = h.read_from(&machine, "app", "db", "10.2.0.1").await;
    assert_eq!(
        (outside.status, outside.code()),
        (StatusCode::FORBIDDEN, "policy_ip")
    );
    h.clock.advance(2 * 3600 - 60); // 07:59 New York, still inside the machine's lifetime.
    let late = h.read(&machine, "app", "db").await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::FORBIDDEN, "policy_time_window")
    );
    assert_eq!(h.denials("policy_ip").len(), 1);
    assert_eq!(h.denials("policy_time_window").len(), 1);
}

#[tokio::test]
async fn machines_expire_are_extended_disabled_and_swept() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = h.machine("app", &["db"]).await; // lives one day
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);

    // Disable and re-enable.
    let disabled = h
        .admin(
            "POST",
            &format!("/v1/machines/{}/disable", machine.id),
            None,
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    let refused = h.read(&machine, "app", "db").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::UNAUTHORIZED, "identity_disabled")
    );
    h.admin("POST", &format!("/v1/machines/{}/enable", machine.id), None)
        .await;
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);

    // Expiry soft-disables.
    h.clock.advance(DAY);
    let expired = h.read(&machine, "app", "db").await;
    assert_eq!(expired.code(), "identity_disabled");
    // Refused before the signature is checked: counted, not one row each.
    assert_eq!(h.denied_requests("identity_disabled"), 2);

    // An extension brings it back, audited with the previous expiry.
    let extended = h
        .admin(
            "POST",
            &format!("/v1/machines/{}/extend", machine.id),
            Some(json!({"lifetime_seconds": 3600})),
        )
        .await;
    assert_eq!(extended.status, StatusCode::OK, "{:?}", extended.body);
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
    let audit = h.audit();
    let entry = audit.iter().find(|e| e.action == "machine.extend").unwrap();
    let previous = signet_vault::clock::rfc3339(START + DAY);
    assert!(
        entry.target.contains(&format!("expires_at {previous} ->")),
        "{}",
        entry.target
    );

    // 30 days after expiry the sweeper deletes it, not a second earlier.
    let expiry = START + DAY + 3600;
    let report = h.vault.sweep(expiry + 30 * DAY - 1).unwrap();
    assert!(report.machines_deleted.is_empty());
    let report = h.vault.sweep(expiry + 30 * DAY).unwrap();
    assert_eq!(report.machines_deleted, vec![machine.id.clone()]);
    let machines = h.admin("GET", "/v1/machines", None).await;
    assert!(machines.body["machines"].as_array().unwrap().is_empty());
    assert!(
        h.audit()
            .iter()
            .any(|e| e.action == "machine.sweep" && e.target.contains(&machine.id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daily_cap_is_exact_under_concurrency() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = std::sync::Arc::new(h.machine("app", &["db"]).await);
    let reply = h
        .policy(
            "app",
            "db",
            json!({"daily_read_cap": 10, "timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (h, m) = (h.clone(), machine.clone());
        tasks.push(tokio::spawn(async move { h.read(&m, "app", "db").await }));
    }
    let mut ok = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::FORBIDDEN => assert_eq!(reply.code(), "policy_daily_cap"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(h.denials("policy_daily_cap").len(), 40);
    // START is 19:00 in Tokyo; five hours later it is the next day there.
    h.clock.advance(5 * 3600);
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
}

#[tokio::test]
async fn time_window_and_ip_allowlist_stack() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = h.machine("app", &["db"]).await;
    let reply = h
        .policy("app", "db", json!({
            "timezone": "Europe/Paris",
            "window": {"days": ["mon","tue","wed","thu","fri"], "start": "09:00", "end": "17:00"},
            "ip_allowlist": ["10.1.0.0/16"]
        }))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    // Monday 12:00 in Paris, from inside the allowlist.
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
    let ip = h.read_from(&machine, "app", "db", "10.9.9.9").await;
    assert_eq!((ip.status, ip.code()), (StatusCode::FORBIDDEN, "policy_ip"));
    // Monday 18:00 in Paris.
    h.clock.advance(6 * 3600);
    let late = h.read(&machine, "app", "db").await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::FORBIDDEN, "policy_time_window")
    );
    // Saturday noon (the machine's one-day lifetime extended first).
    let extend = format!("/v1/machines/{}/extend", machine.id);
    h.admin("POST", &extend, Some(json!({"lifetime_seconds": 10 * DAY})))
        .await;
    h.clock.set(START + 5 * DAY);
    assert_eq!(
        h.read(&machine, "app", "db").await.code(),
        "policy_time_window"
    );
    assert_eq!(h.denials("policy_ip").len(), 1);
    assert_eq!(h.denials("policy_time_window").len(), 2);
    // Invalid policies are refused.
    for bad in [
        json!({"timezone": "Mars/Base"}),
        json!({"window": {"start": "9", "end": "17:00"}}),
        json!({"daily_read_cap": 0}),
        json!({"canary_cascade": true}),
    ] {
        assert_eq!(
            h.policy("app", "db", bad.clone()).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

/// The answer to a policy change is the secret as it is now: the policy
/// just set (a replaced one gone), none after an empty policy; reading the
/// secret's metadata afterwards shows the same.
#[tokio::test]
async fn a_policy_answer_shows_the_policy_now_in_force() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let capped = json!({"timezone": "Asia/Tokyo", "daily_read_cap": 3});
    let nightly = json!({
        "window": {"days": ["sat", "sun"], "start": "22:00", "end": "06:00"},
        "ip_allowlist": ["10.0.0.0/8"]
    });
    for policy in [&capped, &nightly] {
        let reply = h.policy("app", "db", policy.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(
            (&reply.body["name"], &reply.body["policy"]),
            (&json!("db"), policy),
            "{:?}",
            reply.body
        );
        let meta = h.admin("GET", "/v1/projects/app/secrets/db", None).await;
        assert_eq!(&meta.body["policy"], policy, "{:?}", meta.body);
    }
    let removed = h.policy("app", "db", json!({})).await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    assert!(removed.body.get("policy").is_none(), "{:?}", removed.body);
    let meta = h.admin("GET", "/v1/projects/app/secrets/db", None).await;
    assert!(meta.body.get("policy").is_none(), "{:?}", meta.body);
}

#[tokio::test]
async fn cosign_needs_a_different_admin_and_is_single_use() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = h.machine("app", &["db"]).await;
    let second = h.second_admin().await;
    h.policy("app", "db", json!({"cosign": true})).await;

    let refused = h.read(&machine, "app", "db").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "cosign_required")
    );

    // An admin asks on the machine's behalf; that admin cannot approve it.
    let request = h
        .admin(
            "POST",
            "/v1/cosign",
            Some(json!({"project": "app", "secret": "db", "machine_id": machine.id})),
        )
        .await;
    assert_eq!(request.status, StatusCode::CREATED, "{:?}", request.body);
    // A request waits an hour for its approval.
    assert_eq!(
        request.body["expires_at"],
        signet_vault::clock::rfc3339(h.vault.now() + 3600),
        "{:?}",
        request.body
    );
    let id = request.body["id"].as_str().unwrap().to_owned();
    let own = h
        .admin("POST", &format!("/v1/cosign/{id}/approve"), None)
        .await;
    assert_eq!(
        (own.status, own.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_eq!(
        h.read(&machine, "app", "db").await.code(),
        "cosign_required"
    );
    // Approved ten minutes after it was asked: the approval's 15 minutes
    // start now, not when the request was made.
    h.clock.advance(600);
    let approved = h
        .call(&second, "POST", &format!("/v1/cosign/{id}/approve"), None)
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{:?}", approved.body);
    // The answer says what was approved, by whom, and until when.
    assert_eq!(approved.body["id"], id.as_str());
    assert_eq!(
        (
            approved.body["project"].as_str(),
            approved.body["secret"].as_str()
        ),
        (Some("app"), Some("db"))
    );
    assert_eq!(approved.body["machine_id"], machine.id.as_str());
    assert_eq!(approved.body["requested_by"], request.body["requested_by"]);
    assert_eq!(approved.body["approved_by"], second.id.as_str());
    assert_ne!(approved.body["approved_by"], approved.body["requested_by"]);
    assert_eq!(approved.body["consumed"], false);
    assert_eq!(approved.body["created_at"], request.body["created_at"]);
    let approved_until = approved.body["expires_at"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .unwrap();
    assert_eq!(
        approved_until.as_second(),
        h.vault.now() + 15 * 60,
        "{:?}",
        approved.body
    );
    let twice = h
        .call(&second, "POST", &format!("/v1/cosign/{id}/approve"), None)
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);

    // One approval, one read.
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
    assert_eq!(
        h.read(&machine, "app", "db").await.code(),
        "cosign_required"
    );

    // The machine asks for itself; the approval expires after 15 minutes.
    let mine = h
        .call(
            &machine,
            "POST",
            "/v1/machine/cosign",
            Some(json!({"project": "app", "secret": "db"})),
        )
        .await;
    assert_eq!(mine.status, StatusCode::CREATED, "{:?}", mine.body);
    let id = mine.body["id"].as_str().unwrap();
    assert_eq!(
        h.admin("POST", &format!("/v1/cosign/{id}/approve"), None)
            .await
            .status,
        StatusCode::OK
    );
    h.clock.advance(15 * 60 + 1);
    assert_eq!(
        h.read(&machine, "app", "db").await.code(),
        "cosign_required"
    );
    // An approval still serves its read in its fifteenth minute.
    let last = h
        .call(
            &machine,
            "POST",
            "/v1/machine/cosign",
            Some(json!({"project": "app", "secret": "db"})),
        )
        .await;
    let id = last.body["id"].as_str().unwrap();
    let approve = format!("/v1/cosign/{id}/approve");
    assert_eq!(h.admin("POST", &approve, None).await.status, StatusCode::OK);
    h.clock.advance(15 * 60 - 1);
    assert_eq!(h.read(&machine, "app", "db").await.status, StatusCode::OK);
    assert_eq!(h.denials("cosign_required").len(), 4);
}

/// A co-sign request left unapproved for an hour can no longer be approved.
#[tokio::test]
async fn a_cosign_request_lapses_after_an_hour() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = h.machine("app", &["db"]).await;
    h.policy("app", "db", json!({"cosign": true})).await;
    let ask = || {
        h.call(
            &machine,
            "POST",
            "/v1/machine/cosign",
            Some(json!({"project": "app", "secret": "db"})),
        )
    };
    let (first, second) = (ask().await, ask().await);
    h.clock.advance(3600 - 1);
    let approve = |r: &kit::Reply| format!("/v1/cosign/{}/approve", r.body["id"].as_str().unwrap());
    assert_eq!(
        h.admin("POST", &approve(&first), None).await.status,
        StatusCode::OK
    );
    h.clock.advance(1);
    let late = h.admin("POST", &approve(&second), None).await;
    assert_eq!(
        (late.status, late.code()),
        (StatusCode::CONFLICT, "conflict"),
        "{:?}",
        late.body
    );
}

/// Two people for a co-signed read, whatever the path: the requester cannot
/// approve (denied and audited with the reason), and an approval by the
/// requester that is somehow on record (an older vault, a restored backup)
/// never serves a read.
#[tokio::test]
async fn a_cosign_is_never_approved_by_its_requester() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "v").await;
    let machine = h.machine("app", &["db"]).await;
    h.policy("app", "db", json!({"cosign": true})).await;

    let request = h
        .admin(
            "POST",
            "/v1/cosign",
            Some(json!({"project": "app", "secret": "db", "machine_id": machine.id})),
        )
        .await;
    assert_eq!(request.status, StatusCode::CREATED, "{:?}", request.body);
    let id = request.body["id"].as_str().unwrap().to_owned();
    let own = h
        .admin("POST", &format!("/v1/cosign/{id}/approve"), None)
        .await;
    assert_eq!(
        (own.status, own.code()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let row = h.last_audit();
    assert_eq!(
        (
            row.action.as_str(),
            row.outcome.as_str(),
            row.actor.as_str()
        ),
        ("cosign.approve", "deny", h.admin.id.as_str())
    );
    assert!(row.target.contains(&id), "{row:?}");
    assert!(
        row.reason.starts_with("forbidden:") && row.reason.contains("different admin"),
        "{row:?}"
    );
    assert_eq!(
        h.read(&machine, "app", "db").await.code(),
        "cosign_required"
    );

    // A self-approval already on record.
    let admin_id = h.admin.id.clone();
    let secret_id = h
        .vault
        .with_tx(|tx, _| {
            let project = tx.project_by_name("app")?.unwrap();
            Ok(tx.secret_by_name(&project.id, "db")?.unwrap().id)
        })
        .unwrap();
    let machine_id = machine.id.clone();
    h.vault
        .with_tx(move |tx, now| {
            Ok(tx.insert_cosign(&Cosign {
                id: "cs_selfapproved".into(),
                secret_id,
                machine_id,
                requested_by: admin_id.clone(),
                created_at: now,
                expires_at: now + 900,
                approved_by: Some(admin_id),
                approved_at: Some(now),
                consumed_at: None,
            })?)
        })
        .unwrap();
    let refused = h.read(&machine, "app", "db").await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "cosign_required")
    );
    assert_eq!(h.denials("cosign_required").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_read_locks_the_project_before_any_other_read() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "real").await;
    h.write("app", "bait", "fake").await;
    h.policy("app", "bait", json!({"canary": true})).await;
    let thief = std::sync::Arc::new(h.machine("app", &["db", "bait"]).await);
    let honest = std::sync::Arc::new(h.machine("app", &["db"]).await);
    assert_eq!(h.read(&honest, "app", "db").await.status, StatusCode::OK);

    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for i in 0..21 {
        let h = h.clone();
        let (m, secret) = if i == 10 {
            (thief.clone(), "bait")
        } else {
            (honest.clone(), "db")
        };
        tasks.push(tokio::spawn(async move {
            (secret, h.read(&m, "app", secret).await)
        }));
    }
    for task in tasks {
        let (secret, reply) = task.await.unwrap();
        if secret == "bait" {
            assert_eq!(
                (reply.status, reply.code()),
                (StatusCode::LOCKED, "project_locked")
            );
            assert!(reply.body.get("value").is_none());
        } else {
            assert!(
                matches!(reply.status, StatusCode::OK | StatusCode::LOCKED),
                "{:?}",
                reply.body
            );
        }
    }
    // Every read allowed in the project was committed before the lock, and
    // every read after it was refused.
    let audit = h.audit();
    let lock = audit
        .iter()
        .find(|e| e.action == "project.lock")
        .expect("lock audited");
    for e in audit
        .iter()
        .filter(|e| e.action == "secret.read" && e.target.starts_with("secret:app/"))
    {
        if e.outcome == "allow" {
            assert!(
                e.seq < lock.seq,
                "read {} allowed after the lock {}",
                e.seq,
                lock.seq
            );
        } else {
            assert!(e.seq > lock.seq);
            assert!(e.reason.starts_with("project_locked:"), "{}", e.reason);
        }
    }
    assert_eq!(h.read(&honest, "app", "db").await.code(), "project_locked");
    let projects = h.admin("GET", "/v1/projects", None).await;
    assert!(
        projects.body["projects"][0]["locked"]
            .as_str()
            .unwrap()
            .contains("canary app/bait")
    );

    let unlocked = h.admin("POST", "/v1/projects/app/unlock", None).await;
    assert_eq!(unlocked.status, StatusCode::OK, "{:?}", unlocked.body);
    // The answer is the project as it is now: same id and name, unlocked.
    assert_eq!(unlocked.body["name"], "app");
    assert_eq!(unlocked.body["id"], projects.body["projects"][0]["id"]);
    assert_eq!(
        unlocked.body["created_at"],
        projects.body["projects"][0]["created_at"]
    );
    assert!(unlocked.body["locked"].is_null(), "{:?}", unlocked.body);
    assert_eq!(h.read(&honest, "app", "db").await.status, StatusCode::OK);
    assert_eq!(
        h.admin("POST", "/v1/projects/app/unlock", None)
            .await
            .status,
        StatusCode::CONFLICT
    );
}

#[tokio::test]
async fn canary_cascade_locks_every_project_the_machine_reaches() {
    let h = Harness::new();
    for p in ["a", "b", "c"] {
        h.project(p).await;
        h.write(p, "s", "v").await;
    }
    h.policy("a", "s", json!({"canary": true, "canary_cascade": true}))
        .await;
    let machine = h.machine("a", &["s"]).await;
    let grant = h
        .admin(
            "POST",
            "/v1/grants",
            Some(json!({"machine_id": machine.id, "project": "b", "secret": "s"})),
        )
        .await;
    assert_eq!(grant.status, StatusCode::CREATED);
    let other = h.machine("c", &["s"]).await;
    assert_eq!(h.read(&machine, "a", "s").await.code(), "project_locked");
    assert_eq!(h.read(&machine, "b", "s").await.code(), "project_locked");
    assert_eq!(
        h.read(&other, "c", "s").await.status,
        StatusCode::OK,
        "unreachable project stays open"
    );
}

#[tokio::test]
async fn rollback_makes_an_older_version_live() {
    let h = Harness::new();
    h.project("app").await;
    h.write("app", "db", "one").await;
    h.write("app", "db", "two").await;
    let machine = h.machine("app", &["db"]).await;
    assert_eq!(h.read(&machine, "app", "db").await.body["value"], "two");
    let back = h
        .admin(
            "POST",
            "/v1/projects/app/secrets/db/rollback",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(back.status, StatusCode::OK, "{:?}", back.body);
    assert_eq!(back.body["live_version"], 1);
    let read = h.read(&machine, "app", "db").await;
    assert_eq!(
        (read.body["value"].as_str(), read.body["version"].as_u64()),
        (Some("one"), Some(1))
    );
    let missing = h
        .admin(
            "POST",
            "/v1/projects/app/secrets/db/rollback",
            Some(json!({"version": 9})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        h.audit()
            .iter()
            .any(|e| e.action == "secret.rollback" && e.target.contains("live version 2 -> 1"))
    );
}

#[tokio::test]
async fn audit_retention_keeps_the_chain_verifiable() {
    let h = Harness::with_settings(Settings {
        audit_retention_days: Some(1),
        ..Settings::default()
    });
    h.project("app").await;
    h.write("app", "db", "v").await;
    let before = h.audit();
    h.clock.advance(2 * DAY);
    h.write("app", "db", "w").await;
    h.write("app", "db", "x").await;
    let report = h.vault.sweep(h.clock_now()).unwrap();
    assert_eq!(report.audit_pruned_to, Some(before.last().unwrap().seq));

    let page = h.admin("GET", "/v1/audit?limit=5000", None).await;
    let anchor = page.body["anchor"].clone();
    assert_eq!(anchor["seq"], before.last().unwrap().seq);
    let entries: Vec<signet_client::api::AuditEntry> =
        serde_json::from_value(page.body["entries"].clone()).unwrap();
    assert_eq!(entries[0].seq, before.last().unwrap().seq + 1);
    signet_client::audit::verify_links(&entries, anchor["hash"].as_str()).unwrap();
    assert!(
        signet_client::audit::verify_links(&entries, Some(signet_client::audit::GENESIS)).is_err()
    );
    assert_eq!(h.verify_audit().broken, None);
    signet_vault::cli::audit_verify(
        &signet_vault::cli::DataArgs {
            data_dir: h.dir.path().to_owned(),
            database_url: kit::postgres_url()
                .map(|url| kit::schema_url(&url, h.dir.path()).parse().unwrap()),
            database_ca_file: None,
        },
        &signet_vault::crypto::RootKey::parse(h.root_hex.as_bytes()).unwrap(),
    )
    .unwrap();
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}

impl ClockNow for Harness {
    fn clock_now(&self) -> i64 {
        self.vault.now()
    }
}
