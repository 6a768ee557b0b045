//! Process helpers shared by the CLI integration tests: a `signet-vault dev`
//! started as a real process on 127.0.0.1:0, the real `signet` binary, and
//! [`Setup`], a dev vault with an enrolled admin that runs `signet` commands.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const CLI: &str = env!("CARGO_BIN_EXE_signet");

/// `signet-vault` is built beside `signet` by `cargo test --workspace`
/// (the vault package has integration tests, so its binary is built).
pub fn vault_binary() -> PathBuf {
    let path = PathBuf::from(CLI).with_file_name("signet-vault");
    assert!(
        path.is_file(),
        "{} is missing: run the whole suite (`cargo test --workspace`) or `cargo build -p signet-vault` first",
        path.display()
    );
    path
}

pub struct Vault {
    pub child: Child,
    pub banner: Vec<String>,
}

impl Vault {
    pub fn dev(data_dir: &Path) -> Self {
        Self::dev_with(data_dir, &[])
    }

    /// `signet-vault dev` with extra arguments (e.g. `--webhook-allow-cidr`).
    pub fn dev_with(data_dir: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(vault_binary())
            .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // The banner is read on a thread so a vault that never prints it
        // cannot hang the test past the deadline.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep reading after the banner, so the vault never writes
                // into a closed pipe; a dropped receiver is fine.
                let _ = sender.send(line);
            }
        });
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = receiver.recv_timeout(left) else {
                break;
            };
            let done = line.contains(" read demo/db-password");
            banner.push(line);
            if done {
                break;
            }
        }
        Self { child, banner }
    }

    /// The vault's address, from the banner's `export SIGNET_VAULT=` line.
    pub fn address(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix("export SIGNET_VAULT="))
            .unwrap_or_else(|| panic!("no address in banner:\n{}", self.banner.join("\n")))
            .to_owned()
    }

    /// The one-time admin bootstrap token the banner prints.
    pub fn bootstrap_token(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                let (_, rest) = l.split_once("admin enroll --token ")?;
                rest.split_whitespace().next()
            })
            .unwrap_or_else(|| panic!("no token in banner:\n{}", self.banner.join("\n")))
            .to_owned()
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
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
        let _ = self.child.wait();
    }
}

/// Runs one printed command line (already split on spaces, with quoted
/// arguments rejoined) in `dir` with `env`.
pub fn run(dir: &Path, env: &[(String, String)], line: &str) -> String {
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
pub fn shell_words(line: &str) -> Vec<String> {
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

/// Runs `command` to completion with captured output, killing it (and
/// failing the test) if it outlives `limit`.
pub fn output_within(mut command: Command, limit: Duration) -> std::process::Output {
    use std::io::Read as _;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// No single command may take longer than this.
pub const LIMIT: Duration = Duration::from_secs(60);
pub const ADMIN: &str = "admin.json";

/// A dev vault, a temp working directory and an enrolled admin (`admin.json`).
pub struct Setup {
    pub work: tempfile::TempDir,
    pub data: PathBuf,
    pub address: String,
    pub vault: Vault,
}

impl Setup {
    pub fn new() -> Self {
        Self::with(&[])
    }

    pub fn with(extra: &[&str]) -> Self {
        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("data");
        let vault = Vault::dev_with(&data, extra);
        let setup = Self {
            address: vault.address(),
            work,
            data,
            vault,
        };
        let token = setup.vault.bootstrap_token();
        setup.ok(
            None,
            &["admin", "enroll", "--token", &token, "--out", ADMIN],
        );
        setup
    }

    /// Runs `signet ARGS` in the work directory as `identity`.
    pub fn signet(&self, identity: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(CLI);
        command
            .args(args)
            .current_dir(self.work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SIGNET_VAULT", &self.address);
        if let Some(identity) = identity {
            command.env("SIGNET_IDENTITY", identity);
        }
        output_within(command, LIMIT)
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, identity: Option<&str>, args: &[&str]) -> String {
        let output = self.signet(identity, args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            output.status.success(),
            "`signet {}` as {identity:?} failed:\n{stdout}\n{stderr}",
            args.join(" ")
        );
        stdout
    }

    /// Runs `signet --json ARGS`, which must succeed, and parses its output.
    pub fn json(&self, identity: &str, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(Some(identity), &all);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Runs a command the vault must refuse with `status` and `code`;
    /// returns its stderr.
    pub fn refused(&self, identity: &str, args: &[&str], status: u16, code: &str) -> String {
        let output = self.signet(Some(identity), args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !output.status.success(),
            "`signet {}` as {identity} succeeded:\n{stdout}",
            args.join(" ")
        );
        let expected = format!("signet: vault refused the request ({status}, {code}): ");
        assert!(
            stderr.starts_with(&expected),
            "`signet {}`: expected {expected:?}, got:\n{stderr}",
            args.join(" ")
        );
        assert!(stdout.is_empty(), "{stdout}");
        stderr
    }

    /// A machine of `project` granted `grants`, enrolled into `file`;
    /// returns its id.
    pub fn machine(&self, project: &str, grants: &[&str], file: &str) -> String {
        let mut args = vec!["token", "create", "--project", project, "--max-uses", "1"];
        for grant in grants {
            args.extend(["--grant", grant]);
        }
        let token = self.json(ADMIN, &args)["token"]
            .as_str()
            .unwrap()
            .to_owned();
        self.enroll(&token, "host-1", file)["machine_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn enroll(&self, token: &str, hostname: &str, file: &str) -> Value {
        let stdout = self.ok(
            None,
            &[
                "--json",
                "enroll",
                "--token",
                token,
                "--hostname",
                hostname,
                "--out",
                file,
            ],
        );
        serde_json::from_str(&stdout).unwrap()
    }

    /// The machine's read, which must succeed; returns (value, version).
    pub fn read(&self, machine: &str, path: &str) -> (String, u64) {
        let read = self.json(machine, &["read", path]);
        (
            read["value"].as_str().unwrap().to_owned(),
            read["version"].as_u64().unwrap(),
        )
    }

    pub fn machine_view(&self, id: &str) -> Value {
        let list = self.json(ADMIN, &["machine", "list"]);
        list["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {list}"))
            .clone()
    }

    /// A project with one plain secret per `(name, value)`.
    pub fn project(&self, project: &str, secrets: &[(&str, &str)]) {
        self.ok(Some(ADMIN), &["project", "create", project]);
        for (name, value) in secrets {
            let path = format!("{project}/{name}");
            self.ok(Some(ADMIN), &["secret", "set", &path, "--value", value]);
        }
    }
}
