//! The access-model subcommands of `signet` (machine lifecycle, policies,
//! canaries, co-sign, webhooks, rollback, token constraints), each driven
//! through the real `signet` binary against a real `signet-vault dev`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use serde_json::Value;
use support::{ADMIN, LIMIT, Setup, output_within, vault_binary};

#[test]
fn rollback_makes_version_one_live_again() {
    let s = Setup::new();
    s.project("app", &[("db", "one")]);
    let second = s.json(ADMIN, &["secret", "set", "app/db", "--value", "two"]);
    assert_eq!(second["live_version"], 2);
    s.machine("app", &["db"], "m.json");
    assert_eq!(s.read("m.json", "app/db"), ("two".to_owned(), 2));

    let back = s.json(ADMIN, &["rollback", "app/db", "--version", "1"]);
    assert_eq!(back["live_version"], 1, "{back}");
    assert_eq!(s.read("m.json", "app/db"), ("one".to_owned(), 1));
    // The text output too.
    let text = s.ok(Some(ADMIN), &["rollback", "app/db", "--version", "2"]);
    assert_eq!(text.trim(), "app/db is live at version 2");
    assert_eq!(s.read("m.json", "app/db"), ("two".to_owned(), 2));

    s.refused(
        ADMIN,
        &["rollback", "app/db", "--version", "9"],
        404,
        "not_found",
    );
    // Machines cannot roll back.
    let output = s.signet(Some("m.json"), &["rollback", "app/db", "--version", "1"]);
    assert!(!output.status.success());
    assert_eq!(s.read("m.json", "app/db"), ("two".to_owned(), 2));
}

#[test]
fn machines_are_disabled_enabled_and_extended() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    let id = s.machine("app", &["db"], "m.json");
    assert_eq!(s.read("m.json", "app/db").0, "v");

    let disabled = s.json(ADMIN, &["machine", "disable", &id]);
    assert_eq!(
        (&disabled["id"], &disabled["disabled"]),
        (&id.clone().into(), &true.into())
    );
    assert_eq!(s.machine_view(&id)["disabled"], true);
    s.refused("m.json", &["read", "app/db"], 401, "identity_disabled");

    let enabled = s.json(ADMIN, &["machine", "enable", &id]);
    assert_eq!(enabled["disabled"], false, "{enabled}");
    assert_eq!(s.machine_view(&id)["disabled"], false);
    assert_eq!(s.read("m.json", "app/db").0, "v");

    let before = s.machine_view(&id)["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let extended = s.json(ADMIN, &["machine", "extend", &id, "--lifetime", "72h"]);
    let after = s.machine_view(&id)["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(extended["expires_at"], after.as_str());
    // Both are RFC 3339 UTC timestamps: they order as strings.
    assert!(after > before, "{before} -> {after}");
    assert_eq!(s.read("m.json", "app/db").0, "v");

    s.refused(
        ADMIN,
        &["machine", "disable", "m_nosuchmachine"],
        404,
        "not_found",
    );
}

#[test]
fn a_daily_cap_policy_is_enforced_until_cleared() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    s.machine("app", &["db"], "m.json");

    let set = s.json(ADMIN, &["policy", "set", "app/db", "--daily-cap", "1"]);
    assert_eq!(set["policy"]["daily_read_cap"], 1, "{set}");
    assert_eq!(s.read("m.json", "app/db").0, "v");
    s.refused("m.json", &["read", "app/db"], 403, "policy_daily_cap");

    let cleared = s.json(ADMIN, &["policy", "clear", "app/db"]);
    assert!(cleared.get("policy").is_none(), "{cleared}");
    assert_eq!(s.read("m.json", "app/db").0, "v");
    assert_eq!(s.read("m.json", "app/db").0, "v");

    // An invalid policy is refused.
    s.refused(
        ADMIN,
        &["policy", "set", "app/db", "--timezone", "Mars/Base"],
        400,
        "invalid_request",
    );
}

