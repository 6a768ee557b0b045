//! Process helpers shared by the CLI integration tests: a `signet-vault dev`
//! started as a real process on 127.0.0.1:0, and the real `signet` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
