//! The `signet` command for admins, agents and machines. Human-friendly
//! output by default, `--json` for scripts.
//!
//! One module per noun; each subcommand enum has its own `run`. This module
//! holds only the global flags, the [`Context`] every command gets and the
//! dispatch.

mod access;
mod admin;
mod audit;
mod cluster;
mod delegation;
mod grant;
mod machine;
#[cfg(feature = "mcp")]
mod mcp;
mod parse;
mod project;
mod rotation;
mod secret;
mod token;

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::identity::Identity;
use crate::sdk::{Client, Options};

pub use access::{CosignCommand, PolicyCommand, UnlockArgs, WebhookCommand};
pub use admin::{AdminCommand, AgentCommand, KeygenArgs};
pub use audit::{AuditCommand, Findings};
pub use cluster::ClusterCommand;
pub use delegation::DelegationCommand;
pub use grant::GrantCommand;
pub use machine::{EnrollArgs, MachineCommand, ReadArgs};
#[cfg(feature = "mcp")]
pub use mcp::McpArgs;
pub use project::ProjectCommand;
pub use rotation::RotationCommand;
pub use secret::{RollbackArgs, SecretCommand, ValueArgs};
pub use token::{ConstraintArgs, KubernetesArgs, TokenCommand};

#[derive(Debug, Parser)]
#[command(
    name = "signet",
    version,
    about = "Signet: secrets for machines that sign every request"
)]
pub struct Cli {
    /// Vault address (default: the one stored in the identity file).
    #[arg(long, global = true, env = "SIGNET_VAULT")]
    pub vault: Option<String>,
    /// Identity file (key pair and id) to sign with.
    #[arg(long, global = true, env = "SIGNET_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// PEM CA certificate to trust for an HTTPS vault.
    #[arg(long, global = true, env = "SIGNET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generates a key pair into a file (mode 0600) and prints its public key,
    /// for registering an agent or another admin.
    Keygen(KeygenArgs),
    /// Admin identities.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Agent identities (automation; never reads values).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Secrets (admins write; only machines read values).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Grants of secrets to machines or enrollment tokens.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled machines.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Enrolls this host as a machine: generates a key pair here, proves
    /// possession with the token, and saves the identity file.
    Enroll(EnrollArgs),
    /// Reads a granted secret as a machine: PROJECT/SECRET.
    Read(ReadArgs),
    /// Lists what this machine may read.
    Grants,
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access policies on secrets (time window, IP allowlist, daily cap, co-sign, canary).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Co-signed reads.
    #[command(subcommand)]
    Cosign(CosignCommand),
    /// Outgoing webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Unlocks a project locked by a canary read.
    Unlock(UnlockArgs),
    /// Makes an older version of PROJECT/SECRET live again.
    Rollback(RollbackArgs),
    /// Kubernetes clusters whose pods may enroll by attestation.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Delegations: what an agent may hand out to machines.
    #[command(subcommand)]
    Delegation(DelegationCommand),
    /// Database credentials rotated with an agent's proof (admins).
    #[command(subcommand)]
    Rotation(RotationCommand),
    /// Serves the Model Context Protocol on stdio for an AI assistant,
    /// signing as an agent; no tool reads or writes a secret value.
    #[cfg(feature = "mcp")]
    Mcp(McpArgs),
}

impl Cli {
    /// Runs a parsed command line.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self {
            vault,
            identity,
            ca_cert,
            json,
            command,
        } = self;
        let ctx = Context {
            vault,
            identity,
            ca_cert,
            json,
        };
        match command {
            Command::Keygen(args) => args.run(&ctx),
            Command::Admin(command) => command.run(&ctx).await,
            Command::Agent(command) => command.run(&ctx).await,
            Command::Project(command) => command.run(&ctx).await,
            Command::Secret(command) => command.run(&ctx).await,
            Command::Grant(command) => command.run(&ctx).await,
            Command::Token(command) => command.run(&ctx).await,
            Command::Machine(command) => command.run(&ctx).await,
            Command::Enroll(args) => args.run(&ctx).await,
            Command::Read(args) => args.run(&ctx).await,
            Command::Grants => machine::own_grants(&ctx).await,
            Command::Audit(command) => command.run(&ctx).await,
            Command::Policy(command) => command.run(&ctx).await,
            Command::Cosign(command) => command.run(&ctx).await,
            Command::Webhook(command) => command.run(&ctx).await,
            Command::Unlock(args) => args.run(&ctx).await,
            Command::Rollback(args) => args.run(&ctx).await,
            Command::Cluster(command) => command.run(&ctx).await,
            Command::Delegation(command) => command.run(&ctx).await,
            Command::Rotation(command) => command.run(&ctx).await,
            #[cfg(feature = "mcp")]
            Command::Mcp(args) => args.run(&ctx).await,
        }
    }
}

/// The process exit code for a failed command: `signet audit verify` has
/// one per finding (see [`AuditCommand`]); every other failure is 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error
        .downcast_ref::<Findings>()
        .map_or(1, Findings::exit_code)
}

/// What every command gets: the global flags. Nothing is read or contacted
/// until a command asks for it, so `keygen` needs no vault.
#[derive(Debug)]
pub struct Context {
    vault: Option<String>,
    identity: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    json: bool,
}

impl Context {
    /// Whether `--json` was given.
    fn json(&self) -> bool {
        self.json
    }

    /// The `--vault` flag as given (no fallback to an identity file).
    fn vault_flag(&self) -> Option<&str> {
        self.vault.as_deref()
    }

    fn options(&self) -> anyhow::Result<Options> {
        let ca_pem = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Options {
            ca_pem,
            ..Options::default()
        })
    }

    /// `--vault`, else the vault stored in `identity`.
    fn vault_address(&self, identity: Option<&Identity>) -> anyhow::Result<String> {
        self.vault
            .clone()
            .or_else(|| identity.and_then(|i| i.vault.clone()))
            .context("no vault address: pass --vault or set SIGNET_VAULT")
    }

    /// A client signing as the registered identity of `--identity`.
    fn client(&self) -> anyhow::Result<Client> {
        let path = self.identity.as_deref().context(
            "no identity: pass --identity or set SIGNET_IDENTITY (an admin.json or machine.json)",
        )?;
        let identity = Identity::load(path)?;
        if identity.id.is_none() {
            bail!(
                "{} holds a key that is not registered with a vault yet",
                path.display()
            );
        }
        let address = self.vault_address(Some(&identity))?;
        Ok(Client::new(&address, identity, &self.options()?)?)
    }

    /// A client for an unregistered key: enrollment, before any id exists.
    fn unregistered_client(&self, identity: Identity) -> anyhow::Result<Client> {
        let address = self.vault_address(None)?;
        Ok(Client::new(&address, identity, &self.options()?)?)
    }

    /// Prints `value` as JSON with `--json`, else `text(value)` (nothing
    /// when that is empty).
    fn show<T: Serialize>(&self, value: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = text(value);
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Ok(())
    }
}

/// One line per item, for list output.
fn lines<T>(items: &[T], line: impl FnMut(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("\n")
}

/// What a grant or delegation covers: some fields, or the whole secret.
fn describe_fields(fields: Option<&[String]>) -> String {
    match fields {
        Some(f) => format!("fields: {}", f.join(", ")),
        None => "whole secret".to_owned(),
    }
}