#[test]
fn a_canary_read_locks_the_project_until_unlocked() {
    let s = Setup::new();
    s.project("app", &[("db", "real"), ("bait", "fake")]);
    s.machine("app", &["db", "bait"], "m.json");
    assert_eq!(s.read("m.json", "app/db").0, "real");

    let set = s.json(ADMIN, &["policy", "set", "app/bait", "--canary"]);
    assert_eq!(set["policy"]["canary"], true, "{set}");
    let stderr = s.refused("m.json", &["read", "app/bait"], 423, "project_locked");
    assert!(!stderr.contains("fake"), "{stderr}");
    s.refused("m.json", &["read", "app/db"], 423, "project_locked");
    let projects = s.json(ADMIN, &["project", "list"]);
    let locked = projects["projects"][0]["locked"].as_str().unwrap();
    assert!(locked.contains("app/bait"), "{locked}");

    let unlocked = s.json(ADMIN, &["unlock", "app"]);
    assert_eq!(unlocked["name"], "app");
    assert!(unlocked.get("locked").is_none(), "{unlocked}");
    assert_eq!(s.read("m.json", "app/db").0, "real");
    s.refused(ADMIN, &["unlock", "app"], 409, "conflict");
}

#[test]
fn webhooks_to_internal_destinations_need_an_allowlist() {
    let s = Setup::new();
    std::fs::write(
        s.work.path().join("hook.secret"),
        "a-shared-webhook-secret\n",
    )
    .unwrap();
    let create = [
        "webhook",
        "create",
        "--url",
        "http://127.0.0.1:9/hook",
        "--event",
        "canary.tripped",
        "--secret-file",
        "hook.secret",
    ];
    let stderr = s.refused(ADMIN, &create, 400, "destination_not_allowed");
    assert!(stderr.contains("--webhook-allow-cidr"), "{stderr}");
    let list = s.json(ADMIN, &["webhook", "list"]);
    assert_eq!(list["webhooks"], serde_json::json!([]));

    // A vault that allowlists loopback accepts it; list and delete.
    let s = Setup::with(&["--webhook-allow-cidr", "127.0.0.0/8"]);
    std::fs::write(
        s.work.path().join("hook.secret"),
        "a-shared-webhook-secret\n",
    )
    .unwrap();
    let mut args = vec!["--json"];
    args.extend(create);
    args.extend(["--event", "rotation"]);
    let view: Value = serde_json::from_str(&s.ok(Some(ADMIN), &args)).unwrap();
    let id = view["id"].as_str().unwrap().to_owned();
    assert_eq!(view["url"], "http://127.0.0.1:9/hook");
    assert_eq!(
        view["events"],
        serde_json::json!(["canary.tripped", "rotation"])
    );
    let list = s.json(ADMIN, &["webhook", "list"]);
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    let text = s.ok(Some(ADMIN), &["webhook", "list"]);
    assert!(
        text.contains(&id) && text.contains("canary.tripped,rotation"),
        "{text}"
    );

    let deleted = s.json(ADMIN, &["webhook", "delete", &id]);
    assert_eq!(deleted["deleted"], id.as_str());
    let list = s.json(ADMIN, &["webhook", "list"]);
    assert_eq!(list["webhooks"], serde_json::json!([]));
    s.refused(ADMIN, &["webhook", "delete", &id], 404, "not_found");
}

