//! `signet grant`: which machine (or enrollment token) may read what.

use clap::Subcommand;

use super::parse::split_path;
use super::{Context, describe_fields, lines};
use crate::api::CreateGrant;

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grants PROJECT/SECRET to a machine or an enrollment token.
    Add {
        path: String,
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        machine: Option<String>,
        #[arg(long)]
        token: Option<String>,
        /// Only this field (repeat for several).
        #[arg(long = "field")]
        fields: Vec<String>,
    },
    /// Lists grants, optionally of one machine or one token.
    List {
        #[arg(long)]
        machine: Option<String>,
        #[arg(long, conflicts_with = "machine")]
        token: Option<String>,
    },
    /// Deletes a grant.
    Delete { id: String },
}

impl GrantCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Add {
                path,
                machine,
                token,
                fields,
            } => {
                let (project, secret) = split_path(&path)?;
                let record = ctx
                    .client()?
                    .create_grant(&CreateGrant {
                        machine_id: machine,
                        token_id: token,
                        project: project.to_owned(),
                        secret: secret.to_owned(),
                        fields: (!fields.is_empty()).then_some(fields),
                    })
                    .await?;
                ctx.show(&record, |r| format!("grant {} created", r.id))
            }
            Self::List { machine, token } => {
                let list = ctx
                    .client()?
                    .list_grants(machine.as_deref(), token.as_deref())
                    .await?;
                ctx.show(&list, |l| {
                    lines(&l.grants, |g| {
                        let who = g
                            .machine_id
                            .as_deref()
                            .or(g.token_id.as_deref())
                            .unwrap_or("");
                        format!(
                            "{}\t{who}\t{}/{}\t{}",
                            g.id,
                            g.project,
                            g.secret,
                            describe_fields(g.fields.as_deref())
                        )
                    })
                })
            }
            Self::Delete { id } => {
                ctx.client()?.delete_grant(&id).await?;
                ctx.show(&serde_json::json!({"deleted": id}), |_| {
                    format!("deleted grant {id}")
                })
            }
        }
    }
}
