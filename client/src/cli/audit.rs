//! `signet audit`: the keyed hash chain and its signed checkpoints.
//!
//! `signet audit verify` exits with a code per finding, so a cron job or a
//! CI step can tell them apart: 0 intact, 3 an entry was edited (its HMAC
//! or link does not hold), 4 the log was truncated (a checkpoint covers
//! more than it holds), 5 a fork (two signed checkpoints, or a checkpoint
//! and the log, disagree about one entry), 6 a checkpoint is not signed by
//! the pinned key, 1 anything else (the vault unreachable, a bad flag).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};

use super::{Context, lines};
use crate::api::{AuditCheckpoint, AuditEntry};
use crate::audit::{ChainVerifier, CheckpointCheck, Finding};
use crate::protocol::PublicKey;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Prints audit entries.
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Checks the audit log: the vault checks every entry's HMAC, this
    /// command checks the links and, given checkpoints, that the log still
    /// holds what each one saw. Exit codes: 0 intact, 3 edited, 4 truncated,
    /// 5 fork, 6 checkpoint not signed by the pinned key, 1 other errors.
    Verify(VerifyArgs),
    /// Asks for a signed checkpoint of the log's head now (JSON). Keep it
    /// where the vault's database is not.
    Checkpoint {
        /// Write it to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints the public key that signs checkpoints, to pin.
    CheckpointKey {
        /// Also save it to this file (for `verify --key-file`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Checkpoints to check the log against (repeat): a file holding a
    /// checkpoint as JSON, an array of them, `audit.checkpoint` webhook
    /// bodies, or the vault's JSON log lines (`--log-format json`); lines
    /// without a checkpoint are skipped.
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// The pinned checkpoint key (base64url), as `signet audit
    /// checkpoint-key` printed it.
    #[arg(long, env = "SIGNET_AUDIT_KEY", conflicts_with = "key_file")]
    pub key: Option<String>,
    /// File holding the pinned checkpoint key (`checkpoint-key --out`).
    #[arg(long, env = "SIGNET_AUDIT_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// Everything `signet audit verify` found, most telling first; the exit
/// code is the first one's.
#[derive(Debug)]
pub struct Findings(pub Vec<Finding>);

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "the audit log does not hold: {}", texts.join("; "))
    }
}

impl std::error::Error for Findings {}

impl Findings {
    pub fn exit_code(&self) -> u8 {
        self.0.first().map_or(1, Finding::exit_code)
    }
}

impl AuditCommand {
    pub async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        match self {
            Self::List { after, limit } => {
                let page = ctx.client()?.audit(after, limit).await?;
                ctx.show(&page, |p| {
                    lines(&p.entries, |e| {
                        format!(
                            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                            e.seq, e.at, e.actor, e.action, e.target, e.outcome, e.reason
                        )
                    })
                })
            }
            Self::Verify(args) => args.run(ctx).await,
            Self::Checkpoint { out } => {
                let checkpoint = ctx.client()?.audit_checkpoint().await?;
                let json = serde_json::to_string_pretty(&checkpoint)?;
                match out {
                    Some(path) => {
                        std::fs::write(&path, json + "\n")
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        ctx.show(&checkpoint, |c| {
                            format!("checkpoint of entry {} saved to {}", c.seq, path.display())
                        })
                    }
                    None => {
                        println!("{json}");
                        Ok(())
                    }
                }
            }
            Self::CheckpointKey { out } => {
                let key = ctx.client()?.audit_checkpoint_key().await?;
                if let Some(path) = &out {
                    std::fs::write(path, format!("{}\n", key.key))
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
                ctx.show(&key, |k| k.key.clone())
            }
        }
    }
}

