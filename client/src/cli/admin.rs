//! Identities that manage the vault: `keygen`, `admin`, `agent`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::Context;
use super::parse::{read_file, read_stdin};
use crate::api::{CreateIdentity, Scope};
use crate::identity::{Identity, Kind};

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The key file to write (refuses to overwrite one).
    #[arg(long)]
    out: PathBuf,
}

impl KeygenArgs {
    pub fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self { out: path } = self;
        let identity = Identity::generate();
        identity.save(&path, false)?;
        let public_key = identity.key.public_key();
        ctx.show(
            &serde_json::json!({ "public_key": public_key, "file": path }),
            |_| {
                format!(
                    "wrote {} (mode 0600)\npublic key: {public_key}",
                    path.display()
                )
            },
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Registers a new key as admin with a one-time bootstrap token.
    Enroll {
        /// The bootstrap token (visible to other local users while the
        /// command runs, and kept in shell history: prefer --token-file or
        /// --token-stdin).
        #[arg(
            long,
            required_unless_present_any = ["token_file", "token_stdin"],
            conflicts_with_all = ["token_file", "token_stdin"]
        )]
        token: Option<String>,
        /// Read the bootstrap token from this file (`signet-vault serve`
        /// writes the first one to `bootstrap-token` in its data directory).
        #[arg(long, conflicts_with = "token_stdin")]
        token_file: Option<PathBuf>,
        /// Read the bootstrap token from standard input.
        #[arg(long)]
        token_stdin: bool,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "admin")]
        name: String,
    },
    /// Registers another admin's public key.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        public_key: String,
    },
}

impl AdminCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Enroll {
                token,
                token_file,
                token_stdin,
                out: path,
                name,
            } => {
                if path.exists() {
                    bail!("{} already exists; choose another --out", path.display());
                }
                let token = match (token, token_file) {
                    (Some(token), _) => Zeroizing::new(token),
                    (None, Some(file)) => Zeroizing::new(read_file(&file)?),
                    (None, None) if token_stdin => Zeroizing::new(read_stdin()?),
                    (None, None) => bail!("give --token-file, --token-stdin or --token"),
                };
                let token = token.trim();
                if token.is_empty() {
                    bail!("the bootstrap token is empty");
                }
                let mut client = ctx.unregistered_client(Identity::generate())?;
                let answer = client.enroll_admin(token, &name).await?;
                client.identity().save(&path, false)?;
                ctx.show(&answer, |a| {
                    format!(
                        "enrolled admin {} ({}); identity saved to {} (mode 0600)\nnext: export SIGNET_IDENTITY={}",
                        a.admin_id,
                        a.name,
                        path.display(),
                        path.display()
                    )
                })
            }
            Self::Add { name, public_key } => {
                let view = ctx
                    .client()?
                    .create_admin(&CreateIdentity {
                        name,
                        public_key,
                        scopes: Vec::new(),
                    })
                    .await?;
                ctx.show(&view, |v| format!("admin {} created: {}", v.name, v.id))
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Registers an agent's public key with scopes (metadata, tokens, grants, machines).
    Create {
        #[arg(long)]
        name: String,
        /// The agent's public key (from `signet keygen`).
        #[arg(
            long,
            required_unless_present = "key_file",
            conflicts_with = "key_file"
        )]
        public_key: Option<String>,
        /// The agent's key file from `signet keygen`: its public key is
        /// registered and the issued id (and vault) written back into it,
        /// so the file can sign as the agent.
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long = "scope", required = true)]
        scopes: Vec<Scope>,
    },
}

impl AgentCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self::Create {
            name,
            public_key,
            key_file,
            scopes,
        } = self;
        let mut agent_file = match key_file {
            Some(path) => {
                let identity = Identity::load(&path)?;
                Some((path, identity))
            }
            None => None,
        };
        if let Some((path, identity)) = &agent_file
            && identity.id.is_some()
        {
            bail!(
                "{} is already registered as {}",
                path.display(),
                identity.id.as_deref().unwrap_or("")
            );
        }
        let public_key = match (&agent_file, public_key) {
            (Some((_, identity)), _) => identity.key.public_key(),
            (None, Some(key)) => key,
            (None, None) => bail!("give --public-key or --key-file"),
        };
        let admin = ctx.client()?;
        let view = admin
            .create_agent(&CreateIdentity {
                name,
                public_key,
                scopes,
            })
            .await?;
        if let Some((path, identity)) = &mut agent_file {
            identity.kind = Kind::Agent;
            identity.id = Some(view.id.clone());
            identity.vault = admin
                .identity()
                .vault
                .clone()
                .or_else(|| ctx.vault_flag().map(str::to_owned));
            identity.save(path, true)?;
        }
        ctx.show(&view, |v| match &agent_file {
            Some((path, _)) => format!(
                "agent {} created: {}; {} now signs as it",
                v.name,
                v.id,
                path.display()
            ),
            None => format!("agent {} created: {}", v.name, v.id),
        })
    }
}
