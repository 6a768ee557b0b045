//! The webhook outbox: events are queued in the transaction of the event
//! itself (an enrollment, a canary lock, a policy denial), so an event is
//! delivered if and only if what it reports committed. Delivery is
//! [`crate::service::webhooks`]' job, outside any request.

use crate::clock::rfc3339;
use crate::error::Result;
use crate::store::Tx;

/// A canary secret was read and its project locked.
pub const CANARY_TRIPPED: &str = "canary.tripped";
/// A machine enrolled.
pub const MACHINE_ENROLLED: &str = "machine.enrolled";
/// A request was refused by an access rule.
pub const POLICY_DENIED: &str = "policy.denied";
/// A rotation changed state (reserved for the rotation feature).
pub const ROTATION: &str = "rotation";
/// A signed audit checkpoint was published (its data is the checkpoint).
pub const AUDIT_CHECKPOINT: &str = "audit.checkpoint";
/// Every event a webhook may subscribe to.
pub const EVENTS: [&str; 5] = [
    CANARY_TRIPPED,
    MACHINE_ENROLLED,
    POLICY_DENIED,
    ROTATION,
    AUDIT_CHECKPOINT,
];

/// Queues `event` for every webhook subscribed to it, in the caller's
/// transaction.
pub fn enqueue(tx: &mut dyn Tx, now: i64, event: &str, data: serde_json::Value) -> Result<()> {
    let hooks = tx.webhooks()?;
    if hooks.is_empty() {
        return Ok(());
    }
    let body = serde_json::json!({
        "event": event,
        "at": rfc3339(now),
        "data": data,
    })
    .to_string();
    for hook in hooks.iter().filter(|h| h.events.iter().any(|e| e == event)) {
        tx.enqueue_delivery(&hook.id, event, &body, now)?;
    }
    Ok(())
}
