//! `signet mcp`: serves the Model Context Protocol on stdin/stdout for an
//! AI assistant, signing every call as an agent (see `crate::mcp` and
//! docs/mcp.md).

use anyhow::{Context as _, bail};
use clap::Args;

use super::Context;
use crate::identity::Kind;

/// Serves MCP over stdio as the agent of `--identity`. stdout carries the
/// protocol only; diagnostics go to stderr.
#[derive(Debug, Args)]
pub struct McpArgs {}

impl McpArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self {} = self;
        let client = ctx.client()?;
        // An assistant gets an agent's powers, never an admin's (who could
        // write values or delegate) nor a machine's (who reads them).
        if client.identity().kind != Kind::Agent {
            bail!(
                "signet mcp signs as an agent, and this identity file holds {}: create one with \
                 `signet keygen` and `signet agent create --key-file` (see docs/mcp.md)",
                match client.identity().kind {
                    Kind::Admin => "an admin",
                    Kind::Machine => "a machine",
                    Kind::Agent => "an agent",
                    Kind::Unregistered => "an unregistered key",
                }
            );
        }
        crate::mcp::serve_stdio(client).await.context("signet mcp")
    }
}
