//! `signet-init` cold start: the real binary, started again and again in
//! `init` mode with a raw enrollment token, timed from just before the
//! spawn to its exit. A start counts only if it exited 0 with every file
//! and the ready marker written; the files are checked after the clock
//! stops. Each start enrolls a machine, reads the secrets, writes the
//! files and revokes its machine, as in a pod.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;

use signet_client::api::WriteSecret;

use crate::cli::InitStartArgs;
use crate::report::{ms, percentile};
use crate::signet::Admin;

/// The ready marker `signet-init` writes after the files (its contract's
/// `READY_MARKER`).
const READY_MARKER: &str = ".signet-ready";

/// The figures of all starts.
#[derive(Debug, Serialize)]
pub struct InitReport {
    pub target: &'static str,
    pub runs: u32,
    pub files: u32,
    /// Starts that exited 0 with every file written.
    pub ok: u32,
    pub failures: u32,
    pub failure_samples: Vec<String>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// The first start alone (the binary possibly not yet in the page cache).
    pub first_ms: Option<f64>,
    pub binary: String,
    pub binary_bytes: Option<u64>,
}

impl InitReport {
    pub fn failed(&self) -> bool {
        self.failures > 0 || self.ok == 0
    }
}

impl std::fmt::Display for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
        write!(
            f,
            "signet-init {} starts, {} files each: p50 {}  p99 {}  min {}  max {}  first {}  failures {}",
            self.runs,
            self.files,
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.min_ms),
            ms(self.max_ms),
            ms(self.first_ms),
            self.failures,
        )?;
        for sample in &self.failure_samples {
            write!(f, "\n  failure: {sample}")?;
        }
        Ok(())
    }
}

/// Sets up the secrets and the token, then starts the binary `runs` times.
pub async fn run(args: &InitStartArgs) -> anyhow::Result<InitReport> {
    let InitStartArgs {
        admin,
        init_bin,
        runs,
        files,
    } = args;
    if !init_bin.is_file() {
        bail!(
            "{} is not a file (build it with `cargo build --release -p signet-init`)",
            init_bin.display()
        );
    }
    let admin = Admin::create_project(admin).await?;
    let mut names = Vec::new();
    let mut specs = Vec::new();
    for i in 0..*files {
        let name = format!("secret-{i}");
        // Plain secrets as raw files, structured ones as env or JSON: one
        // file per secret either way.
        let (body, format) = if i % 2 == 0 {
            (
                WriteSecret {
                    value: Some("x".repeat(64)),
                    fields: None,
                },
                "raw",
            )
        } else {
            let fields = [("user", "app".to_owned()), ("password", "y".repeat(32))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            (
                WriteSecret {
                    value: None,
                    fields: Some(fields),
                },
                if i % 4 == 1 { "env" } else { "json" },
            )
        };
        admin
            .client
            .write_secret(&admin.project, &name, &body)
            .await
            .with_context(|| format!("cannot write {}/{name}", admin.project))?;
        specs.push(json!({"secret": name, "fields": [], "file": name, "format": format}));
        names.push(name);
    }
    let token = admin
        .token("signet-bench-init", &names, Some(*runs))
        .await?;

    let work = std::env::temp_dir().join(format!(
        "signet-bench-init-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let token_file = work.join("token");
    write_private(&token_file, token.as_bytes())?;
    let starts = Starts {
        bin: init_bin.clone(),
        vault: admin.vault.clone(),
        token_file,
        files_json: serde_json::to_string(&specs)?,
        names,
        work: work.clone(),
    };
    let runs = *runs;
    let outcome = tokio::task::spawn_blocking(move || starts.run_all(runs)).await;
    let _ = std::fs::remove_dir_all(&work);
    let (mut latencies, failure_samples, failures) = outcome.context("the start loop failed")?;
    let first_ms = latencies.first().copied().map(ms);
    latencies.sort_unstable();
    let mean_ms = (!latencies.is_empty())
        .then(|| latencies.iter().map(|&ns| ms(ns)).sum::<f64>() / latencies.len() as f64);
    Ok(InitReport {
        target: "signet-init",
        runs,
        files: *files,
        ok: u32::try_from(latencies.len()).unwrap_or(u32::MAX),
        failures,
        failure_samples,
        p50_ms: percentile(&latencies, 0.50).map(ms),
        p90_ms: percentile(&latencies, 0.90).map(ms),
        p99_ms: percentile(&latencies, 0.99).map(ms),
        min_ms: latencies.first().copied().map(ms),
        max_ms: latencies.last().copied().map(ms),
        mean_ms,
        first_ms,
        binary: init_bin.display().to_string(),
        binary_bytes: std::fs::metadata(init_bin).ok().map(|m| m.len()),
    })
}

/// What every start needs.
struct Starts {
    bin: PathBuf,
    vault: String,
    token_file: PathBuf,
    files_json: String,
    names: Vec<String>,
    work: PathBuf,
}

/// Latencies of the good starts in start order (ns), failure samples, failures.
type Outcome = (Vec<u64>, Vec<String>, u32);

impl Starts {
    fn run_all(&self, runs: u32) -> Outcome {
        let mut latencies = Vec::with_capacity(runs as usize);
        let mut samples = Vec::new();
        let mut failures = 0;
        for run in 0..runs {
            match self.start(run) {
                Ok(nanos) => latencies.push(nanos),
                Err(error) => {
                    failures += 1;
                    if samples.len() < 5 {
                        samples.push(format!("start {run}: {error:#}"));
                    }
                }
            }
        }
        (latencies, samples, failures)
    }

    /// One start in a fresh, empty mount directory: the time from spawn to
    /// exit, if it exited 0 with every file there.
    fn start(&self, run: u32) -> anyhow::Result<u64> {
        let mount = self.work.join(format!("run-{run}"));
        std::fs::create_dir(&mount)
            .with_context(|| format!("cannot create {}", mount.display()))?;
        let mut command = Command::new(&self.bin);
        command
            .arg("run")
            .env_clear()
            .env("SIGNET_VAULT", &self.vault)
            .env("SIGNET_TOKEN_FILE", &self.token_file)
            .env("SIGNET_MOUNT_PATH", &mount)
            .env("SIGNET_MODE", "init")
            .env("SIGNET_FILES", &self.files_json)
            .env("SIGNET_POD_NAME", format!("signet-bench-init-{run}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let output = child.wait_with_output()?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("").trim();
            bail!("{} ({last})", output.status);
        }
        for name in self.names.iter().map(String::as_str).chain([READY_MARKER]) {
            let path = mount.join(name);
            if !path.is_file() {
                bail!("exited 0 without writing {}", path.display());
            }
        }
        let _ = std::fs::remove_dir_all(&mount);
        Ok(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// Writes a file only this user may read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}
