//! The `signet` command for admins and machines. Human-friendly output by
//! default, `--json` for scripts.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::api::*;
use crate::identity::Identity;
use crate::sdk::{Client, Options};

#[derive(Debug, Parser)]
#[command(
    name = "signet",
    version,
    about = "Signet: secrets for machines that sign every request"
)]
pub struct Cli {
    /// Vault address (default: the one stored in the identity file).
    #[arg(long, global = true, env = "SIGNET_VAULT")]
    pub vault: Option<String>,
    /// Identity file (key pair and id) to sign with.
    #[arg(long, global = true, env = "SIGNET_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// PEM CA certificate to trust for an HTTPS vault.
    #[arg(long, global = true, env = "SIGNET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generates a key pair into a file (mode 0600) and prints its public key,
    /// for registering an agent or another admin.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Admin identities.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Agent identities (automation; never reads values).
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Secrets (admins write; only machines read values).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Grants of secrets to machines or enrollment tokens.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrolled machines.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Enrolls this host as a machine: generates a key pair here, proves
    /// possession with the token, and saves the identity file.
    Enroll {
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
    },
    /// Reads a granted secret as a machine: PROJECT/SECRET.
    Read {
        path: String,
        #[arg(long)]
        version: Option<u32>,
        /// Print only this field of a structured secret.
        #[arg(long)]
        field: Option<String>,
    },
    /// Lists what this machine may read.
    Grants,
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Access policies on secrets (time window, IP allowlist, daily cap, co-sign, canary).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Co-signed reads.
    #[command(subcommand)]
    Cosign(CosignCommand),
    /// Outgoing webhooks.
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// Unlocks a project locked by a canary read.
    Unlock { project: String },
    /// Makes an older version of PROJECT/SECRET live again.
    Rollback {
        path: String,
        #[arg(long)]
        version: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Registers a new key as admin with a one-time bootstrap token.
    Enroll {
        #[arg(long)]
        token: String,
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

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    Create { name: String },
    List,
}

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

fn parse_field(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "fields are NAME=VALUE".to_owned())
}

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
    List {
        #[arg(long)]
        machine: Option<String>,
        #[arg(long, conflicts_with = "machine")]
        token: Option<String>,
    },
    Delete {
        id: String,
    },
}

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
    },
    List,
    Revoke {
        id: String,
    },
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
    /// The enrolled machine may only call in this window, DAYS@HH:MM-HH:MM
    /// (DAYS like mon,tue or `*`), e.g. `mon,tue,wed,thu,fri@09:00-17:00`.
    #[arg(long, value_parser = parse_window)]
    machine_window: Option<TimeWindow>,
    /// IANA time zone of --machine-window (default UTC).
    #[arg(long)]
    machine_timezone: Option<String>,
}

impl ConstraintArgs {
    fn to_constraints(&self) -> anyhow::Result<TokenConstraints> {
        Ok(TokenConstraints {
            hostname_regex: self.hostname_regex.clone(),
            source_cidrs: self.source_cidrs.clone(),
            name_template: self.name_template.clone(),
            bootstrap: self.bootstrap,
            machine_ip_allowlist: self.machine_ip_allowlist.clone(),
            machine_window: self.machine_window.clone(),
            machine_timezone: self.machine_timezone.clone(),
        })
    }
}

/// `DAYS@HH:MM-HH:MM` or `HH:MM-HH:MM`.
fn parse_window(text: &str) -> Result<TimeWindow, String> {
    let (days, hours) = text.split_once('@').unwrap_or(("*", text));
    let (start, end) = hours
        .split_once('-')
        .ok_or_else(|| "a window is DAYS@HH:MM-HH:MM, e.g. mon,fri@09:00-17:00".to_owned())?;
    let days = if days == "*" {
        Vec::new()
    } else {
        days.split(',').map(|d| d.trim().to_owned()).collect()
    };
    Ok(TimeWindow {
        days,
        start: start.to_owned(),
        end: end.to_owned(),
    })
}

#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    List,
    Revoke {
        id: String,
    },
    /// Refuses the machine's requests until re-enabled.
    Disable {
        id: String,
    },
    /// Lifts a disable.
    Enable {
        id: String,
    },
    /// Sets the machine to expire this long from now (audited with the old expiry).
    Extend {
        id: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        lifetime: Duration,
    },
}

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
    List,
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Prints audit entries.
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Fetches the whole log and recomputes its hash chain here.
    Verify,
}

