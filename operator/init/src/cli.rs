//! The process around [`run::run`](crate::run::run): subcommand, logging,
//! runtime, exit code.

use std::path::Path;
use std::process::ExitCode;

use crate::config::Config;
use crate::contract::{ENV_LOG, ENV_MOUNT_PATH, READY_MARKER};
use crate::error::{Error, chain};

const USAGE: &str = "usage: signet-init run | probe
  run    enroll, write the files of SIGNET_FILES, then exit (SIGNET_MODE=init)
         or keep them fresh until SIGTERM (SIGNET_MODE=sidecar)
  probe  exit 0 once the files have been written";

/// Runs the subcommand in `args` (without the program name) and returns
/// the process exit code.
pub fn main(args: impl Iterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["run"] => run(),
        ["probe"] => probe(),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["-V" | "--version"] => {
            println!("signet-init {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> ExitCode {
    init_logging();
    let outcome = Config::from_env().map_err(Error::from).and_then(|config| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Runtime)?
            .block_on(crate::run::run(config))
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = error.exit_code();
            tracing::error!(exit_code = code, "{}", chain(&error));
            ExitCode::from(code)
        }
    }
}

/// Exit 0 iff the readiness marker exists. Silent when ready: the kubelet
/// runs it every few seconds.
fn probe() -> ExitCode {
    let Some(mount) = std::env::var_os(ENV_MOUNT_PATH) else {
        eprintln!("{ENV_MOUNT_PATH} is not set");
        return ExitCode::from(2);
    };
    if Path::new(&mount).join(READY_MARKER).exists() {
        ExitCode::SUCCESS
    } else {
        eprintln!("not ready: the secrets have not been written yet");
        ExitCode::from(1)
    }
}

/// Plain text to stderr; the level from `SIGNET_LOG` (default `info`).
fn init_logging() {
    use tracing::Level;
    let level = match std::env::var(ENV_LOG).ok().as_deref().map(str::trim) {
        Some("error") => Level::ERROR,
        Some("warn") => Level::WARN,
        Some("debug") => Level::DEBUG,
        Some("trace") => Level::TRACE,
        _ => Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .init();
}
