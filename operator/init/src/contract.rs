//! The contract between the operator's admission webhook and `signet-init`:
//! environment variables and the `SIGNET_FILES` document.
//!
//! `signet-init` gets everything it needs from its environment and one
//! credential file, so it never talks to the Kubernetes API. This module
//! carries no kube types on purpose: the webhook (which writes the
//! environment) and `signet-init` (which reads it) share it through this
//! kube-free crate.
//!
//! A pod proves who it is in one of two ways, chosen by its EnrollmentToken:
//!
//! - **attestation** (the default): the webhook mounts a projected
//!   service-account token (audience: the vault, [`SA_TOKEN_EXPIRATION_SECONDS`]
//!   of lifetime, rotated by the kubelet) into `signet-init` only, and sets
//!   `SIGNET_SA_TOKEN_FILE`, `SIGNET_CLUSTER` and `SIGNET_POLICY`. The vault
//!   checks the token with the cluster's TokenReview API and takes the
//!   namespace, service account, pod name and pod UID from it, so nothing
//!   in the namespace is a bearer credential;
//! - **raw token** (the EnrollmentToken's explicit `rawToken: true`): the
//!   webhook mounts the token Secret and sets `SIGNET_TOKEN_FILE`.
//!
//! The three attestation variables come together or not at all; without
//! them `SIGNET_TOKEN_FILE` is required.
//!
//! | variable | value |
//! | --- | --- |
//! | `SIGNET_VAULT` | base URL of the vault, e.g. `https://signet.signet-system.svc:8443` |
//! | `SIGNET_SA_TOKEN_FILE` | attestation: path of the projected service-account token ([`SA_TOKEN_FILE`]); re-read at every enrollment attempt |
//! | `SIGNET_CLUSTER` | attestation: the cluster's name as registered in the vault |
//! | `SIGNET_POLICY` | attestation: the EnrollmentToken's name (the vault looks it up in the pod's verified namespace) |
//! | `SIGNET_TOKEN_FILE` | raw token: path of the file holding the raw enrollment token ([`TOKEN_FILE`]) |
//! | `SIGNET_MOUNT_PATH` | directory (an in-memory `emptyDir`) to write the files into |
//! | `SIGNET_MODE` | `init` (write once, exit 0) or `sidecar` (write, then refresh until SIGTERM) |
//! | `SIGNET_REFRESH_SECONDS` | sidecar refresh period in whole seconds (≥ 1) |
//! | `SIGNET_FILES` | JSON array of [`FileSpec`] |
//! | `SIGNET_POD_NAME`, `SIGNET_POD_NAMESPACE`, `SIGNET_POD_UID` | the pod's identity, from the downward API; sent as machine metadata ([`META_POD_NAME`] etc.), which is self-reported and informational only |
//! | `SIGNET_CA_PEM` | optional: PEM root certificate(s) to trust for the vault's HTTPS; set only when the webhook runs with `--vault-ca-file` |
//! | `SIGNET_RELOAD_SIGNAL` | optional, sidecar only: the signal ([`ReloadSignal`], e.g. `SIGHUP`) to send to the reload target after each refresh that rewrote files; set by the webhook for `signet.dev/reload: signal` |
//! | `SIGNET_RELOAD_CONTAINER` | with `SIGNET_RELOAD_SIGNAL`: the name of the container whose main process is signalled |
//!
//! For `signet.dev/reload: signal` the webhook also sets
//! [`ENV_RELOAD_TARGET`]`=<container name>` in the target container and
//! `shareProcessNamespace: true` on the pod; `signet-init` finds the
//! target's main process as the earliest-started process whose environment
//! holds that entry, and runs as the target's user and group so it may
//! read that environment and signal it without any capability.
//!
//! Optional knobs of `signet-init` that the webhook does not set (their
//! defaults are right in a cluster; tests and odd environments change them):
//!
//! | variable | value |
//! | --- | --- |
//! | `SIGNET_FILE_MODE` | `0440` (default) or `0400` |
//! | `SIGNET_MAX_ATTEMPTS` | attempts per vault call while the vault is unreachable (default 8) |
//! | `SIGNET_RETRY_BASE_MS` | first retry delay in milliseconds, doubled per attempt (default 1000) |
//! | `SIGNET_CA_FILE` | path of an extra PEM root certificate to trust for the vault's HTTPS (not together with `SIGNET_CA_PEM`) |
//! | `SIGNET_LOG` | `error`, `warn`, `info` (default), `debug` or `trace` |
//!
//! In sidecar mode the kubelet runs [`PROBE_COMMAND`] as the startup probe;
//! it exits 0 only once every file of `SIGNET_FILES` has been written once:
//! `run` writes the [`READY_MARKER`] file last and `probe` checks for it.

