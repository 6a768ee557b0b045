//! The operator process: logging, arguments, run. The arguments and the
//! wiring live in `signet_operator::cli`, where the tests reach them.

use clap::Parser as _;
use signet_operator::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cli::init_logging();
    cli::run(Cli::parse()).await?;
    Ok(())
}
