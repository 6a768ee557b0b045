//! The `signet-vault` command: arguments, root-key loading, start-up.
//! `main` only parses, loads the root key and calls [`run`].

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

use crate::clock::SystemClock;
use crate::crypto::RootKey;
use crate::server::{self, Tls};
use crate::service::enroll;
use crate::store::{PostgresStore, SqliteStore, Store};
use crate::vault::{Config, Settings, Vault};

/// Environment variable that may carry the root key; removed once read.
pub const ROOT_KEY_ENV: &str = "SIGNET_ROOT_KEY";

#[derive(Debug, Parser)]
#[command(
    name = "signet-vault",
    version,
    about = "The Signet vault: secrets for machines that sign every request"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SIGNET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the vault on its data directory with a root key you supply.
    Serve(ServeArgs),
    /// Runs a throw-away vault for trying Signet: fresh root key, fresh data
    /// directory, and a one-time token for the first admin.
    Dev(DevArgs),
    /// Prints a new random root key (hex). Keep it somewhere safe: without
    /// it the data cannot be read.
    RootKey,
    /// Prints a single-use token that lets a new key become an admin.
    BootstrapToken(DataArgs),
    /// Checks the audit log's keyed hash chain in a data directory (needs
    /// the root key: the chain's HMAC key is derived from it).
    AuditVerify(AuditVerifyArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub root_key: RootKeyArgs,
}

/// Where the root key comes from (else the `SIGNET_ROOT_KEY` environment
/// variable).
#[derive(Debug, Args)]
pub struct RootKeyArgs {
    /// File holding the root key (64 hex characters, base64, or 32 raw bytes).
    #[arg(long, env = "SIGNET_ROOT_KEY_FILE", conflicts_with = "root_key_stdin")]
    pub root_key_file: Option<PathBuf>,
    /// Read the root key from standard input.
    #[arg(long)]
    pub root_key_stdin: bool,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory of the embedded store (and of the first-start bootstrap
    /// token file, whatever the store).
    #[arg(long, env = "SIGNET_DATA_DIR", default_value = "signet-data")]
    pub data_dir: PathBuf,
    /// Keep the data in PostgreSQL instead of the embedded SQLite file:
    /// `postgres://user:password@host:5432/signet`. TLS is required (the
    /// certificate and host name checked) unless the URL says
    /// `sslmode=disable`. Several vaults may serve from one database at
    /// once (docs/kubernetes.md).
    #[arg(long, env = "SIGNET_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// PEM file of CA certificates trusted for the database's TLS, besides
    /// the system's.
    #[arg(long, env = "SIGNET_DATABASE_CA_FILE", requires = "database_url")]
    pub database_ca_file: Option<PathBuf>,
}

/// A `postgres://` connection string. It may hold a password: never
/// printed, not even by `Debug`.
#[derive(Clone)]
pub struct DatabaseUrl(Zeroizing<String>);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = &'static str;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self(Zeroizing::new(url.to_owned())))
        } else {
            Err("the database URL must start with postgres:// (SQLite needs no URL)")
        }
    }
}

