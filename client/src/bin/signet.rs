//! `signet`: the command-line client. The logic is in `signet_client::cli`.

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match signet_client::cli::Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("signet: {error:#}");
            std::process::ExitCode::from(signet_client::cli::exit_code(&error))
        }
    }
}