use serde::{Deserialize, Serialize};

/// Base URL of the vault.
pub const ENV_VAULT: &str = "SIGNET_VAULT";
/// Path of the raw enrollment token (raw-token mode).
pub const ENV_TOKEN_FILE: &str = "SIGNET_TOKEN_FILE";
/// Path of the projected service-account token (attested mode).
pub const ENV_SA_TOKEN_FILE: &str = "SIGNET_SA_TOKEN_FILE";
/// Name of the cluster as registered in the vault (attested mode).
pub const ENV_CLUSTER: &str = "SIGNET_CLUSTER";
/// Name of the enrollment policy: the EnrollmentToken's name (attested mode).
pub const ENV_POLICY: &str = "SIGNET_POLICY";
/// Directory the files are written into.
pub const ENV_MOUNT_PATH: &str = "SIGNET_MOUNT_PATH";
/// `init` or `sidecar`.
pub const ENV_MODE: &str = "SIGNET_MODE";
/// Refresh period of the sidecar, in seconds.
pub const ENV_REFRESH_SECONDS: &str = "SIGNET_REFRESH_SECONDS";
/// JSON array of [`FileSpec`].
pub const ENV_FILES: &str = "SIGNET_FILES";
/// Name of the pod (downward API `metadata.name`).
pub const ENV_POD_NAME: &str = "SIGNET_POD_NAME";
/// Namespace of the pod (downward API `metadata.namespace`).
pub const ENV_POD_NAMESPACE: &str = "SIGNET_POD_NAMESPACE";
/// UID of the pod (downward API `metadata.uid`), recorded as metadata. The
/// controller does not trust it: it revokes machines by the pod UID the
/// vault took from the verified service-account token.
pub const ENV_POD_UID: &str = "SIGNET_POD_UID";

/// Optional: permission bits of the written files, `0440` or `0400`.
pub const ENV_FILE_MODE: &str = "SIGNET_FILE_MODE";
/// Optional: attempts per vault call while the vault is unreachable.
pub const ENV_MAX_ATTEMPTS: &str = "SIGNET_MAX_ATTEMPTS";
/// Optional: first retry delay in milliseconds.
pub const ENV_RETRY_BASE_MS: &str = "SIGNET_RETRY_BASE_MS";
/// Optional: path of an extra PEM root certificate for the vault's HTTPS.
pub const ENV_CA_FILE: &str = "SIGNET_CA_FILE";
/// Optional: extra PEM root certificate(s) for the vault's HTTPS, inline.
/// The webhook sets it from `--vault-ca-file` (a CA certificate is public,
/// so an environment variable is fine). Exclusive with [`ENV_CA_FILE`].
pub const ENV_CA_PEM: &str = "SIGNET_CA_PEM";
/// Optional: log level.
pub const ENV_LOG: &str = "SIGNET_LOG";
/// Optional (sidecar): the signal sent to the reload target after a
/// refresh rewrote files, as [`ReloadSignal::as_str`].
pub const ENV_RELOAD_SIGNAL: &str = "SIGNET_RELOAD_SIGNAL";
/// With [`ENV_RELOAD_SIGNAL`]: the container whose main process is
/// signalled.
pub const ENV_RELOAD_CONTAINER: &str = "SIGNET_RELOAD_CONTAINER";
/// Set by the webhook in the reload target container, to that container's
/// name: the marker `signet-init` looks for in `/proc/<pid>/environ`.
pub const ENV_RELOAD_TARGET: &str = "SIGNET_RELOAD_TARGET";