impl DataArgs {
    /// Opens the store these arguments name: PostgreSQL at the database
    /// URL, else SQLite in the data directory.
    pub fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match &self.database_url {
            Some(url) => Arc::new(
                PostgresStore::connect(&url.0, self.database_ca_file.as_deref())
                    .context("cannot open the PostgreSQL store")?,
            ),
            None => Arc::new(SqliteStore::open(&self.data_dir).with_context(|| {
                format!("cannot open the store in {}", self.data_dir.display())
            })?),
        })
    }

    /// What the log says the data lives in.
    fn describe(&self) -> String {
        match &self.database_url {
            Some(_) => "postgresql".to_owned(),
            None => format!("sqlite in {}", self.data_dir.display()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, env = "SIGNET_LISTEN", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// Largest accepted clock difference for signed requests, in seconds.
    #[arg(long, env = "SIGNET_SKEW_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=300))]
    pub skew_seconds: i64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "SIGNET_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Prune audit entries older than this many days (the hash chain stays
    /// verifiable from an anchor); unset keeps everything.
    #[arg(long, env = "SIGNET_AUDIT_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub audit_retention_days: Option<u32>,
    /// Allow webhook destinations in this CIDR even if loopback, private or
    /// link-local (repeat, or comma-separate in the environment variable).
    #[arg(
        long = "webhook-allow-cidr",
        env = "SIGNET_WEBHOOK_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    pub webhook_allow_cidrs: Vec<ipnet::IpNet>,
    /// Bearer token for the TokenReview API of clusters registered without
    /// a reviewer token of their own: in a cluster, the vault's own
    /// service-account token (it needs `system:auth-delegator` only). Read
    /// at every review, so a rotated projected token is picked up.
    #[arg(
        long,
        env = "SIGNET_KUBE_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kube_token_file: PathBuf,
    /// Publish a signed checkpoint of the audit chain's head this often, in
    /// seconds, while it moves (to the log and the `audit.checkpoint`
    /// webhook event); 0 publishes only on shutdown and on demand.
    #[arg(long, env = "SIGNET_AUDIT_CHECKPOINT_SECONDS", default_value_t = 60)]
    pub audit_checkpoint_seconds: u64,
    /// A MaxMind DB country database (GeoLite2-Country, GeoLite2-City or
    /// DB-IP's IP-to-Country Lite, supplied by you) for the country
    /// allowlists of machines (`machine_country_allowlist` of a token).
    /// Without one, such allowlists are refused.
    #[arg(long, env = "SIGNET_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What one client, a flood of them, or the background work may take of
/// the vault.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Seconds a client has to send a request's headers; an HTTP/1
    /// connection waiting for its next request is closed after as long.
    #[arg(long, env = "SIGNET_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_seconds: u64,
    /// Seconds a client has to send a request's body (else 408).
    #[arg(long, env = "SIGNET_BODY_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout_seconds: u64,
    /// Seconds a connection with no request in flight may stay silent
    /// (before TLS, between requests, HTTP/2 without a stream).
    #[arg(long, env = "SIGNET_IDLE_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_seconds: u64,
    /// Requests handled at once; more are answered 503 `overloaded` with
    /// Retry-After (`/healthz` is exempt).
    #[arg(long, env = "SIGNET_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_in_flight: u64,
    /// The Retry-After of a 503 `overloaded`, in seconds.
    #[arg(long, env = "SIGNET_RETRY_AFTER_SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub retry_after_seconds: u32,
    /// Requests one machine may have waiting for changes on
    /// `GET /v1/machine/changes` (more are answered 429
    /// `too_many_waiting`); all machines together may have a quarter of
    /// `--max-in-flight` waiting.
    #[arg(long, env = "SIGNET_WAITING_PER_MACHINE", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub waiting_per_machine: u64,
    /// Requests denied before their signature verified are audited as one
    /// counted row per source address, error code and action, written
    /// this often (seconds).
    #[arg(long, env = "SIGNET_DENIAL_FLUSH_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub denial_flush_seconds: u64,
    /// Most such rows per interval; further sources, codes and actions
    /// share one overflow row.
    #[arg(long, env = "SIGNET_DENIAL_GROUPS_MAX", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub denial_groups_max: u64,
    /// Requests one source (an IPv4 address, an IPv6 /64) may have denied
    /// before their signature verified, at once; past that, its requests
    /// get 429 `rate_limited` before their body is read, except those
    /// signed by a key the vault already verified. 0 turns this off.
    #[arg(long, env = "SIGNET_UNVERIFIED_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub unverified_burst: u32,
    /// How many of those a source gets back per second.
    #[arg(long, env = "SIGNET_UNVERIFIED_PER_SECOND", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub unverified_per_second: u32,
    /// Sources whose budget is tracked at once; when every one still owes,
    /// further sources share one budget.
    #[arg(long, env = "SIGNET_UNVERIFIED_SOURCES_MAX", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub unverified_sources_max: u64,
    /// Seconds a refusal for that budget is held before it is answered, so
    /// that a flooding connection gets about one answer per delay; 0
    /// answers at once.
    #[arg(long, env = "SIGNET_UNVERIFIED_TARPIT_SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub unverified_tarpit_seconds: u64,
    /// Connections a source over that budget may hold; a new one past this
    /// is closed as soon as it is accepted. 0: no cap.
    #[arg(long, env = "SIGNET_UNVERIFIED_CONNECTIONS_MAX", default_value_t = 32, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub unverified_connections_max: u64,
    /// Days delivered or failed webhook deliveries, and used or expired
    /// co-sign requests, are kept.
    #[arg(long, env = "SIGNET_HISTORY_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub history_retention_days: u32,
    /// Webhook deliveries attempted at once.
    #[arg(long, env = "SIGNET_WEBHOOK_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub webhook_concurrency: u64,
    /// Webhook host names resolved at once.
    #[arg(long, env = "SIGNET_DNS_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub dns_concurrency: u64,
    /// Seconds one webhook host name lookup may take.
    #[arg(long, env = "SIGNET_DNS_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub dns_timeout_seconds: u64,
}

impl LimitArgs {
    /// Writes these limits into `settings`.
    fn apply(&self, settings: &mut Settings) {
        use std::time::Duration;
        let Self {
            header_read_timeout_seconds,
            body_timeout_seconds,
            idle_timeout_seconds,
            max_in_flight,
            retry_after_seconds,
            waiting_per_machine,
            denial_flush_seconds,
            denial_groups_max,
            unverified_burst,
            unverified_per_second,
            unverified_sources_max,
            unverified_tarpit_seconds,
            unverified_connections_max,
            history_retention_days,
            webhook_concurrency,
            dns_concurrency,
            dns_timeout_seconds,
        } = *self;
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        settings.limits = crate::settings::Limits {
            header_read_timeout: Duration::from_secs(header_read_timeout_seconds),
            body_timeout: Duration::from_secs(body_timeout_seconds),
            idle_timeout: Duration::from_secs(idle_timeout_seconds),
            max_in_flight: count(max_in_flight),
            retry_after_seconds,
            waiting_per_machine: count(waiting_per_machine),
            // A quarter of the requests in flight at most may be waiting.
            waiting_max: (count(max_in_flight) / 4).max(1),
            unverified: crate::budget::BudgetLimits {
                burst: unverified_burst,
                per_second: unverified_per_second,
                sources_max: count(unverified_sources_max),
            },
            unverified_tarpit: Duration::from_secs(unverified_tarpit_seconds),
            unverified_connections_max: count(unverified_connections_max),
        };
        settings.denial_flush_interval = Duration::from_secs(denial_flush_seconds);
        settings.denial_groups_max = count(denial_groups_max);
        settings.history_retention_days = history_retention_days;
        settings.webhook_concurrency = count(webhook_concurrency);
        settings.lookups = crate::dns::Lookups::new(
            Arc::new(crate::dns::SystemResolver),
            count(dns_concurrency),
            Duration::from_secs(dns_timeout_seconds),
        );
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub root_key: RootKeyArgs,
    /// PEM certificate chain for HTTPS (with --tls-key).
    #[arg(long, env = "SIGNET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "SIGNET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory (default: a new temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// Reads the root key for `serve` or `audit-verify`: the file, standard
/// input or the environment variable (which the caller removes from the
/// environment).
pub fn load_root_key(
    args: &RootKeyArgs,
    env_value: Option<Zeroizing<String>>,
) -> anyhow::Result<RootKey> {
    let bytes: Zeroizing<Vec<u8>> = if let Some(path) = &args.root_key_file {
        Zeroizing::new(
            std::fs::read(path)
                .with_context(|| format!("cannot read root key file {}", path.display()))?,
        )
    } else if args.root_key_stdin {
        let mut buffer = Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(4096)
            .read_to_end(&mut buffer)
            .context("cannot read the root key from standard input")?;
        buffer
    } else if let Some(value) = env_value {
        Zeroizing::new(value.as_bytes().to_vec())
    } else {
        bail!(
            "no root key: give --root-key-file, --root-key-stdin or {ROOT_KEY_ENV} (make one with `signet-vault root-key`)"
        );
    };
    Ok(RootKey::parse(&bytes)?)
}

/// Installs the tracing subscriber.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIGNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn open_vault(
    store: Arc<dyn Store>,
    root: RootKey,
    listen: &ListenArgs,
) -> anyhow::Result<Arc<Vault>> {
    let config = Config {
        skew_seconds: listen.skew_seconds,
        max_body_bytes: listen.max_body_bytes,
    };
    let mut settings = Settings {
        audit_retention_days: listen.audit_retention_days,
        webhook_allow: listen.webhook_allow_cidrs.clone(),
        kube_token_file: listen.kube_token_file.clone(),
        audit_checkpoint_every: (listen.audit_checkpoint_seconds > 0)
            .then(|| std::time::Duration::from_secs(listen.audit_checkpoint_seconds)),
        ..Settings::default()
    };
    listen.limits.apply(&mut settings);
    if let Some(path) = &listen.geoip_db {
        let countries = crate::geoip::Countries::open(path)?;
        tracing::info!(path = %path.display(), database_type = countries.database_type(), "country database loaded");
        settings.countries = Some(Arc::new(countries));
    }
    Ok(Arc::new(
        Vault::open(store, root, Arc::new(SystemClock), config)?.with_settings(settings),
    ))
}

/// `signet-vault serve`
pub async fn serve(args: ServeArgs, root: RootKey) -> anyhow::Result<()> {
    let vault = open_vault(args.data.open_store()?, root, &args.listen)?;
    // Registered before anything announces the address, so a SIGTERM sent
    // as soon as the vault says it listens still drains gracefully.
    let shutdown = signet_client::shutdown::signal();
    let listener = server::bind(args.listen.listen).await?;
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let address = format!("{scheme}://{}", listener.local_addr()?);
    let first_admin = vault.with_tx(|tx, now| {
        if tx.admin_count()? == 0 {
            Ok(Some(enroll::create_bootstrap_token(tx, now)?))
        } else {
            Ok(None)
        }
    })?;
    let token_file = args.data.data_dir.join(BOOTSTRAP_TOKEN_FILE);
    if let Some(token) = first_admin {
        // Never on standard output or in the log: a container's output is
        // its log, which many can read. Only the path is logged.
        write_private(&token_file, &token)?;
        tracing::info!(
            token_file = %token_file.display(),
            "no admin yet: a one-time admin bootstrap token (valid 24 h) is in this file, readable by the vault's user only; register a key with `signet --vault {address} admin enroll --token-file {} --out admin.json`",
            token_file.display()
        );
    } else {
        // An admin exists: the first-start token is used or no longer needed.
        match std::fs::remove_file(&token_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %token_file.display(), error = %e, "cannot remove the first-start bootstrap token file");
            }
            _ => {}
        }
    }
    tracing::info!(%address, store = %args.data.describe(), "vault listening");
    let tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| Tls { cert, key });
    server::serve_until(vault, listener, tls, shutdown).await?;
    Ok(())
}

