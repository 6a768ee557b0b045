//! Push, not poll: `GET /v1/machine/changes` lets a machine wait until its
//! grants or their live versions change, so `signet-init` rewrites its files
//! within a second of a new version instead of at its next refresh.
//!
//! Every route whose commit may change what some machine reads (a secret
//! written, deleted or rolled back, a grant created or deleted, a machine
//! revoked) calls [`Changes::notify`] once its request is answered, that is
//! after its batch committed. A waiting request then reads its machine's
//! list again on a read-only snapshot of its own (never the writer, and no
//! connection is held while it waits) and answers when the list's token
//! differs from the one it was asked about; a change to a secret the
//! machine is not granted wakes it for one snapshot read, no answer.
//!
//! Waiting requests are bounded per machine and in total (see
//! [`crate::settings::Limits`]): a machine over its share is refused
//! `429 too_many_waiting` and polls instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use signet_client::api::{ChangeList, ErrorCode, GrantView};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::settings::Limits;
use crate::store::Store;
use crate::writer::Durability;

/// The longest `wait` a request may ask for, in seconds.
pub const WAIT_MAX_SECONDS: u64 = 60;
/// The `wait` of a request that names none, in seconds.
pub const WAIT_DEFAULT_SECONDS: u64 = 30;

/// The change signal and the count of waiting requests.
pub struct Changes {
    /// Bumped after every commit that may change a machine's list.
    signal: watch::Sender<u64>,
    /// Set at shutdown: every waiting request answers at once.
    closed: AtomicBool,
    /// Waiting requests per machine id.
    waiting: Mutex<HashMap<String, usize>>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            signal: watch::Sender::new(0),
            closed: AtomicBool::new(false),
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl Changes {
    /// Call only after the commit that may have changed a machine's list:
    /// wakes every waiting request to look again.
    pub fn notify(&self) {
        self.signal.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that has seen every notification so far. Subscribe
    /// before reading the list a wait compares against, so a change
    /// committed after that read is not missed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.signal.subscribe()
    }

    /// Answers every waiting request now, and every later one at once
    /// (graceful shutdown must not wait out a minute-long poll).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify();
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A place among the waiting requests for `machine_id`, or
    /// `too_many_waiting` when the machine or the vault has its fill.
    pub fn enter(self: &Arc<Self>, machine_id: &str, limits: &Limits) -> Result<Slot> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = waiting.values().sum();
        let mine = waiting.get(machine_id).copied().unwrap_or(0);
        if mine >= limits.waiting_per_machine {
            return Err(Error::denied(
                ErrorCode::TooManyWaiting,
                format!(
                    "this machine already has {mine} requests waiting for changes; wait for one to answer, or poll"
                ),
            ));
        }
        if total >= limits.waiting_max {
            return Err(Error::denied(
                ErrorCode::TooManyWaiting,
                "the vault has as many requests waiting for changes as it allows; poll instead",
            ));
        }
        *waiting.entry(machine_id.to_owned()).or_insert(0) += 1;
        Ok(Slot {
            changes: Arc::clone(self),
            machine_id: machine_id.to_owned(),
        })
    }

    /// Requests waiting now (all machines).
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// One waiting request's place; given back on drop, however the request
/// ends (answered, failed, or its client gone).
pub struct Slot {
    changes: Arc<Changes>,
    machine_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut waiting = self
            .changes
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = waiting.get_mut(&self.machine_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                waiting.remove(&self.machine_id);
            }
        }
    }
}

/// The query of `GET /v1/machine/changes`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The token of the list the client holds.
    pub since: Option<String>,
    /// Seconds to wait for a change, 0 to 60.
    pub wait: Option<u64>,
}

impl Query {
    /// How long to wait, or `invalid_request`.
    pub fn wait(&self) -> Result<Duration> {
        let seconds = self.wait.unwrap_or(WAIT_DEFAULT_SECONDS);
        if seconds > WAIT_MAX_SECONDS {
            return Err(crate::error::invalid(format!(
                "wait must be 0 to {WAIT_MAX_SECONDS} seconds"
            )));
        }
        Ok(Duration::from_secs(seconds))
    }
}

