//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "signet-bench",
    version,
    about = "Closed-loop load generator: signed Signet secret reads beside OpenBao KV v2 token reads",
    long_about = "Closed-loop load generator. N clients, each on its own kept-alive HTTP/1.1 \
connection, send one read, wait for the answer, send the next, for a warm-up and then \
the measured duration. Reports reads/s, p50, p99 and errors (non-200 answers and \
transport failures), plus the generator's own CPU use. The load path speaks plain HTTP \
(a loopback benchmark: no TLS). `signet --enroll` measures enrollments the same way \
(a 201 is a success); `init-start` times cold starts of the signet-init binary."
)]
pub struct Cli {
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(subcommand)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent clients (one connection and one request in flight each).
    #[arg(long, short = 'c', global = true, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Measured duration (seconds, or a humantime value such as `10s`).
    #[arg(long, short = 'd', global = true, default_value = "10", value_parser = parse_duration)]
    pub duration: Duration,
    /// Warm-up before measuring (same format); its reads are not counted.
    #[arg(long, short = 'w', global = true, default_value = "2", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Identities to spread the clients over (machines for Signet, tokens
    /// for OpenBao), client i using identity i mod M. Default: one per client.
    #[arg(long, global = true, visible_aliases = ["machines", "tokens"], value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub identities: Option<u32>,
    /// Worker threads of the generator's runtime.
    #[arg(long, global = true, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub threads: u32,
    /// Also report the CPU time this process (the server under test) used
    /// during the measured window (Linux /proc).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Print the result as one JSON object instead of a table line.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Target {
    /// Signed `GET /v1/secrets/{project}/{secret}` as enrolled machines.
    /// Setup (as the admin): a project, a secret, an enrollment token with a
    /// grant on it, and the machines enrolled with fresh keys.
    Signet(SignetArgs),
    /// `GET /v1/<mount>/data/<path>` with `X-Vault-Token`. Setup (with the
    /// given token): the KV v2 secret, a read-only policy on it and one
    /// token per identity holding only that policy.
    Openbao(OpenbaoArgs),
    /// `signet-init` cold start: the real binary started `--runs` times in
    /// `init` mode with a raw enrollment token, timed from spawn to exit 0
    /// with every file written. Setup (as the admin): a project, `--files`
    /// secrets (plain and structured in turn) and an enrollment token
    /// granting them. The load options (clients, duration, ...) do not apply.
    InitStart(InitStartArgs),
    /// From a new live version to the file rewritten: one `signet-init`
    /// sidecar (refresh 300 s) and `--changes` versions written one at a
    /// time by the admin. The load options do not apply.
    Push(PushArgs),
    /// Signed reads as in `signet`, first quiet, then under abuse from the
    /// same host: `flood` sends unauthenticated requests as fast as it can
    /// (no or garbage signature headers, unknown key ids, signatures forged
    /// with a random key), the measured window lasting as long as the flood;
    /// `slow` holds connections that send a request head a byte at a time,
    /// or nothing, reopening each one the vault closes. Reports both
    /// windows, the abuse's own figures and, read through the admin audit
    /// API, how much the audit log grew.
    Abuse(AbuseArgs),
    /// The flood of `abuse --kind flood` alone, against a running vault:
    /// what `abuse --flood-via` runs in a process of its own (another
    /// network namespace, a CPU-limited cgroup). Prints the flood's figures
    /// (`--json`: one JSON object).
    Flood(FloodArgs),
}

#[derive(Debug, Args)]
pub struct FloodArgs {
    /// Vault address (plain `http://`).
    #[arg(long)]
    pub vault: String,
    /// The request target the flood forges reads of.
    #[arg(long)]
    pub target: String,
    /// The machine id the forged signatures claim.
    #[arg(long)]
    pub victim: String,
    /// Attempts to make: requests of four kinds taken in turn, each counted
    /// once answered, or once its connection was refused or closed before
    /// an answer, or given up (`--patience`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: u64,
    /// Connections to send on, one request in flight each; each one the
    /// vault refuses or closes is opened again.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,
    /// How long to wait for an answer before giving up on it and its
    /// connection, and opening another (what a flooder does against a
    /// tarpit).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub patience: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AbuseKind {
    Flood,
    Slow,
}

#[derive(Debug, Args)]
pub struct AbuseArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Secret to create and read.
    #[arg(long, default_value = "db-password")]
    pub secret: String,
    /// The abuse.
    #[arg(long, value_enum)]
    pub kind: AbuseKind,
    /// Unauthenticated attempts of the flood (`flood --requests`).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub flood_requests: u64,
    /// Connections the flood sends on (`flood --connections`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub flood_connections: u32,
    /// How long the flood waits for an answer (`flood --patience`).
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub flood_patience: Duration,
    /// Longest the flood's measured window lasts (the flood itself goes on
    /// until every request is sent).
    #[arg(long, default_value = "120", value_parser = parse_duration)]
    pub flood_max: Duration,
    /// Slow connections kept open at once; half trickle a request head,
    /// half send nothing.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub slow_connections: u32,
    /// Pause between two bytes of a trickling connection.
    #[arg(long, default_value = "1", value_parser = parse_duration)]
    pub slow_interval: Duration,
    /// The vault's `--denial-flush-seconds`: after the abuse, the audit is
    /// read again until its denial rows carry every refused request, for at
    /// most this long plus 10 s.
    #[arg(long, default_value = "10", value_parser = parse_duration)]
    pub denial_flush: Duration,
    /// Worker threads of the abuse's own runtime (apart from the readers').
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub abuse_threads: u32,
    /// Run the flood in a process of its own: this command (split on
    /// spaces), then this binary's `flood` subcommand and its arguments,
    /// e.g. a wrapper that enters another network namespace and a
    /// CPU-limited cgroup (tests/bench/abuse.sh). Without it, the flood
    /// runs in this process, on threads of its own.
    #[arg(long)]
    pub flood_via: Option<String>,
}