#[test]
fn cosign_needs_another_admin_and_buys_one_read() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);
    let machine = s.machine("app", &["db"], "m.json");

    // A second admin, from a bootstrap token minted on the data directory.
    let output = output_within(
        {
            let mut command = Command::new(vault_binary());
            command
                .arg("bootstrap-token")
                .arg("--data-dir")
                .arg(&s.data);
            command
        },
        LIMIT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let bob = s.json(
        ADMIN,
        &[
            "admin", "enroll", "--token", &token, "--out", "bob.json", "--name", "bob",
        ],
    );
    assert_eq!(bob["name"], "bob");
    const BOB: &str = "bob.json";

    let set = s.json(ADMIN, &["policy", "set", "app/db", "--cosign"]);
    assert_eq!(set["policy"]["cosign"], true, "{set}");
    s.refused("m.json", &["read", "app/db"], 403, "cosign_required");

    // The machine asks for itself; another admin approves.
    let request = s.json("m.json", &["cosign", "request", "app/db"]);
    let id = request["id"].as_str().unwrap().to_owned();
    assert_eq!(request["machine_id"], machine.as_str());
    assert!(request.get("approved_by").is_none(), "{request}");
    let open = s.json(ADMIN, &["cosign", "list"]);
    assert!(
        open["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str() && r.get("approved_by").is_none()),
        "{open}"
    );
    s.refused("m.json", &["read", "app/db"], 403, "cosign_required");
    let approved = s.json(BOB, &["cosign", "approve", &id]);
    assert_eq!(approved["approved_by"], bob["admin_id"], "{approved}");
    s.refused(BOB, &["cosign", "approve", &id], 409, "conflict");

    // One approval, one read.
    assert_eq!(s.read("m.json", "app/db").0, "v");
    s.refused("m.json", &["read", "app/db"], 403, "cosign_required");

    // An admin asks on the machine's behalf and cannot approve it alone.
    let request = s.json(
        ADMIN,
        &["cosign", "request", "app/db", "--machine", &machine],
    );
    let id = request["id"].as_str().unwrap().to_owned();
    s.refused(ADMIN, &["cosign", "approve", &id], 403, "forbidden");
    s.refused("m.json", &["read", "app/db"], 403, "cosign_required");
    let text = s.ok(Some(BOB), &["cosign", "approve", &id]);
    assert!(text.starts_with(&format!("approved {id};")), "{text}");
    assert_eq!(s.read("m.json", "app/db").0, "v");
    s.refused("m.json", &["read", "app/db"], 403, "cosign_required");
}

/// A one-hour read window that does not contain the current UTC time.
fn window_excluding_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hour = now % 86_400 / 3600;
    if hour < 12 {
        "*@18:00-19:00".to_owned()
    } else {
        "*@03:00-04:00".to_owned()
    }
}

