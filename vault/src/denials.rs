//! Denials of requests whose signature never verified, counted in memory.
//!
//! Anyone can send a request that fails before its signature verifies
//! (no headers, a stale timestamp, a key id that names nobody, a forged
//! signature, a body over the limit). Writing one fsync'd audit row for
//! each would let a flood of garbage fill the disk and take the writer from
//! real requests. Such denials are still all audited, but as groups: one row
//! per (source address, error code, action) and flush interval, carrying how
//! many requests it stands for. The background worker flushes the groups;
//! the request path only counts. At most [`Denials::max_groups`] groups are
//! kept per interval; what does not fit is counted in one overflow group.
//! A flush that cannot write (a full disk, a store error) hands its groups
//! back, merged with those counted meanwhile under the same bound, so a
//! later flush writes them: a failure delays the rows, never drops a count.
//!
//! The key id such a request claims is not proven: its row's actor is
//! `unverified:<claimed id>` (cut to [`CLAIM_MAX`] characters), never the
//! identity it names.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard};

use signet_client::api::ErrorCode;

use crate::audit::Record;
use crate::clock::rfc3339;

/// Longest claimed key id kept in an actor.
pub const CLAIM_MAX: usize = 64;
/// Longest request target kept in an audit row (as on the main path).
pub const TARGET_MAX: usize = 256;
/// The actor prefix of a row whose caller was never verified.
pub const UNVERIFIED: &str = "unverified";
/// The message of the overflow group.
const OVERFLOW: &str = "more distinct sources, codes and actions than one interval keeps";

/// One denied request before its signature verified.
#[derive(Clone, Debug)]
pub struct Denial<'a> {
    pub source_ip: &'a str,
    pub code: ErrorCode,
    pub action: &'a str,
    /// The public message of the error.
    pub message: String,
    /// The `Signet-Key` the request claimed, if any.
    pub claimed: Option<&'a str>,
    pub target: &'a str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    source_ip: String,
    code: ErrorCode,
    action: String,
}

/// One value for the whole group, or several.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    One(String),
    Many,
}

impl Seen {
    fn merge(&mut self, value: &str) {
        if matches!(self, Self::One(v) if v != value) {
            *self = Self::Many;
        }
    }

    fn absorb(&mut self, other: &Self) {
        match other {
            Self::One(value) => self.merge(value),
            Self::Many => *self = Self::Many,
        }
    }

    fn show(&self) -> &str {
        match self {
            Self::One(value) => value,
            Self::Many => "*",
        }
    }
}

#[derive(Clone, Debug)]
struct Group {
    count: u64,
    first_at: i64,
    last_at: i64,
    message: String,
    actor: Seen,
    target: Seen,
}

#[derive(Debug, Default)]
struct Window {
    groups: HashMap<Key, Group>,
    /// Requests that did not fit in `groups`.
    overflow: Option<Group>,
}

impl Window {
    fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.overflow.is_none()
    }

    /// Whether `key` counts in a group of its own: it has one, or one more
    /// fits under `max_groups`.
    fn fits(&self, key: &Key, max_groups: usize) -> bool {
        self.groups.len() < max_groups || self.groups.contains_key(key)
    }

    /// Adds the counts of `later` (a window counted after this one), each
    /// group into its own when it fits, else into the overflow group.
    fn absorb(&mut self, later: Self, max_groups: usize) {
        for (key, group) in later.groups {
            if self.fits(&key, max_groups) {
                match self.groups.entry(key) {
                    Entry::Occupied(mut own) => own.get_mut().absorb(&group),
                    Entry::Vacant(slot) => {
                        slot.insert(group);
                    }
                }
            } else {
                self.overflow_absorb(group);
            }
        }
        if let Some(overflow) = later.overflow {
            self.overflow_absorb(overflow);
        }
    }

    fn overflow_absorb(&mut self, group: Group) {
        match &mut self.overflow {
            Some(overflow) => overflow.absorb(&group),
            None => {
                self.overflow = Some(Group {
                    message: OVERFLOW.into(),
                    ..group
                });
            }
        }
    }

    /// The audit records of every group, in a stable order (by source,
    /// code, action; the overflow group last), each with its count.
    fn records(&self) -> Vec<Record> {
        let mut groups: Vec<(&Key, &Group)> = self.groups.iter().collect();
        groups.sort_by(|(a, _), (b, _)| {
            (&a.source_ip, a.code.as_str(), &a.action).cmp(&(
                &b.source_ip,
                b.code.as_str(),
                &b.action,
            ))
        });
        let mut records: Vec<Record> = groups
            .into_iter()
            .map(|(key, group)| group.record(&key.action, key.code.as_str(), &key.source_ip))
            .collect();
        if let Some(overflow) = &self.overflow {
            records.push(overflow.record("*", "overflow", "*"));
        }
        records
    }
}

