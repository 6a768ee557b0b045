//! Time is a parameter: every rule that depends on the time reads it from a
//! [`Clock`], so tests move time forward instead of sleeping. A rule that
//! waits (the tarpit of [`crate::http::limit`]) waits on the clock too.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A wait on a [`Clock`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The source of "now", in Unix seconds.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> i64;

    /// Waits `duration`: the operating system's timer, unless the clock
    /// moves only when told to.
    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        jiff::Timestamp::now().as_second()
    }
}

/// A clock that moves only when told to (tests). Its waits end when it has
/// been moved far enough, in whole seconds.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    moved: tokio::sync::Notify,
}

impl ManualClock {
    pub fn new(now: i64) -> Self {
        Self {
            now: AtomicI64::new(now),
            moved: tokio::sync::Notify::new(),
        }
    }

    pub fn set(&self, now: i64) {
        self.now.store(now, Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    pub fn advance(&self, seconds: i64) {
        self.now.fetch_add(seconds, Ordering::SeqCst);
        self.moved.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        let until = self
            .now()
            .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        Box::pin(async move {
            loop {
                // Registered before the check, so a move in between wakes it.
                let moved = self.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now() >= until {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// RFC 3339 form of a Unix time, for API answers.
pub fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wait_ends_once_it_was_moved_far_enough() {
        let clock = std::sync::Arc::new(ManualClock::new(100));
        let waiting = tokio::spawn({
            let clock = std::sync::Arc::clone(&clock);
            async move { clock.sleep(Duration::from_millis(1500)).await }
        });
        // The wait starts (and reads the time) before the clock moves.
        tokio::time::sleep(Duration::from_millis(20)).await;
        clock.advance(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "woke before its time");
        clock.advance(1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .map_or_else(|_| panic!("never woke"), |joined| assert!(joined.is_ok()));
    }
}
