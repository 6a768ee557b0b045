//! `signet-init`: the small container Signet injects into opted-in pods.
//!
//! It generates an Ed25519 key pair in memory, enrolls it with the vault,
//! proving who the pod is with its projected service-account token (checked
//! by the vault with the cluster's TokenReview API) or, for an
//! EnrollmentToken with `rawToken: true`, with the raw enrollment token;
//! then it fetches every secret named in
//! `SIGNET_FILES`, and writes each one atomically into an in-memory volume.
//! In `init` mode it then exits; in `sidecar` mode it keeps the files fresh
//! after rotations and revokes its machine on SIGTERM: it waits on the
//! vault's change route (`GET /v1/machine/changes`), so a new version is
//! written within a second, and falls back to refreshing every
//! `SIGNET_REFRESH_SECONDS` when that route fails or the vault is too old
//! to have it. The private key never
//! leaves the process's memory: it is not written to any file, log or
//! environment.
//!
//! Everything is configured through the environment described in
//! [`contract`]; the only arguments are the subcommand:
//!
//! - `signet-init run`: enroll, write, then exit (`init`) or refresh
//!   (`sidecar`).
//! - `signet-init probe`: exit 0 iff `$SIGNET_MOUNT_PATH/.signet-ready`
//!   exists (the sidecar's startup probe), 1 otherwise.
//!
//! # Exit codes
//!
//! Each failure class has its own code, so `kubectl describe pod` (last
//! state: terminated, exit code N) already says what to check.
//!
//! | code | meaning | check |
//! | --- | --- | --- |
//! | 0 | files written (`init`), or clean shutdown after SIGTERM (`sidecar`) | |
//! | 1 | internal error (the async runtime or signal handler could not start) | the container's limits |
//! | 2 | configuration error (missing or invalid env var, only some of `SIGNET_SA_TOKEN_FILE`/`SIGNET_CLUSTER`/`SIGNET_POLICY`, those together with `SIGNET_TOKEN_FILE`, unreadable or empty token or CA file, both `SIGNET_CA_FILE` and `SIGNET_CA_PEM` set) | the injected env, the projected token volume or the token Secret |
//! | 3 | the vault stayed unreachable through every retry (or kept answering 5xx), or could not reach the cluster's TokenReview API (`attestation_unavailable`) | `SIGNET_VAULT`, the vault Service and its endpoints, NetworkPolicies, TLS trust; for TokenReview: the vault's access to the API server and the cluster registration |
//! | 4 | the vault refused the enrollment (4xx, never retried), or later stopped accepting this machine (revoked or expired) | the message names it by the vault's code: `unknown_cluster` (register the cluster, or the operator's `--cluster-name`), `unknown_policy` (the EnrollmentToken is not Ready), `attestation_audience` (the operator's `--token-audience`), `attestation_expired` (clocks), `attestation_not_pod_bound`/`attestation_pod_gone`/`attestation_pod_mismatch` (not this pod's projected token), `attestation_rejected` (the registered cluster is another one), `service_account_not_allowed` (`allowedServiceAccounts`); otherwise the EnrollmentToken: expired, used up, revoked, hostname or CIDR rules |
//! | 5 | a secret was refused or cannot be rendered (no grant for it, a field not granted or absent, a plain secret with `fields`) | the SecretGrant and the secret in the vault |
//! | 6 | a file could not be written | the mount path volume (size limit, read-only) |
//! | 7 | interrupted by SIGTERM/SIGINT before the first complete write | why the pod was stopped |
//!
//! `probe` exits 0 (ready), 1 (not ready) or 2 (`SIGNET_MOUNT_PATH` unset).
//!
//! # Reload by signal
//!
//! With `SIGNET_RELOAD_SIGNAL` and `SIGNET_RELOAD_CONTAINER` (set by the
//! webhook for `signet.dev/reload: signal`), the sidecar sends that signal
//! to the named container's main process after each refresh that rewrote
//! at least one file, once every file of that refresh is in place (never
//! after the first write: the app starts after it). A failure to find or
//! signal the process is logged with what to fix and does not stop the
//! sidecar; see [`reload`] for how the process is found and the
//! permissions it needs.
//!
//! # Trusting a private CA
//!
//! An `https://` vault is verified against the public web roots plus, when
//! configured, one extra PEM bundle: `SIGNET_CA_PEM` holds the PEM text
//! itself (the webhook sets it from its `--vault-ca-file`), `SIGNET_CA_FILE`
//! names a file holding it. Setting both is a configuration error (exit 2);
//! a vault whose certificate is still not trusted fails the TLS handshake,
//! which is retried like any unreachable vault (exit 3).
//!
//! # Files
//!
//! See [`render`] for the exact bytes of each format and [`write`] for the
//! atomic write and the permission bits.

pub mod contract;

#[cfg(feature = "runtime")]
pub mod cli;
#[cfg(feature = "runtime")]
pub mod config;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
pub mod reload;
#[cfg(feature = "runtime")]
pub mod render;
#[cfg(feature = "runtime")]
pub mod retry;
#[cfg(feature = "runtime")]
pub mod run;
#[cfg(feature = "runtime")]
pub mod write;

#[cfg(feature = "runtime")]
pub use error::Error;
