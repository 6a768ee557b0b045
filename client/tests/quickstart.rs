//! The README's path, as a new user walks it: `signet-vault dev` as a real
//! process, then every "next step" it prints, run with the real `signet`
//! binary, until a machine reads the secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLI: &str = env!("CARGO_BIN_EXE_signet");

/// `signet-vault` is built beside `signet` by `cargo test --workspace`
/// (the vault package has integration tests, so its binary is built).
fn vault_binary() -> PathBuf {
    let path = PathBuf::from(CLI).with_file_name("signet-vault");
    assert!(
        path.is_file(),
        "{} is missing: run the whole suite (`cargo test --workspace`) or `cargo build -p signet-vault` first",
        path.display()
    );
    path
}

struct Vault {
    child: Child,
    banner: Vec<String>,
}

impl Vault {
    fn dev(data_dir: &std::path::Path) -> Self {
        let mut child = Command::new(vault_binary())
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let done = line.contains(" read demo/db-password");
            banner.push(line);
            if done || Instant::now() > deadline {
                break;
            }
        }
        // Keep reading, so the vault never writes into a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, banner }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "vault did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Runs one printed command line (already split on spaces, with quoted
/// arguments rejoined) in `dir` with `env`.
fn run(dir: &std::path::Path, env: &[(String, String)], line: &str) -> String {
    let mut words = shell_words(line);
    let mut vars = env.to_vec();
    while let Some((key, value)) = words
        .first()
        .and_then(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
    {
        if !key.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
            break;
        }
        vars.push((key, value));
        words.remove(0);
    }
    let program = if words[0].ends_with("signet") {
        CLI.to_owned()
    } else {
        words[0].clone()
    };
    let output = Command::new(program)
        .args(&words[1..])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "`{line}` failed:\n{stdout}\n{stderr}"
    );
    stdout
}

/// Splits on spaces, honouring single quotes (all the banner uses).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                started = true;
            }
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            _ => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(current);
    }
    words
}

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
