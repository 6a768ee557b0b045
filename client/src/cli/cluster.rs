//! `signet cluster`: Kubernetes clusters whose pods may enroll by
//! attestation (the vault checks their service-account tokens with the
//! cluster's TokenReview API).

use std::path::PathBuf;

use anyhow::ensure;
use clap::Subcommand;
use zeroize::{Zeroize as _, Zeroizing};

use super::parse::read_file;
use super::{Context, lines};
use crate::api::RegisterCluster;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Registers a cluster so its pods can enroll by attestation.
    Add {
        /// The name pods and policies refer to the cluster by.
        name: String,
        /// `https://` URL of the cluster's kube-apiserver.
        #[arg(long)]
        api_url: String,
        /// PEM CA bundle that signs the apiserver's certificate.
        #[arg(long)]
        ca_file: PathBuf,
        /// The audience pods' projected tokens carry (default `signet`).
        #[arg(long)]
        audience: Option<String>,
        /// A token allowed to create TokenReviews (default: the vault's own service account's).
        #[arg(long)]
        reviewer_token_file: Option<PathBuf>,
    },
    /// Lists registered clusters.
    List,
    /// Removes a cluster: its pods can no longer enroll.
    Remove { name: String },
}

impl ClusterCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Add {
                name,
                api_url,
                ca_file,
                audience,
                reviewer_token_file,
            } => {
                let client = ctx.client()?;
                let ca_pem = read_file(&ca_file)?;
                let reviewer_token = match reviewer_token_file {
                    Some(path) => {
                        let token = Zeroizing::new(read_file(&path)?);
                        ensure!(!token.trim().is_empty(), "{} is empty", path.display());
                        Some(token.trim().to_owned())
                    }
                    None => None,
                };
                let mut body = RegisterCluster {
                    name,
                    api_url,
                    ca_pem,
                    audience,
                    reviewer_token,
                };
                let registered = client.register_cluster(&body).await;
                // The reviewer token is a credential: gone from memory once sent.
                body.reviewer_token.zeroize();
                let view = registered?;
                ctx.show(&view, |v| {
                    format!(
                        "cluster {} registered: {} (audience {}, reviews with {})",
                        v.name,
                        v.api_url,
                        v.audience,
                        describe_reviewer(&v.reviewer)
                    )
                })
            }
            Self::List => {
                let list = ctx.client()?.clusters().await?;
                ctx.show(&list, |l| {
                    lines(&l.clusters, |c| {
                        format!(
                            "{}\t{}\taudience {}\treviewer {}\t{}",
                            c.name, c.api_url, c.audience, c.reviewer, c.created_at
                        )
                    })
                })
            }
            Self::Remove { name } => {
                ctx.client()?.remove_cluster(&name).await?;
                ctx.show(&serde_json::json!({"removed": name}), |_| {
                    format!("removed cluster {name}")
                })
            }
        }
    }
}

/// The vault's `reviewer` field in words.
fn describe_reviewer(reviewer: &str) -> &str {
    match reviewer {
        "token" => "the registered reviewer token",
        "service-account" => "the vault's own service account",
        other => other,
    }
}