impl VerifyArgs {
    async fn run(self, ctx: &Context) -> anyhow::Result<()> {
        let mut checkpoints = Vec::new();
        for path in &self.checkpoints {
            checkpoints.extend(read_checkpoints(path)?);
        }
        let mut check = if checkpoints.is_empty() {
            None
        } else {
            let pinned = self.pinned_key()?.context(
                "checking checkpoints needs the pinned checkpoint key: --key or --key-file (from `signet audit checkpoint-key`)",
            )?;
            match CheckpointCheck::new(&checkpoints, &pinned) {
                Ok(check) => Some(check),
                Err(finding) => return Err(Findings(vec![finding]).into()),
            }
        };

        let client = ctx.client()?;
        // The log is read first: the first page request is audited only
        // after it was read, so that page shows the tail exactly as stored.
        let mut findings = Vec::new();
        let mut verifier: Option<ChainVerifier> = None;
        let mut anchor = None;
        loop {
            let after = verifier.as_ref().map_or(0, ChainVerifier::after);
            let page = client.audit(after, ChainVerifier::PAGE).await?;
            // A log pruned by retention starts from its anchor, not genesis.
            if verifier.is_none() {
                anchor = page.anchor.clone();
            }
            let verifier = verifier.get_or_insert_with(|| ChainVerifier::new(anchor.as_ref()));
            if let Err(error) = verifier.feed(&page.entries) {
                findings.push(Finding::Edited {
                    seq: error.seq(),
                    message: error.to_string(),
                });
                break;
            }
            if let Some(check) = check.as_mut() {
                check.observe(&page.entries);
            }
            if last_page(&page.entries) {
                break;
            }
        }
        let head = verifier
            .as_ref()
            .map(ChainVerifier::head)
            .unwrap_or_else(|| ChainVerifier::new(None).head());
        let count = verifier.as_ref().map_or(0, ChainVerifier::count);

        let vault_check = client.verify_audit().await?;
        if let Some(broken) = &vault_check.broken {
            // The vault's own finding comes first: it alone checks the MACs.
            findings.insert(
                0,
                Finding::Edited {
                    seq: broken.seq,
                    message: broken.message.clone(),
                },
            );
        }
        let mut report = None;
        if let Some(check) = &check
            && findings.is_empty()
        {
            match check.finish(anchor.as_ref(), &head) {
                Ok(r) => report = Some(r),
                Err(finding) => findings.push(finding),
            }
        }
        if !findings.is_empty() {
            return Err(Findings(findings).into());
        }
        let (matched, pruned) = report.map_or((0, 0), |r| (r.matched, r.pruned));
        ctx.show(
            &serde_json::json!({
                "intact": true,
                "entries": count,
                "head": head,
                "keyed_from": vault_check.keyed_from,
                "checkpoints_matched": matched,
                "checkpoints_pruned": pruned,
            }),
            |_| {
                let mut text = format!(
                    "audit chain intact: {count} entries, head {} (the vault checked {} HMACs)",
                    head.seq, vault_check.entries
                );
                if check.is_some() {
                    text.push_str(&format!(
                        "\ncheckpoints: {matched} matched the log, {pruned} pruned by retention"
                    ));
                } else {
                    text.push_str("\nno checkpoint given: truncation and forks were not checked");
                }
                text
            },
        )
    }

    fn pinned_key(&self) -> anyhow::Result<Option<PublicKey>> {
        let text = match (&self.key, &self.key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            (None, None) => return Ok(None),
        };
        PublicKey::parse(text.trim())
            .map(Some)
            .context("the pinned checkpoint key is not an Ed25519 public key in base64url")
    }
}

/// Each page request is itself audited, so the log always has one more
/// entry: a short page means the end was reached.
fn last_page(entries: &[AuditEntry]) -> bool {
    entries.len() < ChainVerifier::PAGE as usize
}

fn read_checkpoints(path: &Path) -> anyhow::Result<Vec<AuditCheckpoint>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let found = parse_checkpoints(&text);
    if found.is_empty() {
        bail!("{} holds no audit checkpoint", path.display());
    }
    Ok(found)
}

/// The checkpoints in `text`: one as JSON, an array, or lines of JSON each
/// holding one as itself, under `fields` (a vault log line) or under `data`
/// (a webhook body).
fn parse_checkpoints(text: &str) -> Vec<AuditCheckpoint> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        return match value {
            serde_json::Value::Array(items) => items.iter().filter_map(checkpoint_in).collect(),
            other => checkpoint_in(&other).into_iter().collect(),
        };
    }
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|value| checkpoint_in(&value))
        .collect()
}

fn checkpoint_in(value: &serde_json::Value) -> Option<AuditCheckpoint> {
    [value, &value["fields"], &value["data"]]
        .into_iter()
        .find_map(|v| serde_json::from_value(v.clone()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"seq": 4, "hash": "ab", "at": 1700000000, "key": "k", "signature": "s"}"#;

    #[test]
    fn checkpoints_are_read_from_json_webhook_bodies_and_log_lines() {
        assert_eq!(parse_checkpoints(ONE).len(), 1);
        assert_eq!(parse_checkpoints(&format!("[{ONE}, {ONE}]")).len(), 2);
        let log = format!(
            "{{\"level\":\"INFO\",\"fields\":{{\"message\":\"vault listening\"}}}}\nnot json\n{{\"level\":\"INFO\",\"fields\":{{\"message\":\"audit checkpoint\",\"trigger\":\"periodic\",\"seq\":4,\"hash\":\"ab\",\"at\":1700000000,\"key\":\"k\",\"signature\":\"s\"}}}}\n{{\"event\":\"audit.checkpoint\",\"data\":{ONE}}}\n"
        );
        let found = parse_checkpoints(&log);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|c| c.seq == 4 && c.hash == "ab"));
        assert!(parse_checkpoints("{\"seq\": 4}").is_empty());
    }

    #[test]
    fn the_first_finding_sets_the_exit_code() {
        let findings = Findings(vec![
            Finding::Edited {
                seq: 3,
                message: "x".into(),
            },
            Finding::Truncated {
                checkpoint: 9,
                head: 5,
            },
        ]);
        assert_eq!(findings.exit_code(), 3);
        assert!(findings.to_string().contains("entry 3"));
        assert_eq!(Findings(Vec::new()).exit_code(), 1);
    }
}
