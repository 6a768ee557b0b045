//! Reading the environment contract into a [`Config`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::contract::{self, FileSpec, Mode, ReloadSignal};
use crate::reload::SignalTarget;
use crate::retry::Retry;

/// What is wrong with the environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read the {what} file {path}")]
    TokenFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {what} file {path} is empty")]
    EmptyToken { what: &'static str, path: PathBuf },
    #[error(
        "{} (with {} and {}) or {} must be set: the pod enrolls by attestation or with a raw token",
        contract::ENV_SA_TOKEN_FILE,
        contract::ENV_CLUSTER,
        contract::ENV_POLICY,
        contract::ENV_TOKEN_FILE
    )]
    NoCredential,
    #[error(
        "attested enrollment needs {}, {} and {} together; missing: {missing}",
        contract::ENV_SA_TOKEN_FILE,
        contract::ENV_CLUSTER,
        contract::ENV_POLICY
    )]
    PartialAttestation { missing: String },
    #[error(
        "both {} (attestation) and {} (raw token) are set; the webhook sets only one",
        contract::ENV_SA_TOKEN_FILE,
        contract::ENV_TOKEN_FILE
    )]
    ConflictingCredentials,
    #[error("cannot read the CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} and {} are both set; set only one (the webhook sets {})",
        contract::ENV_CA_FILE,
        contract::ENV_CA_PEM,
        contract::ENV_CA_PEM
    )]
    ConflictingCa,
}

/// Where the extra root certificate for the vault's HTTPS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `SIGNET_CA_FILE`: a PEM file to read.
    File(PathBuf),
    /// `SIGNET_CA_PEM`: the PEM text itself, as the webhook injects it.
    Pem(String),
}

/// How the pod proves who it is when it enrolls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A projected service-account token the vault verifies with the
    /// cluster's TokenReview API; the kubelet rotates the file, so it is
    /// read again at every attempt.
    Attestation {
        /// `SIGNET_SA_TOKEN_FILE`.
        token_file: PathBuf,
        /// `SIGNET_CLUSTER`: the cluster's name in the vault.
        cluster: String,
        /// `SIGNET_POLICY`: the EnrollmentToken's name.
        policy: String,
    },
    /// A raw enrollment token (the EnrollmentToken's `rawToken: true`).
    RawToken {
        /// `SIGNET_TOKEN_FILE`.
        token_file: PathBuf,
    },
}

/// What [`Credential::RawToken`]'s file holds, for messages.
const RAW_TOKEN: &str = "enrollment token";
/// What [`Credential::Attestation`]'s file holds, for messages.
const SA_TOKEN: &str = "service-account token";

/// Default permission bits: owner and group may read. The pod's `fsGroup`
/// owns the volume's files, so an app container running as another user in
/// that group can read them; nobody may write them.
pub const DEFAULT_FILE_MODE: u32 = 0o440;
/// Default refresh period of the sidecar when `SIGNET_REFRESH_SECONDS` is unset.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60);

/// Everything `run` needs, parsed from the environment.
#[derive(Debug)]
pub struct Config {
    pub vault: String,
    pub credential: Credential,
    pub mount_path: PathBuf,
    pub mode: Mode,
    pub refresh: Duration,
    pub files: Vec<FileSpec>,
    pub pod_name: String,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub file_mode: u32,
    pub retry: Retry,
    pub ca: Option<CaSource>,
    /// `signet.dev/reload: signal`: what to signal after a refresh.
    pub reload: Option<SignalTarget>,
}

