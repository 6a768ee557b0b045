//! The budget of requests a source may have denied before their signature
//! verified.
//!
//! Every request that fails before its signature verifies costs the vault
//! work a signed one does not earn it: parsing, a snapshot lookup, an
//! Ed25519 verification, a slot in the writer's batch. Each source gets a
//! token bucket ([`Budget`]): such a denial takes a token, tokens come back
//! at a steady rate up to a burst. A source with no token left is *over
//! budget*: the HTTP layer answers its requests `429 rate_limited` with
//! `Retry-After` before reading their body, unless the request's headers
//! are fresh and name a key the vault has verified before (see
//! [`crate::vault::Vault::known_signer`]), and the pipeline refuses the
//! same way, before the writer, any of its requests whose signature did not
//! verify ahead. A signed request never spends a token and is never slowed
//! by another source's garbage; one whose signature verifies is served
//! even from a source over budget.
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually holds a
//! whole /64, so counting addresses one by one would give it billions of
//! budgets). At most [`Budget::sources_max`] sources are tracked; a source
//! whose bucket is full again carries no state and is forgotten when room
//! is needed. When every tracked source still owes tokens, new sources
//! share one overflow bucket, so a flood from many addresses can neither
//! grow the map nor reset the budget of the sources already in it.
//!
//! The refusals themselves are counted like any unverified denial
//! ([`crate::denials`]), and take no token: a source that keeps flooding
//! gets its refill's worth of requests through, no more.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

/// The `Retry-After` of a refusal: tokens come back every second.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// The bucket's size and refill, and how many sources are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Tokens a source starts with and refills up to; 0 turns the budget
    /// off (no source is ever over it).
    pub burst: u32,
    /// Tokens given back per second (at least 1 when the budget is on).
    pub per_second: u32,
    /// Sources tracked at once (at least 1).
    pub sources_max: usize,
}

impl Default for BudgetLimits {
    fn default() -> Self {
        Self {
            burst: 200,
            per_second: 20,
            sources_max: 10_000,
        }
    }
}

/// Where a source's tokens are kept (and its connections counted, see
/// [`crate::connections`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum Source {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl Source {
    /// The source of a request's address as the HTTP layer records it;
    /// `None` when there is none (a request that did not come through a
    /// socket), which is never budgeted.
    fn of(source_ip: &str) -> Option<Self> {
        source_ip.parse::<IpAddr>().ok().map(Self::from)
    }
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    /// When `tokens` was last brought up to date.
    at: i64,
}

impl Bucket {
    fn full(limits: &BudgetLimits, now: i64) -> Self {
        Self {
            tokens: limits.burst,
            at: now,
        }
    }

    /// The tokens at `now`.
    fn tokens(&self, limits: &BudgetLimits, now: i64) -> u32 {
        let elapsed = u64::try_from(now.saturating_sub(self.at)).unwrap_or(0);
        let refill = elapsed.saturating_mul(u64::from(limits.per_second));
        let tokens = u64::from(self.tokens).saturating_add(refill);
        u32::try_from(tokens.min(u64::from(limits.burst))).unwrap_or(limits.burst)
    }

    fn take(&mut self, limits: &BudgetLimits, now: i64) {
        let tokens = self.tokens(limits, now);
        // A clock that went back does not refill twice.
        self.at = self.at.max(now);
        self.tokens = tokens.saturating_sub(1);
    }
}

#[derive(Debug)]
struct Buckets {
    by_source: HashMap<Source, Bucket>,
    /// Shared by the sources that found no room.
    overflow: Bucket,
    /// When full buckets were last forgotten to make room.
    pruned_at: i64,
}

/// Every source's bucket.
#[derive(Debug)]
pub struct Budget {
    limits: BudgetLimits,
    buckets: Mutex<Buckets>,
}