/// A machine's list with its token: the lower-case hex of the first 16
/// bytes of the SHA-256 of the list's JSON (grants in a fixed order), so
/// any change of a grant, a field or a live version changes it.
pub fn list(grants: Vec<GrantView>) -> Result<ChangeList> {
    let json = serde_json::to_vec(&grants)
        .map_err(|e| crate::store::Error::Corrupt(format!("grant list: {e}")))?;
    let digest = Sha256::digest(&json);
    Ok(ChangeList {
        token: hex::encode(&digest[..16]),
        grants,
    })
}

/// Waits up to `wait` for `slot`'s machine's list to differ from `held`,
/// reading it again on a snapshot after each notification and once more
/// when the time is up (a change no notification announced, such as one
/// committed by another replica, is caught then). Answers the new list, or
/// `held` unchanged; at shutdown, `held` at once.
pub async fn wait(
    store: Arc<dyn Store>,
    durability: Arc<Durability>,
    mut seen: watch::Receiver<u64>,
    slot: Slot,
    held: ChangeList,
    wait: Duration,
) -> Result<ChangeList> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if slot.changes.closed() {
            return Ok(held);
        }
        let woken = match tokio::time::timeout_at(deadline, seen.changed()).await {
            Ok(Ok(())) => true,
            // The time is up.
            Err(_) => false,
            // The vault is going away.
            Ok(Err(_)) => return Ok(held),
        };
        if slot.changes.closed() {
            return Ok(held);
        }
        let now = current(Arc::clone(&store), &durability, slot.machine_id.clone()).await?;
        if !woken || now.token != held.token {
            return Ok(now);
        }
    }
}

/// A machine's list now, on a snapshot of its own, once what the snapshot
/// saw is on disk.
async fn current(
    store: Arc<dyn Store>,
    durability: &Durability,
    machine_id: String,
) -> Result<ChangeList> {
    let now = tokio::task::spawn_blocking(move || {
        let mut snapshot = store.read()?;
        list(crate::service::grants::read_views(
            snapshot.as_mut(),
            &machine_id,
        )?)
    })
    .await??;
    durability.wait().await.map_err(|_| Error::Uncommitted)?;
    Ok(now)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(per_machine: usize, max: usize) -> Limits {
        Limits {
            waiting_per_machine: per_machine,
            waiting_max: max,
            ..Limits::default()
        }
    }

    #[test]
    fn slots_are_bounded_per_machine_and_in_total_and_given_back() {
        let changes = Arc::new(Changes::default());
        let limits = limits(2, 3);
        let a1 = changes.enter("m-a", &limits).unwrap();
        let _a2 = changes.enter("m-a", &limits).unwrap();
        let refused = changes.enter("m-a", &limits).err().unwrap();
        assert_eq!(refused.code(), ErrorCode::TooManyWaiting);
        let _b1 = changes.enter("m-b", &limits).unwrap();
        assert_eq!(
            changes.enter("m-c", &limits).err().unwrap().code(),
            ErrorCode::TooManyWaiting
        );
        drop(a1);
        assert_eq!(changes.waiting(), 2);
        let _c1 = changes.enter("m-c", &limits).unwrap();
    }

    #[test]
    fn the_token_names_the_versions() {
        let view = |version| GrantView {
            id: "g-1".into(),
            project: "p".into(),
            secret: "s".into(),
            fields: None,
            version: Some(version),
        };
        let one = list(vec![view(1)]).unwrap();
        assert_eq!(one.token, list(vec![view(1)]).unwrap().token);
        assert_ne!(one.token, list(vec![view(2)]).unwrap().token);
        assert_ne!(one.token, list(Vec::new()).unwrap().token);
        assert_eq!(one.token.len(), 32);
    }
}
