//! `signet audit`: the hash-chained audit log.

use anyhow::Context as _;
use clap::Subcommand;

use super::{Context, lines};
use crate::audit::ChainVerifier;

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
            Self::Verify => {
                let client = ctx.client()?;
                let mut verifier: Option<ChainVerifier> = None;
                loop {
                    let after = verifier.as_ref().map_or(0, |v| v.after());
                    let page = client.audit(after, ChainVerifier::PAGE).await?;
                    // A log pruned by retention starts from its anchor, not genesis.
                    let verifier = verifier.get_or_insert_with(|| {
                        ChainVerifier::new(page.anchor.as_ref().map(|a| a.hash.as_str()))
                    });
                    verifier
                        .feed(&page.entries)
                        .context("the audit chain is broken")?;
                    // Each page request is itself audited, so the log always has
                    // one more entry: a short page means the end was reached.
                    if page.entries.len() < ChainVerifier::PAGE as usize {
                        break;
                    }
                }
                let count = verifier.map_or(0, |v| v.count());
                ctx.show(
                    &serde_json::json!({"intact": true, "entries": count}),
                    |_| format!("audit chain intact: {count} entries verified"),
                )
            }
        }
    }
}
