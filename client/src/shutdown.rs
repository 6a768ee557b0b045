//! Graceful shutdown on SIGTERM and Ctrl-C (SIGINT): the one implementation
//! the vault, the operator and `signet-init` share.
//!
//! The handlers are installed when [`Signals::register`] or [`signal`] is
//! called, not when the future is first polled. A process usually does some
//! setup between starting and waiting for a signal (binding a port,
//! connecting to the API server, announcing that it listens). A SIGTERM in
//! that window would otherwise meet the default disposition and kill the
//! process without draining. Registered early, the signal is kept and the
//! wait completes at its first poll.
//!
//! Both must be called inside a Tokio runtime whose signal driver is enabled
//! (`#[tokio::main]`, or a builder with `enable_all`).

use std::fmt;
use std::future::Future;

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: the kubelet stopping the pod, or `kill`.
    Terminate,
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
}

impl Signal {
    /// The conventional name, for logs: `SIGTERM` or `SIGINT`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Terminate => "SIGTERM",
            Self::Interrupt => "SIGINT",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Installed SIGTERM and SIGINT handlers.
///
/// For a process that waits for a signal more than once, such as
/// `signet-init`, which selects over its work and the signals at each step.
/// A process that only needs "stop now" takes [`signal`].
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs both handlers now. From this call on, neither signal
    /// terminates the process on its own: it is delivered to [`recv`].
    ///
    /// Fails when the runtime has no signal driver. Off Unix, Ctrl-C is
    /// listened for only while [`recv`] runs.
    ///
    /// [`recv`]: Signals::recv
    pub fn register() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal. Cancel-safe: as a `select!` branch in a
    /// loop, a signal that arrives while another branch runs is returned by
    /// the next call.
    pub async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Signal::Terminate,
                _ = self.interrupt.recv() => Signal::Interrupt,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            Signal::Interrupt
        }
    }
}

/// Installs the handlers now and returns a future that completes on the
/// first SIGTERM or SIGINT, logging which one. For servers: pass it to the
/// graceful shutdown of whatever they serve.
///
/// When the handlers cannot be installed the failure is logged and the
/// future never completes: the process then stops only when killed, which
/// is no reason to refuse to serve.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    let signals = Signals::register();
    async move {
        match signals {
            Ok(mut signals) => {
                let signal = signals.recv().await;
                tracing::info!(%signal, "shutdown signal received");
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM and Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    }
}
