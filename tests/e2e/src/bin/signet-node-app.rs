//! The program in the test images of the real node (`tests/node/`,
//! `tests/node.rs`): the app container of an injected pod, and the node's
//! sandbox ("pause") process. No shell and no busybox: what it reports is
//! what the test asserts.
//!
//! - `signet-node-app pause`: sleeps until SIGTERM or SIGINT, then exits 0.
//! - `signet-node-app watch DIR`: prints a [report](Report) of DIR as one
//!   JSON line at start and again whenever it changes, until SIGTERM. The
//!   first line says what existed when the container started. A SIGHUP
//!   prints a report at once, with event `signal` (`signet.dev/reload:
//!   signal`).
//! - `signet-node-app once DIR FILE...`: prints one report and exits 0 when
//!   every FILE could be read in DIR, 3 otherwise (a Job's container).
//! - `signet-node-app cat FILE...`: prints the files (for `kubectl exec`).
//!
//! Exit code 2 is a usage error.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::ExitCode,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

/// How often `watch` looks at the folder.
const WATCH_EVERY: Duration = Duration::from_millis(100);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("signet-node-app: no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match args.first().map(String::as_str) {
        Some("pause") => runtime.block_on(until_terminated()),
        Some("watch") if args.len() == 2 => runtime.block_on(watch(Path::new(&args[1]))),
        Some("once") if args.len() >= 3 => once(Path::new(&args[1]), &args[2..]),
        Some("cat") if args.len() >= 2 => cat(&args[1..]),
        _ => {
            eprintln!("usage: signet-node-app pause | watch DIR | once DIR FILE... | cat FILE...");
            ExitCode::from(2)
        }
    }
}

/// Waits for SIGTERM or SIGINT. PID 1 of a container ignores both unless
/// it handles them, so this is what lets the kubelet stop it at once.
async fn until_terminated() -> ExitCode {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("signet-node-app: cannot handle signals");
        return ExitCode::FAILURE;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    ExitCode::SUCCESS
}

async fn watch(dir: &Path) -> ExitCode {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("signet-node-app: cannot handle signals");
        return ExitCode::FAILURE;
    };
    let mut last = Report::of(dir);
    last.print("start");
    loop {
        tokio::select! {
            _ = term.recv() => return ExitCode::SUCCESS,
            _ = hup.recv() => {
                // What the app would reload: the files as they are now.
                Report::of(dir).print("signal");
                continue;
            }
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let now = Report::of(dir);
        if now.body != last.body {
            now.print("change");
            last = now;
        }
    }
}

fn once(dir: &Path, files: &[String]) -> ExitCode {
    let report = Report::of(dir);
    report.print("once");
    let all_read = files
        .iter()
        .all(|file| report.body["files"][file]["content"].is_string());
    if all_read {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn cat(files: &[String]) -> ExitCode {
    let mut status = ExitCode::SUCCESS;
    for file in files {
        match std::fs::read_to_string(file) {
            Ok(text) => print!("{text}"),
            Err(error) => {
                eprintln!("{file}: {error}");
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

/// What the app sees: its own user and groups, the mount DIR is on, and
/// every file in DIR (hidden ones included) with its owner, permission bits
/// and content, or the error reading it.
struct Report {
    body: Value,
}

impl Report {
    fn of(dir: &Path) -> Self {
        let mut files = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(name, file_report(&entry.path()));
            }
        }
        let body = json!({
            "dir": dir.display().to_string(),
            "process": process_ids(),
            "mount": mount_of(dir),
            "files": files,
        });
        Self { body }
    }

    fn print(&self, event: &str) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let mut line = self.body.clone();
        line["event"] = json!(event);
        line["at_ms"] = json!(at_ms);
        println!("{line}");
    }
}

fn file_report(path: &Path) -> Value {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) => return json!({ "error": error.to_string() }),
    };
    let mut report = json!({
        "mode": format!("{:o}", metadata.mode() & 0o7777),
        "uid": metadata.uid(),
        "gid": metadata.gid(),
    });
    if metadata.is_file() {
        match std::fs::read_to_string(path) {
            Ok(content) => report["content"] = json!(content),
            Err(error) => report["error"] = json!(error.to_string()),
        }
    }
    report
}

/// `Uid`, `Gid` and `Groups` of /proc/self/status.
fn process_ids() -> Value {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    json!({
        "uid": field("Uid:").first(),
        "gid": field("Gid:").first(),
        "groups": field("Groups:"),
    })
}

/// The /proc/self/mounts entry whose mount point is `dir` (the last one,
/// which is what the process sees), as `{"source", "fstype", "options"}`;
/// null when `dir` is no mount point.
fn mount_of(dir: &Path) -> Value {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let wanted = dir.display().to_string();
    mounts
        .lines()
        .rev()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [source, point, fstype, options, ..] if *point == wanted => Some(json!({
                    "source": source,
                    "fstype": fstype,
                    "options": options,
                })),
                _ => None,
            }
        })
        .unwrap_or(Value::Null)
}