#[test]
fn token_constraints_restrict_enrollment_and_the_machine() {
    let s = Setup::new();
    s.project("app", &[("db", "v")]);

    // Hostname regex, name template, and an IP allowlist for the machine.
    let created = s.json(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--name",
            "tok",
            "--grant",
            "db",
            "--hostname-regex",
            "web-[0-9]+",
            "--name-template",
            "{hostname}-{token}",
            "--machine-allow-cidr",
            "10.0.0.0/8",
        ],
    );
    let constraints = &created["constraints"];
    assert_eq!(constraints["hostname_regex"], "web-[0-9]+", "{created}");
    assert_eq!(constraints["name_template"], "{hostname}-{token}");
    assert_eq!(
        constraints["machine_ip_allowlist"],
        serde_json::json!(["10.0.0.0/8"])
    );
    let token = created["token"].as_str().unwrap();
    let output = s.signet(
        None,
        &[
            "enroll",
            "--token",
            token,
            "--hostname",
            "web-1.evil.example",
            "--out",
            "evil.json",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("signet: vault refused the request (403, hostname_not_allowed)"),
        "{stderr}"
    );
    assert!(!s.work.path().join("evil.json").exists());
    let web = s.enroll(token, "web-1", "web.json");
    let id = web["machine_id"].as_str().unwrap();
    assert_eq!(s.machine_view(id)["name"], "web-1-tok");
    // The machine calls from 127.0.0.1, outside its allowlist.
    s.refused("web.json", &["read", "app/db"], 403, "policy_ip");

    // A country allowlist needs the vault's country database, which this
    // vault was started without: refused at creation, saying what to do.
    let output = s.signet(
        Some(ADMIN),
        &[
            "token",
            "create",
            "--project",
            "app",
            "--name",
            "tok-countries",
            "--grant",
            "db",
            "--machine-allow-country",
            "DE,AT",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("signet: vault refused the request (400, invalid_request)")
            && stderr.contains("--geoip-db"),
        "{stderr}"
    );

    // Enrollment only from a source CIDR.
    let created = s.json(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--grant",
            "db",
            "--source-cidr",
            "10.0.0.0/8",
        ],
    );
    let output = s.signet(
        None,
        &[
            "enroll",
            "--token",
            created["token"].as_str().unwrap(),
            "--out",
            "far.json",
        ],
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("signet: vault refused the request (403, source_not_allowed)"),
        "{stderr}"
    );

    // A bootstrap token: lifetime bounds, single use, a machine read window.
    s.refused(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--bootstrap",
            "--machine-lifetime",
            "10m",
        ],
        400,
        "invalid_request",
    );
    let window = window_excluding_now();
    let created = s.json(
        ADMIN,
        &[
            "token",
            "create",
            "--project",
            "app",
            "--grant",
            "db",
            "--bootstrap",
            "--machine-lifetime",
            "2h",
            "--machine-window",
            &window,
            "--machine-timezone",
            "UTC",
        ],
    );
    let constraints = &created["constraints"];
    assert_eq!(constraints["bootstrap"], true, "{created}");
    assert_eq!(constraints["machine_timezone"], "UTC");
    assert_eq!(
        constraints["machine_window"]["start"],
        &window[2..7],
        "{created}"
    );
    let token = created["token"].as_str().unwrap();
    s.enroll(token, "boot-1", "boot.json");
    let output = s.signet(None, &["enroll", "--token", token, "--out", "boot-2.json"]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("signet: vault refused the request (403, token_exhausted)"),
        "{stderr}"
    );
    s.refused("boot.json", &["read", "app/db"], 403, "policy_time_window");

    // A malformed window never reaches the vault.
    let output = s.signet(
        Some(ADMIN),
        &[
            "token",
            "create",
            "--project",
            "app",
            "--machine-window",
            "9to5",
        ],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8(output.stderr)
            .unwrap()
            .contains("DAYS@HH:MM-HH:MM")
    );
}

/// A bootstrap token minted on the vault's data directory.
fn mint_bootstrap_token(s: &Setup) -> String {
    let mut command = Command::new(vault_binary());
    command
        .arg("bootstrap-token")
        .arg("--data-dir")
        .arg(&s.data);
    let output = output_within(command, LIMIT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `admin enroll` takes the token from a file or standard input, so it
/// never has to be on a command line (where `ps` shows it to every user).
#[test]
fn admin_enroll_reads_the_token_from_a_file_or_standard_input() {
    use std::io::Write as _;
    let s = Setup::new();

    let file = s.work.path().join("token");
    std::fs::write(&file, format!("{}\n", mint_bootstrap_token(&s))).unwrap();
    let carol = s.json(
        ADMIN,
        &[
            "admin",
            "enroll",
            "--token-file",
            file.to_str().unwrap(),
            "--out",
            "carol.json",
            "--name",
            "carol",
        ],
    );
    assert_eq!(carol["name"], "carol", "{carol}");

    let token = mint_bootstrap_token(&s);
    let mut child = Command::new(support::CLI)
        .args([
            "--json",
            "admin",
            "enroll",
            "--token-stdin",
            "--out",
            "dave.json",
            "--name",
            "dave",
        ])
        .current_dir(s.work.path())
        .env_clear()
        .env("SIGNET_VAULT", &s.address)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dave: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(dave["name"], "dave", "{dave}");
    // Each new admin signs with its own file.
    for identity in ["carol.json", "dave.json"] {
        s.json(identity, &["project", "list"]);
    }
    // One source of the token only.
    let both = s.signet(
        None,
        &[
            "admin",
            "enroll",
            "--token",
            "x",
            "--token-stdin",
            "--out",
            "e.json",
        ],
    );
    assert!(!both.status.success());
}
