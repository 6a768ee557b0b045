//! Access rules on top of grants: `signet policy` (window, IP allowlist,
//! daily cap, co-sign, canary), `signet unlock` after a canary read,
//! `signet cosign` and the `signet webhook`s that report them.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::{parse_window, read_file, read_stdin, split_path};
use super::{Context, lines};
use crate::api::{AccessPolicy, CreateCosign, CreateWebhook, TimeWindow};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Attaches an access policy to PROJECT/SECRET (replacing any previous one).
    Set {
        path: String,
        /// IANA time zone of the window and of the daily cap's day.
        #[arg(long)]
        timezone: Option<String>,
        /// Read window, DAYS@HH:MM-HH:MM (DAYS like mon,tue or `*`).
        #[arg(long, value_parser = parse_window)]
        window: Option<TimeWindow>,
        /// Reads must come from this CIDR (repeat).
        #[arg(long = "allow-cidr")]
        ip_allowlist: Vec<String>,
        /// At most this many reads per day.
        #[arg(long)]
        daily_cap: Option<u32>,
        /// Each read needs an admin-approved co-sign request.
        #[arg(long)]
        cosign: bool,
        /// Make it a canary: its first read locks the project.
        #[arg(long)]
        canary: bool,
        /// A canary read also locks every project the machine can reach.
        #[arg(long, requires = "canary")]
        cascade: bool,
    },
    /// Removes the policy of PROJECT/SECRET.
    Clear { path: String },
}

impl PolicyCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Set {
                path,
                timezone,
                window,
                ip_allowlist,
                daily_cap,
                cosign,
                canary,
                cascade,
            } => {
                let (project, secret) = split_path(&path)?;
                let policy = AccessPolicy {
                    timezone,
                    window,
                    ip_allowlist,
                    daily_read_cap: daily_cap,
                    cosign,
                    canary,
                    canary_cascade: cascade,
                };
                let meta = ctx.client()?.set_policy(project, secret, &policy).await?;
                ctx.show(&meta, |m| format!("policy of {}/{} set", m.project, m.name))
            }
            Self::Clear { path } => {
                let (project, secret) = split_path(&path)?;
                let meta = ctx
                    .client()?
                    .set_policy(project, secret, &AccessPolicy::default())
                    .await?;
                ctx.show(&meta, |m| {
                    format!("policy of {}/{} removed", m.project, m.name)
                })
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct UnlockArgs {
    project: String,
}

impl UnlockArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self { project } = self;
        let view = ctx.client()?.unlock_project(&project).await?;
        ctx.show(&view, |v| format!("project {} unlocked", v.name))
    }
}

#[derive(Debug, Subcommand)]
pub enum CosignCommand {
    /// Requests a co-signed read (as a machine: for itself; as an admin: --machine).
    Request {
        path: String,
        #[arg(long)]
        machine: Option<String>,
    },
    /// Approves a request made by someone else.
    Approve { id: String },
    /// Lists open requests.
    List,
}

impl CosignCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Request { path, machine } => {
                let (project, secret) = split_path(&path)?;
                let client = ctx.client()?;
                let on_behalf = machine.is_some();
                let body = CreateCosign {
                    project: project.to_owned(),
                    secret: secret.to_owned(),
                    machine_id: machine,
                };
                let view = if on_behalf {
                    client.create_cosign(&body).await?
                } else {
                    client.request_cosign(&body).await?
                };
                ctx.show(&view, |v| {
                    format!("co-sign request {} waits for an admin's approval", v.id)
                })
            }
            Self::Approve { id } => {
                let view = ctx.client()?.approve_cosign(&id).await?;
                ctx.show(&view, |v| {
                    format!(
                        "approved {}; valid for one read until {}",
                        v.id, v.expires_at
                    )
                })
            }
            Self::List => {
                let list = ctx.client()?.cosigns().await?;
                ctx.show(&list, |l| {
                    lines(&l.requests, |r| {
                        format!(
                            "{}\t{}/{}\t{}\tby {}\t{}",
                            r.id,
                            r.project,
                            r.secret,
                            r.machine_id,
                            r.requested_by,
                            r.approved_by
                                .as_deref()
                                .map_or("pending".to_owned(), |a| format!("approved by {a}"))
                        )
                    })
                })
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Registers a webhook (the HMAC secret is read from --secret-file or stdin).
    Create {
        #[arg(long)]
        url: String,
        /// canary.tripped, machine.enrolled, policy.denied, rotation (repeat).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        #[arg(long)]
        secret_file: Option<PathBuf>,
    },
    /// Lists webhooks with their delivery counts.
    List,
    /// Deletes a webhook.
    Delete { id: String },
}

impl WebhookCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Create {
                url,
                events,
                secret_file,
            } => {
                let secret = match secret_file {
                    Some(path) => read_file(&path)?,
                    None => read_stdin()?,
                };
                let view = ctx
                    .client()?
                    .create_webhook(&CreateWebhook {
                        url,
                        events,
                        secret: secret.trim().to_owned(),
                    })
                    .await?;
                ctx.show(&view, |v| format!("webhook {} -> {}", v.id, v.url))
            }
            Self::List => {
                let list = ctx.client()?.webhooks().await?;
                ctx.show(&list, |l| {
                    lines(&l.webhooks, |w| {
                        format!(
                            "{}\t{}\t{}\tpending {} delivered {} failed {}",
                            w.id,
                            w.url,
                            w.events.join(","),
                            w.pending,
                            w.delivered,
                            w.failed
                        )
                    })
                })
            }
            Self::Delete { id } => {
                ctx.client()?.delete_webhook(&id).await?;
                ctx.show(&serde_json::json!({"deleted": id}), |_| {
                    format!("deleted webhook {id}")
                })
            }
        }
    }
}