/// The file in the data directory that receives the first-start admin
/// bootstrap token.
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-token";

/// Writes `secret` to `path` with mode 0600: into a new file (never one that
/// was already there, or a symlink planted in its place), renamed over any
/// older one.
fn write_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{BOOTSTRAP_TOKEN_FILE}.{:016x}.tmp",
        rand::random::<u64>()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(secret.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write the bootstrap token to {}", path.display()))
}

/// `signet-vault dev`
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(dir) => dir,
        None => tempdir_path()?,
    };
    let root = RootKey::generate();
    let root_hex = root.to_hex();
    let store = Arc::new(
        SqliteStore::open(&data_dir)
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?,
    );
    let vault = open_vault(store, root, &args.listen)?;
    let shutdown = signet_client::shutdown::signal();
    let listener = server::bind(args.listen.listen).await?;
    let address = format!("http://{}", listener.local_addr()?);
    let token = vault.with_tx(|tx, now| enroll::create_bootstrap_token(tx, now))?;
    say(&dev_banner(&address, &data_dir, &root_hex, &token));
    tracing::info!(%address, "dev vault listening");
    server::serve_until(vault, listener, None, shutdown).await?;
    Ok(())
}

/// Prints to standard output; a closed stdout (the reader went away) must
/// not take the vault down with it.
fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