impl Budget {
    pub fn new(limits: BudgetLimits) -> Self {
        let limits = BudgetLimits {
            per_second: limits.per_second.max(1),
            sources_max: limits.sources_max.max(1),
            ..limits
        };
        Self {
            limits,
            buckets: Mutex::new(Buckets {
                by_source: HashMap::new(),
                overflow: Bucket::full(&limits, i64::MIN),
                pruned_at: i64::MIN,
            }),
        }
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    pub fn sources_max(&self) -> usize {
        self.limits.sources_max
    }

    fn buckets(&self) -> MutexGuard<'_, Buckets> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a token from `source_ip`'s bucket at `now`: one request of it
    /// was denied before its signature verified.
    pub fn spend(&self, source_ip: &str, now: i64) {
        if self.limits.burst == 0 {
            return;
        }
        let Some(source) = Source::of(source_ip) else {
            return;
        };
        let limits = self.limits;
        let mut buckets = self.buckets();
        if let Some(bucket) = buckets.by_source.get_mut(&source) {
            bucket.take(&limits, now);
            return;
        }
        if buckets.by_source.len() >= limits.sources_max && buckets.pruned_at < now {
            // At most once a second: a full bucket is the same as none.
            buckets.pruned_at = now;
            buckets
                .by_source
                .retain(|_, bucket| bucket.tokens(&limits, now) < limits.burst);
        }
        if buckets.by_source.len() < limits.sources_max {
            let mut bucket = Bucket::full(&limits, now);
            bucket.take(&limits, now);
            buckets.by_source.insert(source, bucket);
        } else {
            buckets.overflow.take(&limits, now);
        }
    }

    /// Whether `source_ip` has no token left at `now` (tokens come back
    /// once a second: [`RETRY_AFTER_SECONDS`]). A source that is not
    /// budgeted never is.
    pub fn over(&self, source_ip: &str, now: i64) -> bool {
        source_ip.parse().is_ok_and(|ip| self.over_address(ip, now))
    }

    /// [`Budget::over`] for an address already parsed.
    pub fn over_address(&self, ip: IpAddr, now: i64) -> bool {
        if self.limits.burst == 0 {
            return false;
        }
        let source = Source::from(ip);
        let limits = self.limits;
        let buckets = self.buckets();
        let bucket = match buckets.by_source.get(&source) {
            Some(bucket) => bucket,
            // Its next denial would go to the overflow bucket.
            None if buckets.by_source.len() >= limits.sources_max => &buckets.overflow,
            None => return false,
        };
        bucket.tokens(&limits, now) == 0
    }

    /// Sources tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets().by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(burst: u32, per_second: u32, sources_max: usize) -> Budget {
        Budget::new(BudgetLimits {
            burst,
            per_second,
            sources_max,
        })
    }

    #[test]
    fn a_source_is_over_once_its_burst_is_spent_and_refills_with_time() {
        let b = budget(3, 2, 10);
        for _ in 0..2 {
            b.spend("192.0.2.1", 100);
        }
        assert!(!b.over("192.0.2.1", 100));
        b.spend("192.0.2.1", 100);
        assert!(b.over("192.0.2.1", 100));
        // Another source is untouched.
        assert!(!b.over("192.0.2.2", 100));
        // One second gives two tokens back, never more than the burst.
        assert!(!b.over("192.0.2.1", 101));
        b.spend("192.0.2.1", 101);
        b.spend("192.0.2.1", 101);
        assert!(b.over("192.0.2.1", 101));
        b.spend("192.0.2.1", 1000);
        b.spend("192.0.2.1", 1000);
        assert!(!b.over("192.0.2.1", 1000));
        b.spend("192.0.2.1", 1000);
        assert!(b.over("192.0.2.1", 1000));
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64_and_a_mapped_ipv4_its_address() {
        let b = budget(1, 1, 10);
        b.spend("2001:db8:1:2::1", 5);
        assert!(b.over("2001:db8:1:2:ffff::9", 5));
        assert!(!b.over("2001:db8:1:3::1", 5));
        b.spend("::ffff:192.0.2.7", 5);
        assert!(b.over("192.0.2.7", 5));
    }

    #[test]
    fn no_address_and_a_zero_burst_are_never_budgeted() {
        let b = budget(1, 1, 10);
        b.spend("", 5);
        assert!(!b.over("", 5));
        assert_eq!(b.tracked(), 0);
        let off = budget(0, 1, 10);
        for _ in 0..10 {
            off.spend("192.0.2.1", 5);
        }
        assert!(!off.over("192.0.2.1", 5));
    }

    #[test]
    fn sources_past_the_cap_share_one_bucket_and_full_ones_make_room() {
        let b = budget(2, 1, 2);
        b.spend("192.0.2.1", 10);
        b.spend("192.0.2.2", 10);
        // No room: the newcomers share the overflow bucket.
        b.spend("192.0.2.3", 10);
        b.spend("192.0.2.4", 10);
        assert_eq!(b.tracked(), 2);
        assert!(b.over("192.0.2.5", 10));
        // The tracked ones keep their own state.
        assert!(!b.over("192.0.2.1", 10));
        // Once tracked buckets are full again, newcomers take their place.
        b.spend("192.0.2.6", 11);
        assert_eq!(b.tracked(), 1);
        assert!(!b.over("192.0.2.6", 11));
        b.spend("192.0.2.6", 11);
        assert!(b.over("192.0.2.6", 11));
    }
}
