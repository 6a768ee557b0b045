//! `signet-bench`: a closed-loop load generator that measures signed Signet
//! secret reads and OpenBao KV v2 token reads with the same request path,
//! Signet enrollments (`signet --enroll`), and cold starts of `signet-init`
//! (`init-start`), and signed reads under abuse (`abuse`).
//! `tests/bench/run.sh` runs the reads side by side;
//! `tests/bench/scale.sh` runs reads against more data, enrollments and
//! cold starts; `tests/bench/abuse.sh` runs the abuse cases;
//! `tests/bench/replicas.sh` runs reads spread over vault replicas on one
//! PostgreSQL (`signet --replica`) beside OpenBao.
//!
//! Exit codes: 0 every request answered as it should (200, or 201 for an
//! enrollment) and every start succeeded; 1 the run completed but some
//! request was refused or failed (warm-up included; for `abuse`, a reader's
//! request in either window), some start failed, or none succeeded; 2 setup
//! or arguments failed.

mod abuse;
mod cli;
mod cpu;
mod enroll;
mod init_start;
mod load;
mod openbao;
mod populate;
mod push;
mod report;
mod signet;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, LoadArgs, Target};
use crate::init_start::InitReport;
use crate::load::Plan;
use crate::report::{Report, Run};
use crate::signet::Work;

/// What a run prints.
enum Output {
    Load(Report),
    Init(InitReport),
    Push(push::PushReport),
    Abuse(Box<abuse::AbuseReport>),
    Flood(abuse::FloodStats),
}

impl Output {
    fn failed(&self) -> bool {
        match self {
            Self::Load(report) => report.failed(),
            Self::Init(report) => report.failed(),
            Self::Push(report) => report.failed(),
            Self::Abuse(report) => report.failed(),
            Self::Flood(_) => false,
        }
    }

    fn json(&self) -> serde_json::Result<String> {
        match self {
            Self::Load(report) => serde_json::to_string(report),
            Self::Init(report) => serde_json::to_string(report),
            Self::Push(report) => serde_json::to_string(report),
            Self::Abuse(report) => serde_json::to_string(report),
            Self::Flood(stats) => serde_json::to_string(stats),
        }
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Load(report) => report.fmt(f),
            Self::Init(report) => report.fmt(f),
            Self::Push(report) => report.fmt(f),
            Self::Abuse(report) => report.fmt(f),
            Self::Flood(stats) => stats.fmt(f),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.load.json;
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.load.threads as usize)
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(report) => {
            if json {
                match report.json() {
                    Ok(line) => println!("{line}"),
                    Err(error) => eprintln!("signet-bench: {error}"),
                }
            } else {
                println!("{report}");
            }
            ExitCode::from(u8::from(report.failed()))
        }
        Err(error) => {
            eprintln!("signet-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Output> {
    let Cli { load, target } = cli;
    let LoadArgs {
        clients,
        duration,
        warmup,
        identities,
        threads,
        server_pid,
        json: _,
    } = load;
    let identities = identities.unwrap_or(clients);
    let plan = Plan {
        warmup,
        duration,
        server_pid,
    };
    let mut run = Run {
        target: "signet",
        operation: "read",
        clients,
        identities: 0,
        threads,
        plan,
        extra_secrets: 0,
        extra_machines: 0,
        setup_s: None,
    };
    let outcome = match &target {
        Target::Signet(args) => {
            let setup = signet::setup(args, identities).await?;
            run.extra_secrets = setup.extra_secrets;
            run.extra_machines = setup.extra_machines;
            run.setup_s = Some(setup.setup_time.as_secs_f64());
            match &setup.work {
                Work::Reads { target, machines } => {
                    let clients = signet::reads(&setup, target, machines, clients)?;
                    run.identities = u32::try_from(machines.len()).unwrap_or(u32::MAX);
                    load::run_spread(&setup.endpoints, clients, plan).await?
                }
                Work::Enrollments { token } => {
                    run.operation = "enroll";
                    let clients = signet::enrollers(&setup, token, clients)?;
                    load::run_spread(&setup.endpoints, clients, plan).await?
                }
            }
        }
        Target::Openbao(args) => {
            let setup = openbao::setup(args, identities).await?;
            let clients = (0..clients as usize)
                .map(|i| {
                    let token = &setup.tokens[i % setup.tokens.len()];
                    openbao::TokenRead::new(
                        token.clone(),
                        setup.endpoint.host.clone(),
                        &setup.target,
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            run.target = "openbao";
            run.identities = u32::try_from(setup.tokens.len()).unwrap_or(u32::MAX);
            load::run(&setup.endpoint, clients, plan).await?
        }
        Target::InitStart(args) => return Ok(Output::Init(init_start::run(args).await?)),
        Target::Push(args) => return Ok(Output::Push(push::run(args).await?)),
        Target::Abuse(args) => {
            let report = abuse::run(args, clients, identities, threads, plan).await?;
            return Ok(Output::Abuse(Box::new(report)));
        }
        Target::Flood(args) => return Ok(Output::Flood(abuse::flood_alone(args).await?)),
    };
    Ok(Output::Load(Report::new(run, &outcome)))
}
