//! `signet secret` and `signet rollback`: secrets as admins write them.
//! Values are only ever read by machines (`signet read`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::{read_file, read_stdin, split_path};
use super::{Context, lines};
use crate::api::WriteSecret;

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Writes a new version of PROJECT/SECRET.
    Set {
        path: String,
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Lists secrets of a project (metadata only).
    List { project: String },
    /// Shows versions and field names of PROJECT/SECRET.
    Show { path: String },
    /// Deletes PROJECT/SECRET and every version.
    Delete { path: String },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ValueArgs {
    /// The value (visible in shell history: prefer --value-file or --stdin).
    #[arg(long)]
    value: Option<String>,
    /// Read the value from a file.
    #[arg(long)]
    value_file: Option<PathBuf>,
    /// Read the value from standard input.
    #[arg(long)]
    stdin: bool,
    /// A field of a structured secret, NAME=VALUE (repeat).
    #[arg(long = "field", value_parser = parse_field)]
    fields: Vec<(String, String)>,
}

impl ValueArgs {
    /// The request body; reads the file or standard input if asked to.
    fn into_body(self) -> anyhow::Result<WriteSecret> {
        let Self {
            value,
            value_file,
            stdin,
            fields,
        } = self;
        let value = match (value, value_file) {
            (Some(value), _) => Some(value),
            (None, Some(path)) => Some(read_file(&path)?),
            (None, None) if stdin => Some(read_stdin()?),
            (None, None) => None,
        };
        let fields = (!fields.is_empty()).then(|| fields.into_iter().collect::<BTreeMap<_, _>>());
        Ok(WriteSecret { value, fields })
    }
}

fn parse_field(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "fields are NAME=VALUE".to_owned())
}

impl SecretCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Set { path, value } => {
                let (project, secret) = split_path(&path)?;
                let body = value.into_body()?;
                let meta = ctx.client()?.write_secret(project, secret, &body).await?;
                ctx.show(&meta, |m| {
                    format!(
                        "{}/{} is now at version {}",
                        m.project, m.name, m.live_version
                    )
                })
            }
            Self::List { project } => {
                let list = ctx.client()?.secrets(&project).await?;
                ctx.show(&list, |l| {
                    lines(&l.secrets, |s| {
                        format!(
                            "{}\tv{}\t{}",
                            s.name,
                            s.live_version,
                            describe_shape(s.fields.as_deref())
                        )
                    })
                })
            }
            Self::Show { path } => {
                let (project, secret) = split_path(&path)?;
                let meta = ctx.client()?.secret_meta(project, secret).await?;
                ctx.show(&meta, |m| {
                    let mut text = format!(
                        "{}/{}: live version {}, {}",
                        m.project,
                        m.name,
                        m.live_version,
                        describe_shape(m.fields.as_deref())
                    );
                    for v in &m.versions {
                        text.push_str(&format!(
                            "\n  v{}\t{}\tby {}",
                            v.version, v.created_at, v.created_by
                        ));
                    }
                    text
                })
            }
            Self::Delete { path } => {
                let (project, secret) = split_path(&path)?;
                ctx.client()?.delete_secret(project, secret).await?;
                ctx.show(&serde_json::json!({"deleted": path}), |_| {
                    format!("deleted {path}")
                })
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    path: String,
    /// The version to make live.
    #[arg(long)]
    version: u32,
}

impl RollbackArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self { path, version } = self;
        let (project, secret) = split_path(&path)?;
        let meta = ctx
            .client()?
            .rollback_secret(project, secret, version)
            .await?;
        ctx.show(&meta, |m| {
            format!(
                "{}/{} is live at version {}",
                m.project, m.name, m.live_version
            )
        })
    }
}

/// A secret's shape: plain, or the names of its fields.
fn describe_shape(fields: Option<&[String]>) -> String {
    match fields {
        Some(f) => format!("fields: {}", f.join(", ")),
        None => "plain value".to_owned(),
    }
}
