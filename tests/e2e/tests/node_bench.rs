//! Pod startup with and without Signet's injection on a real node, and the
//! sidecar's memory there (the numbers in BENCHMARKS.md). The cluster is
//! the one `tests/node.rs` tests; see it for what is needed.
//!
//! ```sh
//! cargo build --release -p signet-vault -p signet-operator -p signet-init -p signet-client
//! SIGNET_NODE_BIN_DIR=$PWD/target/release cargo test -p signet-e2e --test node_bench \
//!     -- --ignored --nocapture
//! ```
//!
//! One pod at a time, plain and injected in turn, each deleted before the
//! next; `SIGNET_NODE_BENCH_PODS` of each (20). Times are from just before
//! `kubectl create` to the moment the app container's process started (the
//! app prints its clock at start; host and containers share it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, time::Instant};

use signet_e2e::{
    eventually,
    node::{
        cluster::{
            APP_NS, Binaries, Cluster, Diagnostics, MOUNT_PATH, WAIT, app_pod, sidecar_pid, unix_ms,
        },
        resident_kib,
    },
    work_dir,
};

/// Percentile `p` (0–100) of sorted `values`, nearest rank.
fn percentile(sorted: &[u128], p: usize) -> u128 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Milliseconds after `t0` (Unix ms) of a CRI log timestamp
/// (`2026-12-01T23:30:01.123456789Z`, UTC), assuming less than a day
/// passed: only the time of day is read.
fn after(t0: u128, stamp: &str) -> u128 {
    const DAY: u128 = 86_400_000;
    let time = stamp.split_once('T').unwrap().1.trim_end_matches('Z');
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':').map(|p| p.parse::<u128>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let ms = format!("{fraction:0<3}")[..3].parse::<u128>().unwrap();
    let of_day = ((h * 60 + m) * 60 + s) * 1000 + ms;
    (of_day + DAY - t0 % DAY) % DAY
}

#[test]
#[ignore = "benchmark (BENCHMARKS.md): needs root and a real node; about 4 minutes"]
fn pod_startup_with_and_without_injection() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[bench {:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let pods: usize = std::env::var("SIGNET_NODE_BENCH_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let bins = Binaries::find(Path::new(env!("CARGO_BIN_EXE_signet-node-app")))
        .unwrap_or_else(|e| panic!("{e:#}"));
    step(&format!("Signet binaries from {}", bins.dir.display()));
    let work = work_dir("signet-node.").unwrap();
    let cluster = Cluster::start(work.path(), &bins, &step).unwrap_or_else(|e| panic!("{e:#}"));
    let _diagnostics = Diagnostics::of(work.path(), &cluster.cp_bin);
    let node_name = cluster.node.name().to_owned();
    let plane = cluster.plane();

    let mut created = Vec::new();
    let mut plain = Vec::new();
    let mut injected = Vec::new();
    // For injected pods: signet-init's first log line, its "all files
    // written" line, and its resident memory once the app runs.
    let mut sidecar_first_line = Vec::new();
    let mut files_written = Vec::new();
    let mut resident = Vec::new();
    for i in 0..pods * 2 {
        let inject = i % 2 == 1;
        let name = format!("bench-{i}");
        let mode = inject.then_some("sidecar");
        let manifest = app_pod(&name, &node_name, mode, "Always", &["watch", MOUNT_PATH]);
        let t0 = unix_ms();
        cluster.create_pod(&manifest).unwrap();
        created.push(unix_ms() - t0);
        let pod = cluster
            .wait_pod(&name, "app running", |p| {
                p["status"]["containerStatuses"][0]["state"]["running"].is_object()
            })
            .unwrap();
        let first = eventually("the app's first line", WAIT, || {
            Ok(cluster.app_reports(&name)?.into_iter().next())
        })
        .unwrap();
        let at = u128::from(first["at_ms"].as_u64().unwrap());
        if inject {
            assert_eq!(first["files"]["api-key"]["content"], "key-v1");
            injected.push(at - t0);
            let uid = pod["metadata"]["uid"].as_str().unwrap();
            resident.push(u128::from(resident_kib(sidecar_pid(uid).unwrap()).unwrap()));
            let log = plane
                .kubectl_ok(&[
                    "-n",
                    APP_NS,
                    "logs",
                    &name,
                    "-c",
                    "signet-init",
                    "--timestamps",
                ])
                .unwrap();
            let stamp = |line: &str| line.split_whitespace().next().unwrap().to_owned();
            sidecar_first_line.push(after(t0, &stamp(log.lines().next().unwrap())));
            let written = log
                .lines()
                .find(|l| l.contains("all files written"))
                .expect("signet-init logged `all files written`");
            files_written.push(after(t0, &stamp(written)));
        } else {
            plain.push(at - t0);
        }
        plane
            .kubectl_ok(&[
                "-n",
                APP_NS,
                "delete",
                "pod",
                &name,
                "--wait=true",
                "--timeout=60s",
            ])
            .unwrap();
    }
    let mut rows = [
        ("`kubectl create` returned (ms)", created),
        ("without injection: app started (ms)", plain),
        (
            "with injection: signet-init's first log line (ms)",
            sidecar_first_line,
        ),
        ("with injection: files written (ms)", files_written),
        ("with injection: app started (ms)", injected),
        ("signet-init VmRSS with the app running (KiB)", resident),
    ];
    step(&format!(
        "{pods} pods of each kind, times from just before `kubectl create`"
    ));
    eprintln!("| measure | p50 | p99 | min | max |");
    eprintln!("| --- | --- | --- | --- | --- |");
    for (what, values) in &mut rows {
        values.sort_unstable();
        eprintln!(
            "| {what} | {} | {} | {} | {} |",
            percentile(values, 50),
            percentile(values, 99),
            values[0],
            values[values.len() - 1]
        );
    }
    for (what, values) in &rows {
        eprintln!("{what}: {values:?}");
    }
}
