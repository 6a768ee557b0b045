//! `signet token`: enrollment tokens, and enrollment policies bound to a
//! Kubernetes namespace (whose pods enroll by attestation, with no token).

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::parse::parse_window;
use super::{Context, lines};
use crate::api::{
    CreateToken, CreatedToken, KubernetesBinding, RenewToken, TimeWindow, TokenConstraints,
    TokenGrant,
};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Creates an enrollment token; prints the raw token once.
    Create {
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        max_uses: Option<u32>,
        /// How long the token can be used, e.g. 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How long machines it enrolls live, e.g. 24h.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        machine_lifetime: Duration,
        /// Secret of the project granted to every machine it enrolls;
        /// SECRET or SECRET:FIELD,FIELD (repeat).
        #[arg(long = "grant")]
        grants: Vec<String>,
        #[command(flatten)]
        constraints: Box<ConstraintArgs>,
        #[command(flatten)]
        kubernetes: KubernetesArgs,
    },
    /// Lists enrollment tokens and their Kubernetes bindings.
    List,
    /// Issues a raw token's successor (printed once); the old one stays valid for --grace.
    Renew {
        /// The token to replace.
        id: String,
        /// How long the successor can be used, e.g. 24h.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How long the old token keeps working, e.g. 10m (0s: it stops now).
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Revokes an enrollment token.
    Revoke { id: String },
}

/// Restrictions of `token create`.
#[derive(Debug, Args)]
pub struct ConstraintArgs {
    /// Enrolling hostnames must match this regex (anchored).
    #[arg(long)]
    hostname_regex: Option<String>,
    /// Enrollment must come from this CIDR (repeat).
    #[arg(long = "source-cidr")]
    source_cidrs: Vec<String>,
    /// Machine name template: {hostname}, {namespace}, {pod}, {token}, {id}.
    #[arg(long)]
    name_template: Option<String>,
    /// A temporary bootstrap token: single use, machine lifetime 1h to 12 months.
    #[arg(long)]
    bootstrap: bool,
    /// The enrolled machine may only call from this CIDR (repeat).
    #[arg(long = "machine-allow-cidr")]
    machine_ip_allowlist: Vec<String>,
    /// The enrolled machine may only call from this country, as an ISO
    /// 3166-1 alpha-2 code like DE (repeat, or comma-separated); the vault
    /// needs a country database (signet-vault serve --geoip-db).
    #[arg(long = "machine-allow-country", value_delimiter = ',')]
    machine_country_allowlist: Vec<String>,
    /// The enrolled machine may only call in this window, DAYS@HH:MM-HH:MM
    /// (DAYS like mon,tue or `*`), e.g. `mon,tue,wed,thu,fri@09:00-17:00`.
    #[arg(long, value_parser = parse_window)]
    machine_window: Option<TimeWindow>,
    /// IANA time zone of --machine-window (default UTC).
    #[arg(long)]
    machine_timezone: Option<String>,
}

impl ConstraintArgs {
    fn into_constraints(self) -> TokenConstraints {
        let Self {
            hostname_regex,
            source_cidrs,
            name_template,
            bootstrap,
            machine_ip_allowlist,
            machine_country_allowlist,
            machine_window,
            machine_timezone,
        } = self;
        TokenConstraints {
            hostname_regex,
            source_cidrs,
            name_template,
            bootstrap,
            machine_ip_allowlist,
            machine_country_allowlist,
            machine_window,
            machine_timezone,
        }
    }
}

