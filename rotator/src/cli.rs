//! Flags, the process and its loop.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signet_client::identity::Identity;
use signet_client::sdk::{Client, Options};

use crate::agent;

/// The Signet rotation agent.
#[derive(Debug, Parser)]
#[command(name = "signet-rotator", version)]
pub struct Args {
    /// The vault's address, for example https://signet.example:8200.
    #[arg(long, env = "SIGNET_VAULT")]
    pub vault: String,
    /// The machine identity file (as `signet enroll` writes it) of the
    /// machine the rotation configs name as their agent.
    #[arg(long, env = "SIGNET_IDENTITY")]
    pub identity: PathBuf,
    /// A PEM CA certificate to trust for the vault.
    #[arg(long, env = "SIGNET_CA")]
    pub ca: Option<PathBuf>,
    /// Seconds between claims when there was nothing to do (1 to 3600).
    #[arg(long, env = "SIGNET_ROTATOR_INTERVAL", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Claim and do at most one job, then exit.
    #[arg(long)]
    pub once: bool,
}

pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let Args {
        vault,
        identity,
        ca,
        interval,
        once,
    } = args;
    let client = match client(&vault, &identity, ca.as_deref()) {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "bad configuration");
            return ExitCode::from(1);
        }
    };
    if once {
        return match agent::run_once(&client).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error, "rotation pass failed");
                ExitCode::from(2)
            }
        };
    }
    let shutdown = signet_client::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        let pause = match agent::run_once(&client).await {
            // Work done: look for more at once.
            Ok(Some(_)) => Duration::ZERO,
            Ok(None) => Duration::from_secs(interval),
            Err(error) => {
                tracing::warn!(error = %error, "rotation pass failed; trying again");
                Duration::from_secs(interval)
            }
        };
        tokio::select! {
            () = &mut shutdown => return ExitCode::SUCCESS,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

fn client(
    vault: &str,
    identity: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    let identity = Identity::load(identity)
        .with_context(|| format!("cannot load the identity {}", identity.display()))?;
    let ca_pem = ca
        .map(|path| std::fs::read(path).with_context(|| format!("cannot read {}", path.display())))
        .transpose()?;
    let options = Options {
        ca_pem,
        ..Options::default()
    };
    Ok(Client::new(vault, identity, &options)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser as _;

    use super::Args;

    fn parse(interval: &str) -> Result<Args, clap::Error> {
        Args::try_parse_from([
            "signet-rotator",
            "--vault=https://vault.example:8200",
            "--identity=/etc/signet/identity/identity.json",
            "--interval",
            interval,
        ])
    }

    /// The chart passes `--interval`; 0 would claim in a busy loop.
    #[test]
    fn the_interval_is_one_second_to_an_hour() {
        assert_eq!(parse("1").unwrap().interval, 1);
        assert_eq!(parse("3600").unwrap().interval, 3600);
        for refused in ["0", "3601"] {
            assert!(parse(refused).is_err(), "--interval {refused} accepted");
        }
    }
}
