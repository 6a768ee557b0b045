//! The `signet-operator` process: its arguments and the wiring from them to
//! the library. The binary only parses them and calls [`run`], so the
//! parser the chart relies on is the one the tests below drive.
//!
//! Every flag has a `SIGNET_*` environment fallback: the chart passes some
//! as flags and some as variables. Each command destructures its arguments
//! in full, so a flag that is declared but never used fails to compile.

mod controller;
mod webhook;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

pub use controller::ControllerArgs;
pub use webhook::WebhookArgs;

/// The command line of `signet-operator`.
#[derive(Debug, Parser)]
#[command(
    name = "signet-operator",
    version,
    about = "Signet Kubernetes operator"
)]
pub struct Cli {
    /// What to run; the chart deploys one Deployment per command.
    #[command(subcommand)]
    pub command: Command,
}

/// The two halves of the operator, run as separate processes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating admission webhook that injects signet-init.
    Webhook(WebhookArgs),
    /// Run the controller: EnrollmentToken and SecretGrant reconcilers and
    /// the revocation of machines whose pod is gone.
    Controller(ControllerArgs),
}

/// Why the operator could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client could be configured (in-cluster or kubeconfig).
    #[error("connecting to the Kubernetes API")]
    Kube(#[source] kube::Error),
    /// The controller's agent identity or the vault's CA is unusable.
    #[error("connecting to the vault")]
    Vault(#[source] crate::controller::Error),
    /// `--token-audience` was given but blank.
    #[error("--token-audience must not be empty")]
    EmptyAudience,
    /// Neither certificate source was complete. clap's argument groups make
    /// this unreachable from the command line.
    #[error(
        "pass either --tls-cert/--tls-key or --self-signed-service/--namespace/--webhook-config-name"
    )]
    TlsFlags,
    /// A serving certificate or key file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--vault-ca-file` is unusable.
    #[error(transparent)]
    VaultCa(#[from] crate::webhook::vault_ca::Error),
    /// The self-signed certificate could not be issued or installed.
    #[error(transparent)]
    Certs(#[from] crate::webhook::certs::Error),
    /// The webhook's HTTPS server failed.
    #[error(transparent)]
    Server(#[from] crate::webhook::server::Error),
}

/// Runs the command until SIGTERM or Ctrl-C.
///
/// The signal handlers are installed first, before any await: a pod
/// stopped while the operator is still connecting is then shut down
/// gracefully once serving starts, instead of being killed mid-setup.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let shutdown = signet_client::shutdown::signal();
    let Cli { command } = cli;
    match command {
        Command::Webhook(args) => webhook::run(args, shutdown).await,
        Command::Controller(args) => controller::run(args, shutdown).await,
    }
}

/// Logs to stdout, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// A cluster name as the vault registers it: 1 to 63 characters of a-z,
/// 0-9, '.', '_', '-'. Checked here so a typo fails the start rather than
/// every enrollment.
fn parse_cluster_name(input: &str) -> Result<String, String> {
    let valid = (1..=63).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(input.to_owned())
    } else {
        Err("1 to 63 characters of a-z, 0-9, '.', '_', '-' (the name given to `signet cluster add`)".to_owned())
    }
}

/// The same spelling of durations as the CRDs (`5m`, `1h30m`).
fn parse_duration(input: &str) -> Result<Duration, String> {
    crate::duration::parse(input).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("signet-operator").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cluster_names_follow_the_vault() {
        for good in ["kubernetes", "it", "prod-eu.1_a", &"a".repeat(63)] {
            assert_eq!(parse_cluster_name(good).as_deref(), Ok(good));
        }
        for bad in ["", "Prod", "a b", "é", &"a".repeat(64)] {
            assert!(parse_cluster_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn controller_flags_as_the_chart_passes_them() {
        let Command::Controller(args) = parse(&[
            "controller",
            "--vault=https://vault.signet:8200",
            "--identity=/etc/signet/identity/identity.json",
            "--cluster-name=prod",
            "--renewal-grace=2m",
        ])
        .unwrap() else {
            panic!("not the controller");
        };
        let ControllerArgs {
            vault,
            identity,
            agent_id,
            ca_cert,
            resync,
            waiting_retry,
            sweep_interval,
            reload_interval,
            cluster_name,
            renewal_grace,
        } = args;
        assert_eq!(vault, "https://vault.signet:8200");
        assert_eq!(
            identity,
            PathBuf::from("/etc/signet/identity/identity.json")
        );
        assert_eq!((agent_id, ca_cert), (None, None));
        assert_eq!(cluster_name, "prod");
        assert_eq!(renewal_grace, Duration::from_secs(120));
        // The defaults the chart relies on.
        assert_eq!(resync, Duration::from_secs(300));
        assert_eq!(waiting_retry, Duration::from_secs(60));
        assert_eq!(sweep_interval, Duration::from_secs(300));
        assert_eq!(reload_interval, Duration::from_secs(10));
    }

    #[test]
    fn controller_rejects_bad_values() {
        let base = ["controller", "--vault=http://v", "--identity=i.json"];
        for extra in ["--cluster-name=Prod", "--resync=0s", "--renewal-grace=soon"] {
            let args: Vec<&str> = base.iter().copied().chain([extra]).collect();
            assert!(parse(&args).is_err(), "{extra}");
        }
    }

    #[test]
    fn webhook_needs_exactly_one_certificate_source() {
        let base = ["webhook", "--vault-url=http://v", "--init-image=img"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            parse(&args)
        };
        assert!(with(&[]).is_err(), "no certificate source");
        assert!(with(&["--tls-cert=c"]).is_err(), "a cert without its key");
        assert!(
            with(&["--self-signed-service=s"]).is_err(),
            "self-signed without namespace and webhook configuration"
        );
        assert!(
            with(&[
                "--tls-cert=c",
                "--tls-key=k",
                "--self-signed-service=s",
                "--namespace=n",
                "--webhook-config-name=w",
            ])
            .is_err(),
            "both sources"
        );
        assert!(with(&["--tls-cert=c", "--tls-key=k"]).is_ok());
        assert!(
            with(&[
                "--self-signed-service=s",
                "--namespace=n",
                "--webhook-config-name=w",
                "--self-signed-extra-name=127.0.0.1",
            ])
            .is_ok()
        );
    }
}
