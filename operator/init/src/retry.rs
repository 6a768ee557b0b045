//! Bounded retries with exponential backoff and jitter, for while the vault
//! is unreachable (it may still be starting, or its Service may have no
//! endpoints yet).

use std::future::Future;
use std::time::Duration;

use rand::Rng as _;
use signet_client::sdk;

/// The vault's code for "the cluster's TokenReview API could not be reached"
/// (`ErrorCode::AttestationUnavailable`).
pub const ATTESTATION_UNAVAILABLE: &str = "attestation_unavailable";

/// How many times, and how patiently, to call the vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Delay after the first failure; doubled after each one, up to
    /// [`Retry::cap`].
    pub base: Duration,
}

impl Default for Retry {
    /// 8 attempts, waiting about 1, 2, 4, 8, 16, 16 and 16 s between them:
    /// about a minute before giving up, long enough for a vault rollout.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(1),
        }
    }
}

/// A call that did not succeed, and after how many attempts.
#[derive(Debug)]
pub struct Failed<E = sdk::Error> {
    pub error: E,
    pub attempts: u32,
}

/// A failure that may go away by itself (worth another attempt) or not.
pub trait Retryable: std::fmt::Display {
    /// Whether another attempt may succeed.
    fn is_retryable(&self) -> bool;
}

impl Retryable for sdk::Error {
    fn is_retryable(&self) -> bool {
        is_retryable(self)
    }
}

impl Retry {
    /// The longest wait between two attempts.
    pub fn cap(&self) -> Duration {
        self.base.saturating_mul(16)
    }

    /// The wait after failed attempt number `attempt` (1-based), without jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.cap())
    }

    /// Runs `op` until it succeeds, fails in a way retrying cannot fix, or
    /// runs out of attempts.
    pub async fn run<T, E, F, Fut>(&self, what: &str, mut op: F) -> Result<T, Failed<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() && attempt < self.max_attempts => {
                    let delay = jitter(self.delay(attempt), 0.2);
                    tracing::warn!(
                        attempt,
                        max_attempts = self.max_attempts,
                        retry_in_ms = delay.as_millis() as u64,
                        error = %error,
                        "{what}: vault not reachable, retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    return Err(Failed {
                        error,
                        attempts: attempt,
                    });
                }
            }
        }
    }
}

/// Worth retrying: no answer at all, the vault answered that it is unwell
/// (5xx), or it could not reach the cluster's TokenReview API (whatever the
/// status: that is the cluster's outage, not a decision about this pod). Any
/// other 4xx is a decision and is never retried.
pub fn is_retryable(error: &sdk::Error) -> bool {
    if error.code() == Some(ATTESTATION_UNAVAILABLE) {
        return true;
    }
    match error {
        sdk::Error::Transport { .. } => true,
        sdk::Error::Api { status, .. } | sdk::Error::Decode { status, .. } => *status >= 500,
        _ => false,
    }
}

/// `duration` scaled by a random factor in `1 ± spread`, so pods started
/// together do not call the vault in lockstep.
pub fn jitter(duration: Duration, spread: f64) -> Duration {
    let factor = rand::thread_rng().gen_range((1.0 - spread)..=(1.0 + spread));
    duration.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_totals_about_a_minute() {
        let retry = Retry::default();
        let delays: Vec<u64> = (1..retry.max_attempts)
            .map(|a| retry.delay(a).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 16, 16]);
        assert_eq!(delays.iter().sum::<u64>(), 63);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..100 {
            let d = jitter(Duration::from_secs(10), 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11));
        }
    }

    #[test]
    fn codes_match_the_vaults() {
        use signet_client::api::ErrorCode;
        assert_eq!(
            ATTESTATION_UNAVAILABLE,
            ErrorCode::AttestationUnavailable.as_str()
        );
    }

    #[test]
    fn only_transport_and_server_errors_are_retried() {
        let api = |status| sdk::Error::Api {
            status,
            code: "x".into(),
            message: String::new(),
        };
        assert!(is_retryable(&api(503)));
        assert!(!is_retryable(&api(401)));
        assert!(is_retryable(&sdk::Error::Api {
            status: 424,
            code: "attestation_unavailable".into(),
            message: String::new(),
        }));
        assert!(!is_retryable(&sdk::Error::Api {
            status: 403,
            code: "attestation_rejected".into(),
            message: String::new(),
        }));
        assert!(!is_retryable(&api(403)));
        assert!(!is_retryable(&sdk::Error::Unregistered));
    }
}