/// The groups of the current interval.
#[derive(Debug)]
pub struct Denials {
    window: Mutex<Window>,
    max_groups: usize,
}

/// What [`Denials::record`] did with a denial, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Into its own group.
    Grouped,
    /// Into the overflow group: too many groups this interval.
    Overflow,
}

/// The actor of an unverified request: `unverified:<claimed id>`, the
/// claim cut to [`CLAIM_MAX`] characters.
pub fn unverified_actor(claimed: Option<&str>) -> String {
    match claimed.filter(|c| !c.is_empty()) {
        Some(claimed) => format!(
            "{UNVERIFIED}:{}",
            claimed.chars().take(CLAIM_MAX).collect::<String>()
        ),
        None => UNVERIFIED.to_owned(),
    }
}

/// `target` cut to [`TARGET_MAX`] characters.
pub fn capped_target(target: &str) -> String {
    target.chars().take(TARGET_MAX).collect()
}

impl Denials {
    /// Keeps at most `max_groups` groups per interval (at least one).
    pub fn new(max_groups: usize) -> Self {
        Self {
            window: Mutex::new(Window::default()),
            max_groups: max_groups.max(1),
        }
    }

    pub fn max_groups(&self) -> usize {
        self.max_groups
    }

    fn window(&self) -> MutexGuard<'_, Window> {
        self.window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one denial at `now`.
    pub fn record(&self, now: i64, denial: Denial<'_>) -> Counted {
        let actor = unverified_actor(denial.claimed);
        let target = capped_target(denial.target);
        let mut window = self.window();
        let key = Key {
            source_ip: denial.source_ip.to_owned(),
            code: denial.code,
            action: denial.action.to_owned(),
        };
        let (group, counted) = if window.fits(&key, self.max_groups) {
            let group = window
                .groups
                .entry(key)
                .or_insert_with(|| Group::new(now, denial.message, &actor, &target));
            (group, Counted::Grouped)
        } else {
            let group = window
                .overflow
                .get_or_insert_with(|| Group::new(now, OVERFLOW.into(), &actor, &target));
            (group, Counted::Overflow)
        };
        group.count += 1;
        group.last_at = now;
        group.actor.merge(&actor);
        group.target.merge(&target);
        counted
    }

    /// Takes every group of the interval and hands their audit records to
    /// `write` (in a stable order: by source, code, action; the overflow
    /// group last), leaving an empty interval behind; returns how many
    /// records were written. The request path keeps counting meanwhile.
    /// When `write` fails, the groups it was handed are merged back, before
    /// those counted since and within the same bound, so the next flush
    /// writes them.
    pub fn flush<E>(&self, write: impl FnOnce(&[Record]) -> Result<(), E>) -> Result<usize, E> {
        let taken = std::mem::take(&mut *self.window());
        if taken.is_empty() {
            return Ok(0);
        }
        let records = taken.records();
        match write(&records) {
            Ok(()) => Ok(records.len()),
            Err(error) => {
                let mut window = self.window();
                let counted_since = std::mem::replace(&mut *window, taken);
                window.absorb(counted_since, self.max_groups);
                Err(error)
            }
        }
    }

    /// Whether nothing is waiting to be flushed.
    pub fn is_empty(&self) -> bool {
        self.window().is_empty()
    }
}

