//! Name resolution for webhook destinations, bounded: at most a few
//! lookups at once, each given up after a timeout. The system resolver
//! blocks a thread per lookup, so an unbounded number of slow lookups would
//! take the blocking pool the store's transactions run on.
//!
//! The resolver is a parameter, so tests count lookups and stall them.

use std::net::{IpAddr, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// Resolves a host name; blocking.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>>;
}

/// The operating system's resolver (`getaddrinfo`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        Ok((host, port).to_socket_addrs()?.map(|a| a.ip()).collect())
    }
}

/// Lookups at most `concurrency` at a time, each within `timeout`.
#[derive(Clone)]
pub struct Lookups {
    resolver: Arc<dyn Resolve>,
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("available", &self.permits.available_permits())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Lookups running at once by default.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// How long one lookup may take by default (waiting for a slot included).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Lookups {
    fn default() -> Self {
        Self::new(
            Arc::new(SystemResolver),
            DEFAULT_CONCURRENCY,
            DEFAULT_TIMEOUT,
        )
    }
}

impl Lookups {
    pub fn new(resolver: Arc<dyn Resolve>, concurrency: usize, timeout: Duration) -> Self {
        Self {
            resolver,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            timeout,
        }
    }

    /// The addresses of `host`, or why there are none. A slot is held until
    /// the blocking lookup really ends, even after the caller gave up on it,
    /// so stalled lookups never hold more than `concurrency` threads.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        let lookup = async {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| "the resolver is shut down".to_owned())?;
            let (resolver, owned_host) = (Arc::clone(&self.resolver), host.to_owned());
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                resolver.resolve(&owned_host, port)
            })
            .await
            .map_err(|e| format!("lookup failed: {e}"))?
            .map_err(|e| format!("cannot resolve {host}: {e}"))
        };
        tokio::time::timeout(self.timeout, lookup)
            .await
            .map_err(|_| {
                format!(
                    "cannot resolve {host}: no answer within {} s",
                    self.timeout.as_secs_f32()
                )
            })?
    }
}