/// Path of the `signet-init` binary in its image.
pub const BINARY: &str = "/signet-init";
/// Arguments that run the main loop (mode chosen by `SIGNET_MODE`).
pub const RUN_ARGS: [&str; 1] = ["run"];
/// Exec startup probe of the sidecar: exits 0 once the first files are written.
pub const PROBE_COMMAND: [&str; 2] = [BINARY, "probe"];
/// Directory the token Secret is mounted at, in `signet-init` only
/// (raw-token mode).
pub const TOKEN_DIR: &str = "/var/run/signet-token";
/// Value of `SIGNET_TOKEN_FILE`.
pub const TOKEN_FILE: &str = "/var/run/signet-token/token";
/// Directory the projected service-account token is mounted at, in
/// `signet-init` only (attested mode). Outside `/var/run/secrets/kubernetes.io`
/// so it never meets the pod's own API token.
pub const IDENTITY_DIR: &str = "/var/run/secrets/signet.dev/identity";
/// File name of the projected token inside [`IDENTITY_DIR`].
pub const SA_TOKEN_PATH: &str = "token";
/// Value of `SIGNET_SA_TOKEN_FILE`.
pub const SA_TOKEN_FILE: &str = "/var/run/secrets/signet.dev/identity/token";
/// Lifetime the webhook asks for the projected token. Ten minutes is the
/// shortest the API server issues; the kubelet rotates it at 80 %, and the
/// vault needs it only at enrollment.
pub const SA_TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Audience of the projected token unless the operator is told otherwise;
/// the vault's cluster registration defaults to the same.
pub const DEFAULT_AUDIENCE: &str = "signet";
/// Cluster name unless the operator is told otherwise.
pub const DEFAULT_CLUSTER: &str = "kubernetes";

/// Machine metadata key: UID of the pod, as the pod itself reports it.
/// Informational: the controller and the vault rely on the attested UID.
pub const META_POD_UID: &str = "k8s.pod.uid";
/// Machine metadata key: name of the pod, as the pod reports it.
pub const META_POD_NAME: &str = "k8s.pod.name";
/// Machine metadata key: namespace of the pod, as the pod reports it.
pub const META_NAMESPACE: &str = "k8s.namespace";
/// Hidden file, relative to the mount path, that `signet-init run` writes
/// after the first complete write; file names from a SecretGrant can never
/// start with a dot, so it cannot clash.
pub const READY_MARKER: &str = ".signet-ready";

/// How `signet-init` runs, from the pod annotation `signet.dev/mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One-shot init container: write the files and exit (for Jobs).
    Init,
    /// Native sidecar: write the files, then keep them fresh until SIGTERM,
    /// revoking the machine on the way out.
    Sidecar,
}

impl Mode {
    /// The value of `SIGNET_MODE` and of the `signet.dev/mode` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Sidecar => "sidecar",
        }
    }
}

/// The signals a pod may ask for with `signet.dev/reload-signal`: the ones
/// programs use to reload or stop gracefully. `SIGKILL` and `SIGSTOP` are
/// not among them (they cannot be handled, so they never mean "reload").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadSignal {
    /// `SIGHUP`, the default: the conventional "reload your configuration".
    Hup,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`.
    Usr2,
    /// `SIGINT`.
    Int,
    /// `SIGQUIT`.
    Quit,
    /// `SIGTERM`: the container stops and the kubelet restarts it.
    Term,
    /// `SIGWINCH` (graceful reload for some servers).
    Winch,
}

impl ReloadSignal {
    /// Every allowed signal, in the order the docs list them.
    pub const ALL: [Self; 7] = [
        Self::Hup,
        Self::Usr1,
        Self::Usr2,
        Self::Int,
        Self::Quit,
        Self::Term,
        Self::Winch,
    ];

    /// The name, as in the annotation and `SIGNET_RELOAD_SIGNAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hup => "SIGHUP",
            Self::Usr1 => "SIGUSR1",
            Self::Usr2 => "SIGUSR2",
            Self::Int => "SIGINT",
            Self::Quit => "SIGQUIT",
            Self::Term => "SIGTERM",
            Self::Winch => "SIGWINCH",
        }
    }

    /// Parses a name: `SIGHUP` or `HUP`, any case. `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Self::ALL.into_iter().find(|s| &s.as_str()[3..] == bare)
    }
}