impl Group {
    fn new(now: i64, message: String, actor: &str, target: &str) -> Self {
        Self {
            count: 0,
            first_at: now,
            last_at: now,
            message,
            actor: Seen::One(actor.to_owned()),
            target: Seen::One(target.to_owned()),
        }
    }

    /// Adds the counts of `other`, a group of the same key.
    fn absorb(&mut self, other: &Self) {
        self.count += other.count;
        self.first_at = self.first_at.min(other.first_at);
        self.last_at = self.last_at.max(other.last_at);
        self.actor.absorb(&other.actor);
        self.target.absorb(&other.target);
    }

    /// The audit record of the group. The count is the reason's last word,
    /// so a reader (or `signet audit list`) sees it without a new column.
    fn record(&self, action: &str, code: &str, source_ip: &str) -> Record {
        let actor = match &self.actor {
            Seen::One(actor) => actor.clone(),
            Seen::Many => format!("{UNVERIFIED}:*"),
        };
        Record {
            actor,
            action: action.to_owned(),
            target: self.target.show().to_owned(),
            allowed: false,
            reason: format!(
                "{code}: {} (unverified, {} to {}, count {})",
                self.message,
                rfc3339(self.first_at),
                rfc3339(self.last_at),
                self.count
            ),
            source_ip: source_ip.to_owned(),
            committed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Flushes into a vector, as a store that accepts every row would.
    fn take(denials: &Denials) -> Vec<Record> {
        let mut written = Vec::new();
        denials
            .flush(|records| {
                written.extend_from_slice(records);
                Ok::<_, ()>(())
            })
            .unwrap();
        written
    }

    /// The count a record carries (the reason's last word).
    fn count(record: &Record) -> u64 {
        let (_, count) = record
            .reason
            .trim_end_matches(')')
            .rsplit_once(' ')
            .unwrap();
        count.parse().unwrap()
    }

    fn denial<'a>(source_ip: &'a str, code: ErrorCode, claimed: Option<&'a str>) -> Denial<'a> {
        Denial {
            source_ip,
            code,
            action: "secret.read",
            message: "no".into(),
            claimed,
            target: "/v1/secrets/a/b",
        }
    }

    #[test]
    fn one_row_per_source_code_and_action_with_its_count() {
        let denials = Denials::new(10);
        for i in 0..5 {
            denials.record(
                100 + i,
                denial("10.0.0.1", ErrorCode::BadSignature, Some("m_a")),
            );
        }
        denials.record(
            104,
            denial("10.0.0.1", ErrorCode::BadSignature, Some("m_b")),
        );
        denials.record(104, denial("10.0.0.2", ErrorCode::UnknownKey, None));
        let rows = take(&denials);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].actor, "unverified:*");
        assert!(rows[0].reason.starts_with("bad_signature: no (unverified"));
        assert!(rows[0].reason.ends_with("count 6)"), "{}", rows[0].reason);
        assert_eq!(rows[1].actor, "unverified");
        assert!(rows[1].reason.ends_with("count 1)"));
        assert!(take(&denials).is_empty());
    }

