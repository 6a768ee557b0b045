//! The README's path, as a new user walks it: `signet-vault dev` as a real
//! process, then every "next step" it prints, run with the real `signet`
//! binary, until a machine reads the secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::{CLI, Vault, run};

#[test]
fn the_printed_next_steps_take_a_new_user_to_a_secret() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let vault = Vault::dev(&data);
    let banner = vault.banner.join("\n");
    assert!(banner.contains("DEV MODE"), "{banner}");

    let steps: Vec<String> = vault
        .banner
        .iter()
        .skip_while(|l| !l.starts_with("Next"))
        .skip(1)
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(steps.len() >= 7, "{banner}");

    let mut env: Vec<(String, String)> = Vec::new();
    let mut last_output = String::new();
    for step in steps {
        if let Some(assignment) = step.strip_prefix("export ") {
            let (key, value) = assignment.split_once('=').unwrap();
            if key != "PATH" {
                env.push((key.to_owned(), value.trim_matches('"').to_owned()));
            }
            continue;
        }
        let step = if step.contains("<the token printed by the last command>") {
            let token = last_output
                .split_whitespace()
                .find(|w| w.starts_with("et_") && w.contains('.'))
                .unwrap_or_else(|| panic!("no token in: {last_output}"));
            step.replace("<the token printed by the last command>", token)
        } else {
            step
        };
        eprintln!("step: {step}");
        last_output = run(work.path(), &env, &step);
    }
    assert_eq!(last_output, "correct horse battery staple");

    // Identity files are private.
    use std::os::unix::fs::PermissionsExt as _;
    for file in ["admin.json", "machine.json"] {
        let mode = std::fs::metadata(work.path().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // The audit log the admin sees verifies end to end.
    let admin_env = [(String::from("SIGNET_IDENTITY"), String::from("admin.json"))];
    let mut env_admin = env.clone();
    env_admin.extend(admin_env);
    let verified = run(work.path(), &env_admin, "signet audit verify");
    assert!(verified.contains("intact"), "{verified}");

    // An agent key generated here becomes a working agent identity file.
    run(work.path(), &env_admin, "signet keygen --out agent.json");
    run(
        work.path(),
        &env_admin,
        "signet agent create --name operator --key-file agent.json --scope machines",
    );
    let mut env_agent = env.clone();
    env_agent.push(("SIGNET_IDENTITY".into(), "agent.json".into()));
    let machines = run(work.path(), &env_agent, "signet --json machine list");
    assert!(machines.contains("\"machines\""), "{machines}");
    let denied = Command::new(CLI)
        .args(["read", "demo/db-password"])
        .current_dir(work.path())
        .envs(env_agent.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("not_a_machine"));

    assert!(vault.stop().success(), "graceful shutdown exits 0");
}
