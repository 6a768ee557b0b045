//! The audit log's routes and its checkpoints: reading pages, the vault's
//! own check of the keyed chain, and signed checkpoints of the chain's head
//! published outside the database (the log stream and the
//! `audit.checkpoint` webhook event).

use std::sync::Arc;

use signet_client::api::{AuditCheckpoint, AuditPage, AuditVerification, ErrorCode};

use crate::audit;
use crate::error::{Error, Result};
use crate::outbox;
use crate::request::Ctx;
use crate::store::{Read, Tx};
use crate::vault::Vault;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    pub after: u64,
    pub limit: Option<u32>,
}

/// A page of the audit log to read: entries with `after < seq <= through`,
/// at most `limit`.
#[derive(Clone, Copy, Debug)]
pub struct AuditRange {
    after: u64,
    through: u64,
    limit: u32,
}

/// Checks the query of `GET /v1/audit` in the pipeline and fixes the head
/// the page may reach: the log as it stood before this request's own
/// entry, which is appended after this returns.
pub fn range(ctx: &mut Ctx<'_>, tx: &mut dyn Tx) -> Result<AuditRange> {
    let query: AuditQuery = ctx.query()?;
    let limit = query.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(Error::denied(
            ErrorCode::InvalidRequest,
            "limit must be 1 to 5000",
        ));
    }
    // Sequence numbers are SQLite integers: nothing comes after i64::MAX.
    if i64::try_from(query.after).is_err() {
        return Err(Error::denied(
            ErrorCode::InvalidRequest,
            "after must be a sequence number (at most 9223372036854775807)",
        ));
    }
    let through = tx.audit_head()?.map_or(0, |(seq, _)| seq);
    Ok(AuditRange {
        after: query.after,
        through,
        limit,
    })
}

/// Audit entries after a sequence number (admins only), read on a snapshot.
pub fn page(r: &mut dyn Read, range: AuditRange) -> Result<AuditPage> {
    Ok(AuditPage {
        entries: r.audit_through(range.after, range.through, range.limit)?,
        anchor: audit::anchor_read(r)?,
    })
}

/// Signs the chain's head at `now` and queues the `audit.checkpoint`
/// webhook event in `tx`, so the event goes out if and only if the head it
/// names committed.
pub fn checkpoint(vault: &Vault, tx: &mut dyn Tx, now: i64) -> Result<AuditCheckpoint> {
    let head = audit::head(tx)?;
    let checkpoint = audit::sign_checkpoint(&vault.checkpoint_key, head, now);
    let data = serde_json::to_value(&checkpoint)
        .map_err(|_| crate::store::Error::Corrupt("audit checkpoint".into()))?;
    outbox::enqueue(tx, now, outbox::AUDIT_CHECKPOINT, data)?;
    Ok(checkpoint)
}

/// Why a checkpoint was published, as the log event says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The schedule (`--audit-checkpoint-seconds`): skipped while the head
    /// has not moved since the last one.
    Periodic,
    /// The vault is stopping.
    Shutdown,
    /// `GET /v1/audit/checkpoint`.
    OnDemand,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Periodic => "periodic",
            Self::Shutdown => "shutdown",
            Self::OnDemand => "on_demand",
        }
    }
}

impl Vault {
    /// The public half of the checkpoint key (base64url), for admins to pin.
    pub fn checkpoint_public_key(&self) -> String {
        self.checkpoint_key.public_key()
    }

    /// Publishes a checkpoint of the committed head: queued for webhooks in
    /// its own transaction, then written to the log stream once committed.
    /// A periodic one is skipped (`None`) while the head has not moved.
    pub fn publish_checkpoint(&self, trigger: Trigger) -> Result<Option<AuditCheckpoint>> {
        let mut last = self
            .last_checkpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let checkpoint = self.with_tx(|tx, now| {
            if trigger == Trigger::Periodic && last.as_ref() == Some(&audit::head(tx)?) {
                return Ok(None);
            }
            checkpoint(self, tx, now).map(Some)
        })?;
        if let Some(checkpoint) = &checkpoint {
            audit::log_checkpoint(checkpoint, trigger.as_str());
            *last = Some(signet_client::api::AuditAnchor {
                seq: checkpoint.seq,
                hash: checkpoint.hash.clone(),
            });
        }
        Ok(checkpoint)
    }

    /// Checks every stored entry's HMAC and link, off the async runtime.
    pub async fn verify_audit(self: &Arc<Self>) -> Result<AuditVerification> {
        let vault = Arc::clone(self);
        Ok(tokio::task::spawn_blocking(move || {
            audit::verify(vault.store.as_ref(), vault.audit_key())
        })
        .await??)
    }
}