/// The Kubernetes binding of `token create`: all of cluster, namespace and
/// policy, or none of them.
#[derive(Debug, Args)]
#[group(multiple = true, requires_all = ["cluster", "namespace", "policy"])]
pub struct KubernetesArgs {
    /// Binds the token to this registered cluster (with --namespace and --policy).
    #[arg(long)]
    cluster: Option<String>,
    /// The only namespace of --cluster whose pods may enroll.
    #[arg(long)]
    namespace: Option<String>,
    /// The name pods give when they attest (their EnrollmentToken object's name).
    #[arg(long)]
    policy: Option<String>,
    /// A service account of --namespace allowed to enroll (repeat; default: any).
    #[arg(long = "service-account")]
    service_accounts: Vec<String>,
    /// Issue a raw bearer token instead of attestation (the vault can then check neither pod nor service account).
    #[arg(long)]
    raw_token: bool,
}

impl KubernetesArgs {
    fn into_binding(self) -> anyhow::Result<Option<KubernetesBinding>> {
        let Self {
            cluster,
            namespace,
            policy,
            service_accounts,
            raw_token,
        } = self;
        match (cluster, namespace, policy) {
            (Some(cluster), Some(namespace), Some(policy)) => Ok(Some(KubernetesBinding {
                cluster,
                namespace,
                policy,
                service_accounts,
                raw_token,
            })),
            (None, None, None) if service_accounts.is_empty() && !raw_token => Ok(None),
            _ => bail!(
                "--cluster, --namespace and --policy go together (--service-account and --raw-token need them too)"
            ),
        }
    }
}

/// `SECRET` or `SECRET:FIELD,FIELD`.
fn token_grant(text: &str) -> TokenGrant {
    match text.split_once(':') {
        Some((secret, fields)) => TokenGrant {
            secret: secret.to_owned(),
            fields: Some(fields.split(',').map(str::to_owned).collect()),
        },
        None => TokenGrant {
            secret: text.to_owned(),
            fields: None,
        },
    }
}

impl TokenCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::Create {
                project,
                name,
                max_uses,
                ttl,
                machine_lifetime,
                grants,
                constraints,
                kubernetes,
            } => {
                let body = CreateToken {
                    project,
                    name,
                    max_uses,
                    ttl_seconds: ttl.as_secs(),
                    machine_lifetime_seconds: machine_lifetime.as_secs(),
                    grants: grants.iter().map(|g| token_grant(g)).collect(),
                    constraints: constraints.into_constraints(),
                    kubernetes: kubernetes.into_binding()?,
                };
                let created = ctx.client()?.create_token(&body).await?;
                ctx.show(&created, describe_created)
            }
            Self::List => {
                let list = ctx.client()?.tokens().await?;
                ctx.show(&list, |l| {
                    lines(&l.tokens, |t| {
                        format!(
                            "{}\t{}\t{}\tuses {}/{}\texpires {}{}{}",
                            t.id,
                            t.name,
                            t.project,
                            t.uses,
                            t.max_uses.map_or("∞".to_owned(), |m| m.to_string()),
                            t.expires_at,
                            t.kubernetes
                                .as_ref()
                                .map(|k| format!("\t{}", describe_binding(k)))
                                .unwrap_or_default(),
                            if t.revoked { "\trevoked" } else { "" }
                        )
                    })
                })
            }
            Self::Renew { id, ttl, grace } => {
                let body = RenewToken {
                    ttl_seconds: ttl.as_secs(),
                    grace_seconds: grace.as_secs(),
                };
                let renewed = ctx.client()?.renew_token(&id, &body).await?;
                ctx.show(&renewed, |c| {
                    let old = if grace.is_zero() {
                        format!("{id} no longer works")
                    } else {
                        format!(
                            "{id} keeps working for {} at most",
                            humantime::format_duration(grace)
                        )
                    };
                    format!("{}\nThe renewed token {old}.", describe_created(c))
                })
            }
            Self::Revoke { id } => {
                ctx.client()?.revoke_token(&id).await?;
                ctx.show(&serde_json::json!({"revoked": id}), |_| {
                    format!("revoked token {id}")
                })
            }
        }
    }
}