/// One entry of `SIGNET_FILES`: a secret and how to write it.
///
/// ```json
/// [{"secret":"db","fields":["user","password"],"file":"db.env","format":"env"},
///  {"secret":"api-key","fields":[],"file":"api-key","format":"raw"}]
/// ```
///
/// Every key is always present. `file` is already defaulted (to the secret
/// name) and is a bare file name (`^[A-Za-z0-9_-][A-Za-z0-9._-]*$`), unique
/// across the array. The rendering of each [`FileFormat`] is documented on
/// the type (it is the user-facing CRD description).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Secret name in the enrollment token's project.
    pub secret: String,
    /// Fields of a structured secret to expose; all fields when empty.
    pub fields: Vec<String>,
    /// File name under `SIGNET_MOUNT_PATH`.
    pub file: String,
    /// How the secret is rendered.
    pub format: FileFormat,
}

// The doc comments below are the user-facing description in the SecretGrant
// CRD (`crds/`); changing them changes the generated YAML.

/// How a secret is rendered into files.
///
/// - `raw`: the value verbatim. A plain secret is written to `<file>`; a
///   structured secret gets one file per field, `<file>.<field>`.
/// - `env`: `<file>` holds one `NAME=value` line per field (a plain secret is
///   one line named after the secret), values single-quoted so the file can
///   be sourced by a POSIX shell.
/// - `json`: `<file>` holds a JSON object of field name to value (a plain
///   secret is a JSON string).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// The value verbatim, one file per field of a structured secret.
    #[default]
    Raw,
    /// A dotenv-style file.
    Env,
    /// A JSON document.
    Json,
}

/// True when `name` is a bare file name the contract allows:
/// `^[A-Za-z0-9_-][A-Za-z0-9._-]*$`, at most 253 bytes. Such a name has no
/// path separator and cannot be `.`, `..` or a hidden file.
pub fn is_file_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    first_ok && name.len() <= 253 && bytes.all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_spec_wire_shape_is_stable() {
        let spec = FileSpec {
            secret: "db".into(),
            fields: vec!["user".into()],
            file: "db.env".into(),
            format: FileFormat::Env,
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            json,
            r#"{"secret":"db","fields":["user"],"file":"db.env","format":"env"}"#
        );
        assert_eq!(serde_json::from_str::<FileSpec>(&json).unwrap(), spec);
        assert!(
            serde_json::from_str::<FileSpec>(
                r#"{"secret":"x","fields":[],"file":"x","format":"raw","extra":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn reload_signals_parse_by_name_and_refuse_the_rest() {
        for signal in ReloadSignal::ALL {
            assert_eq!(ReloadSignal::parse(signal.as_str()), Some(signal));
        }
        assert_eq!(ReloadSignal::parse("hup"), Some(ReloadSignal::Hup));
        assert_eq!(ReloadSignal::parse(" SIGUSR2 "), Some(ReloadSignal::Usr2));
        for bad in ["", "SIG", "SIGKILL", "KILL", "SIGSTOP", "9", "SIGHUPX"] {
            assert_eq!(ReloadSignal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn credential_paths_agree_with_their_directories() {
        assert_eq!(SA_TOKEN_FILE, format!("{IDENTITY_DIR}/{SA_TOKEN_PATH}"));
        assert_eq!(TOKEN_FILE, format!("{TOKEN_DIR}/token"));
    }

    #[test]
    fn file_names_cannot_escape_or_hide() {
        for ok in ["db", "db.env", "API_KEY", "-x", "a.b.c"] {
            assert!(is_file_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".signet-ready", "a/b", "../x", "a b", "é"] {
            assert!(!is_file_name(bad), "{bad}");
        }
        assert!(!is_file_name(&"a".repeat(254)));
    }
}
