//! `signet project`: the namespaces secrets live in.

use clap::Subcommand;

use super::{Context, lines};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Creates a project.
    Create { name: String },
    /// Lists projects.
    List,
}

impl ProjectCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Create { name } => {
                let view = ctx.client()?.create_project(&name).await?;
                ctx.show(&view, |v| format!("project {} created ({})", v.name, v.id))
            }
            Self::List => {
                let list = ctx.client()?.projects().await?;
                ctx.show(&list, |l| {
                    lines(&l.projects, |p| {
                        format!("{}\t{}\t{}", p.name, p.id, p.created_at)
                    })
                })
            }
        }
    }
}