#[derive(Debug, Args)]
pub struct SignetArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Secret to create and read.
    #[arg(long, default_value = "db-password")]
    pub secret: String,
    /// Secrets to add before measuring, besides the one read (created
    /// concurrently through the admin SDK; progress on stderr).
    #[arg(long, default_value_t = 0)]
    pub extra_secrets: u32,
    /// Spread the extra secrets over this many new projects instead of
    /// putting them in the measured project.
    #[arg(long, default_value_t = 0, requires = "extra_secrets")]
    pub extra_projects: u32,
    /// Machines to enroll before measuring, besides the readers: fresh keys
    /// enrolled concurrently with a token of their own that grants the read
    /// secret (progress on stderr).
    #[arg(long, default_value_t = 0)]
    pub extra_machines: u32,
    /// Requests in flight while adding the extra secrets and machines.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub setup_concurrency: u32,
    /// Measure enrollments instead of reads: each client enrolls a fresh
    /// key with one enrollment token (unlimited uses, granting the secret)
    /// again and again. No reader machines are enrolled (`--identities`
    /// does not apply).
    #[arg(long)]
    pub enroll: bool,
    /// Another vault process serving the same database (a replica), its
    /// address with the same path prefix as `--vault`'s. The measured
    /// clients are spread round-robin over `--vault` and these, client i on
    /// the (i mod N)th; the setup goes through `--vault` alone, its
    /// machines enrolled once for all (the replicas share the database).
    #[arg(long = "replica", value_name = "URL")]
    pub replicas: Vec<String>,
}

/// The vault and the admin that sets it up.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Vault address (plain `http://` on loopback).
    #[arg(long, env = "SIGNET_VAULT")]
    pub vault: String,
    /// Admin identity file (as written by `signet admin enroll --out`).
    #[arg(long, env = "SIGNET_IDENTITY")]
    pub identity: PathBuf,
    /// Project to create (default: `bench-<unix time>-<random>`).
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitStartArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The `signet-init` binary to start.
    #[arg(long, default_value = "target/release/signet-init")]
    pub init_bin: PathBuf,
    /// Starts, one after another (each enrolls a machine, then revokes it).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Secrets granted and files written per start.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub files: u32,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The `signet-init` binary to run as the sidecar.
    #[arg(long, default_value = "target/release/signet-init")]
    pub init_bin: PathBuf,
    /// New versions written, one after another.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub changes: u32,
}

#[derive(Debug, Args)]
pub struct OpenbaoArgs {
    /// OpenBao address (plain `http://` on loopback).
    #[arg(long, env = "BAO_ADDR")]
    pub addr: String,
    /// Token for the setup (the root token of a throw-away server).
    #[arg(long, env = "BAO_TOKEN", hide_env_values = true)]
    pub token: String,
    /// KV v2 mount.
    #[arg(long, default_value = "secret")]
    pub mount: String,
    /// Secret path under the mount.
    #[arg(long, default_value = "bench/db-password")]
    pub path: String,
    /// Kind of the read tokens: `service` (stored, the default kind) or
    /// `batch` (an encrypted blob, not stored).
    #[arg(long, default_value = "service", value_parser = ["service", "batch"])]
    pub token_type: String,
    /// Give the read tokens OpenBao's `default` policy too (what `bao token
    /// create` does unless told otherwise). Without it a token holds only the
    /// read policy, which OpenBao evaluates faster.
    #[arg(long)]
    pub default_policy: bool,
    /// Read with the setup token itself instead of tokens holding only a
    /// read policy (a root token skips the policy check).
    #[arg(long, conflicts_with_all = ["token_type", "default_policy"])]
    pub setup_token_reads: bool,
}

/// Seconds as a plain number (`10`, `0.5`) or a humantime value (`10s`, `1m`).
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string());
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn global_options_go_before_or_after_the_target() {
        let cli = Cli::try_parse_from([
            "signet-bench",
            "--clients",
            "4",
            "openbao",
            "--addr",
            "http://127.0.0.1:1",
            "--token",
            "t",
            "--duration",
            "3",
            "--machines",
            "2",
        ])
        .unwrap();
        assert_eq!(cli.load.clients, 4);
        assert_eq!(cli.load.duration, Duration::from_secs(3));
        assert_eq!(cli.load.identities, Some(2));
    }

    #[test]
    fn replicas_repeat_and_default_to_none() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "signet-bench",
                "signet",
                "--vault",
                "http://127.0.0.1:1",
                "--identity",
                "admin.json",
            ];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().target {
                Target::Signet(args) => args.replicas,
                other => panic!("parsed as {other:?}"),
            }
        };
        assert!(parse(&[]).is_empty());
        assert_eq!(
            parse(&[
                "--replica",
                "http://127.0.0.1:2",
                "--replica",
                "http://127.0.0.1:3"
            ]),
            ["http://127.0.0.1:2", "http://127.0.0.1:3"]
        );
    }
}