impl Config {
    /// Parses the environment as read through `var` (so tests need not
    /// touch the process environment).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let required = |name: &'static str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(Error::Missing(name))
        };
        let optional = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let invalid = |name: &'static str, reason: String| Error::Invalid { name, reason };

        let vault = required(contract::ENV_VAULT)?;
        if !(vault.starts_with("http://") || vault.starts_with("https://")) {
            return Err(invalid(
                contract::ENV_VAULT,
                format!("{vault:?} is not an http:// or https:// URL"),
            ));
        }
        let mode = match required(contract::ENV_MODE)?.as_str() {
            "init" => Mode::Init,
            "sidecar" => Mode::Sidecar,
            other => {
                return Err(invalid(
                    contract::ENV_MODE,
                    format!("{other:?} is neither \"init\" nor \"sidecar\""),
                ));
            }
        };
        let refresh = match optional(contract::ENV_REFRESH_SECONDS) {
            None => DEFAULT_REFRESH,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(secs) if secs >= 1 => Duration::from_secs(secs),
                _ => {
                    return Err(invalid(
                        contract::ENV_REFRESH_SECONDS,
                        format!("{text:?} is not a whole number of seconds ≥ 1"),
                    ));
                }
            },
        };
        let files_json = required(contract::ENV_FILES)?;
        let files: Vec<FileSpec> = serde_json::from_str(&files_json)
            .map_err(|e| invalid(contract::ENV_FILES, e.to_string()))?;
        check_files(&files).map_err(|reason| invalid(contract::ENV_FILES, reason))?;
        let file_mode = match optional(contract::ENV_FILE_MODE).as_deref().map(str::trim) {
            None | Some("0440" | "440") => DEFAULT_FILE_MODE,
            Some("0400" | "400") => 0o400,
            Some(other) => {
                return Err(invalid(
                    contract::ENV_FILE_MODE,
                    format!("{other:?} is neither 0440 nor 0400"),
                ));
            }
        };
        let mut retry = Retry::default();
        if let Some(text) = optional(contract::ENV_MAX_ATTEMPTS) {
            retry.max_attempts = text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    invalid(
                        contract::ENV_MAX_ATTEMPTS,
                        format!("{text:?} is not a number from 1 to 100"),
                    )
                })?;
        }
        if let Some(text) = optional(contract::ENV_RETRY_BASE_MS) {
            let ms = text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=60_000).contains(n))
                .ok_or_else(|| {
                    invalid(
                        contract::ENV_RETRY_BASE_MS,
                        format!("{text:?} is not a number of milliseconds from 1 to 60000"),
                    )
                })?;
            retry.base = Duration::from_millis(ms);
        }
        let ca = match (
            optional(contract::ENV_CA_FILE),
            optional(contract::ENV_CA_PEM),
        ) {
            (Some(_), Some(_)) => return Err(Error::ConflictingCa),
            (Some(path), None) => Some(CaSource::File(PathBuf::from(path))),
            (None, Some(pem)) => {
                // The value is never echoed: it is public, but long.
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid(
                        contract::ENV_CA_PEM,
                        "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                    ));
                }
                Some(CaSource::Pem(pem))
            }
            (None, None) => None,
        };
        let reload = match (
            optional(contract::ENV_RELOAD_SIGNAL),
            optional(contract::ENV_RELOAD_CONTAINER),
        ) {
            (None, None) => None,
            (Some(name), Some(container)) => {
                let signal = ReloadSignal::parse(&name).ok_or_else(|| {
                    invalid(
                        contract::ENV_RELOAD_SIGNAL,
                        format!(
                            "{name:?} is not one of {}",
                            ReloadSignal::ALL.map(ReloadSignal::as_str).join(", ")
                        ),
                    )
                })?;
                if mode != Mode::Sidecar {
                    return Err(invalid(
                        contract::ENV_RELOAD_SIGNAL,
                        "a reload signal needs SIGNET_MODE=sidecar".to_owned(),
                    ));
                }
                Some(SignalTarget {
                    signal,
                    container: container.trim().to_owned(),
                })
            }
            (Some(_), None) => return Err(Error::Missing(contract::ENV_RELOAD_CONTAINER)),
            (None, Some(_)) => return Err(Error::Missing(contract::ENV_RELOAD_SIGNAL)),
        };
        let credential = credential(&optional)?;
        Ok(Self {
            vault: vault.trim_end_matches('/').to_owned(),
            credential,
            mount_path: PathBuf::from(required(contract::ENV_MOUNT_PATH)?),
            mode,
            refresh,
            files,
            pod_name: required(contract::ENV_POD_NAME)?,
            pod_namespace: optional(contract::ENV_POD_NAMESPACE),
            pod_uid: optional(contract::ENV_POD_UID),
            file_mode,
            retry,
            ca,
            reload,
        })
    }

    /// Parses the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the credential file: the raw enrollment token or the projected
    /// service-account token (surrounding whitespace removed).
    pub fn read_token(&self) -> Result<Zeroizing<String>, Error> {
        let (what, path) = match &self.credential {
            Credential::Attestation { token_file, .. } => (SA_TOKEN, token_file),
            Credential::RawToken { token_file } => (RAW_TOKEN, token_file),
        };
        let raw =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
                    what,
                    path: path.clone(),
                    source,
                })?,
            );
        let token = Zeroizing::new(raw.trim().to_owned());
        if token.is_empty() {
            return Err(Error::EmptyToken {
                what,
                path: path.clone(),
            });
        }
        Ok(token)
    }

    /// The extra CA certificate (PEM), if one is configured; reads the file
    /// of `SIGNET_CA_FILE`.
    pub fn read_ca(&self) -> Result<Option<Vec<u8>>, Error> {
        match &self.ca {
            None => Ok(None),
            Some(CaSource::Pem(pem)) => Ok(Some(pem.clone().into_bytes())),
            Some(CaSource::File(path)) => {
                std::fs::read(path)
                    .map(Some)
                    .map_err(|source| Error::CaFile {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }
}

/// The credential the environment names: the three attestation variables
/// together, or else the raw token file; never both, never a part.
fn credential(optional: &impl Fn(&str) -> Option<String>) -> Result<Credential, Error> {
    let attestation = [
        contract::ENV_SA_TOKEN_FILE,
        contract::ENV_CLUSTER,
        contract::ENV_POLICY,
    ]
    .map(|name| (name, optional(name).map(|v| v.trim().to_owned())));
    let raw = optional(contract::ENV_TOKEN_FILE);
    match attestation {
        [(_, Some(token_file)), (_, Some(cluster)), (_, Some(policy))] => {
            if raw.is_some() {
                return Err(Error::ConflictingCredentials);
            }
            Ok(Credential::Attestation {
                token_file: PathBuf::from(token_file),
                cluster,
                policy,
            })
        }
        [(_, None), (_, None), (_, None)] => match raw {
            Some(path) => Ok(Credential::RawToken {
                token_file: PathBuf::from(path),
            }),
            None => Err(Error::NoCredential),
        },
        partial => Err(Error::PartialAttestation {
            missing: partial
                .iter()
                .filter(|(_, value)| value.is_none())
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// File names must be bare, unique, and must not collide with each other
/// once a raw structured secret expands to `<file>.<field>`; the webhook
/// already guarantees the first two, this is defence in depth.
fn check_files(files: &[FileSpec]) -> Result<(), String> {
    if files.is_empty() {
        return Err("the list of files is empty".to_owned());
    }
    let mut names = BTreeSet::new();
    for spec in files {
        if !contract::is_file_name(&spec.file) {
            return Err(format!(
                "file name {:?} (secret {:?}) is not a bare file name",
                spec.file, spec.secret
            ));
        }
        if !names.insert(spec.file.as_str()) {
            return Err(format!("file name {:?} appears twice", spec.file));
        }
        if spec.secret.is_empty() || !contract::is_file_name(&spec.secret) {
            return Err(format!("secret name {:?} is invalid", spec.secret));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn vars(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = [
            (contract::ENV_VAULT, "http://127.0.0.1:8200/"),
            (contract::ENV_TOKEN_FILE, "/t"),
            (contract::ENV_MOUNT_PATH, "/m"),
            (contract::ENV_MODE, "sidecar"),
            (
                contract::ENV_FILES,
                r#"[{"secret":"db","fields":[],"file":"db","format":"raw"}]"#,
            ),
            (contract::ENV_POD_NAME, "web-0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            map.insert((*k).to_owned(), (*v).to_owned());
        }
        map
    }

    fn parse(extra: &[(&str, &str)]) -> Result<Config, Error> {
        let map = vars(extra);
        Config::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn a_reload_signal_comes_with_its_container_in_sidecar_mode() {
        assert_eq!(parse(&[]).unwrap().reload, None);
        let config = parse(&[
            (contract::ENV_RELOAD_SIGNAL, "SIGUSR1"),
            (contract::ENV_RELOAD_CONTAINER, "app"),
        ])
        .unwrap();
        assert_eq!(
            config.reload,
            Some(SignalTarget {
                signal: ReloadSignal::Usr1,
                container: "app".into()
            })
        );
        assert!(matches!(
            parse(&[(contract::ENV_RELOAD_SIGNAL, "SIGHUP")]),
            Err(Error::Missing(contract::ENV_RELOAD_CONTAINER))
        ));
        assert!(matches!(
            parse(&[(contract::ENV_RELOAD_CONTAINER, "app")]),
            Err(Error::Missing(contract::ENV_RELOAD_SIGNAL))
        ));
        let bad = parse(&[
            (contract::ENV_RELOAD_SIGNAL, "SIGKILL"),
            (contract::ENV_RELOAD_CONTAINER, "app"),
        ])
        .unwrap_err();
        assert!(bad.to_string().contains("SIGHUP"), "{bad}");
        assert!(
            parse(&[
                (contract::ENV_MODE, "init"),
                (contract::ENV_RELOAD_SIGNAL, "SIGHUP"),
                (contract::ENV_RELOAD_CONTAINER, "app"),
            ])
            .is_err()
        );
    }

    #[test]
    fn defaults() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.vault, "http://127.0.0.1:8200");
        assert_eq!(config.mode, Mode::Sidecar);
        assert_eq!(config.refresh, DEFAULT_REFRESH);
        assert_eq!(config.file_mode, 0o440);
        assert_eq!(config.retry.max_attempts, 8);
        assert_eq!(config.pod_uid, None);
        assert_eq!(config.ca, None);
    }

    #[test]
    fn raw_token_file_alone_is_the_raw_credential() {
        let config = parse(&[]).unwrap();
        assert_eq!(
            config.credential,
            Credential::RawToken {
                token_file: "/t".into()
            }
        );
    }

    /// The defaults without `SIGNET_TOKEN_FILE`, plus `extra`.
    fn parse_attested(extra: &[(&str, &str)]) -> Result<Config, Error> {
        let mut map = vars(extra);
        if !extra.iter().any(|(k, _)| *k == contract::ENV_TOKEN_FILE) {
            map.remove(contract::ENV_TOKEN_FILE);
        }
        Config::from_vars(|k| map.get(k).cloned())
    }

    const ATTESTATION: [(&str, &str); 3] = [
        (contract::ENV_SA_TOKEN_FILE, "/id/token"),
        (contract::ENV_CLUSTER, "prod"),
        (contract::ENV_POLICY, "web"),
    ];

    #[test]
    fn the_three_attestation_variables_make_an_attested_credential() {
        let config = parse_attested(&ATTESTATION).unwrap();
        assert_eq!(
            config.credential,
            Credential::Attestation {
                token_file: "/id/token".into(),
                cluster: "prod".into(),
                policy: "web".into(),
            }
        );
    }

    #[test]
    fn a_partial_or_doubled_credential_is_refused_by_name() {
        let partial = parse_attested(&ATTESTATION[..1]).unwrap_err();
        assert!(matches!(partial, Error::PartialAttestation { .. }));
        let message = partial.to_string();
        assert!(
            message.ends_with("missing: SIGNET_CLUSTER, SIGNET_POLICY"),
            "{message}"
        );

        let mut both = ATTESTATION.to_vec();
        both.push((contract::ENV_TOKEN_FILE, "/t"));
        assert!(matches!(
            parse_attested(&both),
            Err(Error::ConflictingCredentials)
        ));

        let none = parse_attested(&[]).unwrap_err();
        assert!(matches!(none, Error::NoCredential));
        let message = none.to_string();
        for name in [
            "SIGNET_SA_TOKEN_FILE",
            "SIGNET_CLUSTER",
            "SIGNET_POLICY",
            "SIGNET_TOKEN_FILE",
        ] {
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn the_service_account_token_is_read_trimmed_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let file_text = file.to_str().unwrap().to_owned();
        let mut attestation = ATTESTATION;
        attestation[0].1 = &file_text;
        let config = parse_attested(&attestation).unwrap();

        let missing = config.read_token().unwrap_err().to_string();
        assert!(missing.contains("service-account token file"), "{missing}");
        std::fs::write(&file, " \n").unwrap();
        assert!(matches!(config.read_token(), Err(Error::EmptyToken { .. })));
        std::fs::write(&file, "header.payload.signature\n").unwrap();
        assert_eq!(
            config.read_token().unwrap().as_str(),
            "header.payload.signature"
        );
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn ca_from_a_file_or_inline_pem_but_not_both() {
        let config = parse(&[(contract::ENV_CA_FILE, "/etc/ca.crt")]).unwrap();
        assert_eq!(config.ca, Some(CaSource::File("/etc/ca.crt".into())));

        let config = parse(&[(contract::ENV_CA_PEM, PEM)]).unwrap();
        assert_eq!(config.ca, Some(CaSource::Pem(PEM.to_owned())));
        assert_eq!(config.read_ca().unwrap().unwrap(), PEM.as_bytes());

        let both = parse(&[
            (contract::ENV_CA_FILE, "/etc/ca.crt"),
            (contract::ENV_CA_PEM, PEM),
        ]);
        let error = both.unwrap_err();
        assert!(matches!(error, Error::ConflictingCa));
        let message = error.to_string();
        assert!(message.contains("SIGNET_CA_FILE") && message.contains("SIGNET_CA_PEM"));

        let garbage = parse(&[(contract::ENV_CA_PEM, "not a certificate")]);
        assert!(matches!(
            garbage,
            Err(Error::Invalid {
                name: contract::ENV_CA_PEM,
                ..
            })
        ));
    }

    #[test]
    fn knobs() {
        let config = parse(&[
            (contract::ENV_FILE_MODE, "0400"),
            (contract::ENV_MAX_ATTEMPTS, "2"),
            (contract::ENV_RETRY_BASE_MS, "10"),
            (contract::ENV_REFRESH_SECONDS, "5"),
        ])
        .unwrap();
        assert_eq!(config.file_mode, 0o400);
        assert_eq!(config.retry.max_attempts, 2);
        assert_eq!(config.retry.base, Duration::from_millis(10));
        assert_eq!(config.refresh, Duration::from_secs(5));
    }

    #[test]
    fn rejects_bad_values() {
        for (name, value) in [
            (contract::ENV_MODE, "daemon"),
            (contract::ENV_VAULT, "vault:8200"),
            (contract::ENV_REFRESH_SECONDS, "0"),
            (contract::ENV_FILE_MODE, "0644"),
            (contract::ENV_MAX_ATTEMPTS, "0"),
            (contract::ENV_FILES, "[]"),
            (
                contract::ENV_FILES,
                r#"[{"secret":"db","fields":[],"file":"../db","format":"raw"}]"#,
            ),
            (
                contract::ENV_FILES,
                r#"[{"secret":"a","fields":[],"file":"x","format":"raw"},{"secret":"b","fields":[],"file":"x","format":"raw"}]"#,
            ),
        ] {
            assert!(
                matches!(parse(&[(name, value)]), Err(Error::Invalid { .. })),
                "{name}={value}"
            );
        }
        let map = vars(&[]);
        let missing =
            Config::from_vars(|k| map.get(k).filter(|_| k != contract::ENV_POD_NAME).cloned());
        assert!(matches!(
            missing,
            Err(Error::Missing(contract::ENV_POD_NAME))
        ));
    }
}
