//! `signet rotation create | list | trigger | history` against a real
//! `signet-vault dev` (the rotation itself: rotator/tests/).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{ADMIN, Setup};

#[test]
fn rotation_commands_create_list_trigger_and_show_history() {
    let s = Setup::new();
    s.ok(Some(ADMIN), &["project", "create", "payments"]);
    for (name, user) in [("db", "app_first"), ("db-admin", "signet_admin")] {
        let path = format!("payments/{name}");
        let user = format!("username={user}");
        s.ok(
            Some(ADMIN),
            &[
                "secret",
                "set",
                &path,
                "--field",
                &user,
                "--field",
                "password=pw-1234567890",
            ],
        );
    }
    let agent = s.machine("payments", &[], "rotator.json");

    let created = s.json(
        ADMIN,
        &[
            "rotation",
            "create",
            "payments/db",
            "--provider",
            "postgresql",
            "--host",
            "db.invalid",
            "--port",
            "5432",
            "--role",
            "app",
            "--database",
            "app",
            "--admin-secret",
            "db-admin",
            "--agent",
            &agent,
            "--every",
            "1h",
            "--length",
            "20",
            "--alphabet",
            "symbols",
            "--grace",
            "30s",
        ],
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["provider"], "postgresql");
    assert_eq!(created["interval_seconds"], 3600);
    assert_eq!(created["grace_seconds"], 30);
    assert_eq!(created["policy"]["length"], 20);
    assert_eq!(created["policy"]["alphabet"], "symbols");

    let list = s.ok(Some(ADMIN), &["rotation", "list"]);
    assert!(list.contains(&id) && list.contains("payments/db") && list.contains(&agent));

    let job = s.json(ADMIN, &["rotation", "trigger", &id]);
    assert_eq!(job["state"], "pending");
    s.refused(ADMIN, &["rotation", "trigger", &id], 409, "conflict");

    let history = s.json(ADMIN, &["rotation", "history", &id]);
    let jobs = history["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["id"], job["id"]);
    assert_eq!(jobs[0]["state"], "pending");
    let text = s.ok(Some(ADMIN), &["rotation", "history", &id]);
    assert!(text.contains("pending") && text.contains("v1 -> -"));

    // Admins only: the agent machine is refused on the management routes.
    s.refused("rotator.json", &["rotation", "list"], 403, "forbidden");
}
