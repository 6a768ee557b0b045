//! `signet machine` (machines as admins manage them) and what a machine
//! does for itself: `signet enroll`, `signet read`, `signet grants`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::parse::split_path;
use super::{Context, describe_fields, lines};
use crate::api::MachineKubernetes;
use crate::sdk::Client;

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Lists enrolled machines (with their pod and attestation, in Kubernetes).
    List,
    /// Revokes a machine for good.
    Revoke { id: String },
    /// Refuses the machine's requests until re-enabled.
    Disable { id: String },
    /// Lifts a disable.
    Enable { id: String },
    /// Sets the machine to expire this long from now (audited with the old expiry).
    Extend {
        id: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
}

impl MachineCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::List => {
                let list = ctx.client()?.machines().await?;
                ctx.show(&list, |l| {
                    lines(&l.machines, |m| {
                        format!(
                            "{}\t{}\t{}\texpires {}{}{}",
                            m.id,
                            m.name,
                            m.project,
                            m.expires_at,
                            m.kubernetes
                                .as_ref()
                                .map(|k| format!("\t{}", describe_pod(k)))
                                .unwrap_or_default(),
                            if m.disabled { "\tdisabled" } else { "" }
                        )
                    })
                })
            }
            Self::Revoke { id } => {
                ctx.client()?.revoke_machine(&id).await?;
                ctx.show(&serde_json::json!({"revoked": id}), |_| {
                    format!("revoked machine {id}")
                })
            }
            Self::Disable { id } => {
                let view = ctx.client()?.disable_machine(&id).await?;
                ctx.show(&view, |v| format!("machine {} disabled", v.id))
            }
            Self::Enable { id } => {
                let view = ctx.client()?.enable_machine(&id).await?;
                ctx.show(&view, |v| {
                    format!("machine {} enabled (expires {})", v.id, v.expires_at)
                })
            }
            Self::Extend { id, lifetime } => {
                let view = ctx
                    .client()?
                    .extend_machine(&id, lifetime.as_secs())
                    .await?;
                ctx.show(&view, |v| {
                    format!("machine {} now expires {}", v.id, v.expires_at)
                })
            }
        }
    }
}

/// `NAMESPACE/POD (SERVICE_ACCOUNT) in cluster C, attested`; a machine that
/// enrolled with a raw token has no verified pod or service account.
fn describe_pod(k: &MachineKubernetes) -> String {
    let mut text = k.namespace.clone();
    if let Some(pod) = &k.pod_name {
        text.push_str(&format!("/{pod}"));
    }
    if let Some(account) = &k.service_account {
        text.push_str(&format!(" ({account})"));
    }
    text.push_str(&format!(
        " in cluster {}, {}",
        k.cluster,
        if k.attested {
            "attested"
        } else {
            "not attested"
        }
    ));
    text
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    #[arg(long, env = "SIGNET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the token from this file instead.
    #[arg(long, conflicts_with = "token")]
    token_file: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// Hostname to report (default: this host's name).
    #[arg(long)]
    hostname: Option<String>,
}

impl EnrollArgs {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self {
            token,
            token_file,
            out: path,
            hostname,
        } = self;
        if path.exists() {
            bail!("{} already exists; choose another --out", path.display());
        }
        let token = read_token(token, token_file.as_deref())?;
        let address = ctx.vault_address(None)?;
        let hostname = hostname.unwrap_or_else(host_name);
        let (client, answer) = Client::enroll(
            &address,
            &token,
            &hostname,
            BTreeMap::new(),
            &ctx.options()?,
        )
        .await?;
        client.identity().save(&path, false)?;
        ctx.show(&answer, |a| {
            let mut text = format!(
                "enrolled machine {} (expires {}); identity saved to {} (mode 0600)",
                a.machine_id,
                a.expires_at,
                path.display()
            );
            for g in &a.grants {
                text.push_str(&format!("\n  may read {}/{}", g.project, g.secret));
            }
            text
        })
    }
}

fn read_token(token: Option<String>, file: Option<&Path>) -> anyhow::Result<String> {
    match (token, file) {
        (Some(token), _) => Ok(token),
        (None, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?
            .trim()
            .to_owned()),
        (None, None) => bail!("give --token, --token-file or SIGNET_TOKEN"),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    path: String,
    #[arg(long)]
    version: Option<u32>,
    /// Print only this field of a structured secret.
    #[arg(long)]
    field: Option<String>,
}

impl ReadArgs {
    /// Prints the value: the one output of this command that is a secret.
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let Self {
            path,
            version,
            field,
        } = self;
        let (project, secret) = split_path(&path)?;
        let value = ctx.client()?.read_secret(project, secret, version).await?;
        if ctx.json() {
            return ctx.show(&value, |_| String::new());
        }
        match (&value.value, &value.fields, field) {
            (Some(v), _, None) => print!("{v}"),
            (_, Some(fields), Some(name)) => match fields.get(&name) {
                Some(v) => print!("{v}"),
                None => bail!("{path} has no field {name:?} readable by this machine"),
            },
            (_, Some(fields), None) => {
                for (k, v) in fields {
                    println!("{k}={v}");
                }
            }
            (Some(_), None, Some(_)) => bail!("{path} is a plain secret with no fields"),
            (None, None, _) => bail!("the vault answered with no value"),
        }
        Ok(())
    }
}

/// `signet grants`: what this machine may read.
pub(super) async fn own_grants(ctx: &Context) -> anyhow::Result<()> {
    let list = ctx.client()?.grants().await?;
    ctx.show(&list, |l| {
        lines(&l.grants, |g| {
            format!(
                "{}/{}\t{}",
                g.project,
                g.secret,
                describe_fields(g.fields.as_deref())
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_namespace_slash_name_with_its_account() {
        let attested = MachineKubernetes {
            cluster: "prod".into(),
            namespace: "payments".into(),
            service_account: Some("api".into()),
            pod_name: Some("api-7d9f".into()),
            pod_uid: Some("uid".into()),
            attested: true,
        };
        assert_eq!(
            describe_pod(&attested),
            "payments/api-7d9f (api) in cluster prod, attested"
        );
        let raw = MachineKubernetes {
            cluster: "prod".into(),
            namespace: "payments".into(),
            ..MachineKubernetes::default()
        };
        assert_eq!(describe_pod(&raw), "payments in cluster prod, not attested");
    }
}
