//! From a new live version to the file rewritten: one real `signet-init`
//! sidecar (refresh period 300 s, so only the vault's change route can
//! explain a prompt rewrite) keeps one secret's file fresh while the admin
//! writes `--changes` new versions, one at a time. Each latency runs from
//! the moment the write returned (the version is live) to the moment the
//! file holds the new value, seen by polling it every 100 µs.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::json;

use signet_client::api::WriteSecret;

use crate::cli::PushArgs;
use crate::report::{ms, percentile};
use crate::signet::Admin;

/// How long one change may take before it counts as lost.
const GIVE_UP: Duration = Duration::from_secs(10);
/// The file `signet-init` writes last, once the first files are in place.
const READY_MARKER: &str = ".signet-ready";

/// The figures of all changes.
#[derive(Debug, Serialize)]
pub struct PushReport {
    pub target: &'static str,
    pub changes: u32,
    /// Changes seen in the file within [`GIVE_UP`].
    pub ok: u32,
    pub lost: u32,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The write call itself (admin request to commit), p50.
    pub write_p50_ms: Option<f64>,
}

impl PushReport {
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.ok == 0
    }
}

impl std::fmt::Display for PushReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
        write!(
            f,
            "new version to file rewritten, {} changes: p50 {}  p90 {}  p99 {}  min {}  max {}  (write call p50 {})  lost {}",
            self.changes,
            ms(self.p50_ms),
            ms(self.p90_ms),
            ms(self.p99_ms),
            ms(self.min_ms),
            ms(self.max_ms),
            ms(self.write_p50_ms),
            self.lost,
        )
    }
}

/// Sets up one secret and a sidecar, then writes `changes` versions.
pub async fn run(args: &PushArgs) -> anyhow::Result<PushReport> {
    let PushArgs {
        admin,
        init_bin,
        changes,
    } = args;
    if !init_bin.is_file() {
        bail!(
            "{} is not a file (build it with `cargo build --release -p signet-init`)",
            init_bin.display()
        );
    }
    let admin = Admin::create_project(admin).await?;
    let secret = "pushed".to_owned();
    let write = |value: String| WriteSecret {
        value: Some(value),
        fields: None,
    };
    admin
        .client
        .write_secret(&admin.project, &secret, &write("v0".to_owned()))
        .await
        .context("cannot write the secret")?;
    let token = admin
        .token("signet-bench-push", std::slice::from_ref(&secret), Some(1))
        .await?;
    let work: PathBuf = std::env::temp_dir().join(format!(
        "signet-bench-push-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mount = work.join("mount");
    std::fs::create_dir_all(&mount)
        .with_context(|| format!("cannot create {}", mount.display()))?;
    let token_file = work.join("token");
    std::fs::write(&token_file, token.as_bytes())?;
    let files = json!([{"secret": secret, "fields": [], "file": secret, "format": "raw"}]);
    let mut sidecar = tokio::process::Command::new(init_bin)
        .arg("run")
        .env_clear()
        .env("SIGNET_VAULT", &admin.vault)
        .env("SIGNET_TOKEN_FILE", &token_file)
        .env("SIGNET_MOUNT_PATH", &mount)
        .env("SIGNET_MODE", "sidecar")
        .env("SIGNET_REFRESH_SECONDS", "300")
        .env("SIGNET_FILES", files.to_string())
        .env("SIGNET_POD_NAME", "signet-bench-push")
        .env("SIGNET_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", init_bin.display()))?;
    let outcome = measure(&admin, &secret, &mount, *changes, write).await;
    let _ = sidecar.start_kill();
    let _ = sidecar.wait().await;
    let _ = std::fs::remove_dir_all(&work);
    let (mut latencies, mut writes, lost) = outcome?;
    latencies.sort_unstable();
    writes.sort_unstable();
    Ok(PushReport {
        target: "signet-init push",
        changes: *changes,
        ok: u32::try_from(latencies.len()).unwrap_or(u32::MAX),
        lost,
        p50_ms: percentile(&latencies, 0.50).map(ms),
        p90_ms: percentile(&latencies, 0.90).map(ms),
        p99_ms: percentile(&latencies, 0.99).map(ms),
        min_ms: latencies.first().copied().map(ms),
        max_ms: latencies.last().copied().map(ms),
        write_p50_ms: percentile(&writes, 0.50).map(ms),
    })
}

/// Latencies (ns) of the changes seen, write-call times (ns), changes lost.
async fn measure(
    admin: &Admin,
    secret: &str,
    mount: &std::path::Path,
    changes: u32,
    write: impl Fn(String) -> WriteSecret,
) -> anyhow::Result<(Vec<u64>, Vec<u64>, u32)> {
    let deadline = Instant::now() + GIVE_UP;
    while !mount.join(READY_MARKER).exists() {
        if Instant::now() > deadline {
            bail!("signet-init wrote nothing within {GIVE_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let file = mount.join(secret);
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let mut latencies = Vec::new();
    let mut writes = Vec::new();
    let mut lost = 0;
    for i in 1..=changes {
        let value = format!("v{i}");
        let asked = Instant::now();
        admin
            .client
            .write_secret(&admin.project, secret, &write(value.clone()))
            .await
            .with_context(|| format!("cannot write version {i}"))?;
        let live = Instant::now();
        writes.push(nanos(live - asked));
        loop {
            if std::fs::read(&file).is_ok_and(|v| v == value.as_bytes()) {
                latencies.push(nanos(live.elapsed()));
                break;
            }
            if live.elapsed() > GIVE_UP {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
    Ok((latencies, writes, lost))
}
