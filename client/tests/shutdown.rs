//! The shutdown helper against real signals sent to this test process.
//!
//! One test, in a file of its own: signals go to the whole process, so no
//! other test may be listening (or be killed) when they arrive.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, time::Duration};

use signet_client::shutdown::{self, Signal, Signals};

/// Sends `signal` (`TERM`, `INT`) to this process and waits until kill(1)
/// has delivered it. std has no kill and the workspace forbids unsafe.
fn send(signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn signals_sent_before_the_first_poll_are_kept() {
    // Registered, then signalled before anything waits: still delivered,
    // and the process is not terminated by the default disposition.
    let mut signals = Signals::register().unwrap();
    send("TERM");
    assert_eq!(
        tokio::time::timeout(WITHIN, signals.recv()).await.unwrap(),
        Signal::Terminate
    );
    send("INT");
    let signal = tokio::time::timeout(WITHIN, signals.recv()).await.unwrap();
    assert_eq!(signal, Signal::Interrupt);
    assert_eq!(signal.to_string(), "SIGINT");
    assert_eq!(Signal::Terminate.to_string(), "SIGTERM");

    // recv is cancel-safe: a wait dropped half-way (another `select!`
    // branch won) loses nothing; the next call returns the next signal.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), signals.recv())
            .await
            .is_err(),
        "no signal was sent yet"
    );
    send("TERM");
    assert_eq!(
        tokio::time::timeout(WITHIN, signals.recv()).await.unwrap(),
        Signal::Terminate
    );

    // The one-shot future: created (and so registered) before the signal,
    // first polled after it.
    let stop = shutdown::signal();
    send("TERM");
    tokio::time::timeout(WITHIN, stop).await.unwrap();

    // Nothing pending: a fresh future does not complete on an old signal.
    let stop = shutdown::signal();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stop)
            .await
            .is_err()
    );
}