    #[test]
    fn groups_past_the_cap_share_one_overflow_row() {
        let denials = Denials::new(2);
        let ips: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}")).collect();
        let counted: Vec<Counted> = ips
            .iter()
            .map(|ip| denials.record(1, denial(ip, ErrorCode::BadSignature, Some("m_a"))))
            .collect();
        assert_eq!(
            counted.iter().filter(|c| **c == Counted::Overflow).count(),
            3
        );
        // A group already open still counts in its own row.
        assert_eq!(
            denials.record(2, denial("10.0.0.0", ErrorCode::BadSignature, None)),
            Counted::Grouped
        );
        let rows = take(&denials);
        assert_eq!(rows.len(), 3);
        let overflow = rows.last().unwrap();
        assert_eq!(overflow.action, "*");
        assert!(overflow.reason.starts_with("overflow: "));
        assert!(overflow.reason.ends_with("count 3)"));
    }

    #[test]
    fn a_failed_flush_hands_its_counts_to_the_next() {
        let denials = Denials::new(10);
        for at in 100..103 {
            denials.record(at, denial("10.0.0.1", ErrorCode::BadSignature, Some("m_a")));
        }
        denials.record(101, denial("10.0.0.2", ErrorCode::UnknownKey, None));
        let mut handed = 0;
        let failed = denials.flush(|records| {
            handed = records.len();
            Err("disk full")
        });
        assert_eq!((failed, handed), (Err("disk full"), 2));
        assert!(!denials.is_empty());
        // Counted while the flush was failing.
        denials.record(
            200,
            denial("10.0.0.1", ErrorCode::BadSignature, Some("m_b")),
        );
        denials.record(201, denial("10.0.0.3", ErrorCode::UnknownKey, None));
        let rows = take(&denials);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        assert_eq!(rows.iter().map(count).sum::<u64>(), 6);
        let first = &rows[0];
        assert_eq!((first.source_ip.as_str(), count(first)), ("10.0.0.1", 4));
        // One group from before the failure and after: its span covers both.
        assert!(
            first
                .reason
                .contains(&format!("{} to {}", rfc3339(100), rfc3339(200))),
            "{}",
            first.reason
        );
        assert_eq!(first.actor, "unverified:*");
        assert!(take(&denials).is_empty());
    }

    #[test]
    fn groups_handed_back_keep_the_cap_and_go_first() {
        let denials = Denials::new(2);
        denials.record(1, denial("10.0.0.1", ErrorCode::BadSignature, None));
        denials.record(1, denial("10.0.0.2", ErrorCode::BadSignature, None));
        denials.record(1, denial("10.0.0.3", ErrorCode::BadSignature, None));
        // Meanwhile a source of the failed flush comes back and two new
        // ones arrive (the second already past the fresh interval's cap).
        let failed = denials.flush(|_| {
            for ip in ["10.0.0.1", "10.0.0.8", "10.0.0.9"] {
                denials.record(2, denial(ip, ErrorCode::BadSignature, None));
            }
            Err(())
        });
        assert_eq!(failed, Err(()));
        let rows = take(&denials);
        let shown: Vec<(&str, u64)> = rows
            .iter()
            .map(|r| (r.source_ip.as_str(), count(r)))
            .collect();
        // The groups of the failed flush keep their rows; the newer sources
        // join the overflow group; nothing is lost.
        assert_eq!(shown, [("10.0.0.1", 2), ("10.0.0.2", 1), ("*", 3)]);
        assert!(
            rows[2].reason.starts_with("overflow: "),
            "{}",
            rows[2].reason
        );
    }

    #[test]
    fn groups_pushed_into_overflow_by_a_hand_back_say_so() {
        let denials = Denials::new(2);
        denials.record(1, denial("10.0.0.1", ErrorCode::BadSignature, None));
        denials.record(1, denial("10.0.0.2", ErrorCode::BadSignature, None));
        // No overflow yet on either side: the newer groups find the cap
        // full of handed-back groups and start the overflow group.
        let failed = denials.flush(|_| {
            for ip in ["10.0.0.8", "10.0.0.9"] {
                denials.record(2, denial(ip, ErrorCode::BadSignature, None));
            }
            Err(())
        });
        assert_eq!(failed, Err(()));
        let rows = take(&denials);
        let overflow = rows.last().unwrap();
        assert_eq!((overflow.source_ip.as_str(), count(overflow)), ("*", 2));
        assert!(overflow.reason.contains(OVERFLOW), "{}", overflow.reason);
    }

    #[test]
    fn a_claim_is_cut_and_marked_unverified() {
        let long = "m_".to_owned() + &"x".repeat(500);
        let actor = unverified_actor(Some(&long));
        assert_eq!(actor.len(), "unverified:".len() + CLAIM_MAX);
        assert_eq!(unverified_actor(Some("")), "unverified");
        assert_eq!(capped_target(&"q".repeat(5000)).len(), TARGET_MAX);
    }
}