fn tempdir_path() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("signet-dev-{}", crate::ids::new("")));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// The CLI to name in printed commands: the one beside this binary when
/// it was built there, otherwise `signet` on the PATH.
fn cli_command() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("signet")))
        .filter(|cli| cli.is_file())
        .map_or_else(|| "signet".to_owned(), |cli| cli.display().to_string())
}

fn dev_banner(address: &str, data_dir: &Path, root_hex: &str, token: &str) -> String {
    let signet = cli_command();
    let build_hint = if signet == "signet" {
        "  # build the CLI once (from the repository): cargo build --release -p signet-client\n  export PATH=\"$PWD/target/release:$PATH\"\n"
    } else {
        ""
    };
    format!(
        "\
Signet vault (DEV MODE: throw-away data, root key printed below) at {address}
  data directory: {data_dir}  (embedded SQLite)
  root key:       {root_hex}
                  (dev only; restart on this data with
                   signet-vault serve --data-dir {data_dir} --root-key-stdin)

Next, in another shell:
{build_hint}  export SIGNET_VAULT={address}
  {signet} admin enroll --token {token} --out admin.json
  export SIGNET_IDENTITY=admin.json
  {signet} project create demo
  {signet} secret set demo/db-password --value 'correct horse battery staple'
  {signet} token create --project demo --grant db-password --max-uses 1 --ttl 1h --machine-lifetime 24h
  # then, as the machine (its key is generated on the spot and never leaves it):
  {signet} enroll --token <the token printed by the last command> --out machine.json
  SIGNET_IDENTITY=machine.json {signet} read demo/db-password
",
        data_dir = data_dir.display()
    )
}

