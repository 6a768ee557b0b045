//! `signet delegation`: what an agent may hand out. An agent with the
//! `tokens` or `grants` scope can give machines only the secrets an admin
//! delegated to it, and only to machines of the delegated namespace (or,
//! without one, to machines outside Kubernetes).

use clap::Subcommand;

use super::{Context, describe_fields, lines};
use crate::api::{CreateDelegation, DelegationView, NamespaceRef};

#[derive(Debug, Subcommand)]
pub enum DelegationCommand {
    /// Lets an agent hand out a secret to machines of one namespace (or outside Kubernetes).
    Add {
        /// The agent's id.
        #[arg(long)]
        agent: String,
        /// The project of --secret.
        #[arg(long)]
        project: String,
        /// The secret the agent may grant.
        #[arg(long)]
        secret: String,
        /// Only this field (repeat for several).
        #[arg(long = "field")]
        fields: Vec<String>,
        /// The cluster of --namespace (without both: machines outside Kubernetes).
        #[arg(long, requires = "namespace")]
        cluster: Option<String>,
        /// The only namespace whose machines may receive the secret.
        #[arg(long, requires = "cluster")]
        namespace: Option<String>,
    },
    /// Lists delegations (an agent sees its own).
    List {
        /// Only this agent's.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Removes a delegation.
    Remove { id: String },
}

impl DelegationCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Add {
                agent,
                project,
                secret,
                fields,
                cluster,
                namespace,
            } => {
                let kubernetes = match (cluster, namespace) {
                    (Some(cluster), Some(namespace)) => Some(NamespaceRef { cluster, namespace }),
                    (None, None) => None,
                    _ => anyhow::bail!("--cluster and --namespace go together"),
                };
                let view = ctx
                    .client()?
                    .create_delegation(&CreateDelegation {
                        agent_id: agent,
                        project,
                        secret,
                        fields: (!fields.is_empty()).then_some(fields),
                        kubernetes,
                    })
                    .await?;
                ctx.show(&view, |d| {
                    format!(
                        "delegation {}: agent {} may hand out {}/{} ({}) to {}",
                        d.id,
                        d.agent_id,
                        d.project,
                        d.secret,
                        describe_fields(d.fields.as_deref()),
                        describe_audience(d)
                    )
                })
            }
            Self::List { agent } => {
                let list = ctx.client()?.delegations(agent.as_deref()).await?;
                ctx.show(&list, |l| {
                    lines(&l.delegations, |d| {
                        format!(
                            "{}\t{}\t{}/{}\t{}\t{}",
                            d.id,
                            d.agent_id,
                            d.project,
                            d.secret,
                            describe_fields(d.fields.as_deref()),
                            describe_audience(d)
                        )
                    })
                })
            }
            Self::Remove { id } => {
                ctx.client()?.delete_delegation(&id).await?;
                ctx.show(&serde_json::json!({"removed": id}), |_| {
                    format!("removed delegation {id}")
                })
            }
        }
    }
}

/// Which machines the agent may hand the secret to.
fn describe_audience(delegation: &DelegationView) -> String {
    match &delegation.kubernetes {
        Some(ns) => format!("machines of {}/{}", ns.cluster, ns.namespace),
        None => "machines outside Kubernetes".to_owned(),
    }
}
