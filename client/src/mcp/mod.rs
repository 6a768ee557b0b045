//! `signet mcp`: a Model Context Protocol server over stdio that lets an AI
//! assistant manage the vault as an **agent** identity, and never see a
//! secret value.
//!
//! Read-blind by construction, in three layers:
//!
//! 1. [`vault::AgentVault`] is the only way the tools reach the vault. It is a
//!    narrow facade over [`crate::sdk::Client`] with no method that reads,
//!    writes or returns a value (no `read_secret`, no `write_secret`), and it
//!    drops the one credential the vault may hand an agent: a raw enrollment
//!    token, which would let whoever holds it enroll a machine and read.
//! 2. [`tools`] answers with its own closed types ([`output`]) (`additionalProperties:
//!    false`, no maps), built field by field from the API types; its tests
//!    walk every tool's input and output schema and fail on anything that
//!    could carry a value.
//! 3. The vault refuses agents on every value route anyway (`not_a_machine`).
//!
//! The protocol side (JSON-RPC 2.0, `initialize` and version negotiation,
//! `ping`, error codes) is the official Rust SDK, `rmcp`; [`server`] only
//! says which versions we speak and which tools exist.

#[cfg(test)]
mod fake;
pub mod input;
pub mod output;
pub mod server;
pub mod tools;
pub mod vault;

pub use server::Server;
pub use vault::AgentVault;

/// Serves MCP on this process's stdin and stdout until the client closes
/// stdin. Nothing else may write to stdout meanwhile: it is the protocol.
pub async fn serve_stdio<V: AgentVault>(vault: V) -> Result<(), Error> {
    serve(vault, rmcp::transport::stdio()).await
}

/// Serves MCP over any byte stream pair (stdio in production, an in-memory
/// pipe in the tests) until the client goes away.
pub async fn serve<V, R, W>(vault: V, (read, write): (R, W)) -> Result<(), Error>
where
    V: AgentVault,
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use rmcp::ServiceExt as _;
    let running = Server::new(vault)
        .serve((read, write))
        .await
        .map_err(|e| Error::Start(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Stopped(e.to_string()))?;
    Ok(())
}

/// Why the MCP server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the MCP session did not start: {0}")]
    Start(String),
    #[error("the MCP session stopped abnormally: {0}")]
    Stopped(String),
}