/// The answer to `create` and `renew`: the raw token, shown only now, or
/// for an attested policy a plain statement that there is none.
fn describe_created(created: &CreatedToken) -> String {
    let view = &created.view;
    let uses = view
        .max_uses
        .map_or("unlimited".to_owned(), |m| m.to_string());
    match (&created.token, &view.kubernetes) {
        (Some(token), binding) => {
            let mut text = format!(
                "enrollment token {} for project {} (expires {}, uses {}):\n{}\nIt is shown only now. Enroll with: signet enroll --token <token> --out machine.json",
                view.id, view.project, view.expires_at, uses, token
            );
            if let Some(binding) = binding {
                text.push_str(&format!("\nbound to {}", describe_binding(binding)));
            }
            text
        }
        (None, Some(binding)) => format!(
            "enrollment policy {} ({}) for project {} (expires {}, uses {}): {}",
            binding.policy,
            view.id,
            view.project,
            view.expires_at,
            uses,
            attested_enrollment(binding)
        ),
        (None, None) => format!(
            "enrollment token {} for project {} (expires {}, uses {}): the vault returned no raw token",
            view.id, view.project, view.expires_at, uses
        ),
    }
}

fn attested_enrollment(binding: &KubernetesBinding) -> String {
    let who = if binding.service_accounts.is_empty() {
        String::new()
    } else {
        format!(
            " (service accounts {})",
            binding.service_accounts.join(", ")
        )
    };
    format!(
        "pods of namespace {} in cluster {}{who} enroll by attestation, so there is no token to hand out",
        binding.namespace, binding.cluster
    )
}

/// `CLUSTER/NAMESPACE, policy P: attested` (or `raw token`).
fn describe_binding(binding: &KubernetesBinding) -> String {
    let mut text = format!(
        "{}/{}, policy {}: {}",
        binding.cluster,
        binding.namespace,
        binding.policy,
        if binding.raw_token {
            "raw token"
        } else {
            "attested"
        }
    );
    if !binding.service_accounts.is_empty() {
        text.push_str(&format!(
            ", service accounts {}",
            binding.service_accounts.join(", ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TokenView;

    fn created(token: Option<&str>, kubernetes: Option<KubernetesBinding>) -> CreatedToken {
        CreatedToken {
            token: token.map(str::to_owned),
            view: TokenView {
                id: "tok_1".into(),
                name: String::new(),
                project: "demo".into(),
                max_uses: None,
                uses: 0,
                expires_at: "2030-01-01T00:00:00Z".into(),
                machine_lifetime_seconds: 3600,
                revoked: false,
                constraints: TokenConstraints::default(),
                kubernetes,
            },
        }
    }

    fn binding(raw_token: bool) -> KubernetesBinding {
        KubernetesBinding {
            cluster: "prod".into(),
            namespace: "payments".into(),
            policy: "api".into(),
            service_accounts: vec!["api".into()],
            raw_token,
        }
    }

    #[test]
    fn an_attested_policy_says_there_is_no_token() {
        let text = describe_created(&created(None, Some(binding(false))));
        assert!(
            text.contains("pods of namespace payments in cluster prod"),
            "{text}"
        );
        assert!(text.contains("no token to hand out"), "{text}");
    }

    #[test]
    fn a_raw_token_is_shown_with_its_binding() {
        let text = describe_created(&created(Some("et_x.y"), Some(binding(true))));
        assert!(text.contains("\net_x.y\n"), "{text}");
        assert!(
            text.ends_with("bound to prod/payments, policy api: raw token, service accounts api"),
            "{text}"
        );
        let plain = describe_created(&created(Some("et_x.y"), None));
        assert!(plain.ends_with("--out machine.json"), "{plain}");
    }

    #[test]
    fn a_grant_may_name_fields() {
        let grant = token_grant("db:user,password");
        assert_eq!(grant.secret, "db");
        assert_eq!(
            grant.fields.as_deref(),
            Some(&["user".to_owned(), "password".to_owned()][..])
        );
        assert!(token_grant("db").fields.is_none());
    }
}