/// `signet-vault bootstrap-token`
pub fn bootstrap_token(args: &DataArgs) -> anyhow::Result<()> {
    let store = args.open_store()?;
    let mut tx = store.begin()?;
    let now = jiff::Timestamp::now().as_second();
    let token = enroll::create_bootstrap_token(tx.as_mut(), now)?;
    tx.commit()?;
    println!("{}", token.as_str());
    Ok(())
}

/// `signet-vault audit-verify`: checks every entry's hash (HMAC under the
/// key derived from `root`) and link, as `POST /v1/audit/verify` does.
pub fn audit_verify(args: &DataArgs, root: &RootKey) -> anyhow::Result<()> {
    let store = args.open_store()?;
    {
        let mut tx = store.begin()?;
        if tx
            .meta(crate::vault::ROOT_CHECK)?
            .is_some_and(|check| !root.matches(&check))
        {
            bail!("the root key does not match this data directory");
        }
    }
    let report = crate::audit::verify(store.as_ref(), &root.audit_chain_key())?;
    if let Some(broken) = report.broken {
        bail!(
            "audit chain is broken at entry {}: {}",
            broken.seq,
            broken.message
        );
    }
    println!(
        "audit chain intact: {} entries, head {} {}",
        report.entries, report.head.seq, report.head.hash
    );
    Ok(())
}

/// Runs a parsed command. `root` is the key `serve` and `audit-verify` need, read by `main`
/// before the runtime started.
pub async fn run(command: Command, root: Option<RootKey>) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let Some(root) = root else {
                bail!("serve needs a root key")
            };
            serve(args, root).await
        }
        Command::Dev(args) => dev(args).await,
        Command::RootKey => {
            println!("{}", RootKey::generate().to_hex().as_str());
            Ok(())
        }
        Command::BootstrapToken(args) => bootstrap_token(&args),
        Command::AuditVerify(args) => {
            let Some(root) = root else {
                bail!("audit-verify needs a root key")
            };
            audit_verify(&args.data, &root)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Parser)]
    struct Limits {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn limits(args: &[&str]) -> crate::settings::Limits {
        let parsed = Limits::try_parse_from(std::iter::once("t").chain(args.iter().copied()));
        let mut settings = Settings::default();
        parsed.unwrap().limits.apply(&mut settings);
        settings.limits
    }

    #[test]
    fn waiting_for_changes_is_bounded_by_flags() {
        let defaults = limits(&[]);
        assert_eq!(defaults.waiting_per_machine, 2);
        assert_eq!(defaults.waiting_max, 256);
        let set = limits(&["--waiting-per-machine", "5", "--max-in-flight", "40"]);
        assert_eq!(set.waiting_per_machine, 5);
        assert_eq!(set.waiting_max, 10);
        assert_eq!(limits(&["--max-in-flight", "1"]).waiting_max, 1);
        assert!(Limits::try_parse_from(["t", "--waiting-per-machine", "0"]).is_err());
    }
}
