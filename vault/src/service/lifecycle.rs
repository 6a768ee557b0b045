//! Machine lifecycle (disable, re-enable, extend) and the background sweep:
//! expired nonces, machines 30 days past expiry, audit retention, and the
//! history nothing reads once it is old (finished webhook deliveries, used
//! or expired co-sign requests, read counts of past days).

use signet_client::api::{ExtendMachine, MachineView};

use super::identities::machine_view;
use crate::audit::{self, Record};
use crate::clock::rfc3339;
use crate::error::{Error, Result, invalid, not_found};
use crate::request::Ctx;
use crate::store::{Machine, Tx};
use crate::vault::Vault;

const DAY: i64 = 24 * 3600;

/// The first day (`YYYY-MM-DD`) that may still be today somewhere at `now`:
/// the UTC date a day ago, since no time zone is more than a day behind
/// UTC. Daily read caps count per day in the policy's zone.
fn past_everywhere(now: i64) -> Result<String> {
    let yesterday =
        jiff::Timestamp::from_second(now - DAY).map_err(|_| invalid("time out of range"))?;
    Ok(yesterday
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
        .to_string())
}

/// How long an expired machine is kept (soft-disabled) before deletion.
pub const EXPIRED_GRACE: i64 = 30 * 24 * 3600;
/// Longest extension: one year from now.
const MAX_EXTENSION: u64 = 366 * 24 * 3600;

fn machine(tx: &mut dyn Tx, id: &str) -> Result<Machine> {
    tx.machine(id)?
        .ok_or_else(|| not_found(format!("machine {id}")))
}

fn view(tx: &mut dyn Tx, m: &Machine, now: i64) -> Result<MachineView> {
    let project = tx
        .project(&m.project_id)?
        .map(|p| p.name)
        .unwrap_or_default();
    Ok(machine_view(m, &project, now))
}

/// `POST /v1/machines/{id}/disable`
pub fn disable(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<MachineView> {
    ctx.audit.target = format!("machine:{id}");
    let mut m = machine(tx, id)?;
    if m.disabled_at.is_none() {
        tx.set_machine_disabled(id, Some(ctx.now))?;
        m.disabled_at = Some(ctx.now);
    }
    view(tx, &m, ctx.now)
}

/// `POST /v1/machines/{id}/enable`: lifts a disable (not an expiry: extend
/// for that).
pub fn enable(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<MachineView> {
    ctx.audit.target = format!("machine:{id}");
    let mut m = machine(tx, id)?;
    tx.set_machine_disabled(id, None)?;
    m.disabled_at = None;
    view(tx, &m, ctx.now)
}

/// `POST /v1/machines/{id}/extend`: the machine now expires
/// `lifetime_seconds` from now; the audit entry keeps the previous expiry.
pub fn extend(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<MachineView> {
    ctx.audit.target = format!("machine:{id}");
    let body: ExtendMachine = ctx.json()?;
    if body.lifetime_seconds == 0 || body.lifetime_seconds > MAX_EXTENSION {
        return Err(invalid("lifetime_seconds must be between 1 and one year"));
    }
    let mut m = machine(tx, id)?;
    let previous = m.expires_at;
    let expires_at = ctx.now + body.lifetime_seconds as i64;
    tx.set_machine_expiry(id, expires_at)?;
    m.expires_at = expires_at;
    ctx.audit.target = format!(
        "machine:{id} expires_at {} -> {}",
        rfc3339(previous),
        rfc3339(expires_at)
    );
    view(tx, &m, ctx.now)
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub nonces: u64,
    /// Machines deleted 30 days after they expired.
    pub machines_deleted: Vec<String>,
    /// The sequence number the audit log was pruned up to, if it was.
    pub audit_pruned_to: Option<u64>,
    /// Webhook deliveries pruned (delivered or given up, past retention).
    pub deliveries: u64,
    /// Co-sign requests pruned (used or expired, past retention).
    pub cosigns: u64,
    /// Read counts of days over in every time zone.
    pub read_counts: u64,
}

impl Vault {
    /// One pass of background housekeeping at `now`, in one transaction:
    /// forgets spent nonces, hard-deletes machines that expired more than
    /// 30 days ago (each deletion audited), prunes the audit log past its
    /// retention (moving the chain's anchor), finished deliveries and
    /// co-sign requests past theirs, and read counts of days gone by.
    pub fn sweep(&self, now: i64) -> Result<SweepReport> {
        let mut tx = self.store.begin()?;
        let mut report = SweepReport {
            nonces: tx.prune_nonces(now)?,
            ..SweepReport::default()
        };
        if let Some(days) = self.settings.audit_retention_days {
            let cutoff = now - i64::from(days) * 24 * 3600;
            report.audit_pruned_to = audit::prune(tx.as_mut(), cutoff)?.map(|a| a.seq);
        }
        let history = now - i64::from(self.settings.history_retention_days) * DAY;
        report.deliveries = tx.prune_deliveries(history)?;
        report.cosigns = tx.prune_cosigns(history)?;
        report.read_counts = tx.prune_read_counts(&past_everywhere(now)?)?;
        for m in tx.machines_expired_before(now - EXPIRED_GRACE)? {
            tx.delete_machine(&m.id)?;
            audit::append(
                tx.as_mut(),
                self.audit_key(),
                now,
                &Record {
                    actor: "vault".into(),
                    action: "machine.sweep".into(),
                    target: format!("machine:{} expired {}", m.id, rfc3339(m.expires_at)),
                    allowed: true,
                    reason: "deleted 30 days after expiry".into(),
                    source_ip: String::new(),
                    committed: false,
                },
            )?;
            report.machines_deleted.push(m.id);
        }
        tx.commit().map_err(Error::from)?;
        Ok(report)
    }
}
