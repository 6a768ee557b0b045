//! `signet-bench`: a closed-loop load generator that measures signed Signet
//! secret reads and OpenBao KV v2 token reads with the same request path.
//! `tests/bench/run.sh` runs both side by side.
//!
//! Exit codes: 0 every request answered 200; 1 the run completed but some
//! request was refused or failed (warm-up included), or none succeeded;
//! 2 setup or arguments failed.

mod cli;
mod cpu;
mod load;
mod openbao;
mod report;
mod signet;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, LoadArgs, Target};
use crate::load::Plan;
use crate::report::{Report, Run};

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
                match serde_json::to_string(&report) {
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

async fn run(cli: Cli) -> anyhow::Result<Report> {
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
    let (name, used, outcome) = match &target {
        Target::Signet(args) => {
            let setup = signet::setup(args, identities).await?;
            let clients = (0..clients as usize)
                .map(|i| {
                    let machine = &setup.machines[i % setup.machines.len()];
                    signet::SignedRead::new(
                        machine.clone(),
                        setup.endpoint.host.clone(),
                        &setup.target,
                    )
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let used = setup.machines.len();
            (
                "signet",
                used,
                load::run(&setup.endpoint, clients, plan).await?,
            )
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
            let used = setup.tokens.len();
            (
                "openbao",
                used,
                load::run(&setup.endpoint, clients, plan).await?,
            )
        }
    };
    let run = Run {
        target: name,
        clients,
        identities: u32::try_from(used).unwrap_or(u32::MAX),
        threads,
        plan,
    };
    Ok(Report::new(run, &outcome))
}
