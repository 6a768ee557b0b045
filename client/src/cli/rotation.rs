//! `signet rotation`: credentials the vault rotates with the proof of a
//! rotation agent (docs/rotation.md).

use clap::{Subcommand, ValueEnum};

use super::parse::split_path;
use super::{Context, lines};
use crate::api::{Alphabet, CreateRotation, PasswordPolicy, Provider, RotationTarget};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProviderArg {
    Postgresql,
    Mysql,
    Redis,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AlphabetArg {
    Alphanumeric,
    Symbols,
}

#[derive(Debug, Subcommand)]
pub enum RotationCommand {
    /// Puts PROJECT/SECRET (fields `username`, `password`) under rotation.
    Create {
        /// `project/secret` to rotate.
        secret: String,
        #[arg(long, value_enum)]
        provider: ProviderArg,
        /// Host (or address) of the database.
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: u16,
        /// PostgreSQL/MariaDB: the group role holding the privileges; Redis:
        /// the ACL user.
        #[arg(long)]
        role: String,
        /// The database new credentials are verified against (not Redis).
        #[arg(long)]
        database: Option<String>,
        /// The admin credential: a secret of the same project with
        /// `username` and `password`, granted to no one but the agent.
        #[arg(long)]
        admin_secret: String,
        /// The agent machine's id: the only identity that may claim jobs.
        #[arg(long)]
        agent: String,
        /// Rotate on a schedule, for example `30d` (at least 60 s).
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<std::time::Duration>,
        /// Password length, 16 to 128.
        #[arg(long, default_value_t = 32)]
        length: u16,
        #[arg(long, value_enum, default_value = "alphanumeric")]
        alphabet: AlphabetArg,
        /// How long the agent may hold a job (default 5m).
        #[arg(long, value_parser = humantime::parse_duration)]
        lease: Option<std::time::Duration>,
        /// How long the old credential keeps working after the new one is
        /// live (default 60s).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Lists rotation configs.
    List,
    /// Starts a rotation now.
    Trigger { id: String },
    /// A config's rotations, newest first.
    History { id: String },
}

impl RotationCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Create {
                secret,
                provider,
                host,
                port,
                role,
                database,
                admin_secret,
                agent,
                every,
                length,
                alphabet,
                lease,
                grace,
            } => {
                let (project, secret) = split_path(&secret)?;
                let (project, secret) = (project.to_owned(), secret.to_owned());
                let body = CreateRotation {
                    project,
                    secret,
                    provider: match provider {
                        ProviderArg::Postgresql => Provider::Postgresql,
                        ProviderArg::Mysql => Provider::Mysql,
                        ProviderArg::Redis => Provider::Redis,
                    },
                    target: RotationTarget {
                        host,
                        port,
                        role,
                        database,
                    },
                    admin_secret,
                    agent_machine_id: agent,
                    interval_seconds: every.map(|d| d.as_secs()),
                    policy: PasswordPolicy {
                        length,
                        alphabet: match alphabet {
                            AlphabetArg::Alphanumeric => Alphabet::Alphanumeric,
                            AlphabetArg::Symbols => Alphabet::Symbols,
                        },
                    },
                    lease_seconds: lease.map(|d| d.as_secs()),
                    grace_seconds: grace.map(|d| d.as_secs()),
                };
                let view = ctx.client()?.create_rotation(&body).await?;
                ctx.show(&view, |v| {
                    format!(
                        "rotation {} of {}/{} ({}) by agent {}",
                        v.id,
                        v.project,
                        v.secret,
                        v.provider.as_str(),
                        v.agent_machine_id
                    )
                })
            }
            Self::List => {
                let list = ctx.client()?.rotations().await?;
                ctx.show(&list, |l| {
                    lines(&l.rotations, |r| {
                        format!(
                            "{}\t{}/{}\t{}\t{}:{}\tagent {}\tnext {}",
                            r.id,
                            r.project,
                            r.secret,
                            r.provider.as_str(),
                            r.target.host,
                            r.target.port,
                            r.agent_machine_id,
                            r.next_due_at.as_deref().unwrap_or("on trigger")
                        )
                    })
                })
            }
            Self::Trigger { id } => {
                let job = ctx.client()?.trigger_rotation(&id).await?;
                ctx.show(&job, |j| {
                    format!("rotation job {} {}", j.id, j.state.as_str())
                })
            }
            Self::History { id } => {
                let list = ctx.client()?.rotation_jobs(&id).await?;
                ctx.show(&list, |l| {
                    lines(&l.jobs, |j| {
                        format!(
                            "{}\t{}\tv{} -> {}\t{}\t{}",
                            j.id,
                            j.state.as_str(),
                            j.from_version,
                            j.to_version.map_or("-".into(), |v| format!("v{v}")),
                            j.created_at,
                            j.reason.as_deref().unwrap_or("")
                        )
                    })
                })
            }
        }
    }
}