fn split_path(path: &str) -> anyhow::Result<(&str, &str)> {
    path.split_once('/')
        .filter(|(p, s)| !p.is_empty() && !s.is_empty() && !s.contains('/'))
        .with_context(|| format!("{path:?} is not PROJECT/SECRET"))
}

struct Output {
    json: bool,
}

impl Output {
    fn show<T: Serialize>(&self, value: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            let text = text(value);
            if !text.is_empty() {
                println!("{text}");
            }
        }
        Ok(())
    }
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    let ca_pem = match &cli.ca_cert {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?)
        }
        None => None,
    };
    Ok(Options {
        ca_pem,
        ..Options::default()
    })
}

fn vault_address(cli: &Cli, identity: Option<&Identity>) -> anyhow::Result<String> {
    cli.vault
        .clone()
        .or_else(|| identity.and_then(|i| i.vault.clone()))
        .context("no vault address: pass --vault or set SIGNET_VAULT")
}

fn client(cli: &Cli) -> anyhow::Result<Client> {
    let path = cli.identity.as_deref().context(
        "no identity: pass --identity or set SIGNET_IDENTITY (an admin.json or machine.json)",
    )?;
    let identity = Identity::load(path)?;
    if identity.id.is_none() {
        bail!(
            "{} holds a key that is not registered with a vault yet",
            path.display()
        );
    }
    let address = vault_address(cli, Some(&identity))?;
    Ok(Client::new(&address, identity, &options(cli)?)?)
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

fn write_body(args: ValueArgs) -> anyhow::Result<WriteSecret> {
    let value = if let Some(value) = args.value {
        Some(value)
    } else if let Some(path) = args.value_file {
        Some(
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
    } else if args.stdin {
        let mut value = String::new();
        std::io::stdin().read_to_string(&mut value)?;
        Some(value)
    } else {
        None
    };
    let fields =
        (!args.fields.is_empty()).then(|| args.fields.into_iter().collect::<BTreeMap<_, _>>());
    Ok(WriteSecret { value, fields })
}

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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output { json: cli.json };
    match &cli.command {
        Command::Keygen { out: path } => {
            let identity = Identity::generate();
            identity.save(path, false)?;
            let public_key = identity.key.public_key();
            out.show(
                &serde_json::json!({ "public_key": public_key, "file": path }),
                |_| {
                    format!(
                        "wrote {} (mode 0600)\npublic key: {public_key}",
                        path.display()
                    )
                },
            )
        }
        Command::Admin(AdminCommand::Enroll {
            token,
            out: path,
            name,
        }) => {
            if path.exists() {
                bail!("{} already exists; choose another --out", path.display());
            }
            let address = vault_address(&cli, None)?;
            let mut client = Client::new(&address, Identity::generate(), &options(&cli)?)?;
            let answer = client.enroll_admin(token, name).await?;
            client.identity().save(path, false)?;
            out.show(&answer, |a| {
                format!(
                    "enrolled admin {} ({}); identity saved to {} (mode 0600)\nnext: export SIGNET_IDENTITY={}",
                    a.admin_id,
                    a.name,
                    path.display(),
                    path.display()
                )
            })
        }
        Command::Admin(AdminCommand::Add { name, public_key }) => {
            let view = client(&cli)?
                .create_admin(&CreateIdentity {
                    name: name.clone(),
                    public_key: public_key.clone(),
                    scopes: Vec::new(),
                })
                .await?;
            out.show(&view, |v| format!("admin {} created: {}", v.name, v.id))
        }
        Command::Agent(AgentCommand::Create {
            name,
            public_key,
            key_file,
            scopes,
        }) => {
            let mut agent_file = match key_file {
                Some(path) => Some((path, Identity::load(path)?)),
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
                (None, Some(key)) => key.clone(),
                (None, None) => bail!("give --public-key or --key-file"),
            };
            let admin = client(&cli)?;
            let view = admin
                .create_agent(&CreateIdentity {
                    name: name.clone(),
                    public_key,
                    scopes: scopes.clone(),
                })
                .await?;
            if let Some((path, identity)) = &mut agent_file {
                identity.kind = crate::identity::Kind::Agent;
                identity.id = Some(view.id.clone());
                identity.vault = admin.identity().vault.clone().or_else(|| cli.vault.clone());
                identity.save(path, true)?;
            }
            out.show(&view, |v| match &agent_file {
                Some((path, _)) => format!(
                    "agent {} created: {}; {} now signs as it",
                    v.name,
                    v.id,
                    path.display()
                ),
                None => format!("agent {} created: {}", v.name, v.id),
            })
        }
        Command::Project(ProjectCommand::Create { name }) => {
            let view = client(&cli)?.create_project(name).await?;
            out.show(&view, |v| format!("project {} created ({})", v.name, v.id))
        }
        Command::Project(ProjectCommand::List) => {
            let list = client(&cli)?.projects().await?;
            out.show(&list, |l| {
                l.projects
                    .iter()
                    .map(|p| format!("{}\t{}\t{}", p.name, p.id, p.created_at))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Secret(SecretCommand::Set { path, value }) => {
            let (project, secret) = split_path(path)?;
            let body = write_body(ValueArgs {
                value: value.value.clone(),
                value_file: value.value_file.clone(),
                stdin: value.stdin,
                fields: value.fields.clone(),
            })?;
            let meta = client(&cli)?.write_secret(project, secret, &body).await?;
            out.show(&meta, |m| {
                format!(
                    "{}/{} is now at version {}",
                    m.project, m.name, m.live_version
                )
            })
        }
        Command::Secret(SecretCommand::List { project }) => {
            let list = client(&cli)?.secrets(project).await?;
            out.show(&list, |l| {
                l.secrets
                    .iter()
                    .map(|s| {
                        format!(
                            "{}\tv{}\t{}",
                            s.name,
                            s.live_version,
                            describe_shape(&s.fields)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Secret(SecretCommand::Show { path }) => {
            let (project, secret) = split_path(path)?;
            let meta = client(&cli)?.secret_meta(project, secret).await?;
            out.show(&meta, |m| {
                let mut text = format!(
                    "{}/{}: live version {}, {}",
                    m.project,
                    m.name,
                    m.live_version,
                    describe_shape(&m.fields)
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
        Command::Secret(SecretCommand::Delete { path }) => {
            let (project, secret) = split_path(path)?;
            client(&cli)?.delete_secret(project, secret).await?;
            out.show(&serde_json::json!({"deleted": path}), |_| {
                format!("deleted {path}")
            })
        }
        Command::Grant(GrantCommand::Add {
            path,
            machine,
            token,
            fields,
        }) => {
            let (project, secret) = split_path(path)?;
            let record = client(&cli)?
                .create_grant(&CreateGrant {
                    machine_id: machine.clone(),
                    token_id: token.clone(),
                    project: project.to_owned(),
                    secret: secret.to_owned(),
                    fields: (!fields.is_empty()).then(|| fields.clone()),
                })
                .await?;
            out.show(&record, |r| format!("grant {} created", r.id))
        }
        Command::Grant(GrantCommand::List { machine, token }) => {
            let list = client(&cli)?
                .list_grants(machine.as_deref(), token.as_deref())
                .await?;
            out.show(&list, |l| {
                l.grants
                    .iter()
                    .map(|g| {
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
                            describe_fields(&g.fields)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Grant(GrantCommand::Delete { id }) => {
            client(&cli)?.delete_grant(id).await?;
            out.show(&serde_json::json!({"deleted": id}), |_| {
                format!("deleted grant {id}")
            })
        }
        Command::Token(TokenCommand::Create {
            project,
            name,
            max_uses,
            ttl,
            machine_lifetime,
            grants,
            constraints,
        }) => {
            let created = client(&cli)?
                .create_token(&CreateToken {
                    project: project.clone(),
                    name: name.clone(),
                    max_uses: *max_uses,
                    ttl_seconds: ttl.as_secs(),
                    machine_lifetime_seconds: machine_lifetime.as_secs(),
                    grants: grants.iter().map(|g| token_grant(g)).collect(),
                    constraints: constraints.to_constraints()?,
                })
                .await?;
            out.show(&created, |c| {
                format!(
                    "enrollment token {} for project {} (expires {}, uses {}):\n{}\nIt is shown only now. Enroll with: signet enroll --token <token> --out machine.json",
                    c.view.id,
                    c.view.project,
                    c.view.expires_at,
                    c.view.max_uses.map_or("unlimited".to_owned(), |m| m.to_string()),
                    c.token
                )
            })
        }
        Command::Token(TokenCommand::List) => {
            let list = client(&cli)?.tokens().await?;
            out.show(&list, |l| {
                l.tokens
                    .iter()
                    .map(|t| {
                        format!(
                            "{}\t{}\t{}\tuses {}/{}\texpires {}{}",
                            t.id,
                            t.name,
                            t.project,
                            t.uses,
                            t.max_uses.map_or("∞".to_owned(), |m| m.to_string()),
                            t.expires_at,
                            if t.revoked { "\trevoked" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Token(TokenCommand::Revoke { id }) => {
            client(&cli)?.revoke_token(id).await?;
            out.show(&serde_json::json!({"revoked": id}), |_| {
                format!("revoked token {id}")
            })
        }
        Command::Machine(MachineCommand::List) => {
            let list = client(&cli)?.machines().await?;
            out.show(&list, |l| {
                l.machines
                    .iter()
                    .map(|m| {
                        format!(
                            "{}\t{}\t{}\texpires {}{}",
                            m.id,
                            m.name,
                            m.project,
                            m.expires_at,
                            if m.disabled { "\tdisabled" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Machine(MachineCommand::Revoke { id }) => {
            client(&cli)?.revoke_machine(id).await?;
            out.show(&serde_json::json!({"revoked": id}), |_| {
                format!("revoked machine {id}")
            })
        }
        Command::Machine(MachineCommand::Disable { id }) => {
            let view = client(&cli)?.disable_machine(id).await?;
            out.show(&view, |v| format!("machine {} disabled", v.id))
        }
        Command::Machine(MachineCommand::Enable { id }) => {
            let view = client(&cli)?.enable_machine(id).await?;
            out.show(&view, |v| {
                format!("machine {} enabled (expires {})", v.id, v.expires_at)
            })
        }
        Command::Machine(MachineCommand::Extend { id, lifetime }) => {
            let view = client(&cli)?.extend_machine(id, lifetime.as_secs()).await?;
            out.show(&view, |v| {
                format!("machine {} now expires {}", v.id, v.expires_at)
            })
        }
        Command::Policy(PolicyCommand::Set {
            path,
            timezone,
            window,
            ip_allowlist,
            daily_cap,
            cosign,
            canary,
            cascade,
        }) => {
            let (project, secret) = split_path(path)?;
            let policy = AccessPolicy {
                timezone: timezone.clone(),
                window: window.clone(),
                ip_allowlist: ip_allowlist.clone(),
                daily_read_cap: *daily_cap,
                cosign: *cosign,
                canary: *canary,
                canary_cascade: *cascade,
            };
            let meta = client(&cli)?.set_policy(project, secret, &policy).await?;
            out.show(&meta, |m| format!("policy of {}/{} set", m.project, m.name))
        }
        Command::Policy(PolicyCommand::Clear { path }) => {
            let (project, secret) = split_path(path)?;
            let meta = client(&cli)?
                .set_policy(project, secret, &AccessPolicy::default())
                .await?;
            out.show(&meta, |m| {
                format!("policy of {}/{} removed", m.project, m.name)
            })
        }
        Command::Cosign(CosignCommand::Request { path, machine }) => {
            let (project, secret) = split_path(path)?;
            let client = client(&cli)?;
            let body = CreateCosign {
                project: project.to_owned(),
                secret: secret.to_owned(),
                machine_id: machine.clone(),
            };
            let view = if machine.is_some() {
                client.create_cosign(&body).await?
            } else {
                client.request_cosign(&body).await?
            };
            out.show(&view, |v| {
                format!("co-sign request {} waits for an admin's approval", v.id)
            })
        }
        Command::Cosign(CosignCommand::Approve { id }) => {
            let view = client(&cli)?.approve_cosign(id).await?;
            out.show(&view, |v| {
                format!(
                    "approved {}; valid for one read until {}",
                    v.id, v.expires_at
                )
            })
        }
        Command::Cosign(CosignCommand::List) => {
            let list = client(&cli)?.cosigns().await?;
            out.show(&list, |l| {
                l.requests
                    .iter()
                    .map(|r| {
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
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Webhook(WebhookCommand::Create {
            url,
            events,
            secret_file,
        }) => {
            let secret = match secret_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    text
                }
            };
            let view = client(&cli)?
                .create_webhook(&CreateWebhook {
                    url: url.clone(),
                    events: events.clone(),
                    secret: secret.trim().to_owned(),
                })
                .await?;
            out.show(&view, |v| format!("webhook {} -> {}", v.id, v.url))
        }
        Command::Webhook(WebhookCommand::List) => {
            let list = client(&cli)?.webhooks().await?;
            out.show(&list, |l| {
                l.webhooks
                    .iter()
                    .map(|w| {
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
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Webhook(WebhookCommand::Delete { id }) => {
            client(&cli)?.delete_webhook(id).await?;
            out.show(&serde_json::json!({"deleted": id}), |_| {
                format!("deleted webhook {id}")
            })
        }
        Command::Unlock { project } => {
            let view = client(&cli)?.unlock_project(project).await?;
            out.show(&view, |v| format!("project {} unlocked", v.name))
        }
        Command::Rollback { path, version } => {
            let (project, secret) = split_path(path)?;
            let meta = client(&cli)?
                .rollback_secret(project, secret, *version)
                .await?;
            out.show(&meta, |m| {
                format!(
                    "{}/{} is live at version {}",
                    m.project, m.name, m.live_version
                )
            })
        }
        Command::Enroll {
            token,
            token_file,
            out: path,
            hostname,
        } => {
            if path.exists() {
                bail!("{} already exists; choose another --out", path.display());
            }
            let token = read_token(token.clone(), token_file.as_deref())?;
            let address = vault_address(&cli, None)?;
            let hostname = hostname.clone().unwrap_or_else(host_name);
            let (client, answer) = Client::enroll(
                &address,
                &token,
                &hostname,
                BTreeMap::new(),
                &options(&cli)?,
            )
            .await?;
            client.identity().save(path, false)?;
            out.show(&answer, |a| {
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
        Command::Read {
            path,
            version,
            field,
        } => {
            let (project, secret) = split_path(path)?;
            let value = client(&cli)?.read_secret(project, secret, *version).await?;
            if cli.json {
                return out.show(&value, |_| String::new());
            }
            match (&value.value, &value.fields, field) {
                (Some(v), _, None) => print!("{v}"),
                (_, Some(fields), Some(name)) => match fields.get(name) {
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
        Command::Grants => {
            let list = client(&cli)?.grants().await?;
            out.show(&list, |l| {
                l.grants
                    .iter()
                    .map(|g| format!("{}/{}\t{}", g.project, g.secret, describe_fields(&g.fields)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Audit(AuditCommand::List { after, limit }) => {
            let page = client(&cli)?.audit(*after, *limit).await?;
            out.show(&page, |p| {
                p.entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            e.seq, e.at, e.actor, e.action, e.target, e.outcome, e.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        Command::Audit(AuditCommand::Verify) => {
            let client = client(&cli)?;
            let mut verifier: Option<crate::audit::ChainVerifier> = None;
            loop {
                let after = verifier.as_ref().map_or(0, |v| v.after());
                let page = client
                    .audit(after, crate::audit::ChainVerifier::PAGE)
                    .await?;
                // A log pruned by retention starts from its anchor, not genesis.
                let verifier = verifier.get_or_insert_with(|| {
                    crate::audit::ChainVerifier::new(page.anchor.as_ref().map(|a| a.hash.as_str()))
                });
                verifier
                    .feed(&page.entries)
                    .context("the audit chain is broken")?;
                // Each page request is itself audited, so the log always has
                // one more entry: a short page means the end was reached.
                if page.entries.len() < crate::audit::ChainVerifier::PAGE as usize {
                    break;
                }
            }
            let count = verifier.map_or(0, |v| v.count());
            out.show(
                &serde_json::json!({"intact": true, "entries": count}),
                |_| format!("audit chain intact: {count} entries verified"),
            )
        }
    }
}

fn describe_fields(fields: &Option<Vec<String>>) -> String {
    match fields {
        Some(f) => format!("fields: {}", f.join(", ")),
        None => "whole secret".to_owned(),
    }
}

/// A secret's shape: plain, or the names of its fields.
fn describe_shape(fields: &Option<Vec<String>>) -> String {
    match fields {
        Some(f) => format!("fields: {}", f.join(", ")),
        None => "plain value".to_owned(),
    }
}
