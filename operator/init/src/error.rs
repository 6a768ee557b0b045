//! The failures of `signet-init run`, each with its exit code (see the
//! table in the crate docs).
//!
//! SDK errors are boxed: they are large and only travel on the way out.

use signet_client::sdk;

use crate::{config, render, write};

/// Why `signet-init run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration error")]
    Config(#[from] config::Error),
    #[error(
        "cannot reach the vault at {url} after {attempts} attempt(s); check SIGNET_VAULT, that the vault Service has ready endpoints, that no NetworkPolicy blocks this pod, and the vault's TLS certificate"
    )]
    Unreachable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "the vault at {url} could not check this pod's service-account token with the cluster's TokenReview API after {attempts} attempt(s); check that the vault can reach the Kubernetes API server and the cluster registered in the vault (`signet cluster list`: API URL, CA, reviewer)"
    )]
    AttestationUnavailable {
        url: String,
        attempts: u32,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error("the vault at {url} refused the enrollment: {hint}")]
    EnrollmentRefused {
        url: String,
        /// What to check, chosen by the vault's error code ([`enrollment_hint`]).
        hint: &'static str,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "the vault at {url} no longer accepts this machine (revoked or expired); restarting re-enrolls it"
    )]
    IdentityRefused {
        url: String,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error(
        "secret {secret} is not granted to this machine; check the SecretGrant for it and its status"
    )]
    NoGrant { secret: String },
    #[error("secret {secret} is granted in several projects ({projects}); cannot tell which one")]
    AmbiguousGrant { secret: String, projects: String },
    #[error("the vault at {url} refused secret {project}/{secret}; check the SecretGrant")]
    SecretRefused {
        url: String,
        project: String,
        secret: String,
        #[source]
        source: Box<sdk::Error>,
    },
    #[error("cannot write secret {secret} as asked; check the SecretGrant's fields and format")]
    Render {
        secret: String,
        #[source]
        source: render::Error,
    },
    #[error("cannot write into the mount path; check the volume (size limit, read-only)")]
    Write(#[from] write::Error),
    #[error("stopped by a signal before every file was written")]
    Interrupted,
    #[error("cannot start")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// The process exit code of this failure class.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Runtime(_) => 1,
            Self::Config(_) => 2,
            Self::Unreachable { .. } | Self::AttestationUnavailable { .. } => 3,
            Self::EnrollmentRefused { .. } | Self::IdentityRefused { .. } => 4,
            Self::NoGrant { .. }
            | Self::AmbiguousGrant { .. }
            | Self::SecretRefused { .. }
            | Self::Render { .. } => 5,
            Self::Write(_) => 6,
            Self::Interrupted => 7,
        }
    }
}

/// What the pod's author should check when the vault refuses an enrollment
/// with `code`. Messages name the fix; the vault's own message follows as
/// the cause.
pub fn enrollment_hint(code: Option<&str>) -> &'static str {
    match code {
        Some("unknown_cluster") => {
            "it does not know the cluster named in SIGNET_CLUSTER; register this cluster in the vault (`signet cluster add`) or fix the operator's --cluster-name"
        }
        Some("unknown_policy") => {
            "it has no live enrollment policy of that name (SIGNET_POLICY) in this pod's namespace; check that the EnrollmentToken is Ready"
        }
        Some("attestation_expired") => {
            "the projected service-account token had expired; check the clocks of the node and of the vault"
        }
        Some("attestation_audience") => {
            "the projected service-account token is meant for another audience; the operator's --token-audience must equal the audience of the cluster registered in the vault"
        }
        Some("attestation_not_pod_bound" | "attestation_pod_gone" | "attestation_pod_mismatch") => {
            "the service-account token is not bound to this running pod; SIGNET_SA_TOKEN_FILE must be the projected token the webhook mounts"
        }
        Some("attestation_rejected") => {
            "the cluster's TokenReview did not authenticate the service-account token; check that the cluster registered in the vault under SIGNET_CLUSTER is this cluster (API URL, CA)"
        }
        Some("service_account_not_allowed") => {
            "this pod's service account is not in the EnrollmentToken's allowedServiceAccounts"
        }
        _ => {
            "check the EnrollmentToken (expired, used up, revoked, hostname or source CIDR rules) and its status"
        }
    }
}

/// `error: cause: cause ...` on one line, for the final log message.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> Error {
        Error::EnrollmentRefused {
            url: "https://vault".into(),
            hint: enrollment_hint(Some(code)),
            source: Box::new(sdk::Error::Api {
                status: 403,
                code: code.into(),
                message: "refused".into(),
            }),
        }
    }

    #[test]
    fn attestation_refusals_are_enrollment_refusals_with_their_own_hint() {
        let codes = [
            "unknown_cluster",
            "unknown_policy",
            "attestation_expired",
            "attestation_audience",
            "attestation_not_pod_bound",
            "attestation_pod_gone",
            "attestation_pod_mismatch",
            "attestation_rejected",
            "service_account_not_allowed",
        ];
        let generic = enrollment_hint(None);
        for code in codes {
            let error = refused(code);
            assert_eq!(error.exit_code(), 4, "{code}");
            assert_ne!(enrollment_hint(Some(code)), generic, "{code}");
        }
        assert_eq!(refused("token_exhausted").exit_code(), 4);
        assert_eq!(enrollment_hint(Some("token_exhausted")), generic);
    }

    #[test]
    fn an_unreachable_token_review_is_an_unreachable_class_failure() {
        let error = Error::AttestationUnavailable {
            url: "https://vault".into(),
            attempts: 8,
            source: Box::new(sdk::Error::Api {
                status: 503,
                code: "attestation_unavailable".into(),
                message: "down".into(),
            }),
        };
        assert_eq!(error.exit_code(), 3);
        assert!(error.to_string().contains("TokenReview"));
    }
}
