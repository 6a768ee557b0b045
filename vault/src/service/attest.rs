//! Attested enrollment: a pod proves who it is with a projected
//! service-account token, which the vault checks with the TokenReview API of
//! the cluster an admin registered.
//!
//! The review is network I/O, so it runs before the request's transaction
//! (never holding the store) and hands the pipeline a verified
//! [`PodIdentity`] or the denial to audit. Namespace, service account, pod
//! name and pod UID come only from the review, never from the request body.
//! The token itself is never stored or logged.
//!
//! Before calling the cluster, the token's own claims are read (unverified)
//! to answer the common mistakes with a precise code (expired, another
//! audience, not bound to a pod). That reading grants nothing: only the
//! TokenReview's answer does.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use signet_client::api::{Attestation, ErrorCode};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::store::Cluster;
use crate::vault::Vault;

/// Longest service-account token accepted (they are around 1 KiB).
const TOKEN_MAX: usize = 16 * 1024;
/// Longest part of an apiserver error kept for the audit reason.
const REASON_MAX: usize = 200;

/// What the cluster vouched for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub cluster: String,
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
}

fn deny(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::denied(code, message)
}

/// The claims of a projected token that matter before the review.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    aud: Audiences,
    #[serde(default, rename = "kubernetes.io")]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
    #[default]
    None,
}

impl Audiences {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
            Self::None => false,
        }
    }
}

#[derive(Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    pod: Option<serde_json::Value>,
}

/// Reads the unverified claims and refuses what the review would refuse
/// anyway, with a code that tells the pod's author what is wrong.
fn precheck(token: &str, audience: &str, now: i64) -> Result<()> {
    if token.is_empty() || token.len() > TOKEN_MAX {
        return Err(deny(
            ErrorCode::AttestationRejected,
            format!("the service-account token must be 1 to {TOKEN_MAX} bytes"),
        ));
    }
    let malformed = || {
        deny(
            ErrorCode::AttestationRejected,
            "the service-account token is not a JWT",
        )
    };
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let payload = Zeroizing::new(URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?);
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| malformed())?;
    // A legacy service-account token (from a Secret) never expires: it is
    // not a pod's projected token, whatever else it says.
    let Some(exp) = claims.exp else {
        return Err(deny(
            ErrorCode::AttestationNotPodBound,
            "the service-account token never expires, so it is a legacy Secret token, not the pod's projected token",
        ));
    };
    if exp <= now {
        return Err(deny(
            ErrorCode::AttestationExpired,
            "the projected service-account token has expired (the kubelet refreshes it; read the file again)",
        ));
    }
    if !claims.aud.contains(audience) {
        return Err(deny(
            ErrorCode::AttestationAudience,
            format!(
                "the service-account token is not meant for this vault: its audience must include {audience:?}"
            ),
        ));
    }
    if claims.kubernetes.and_then(|k| k.pod).is_none() {
        return Err(deny(
            ErrorCode::AttestationNotPodBound,
            "the service-account token is not bound to a pod: use a projected token of the pod itself",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: ReviewSpec<'a>,
}

#[derive(Serialize)]
struct ReviewSpec<'a> {
    token: &'a str,
    audiences: [&'a str; 1],
}

#[derive(Deserialize)]
struct ReviewAnswer {
    #[serde(default)]
    status: ReviewStatus,
}

#[derive(Deserialize, Default)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    user: ReviewUser,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize, Default)]
struct ReviewUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    extra: std::collections::BTreeMap<String, Vec<String>>,
}

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Turns a TokenReview answer into the pod it vouches for.
fn identity(cluster: &Cluster, status: ReviewStatus) -> Result<PodIdentity> {
    if !status.authenticated {
        return Err(classify_refusal(&status.error));
    }
    if !status.audiences.is_empty() && !status.audiences.contains(&cluster.audience) {
        return Err(deny(
            ErrorCode::AttestationAudience,
            format!(
                "the cluster did not confirm the audience {:?}",
                cluster.audience
            ),
        ));
    }
    let Some((namespace, service_account)) = status
        .user
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(deny(
            ErrorCode::AttestationRejected,
            "the token is not a service-account token",
        ));
    };
    let extra = |key: &str| {
        status
            .user
            .extra
            .get(key)
            .and_then(|values| values.first())
            .filter(|value| !value.is_empty())
            .cloned()
    };
    let (Some(pod_name), Some(pod_uid)) = (extra(EXTRA_POD_NAME), extra(EXTRA_POD_UID)) else {
        return Err(deny(
            ErrorCode::AttestationNotPodBound,
            "the cluster did not bind the token to a pod",
        ));
    };
    Ok(PodIdentity {
        cluster: cluster.name.clone(),
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod_name,
        pod_uid,
    })
}

/// Names why the cluster refused a token, from the apiserver's own wording
/// (kube-apiserver's service-account validator).
fn classify_refusal(error: &str) -> Error {
    let reason: String = error
        .chars()
        .filter(|c| !c.is_control())
        .take(REASON_MAX)
        .collect();
    if error.contains("has expired") {
        deny(
            ErrorCode::AttestationExpired,
            "the cluster says the service-account token has expired",
        )
    } else if error.contains("pod UID") && error.contains("does not match") {
        deny(
            ErrorCode::AttestationPodMismatch,
            "the pod of that name has another UID than the token is bound to (it was deleted and recreated)",
        )
    } else if error.contains("has been invalidated") {
        deny(
            ErrorCode::AttestationPodGone,
            "the pod the token is bound to no longer exists",
        )
    } else if error.contains("audience") {
        deny(
            ErrorCode::AttestationAudience,
            format!("the cluster refused the token's audience: {reason}"),
        )
    } else {
        deny(
            ErrorCode::AttestationRejected,
            format!("the cluster did not authenticate the token: {reason}"),
        )
    }
}

/// AAD of a cluster's sealed reviewer token: bound to the cluster's name.
pub fn reviewer_aad(cluster: &str) -> Vec<u8> {
    format!("signet:cluster-reviewer:{cluster}").into_bytes()
}

async fn reviewer_token(vault: &Vault, cluster: &Cluster) -> Result<Zeroizing<String>> {
    if let Some(sealed) = &cluster.sealed_reviewer_token {
        let plain = vault
            .root
            .key()
            .open(sealed, &reviewer_aad(&cluster.name))?;
        return String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| crate::store::Error::Corrupt("reviewer token".into()).into());
    }
    let path = &vault.settings.kube_token_file;
    match tokio::fs::read_to_string(path).await {
        Ok(text) => Ok(Zeroizing::new(text.trim().to_owned())),
        Err(error) => {
            tracing::warn!(cluster = %cluster.name, path = %path.display(), %error, "cannot read the vault's TokenReview token");
            Err(deny(
                ErrorCode::AttestationUnavailable,
                format!(
                    "the vault has no TokenReview credential for cluster {:?}; register it with a reviewer token or run the vault with --kube-token-file",
                    cluster.name
                ),
            ))
        }
    }
}

/// Asks `cluster`'s TokenReview API about `token`.
async fn call_review(vault: &Vault, cluster: &Cluster, token: &str) -> Result<ReviewStatus> {
    let unavailable = |what: String| {
        tracing::warn!(cluster = %cluster.name, problem = %what, "TokenReview failed");
        deny(
            ErrorCode::AttestationUnavailable,
            format!(
                "cannot verify the token with cluster {:?}: {what}",
                cluster.name
            ),
        )
    };
    let ca = reqwest::Certificate::from_pem(cluster.ca_pem.as_bytes())
        .map_err(|_| unavailable("its registered CA is not valid PEM".into()))?;
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(vault.settings.attestation_timeout)
        .build()
        .map_err(|_| unavailable("cannot build an HTTPS client".into()))?;
    let bearer = reviewer_token(vault, cluster).await?;
    let url = format!(
        "{}/apis/authentication.k8s.io/v1/tokenreviews",
        cluster.api_url.trim_end_matches('/')
    );
    let body = TokenReview {
        api_version: "authentication.k8s.io/v1",
        kind: "TokenReview",
        spec: ReviewSpec {
            token,
            audiences: [&cluster.audience],
        },
    };
    let response = client
        .post(&url)
        .bearer_auth(bearer.as_str())
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            unavailable(if e.is_timeout() {
                "the apiserver did not answer in time".into()
            } else {
                "the apiserver cannot be reached".into()
            })
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(unavailable(format!(
            "the apiserver answered {status} (the vault's reviewer needs system:auth-delegator)"
        )));
    }
    let answer: ReviewAnswer = response
        .json()
        .await
        .map_err(|_| unavailable("the apiserver's answer is not a TokenReview".into()))?;
    Ok(answer.status)
}

/// Verifies a pod's attestation: cluster registered, claims plausible, and
/// the cluster's TokenReview vouches for a pod-bound service-account token.
pub async fn review(vault: &Arc<Vault>, attestation: &Attestation) -> Result<PodIdentity> {
    let name = attestation.cluster.clone();
    let lookup = Arc::clone(vault);
    let cluster =
        tokio::task::spawn_blocking(move || lookup.with_tx(|tx, _| Ok(tx.cluster(&name)?)))
            .await??
            .ok_or_else(|| {
                deny(
                    ErrorCode::UnknownCluster,
                    format!(
                        "no cluster named {:?} is registered with this vault",
                        attestation.cluster.chars().take(64).collect::<String>()
                    ),
                )
            })?;
    precheck(
        &attestation.service_account_token,
        &cluster.audience,
        vault.now(),
    )?;
    let status = call_review(vault, &cluster, &attestation.service_account_token).await?;
    identity(&cluster, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "e30.{}.c2ln",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default())
        )
    }

    fn bound(exp: i64, aud: &str) -> String {
        jwt(serde_json::json!({
            "exp": exp, "aud": [aud],
            "kubernetes.io": {"namespace": "a", "pod": {"name": "p", "uid": "u"}}
        }))
    }

    fn code(result: Result<()>) -> Option<ErrorCode> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn precheck_names_each_mistake() {
        assert_eq!(code(precheck(&bound(1_000, "signet"), "signet", 999)), None);
        assert_eq!(
            code(precheck(&bound(1_000, "signet"), "signet", 1_000)),
            Some(ErrorCode::AttestationExpired)
        );
        assert_eq!(
            code(precheck(&bound(1_000, "other"), "signet", 999)),
            Some(ErrorCode::AttestationAudience)
        );
        let unbound = jwt(
            serde_json::json!({"exp": 1_000, "aud": "signet", "kubernetes.io": {"namespace": "a"}}),
        );
        assert_eq!(
            code(precheck(&unbound, "signet", 999)),
            Some(ErrorCode::AttestationNotPodBound)
        );
        let legacy = jwt(serde_json::json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": "a",
            "sub": "system:serviceaccount:a:default"
        }));
        assert_eq!(
            code(precheck(&legacy, "signet", 999)),
            Some(ErrorCode::AttestationNotPodBound)
        );
        assert_eq!(
            code(precheck("not-a-jwt", "signet", 999)),
            Some(ErrorCode::AttestationRejected)
        );
        assert_eq!(
            code(precheck(&"a".repeat(TOKEN_MAX + 1), "signet", 999)),
            Some(ErrorCode::AttestationRejected)
        );
    }

    #[test]
    fn token_size_is_bounded_at_both_ends() {
        let payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({
                "exp": 1_000, "aud": ["signet"],
                "kubernetes.io": {"namespace": "a", "pod": {"name": "p", "uid": "u"}}
            }))
            .unwrap_or_default(),
        );
        let sized = |len: usize| {
            let head = format!("e30.{payload}.");
            format!("{head}{}", "s".repeat(len - head.len()))
        };
        assert_eq!(code(precheck(&sized(TOKEN_MAX), "signet", 999)), None);
        assert_eq!(code(precheck(&sized(2 * 1024), "signet", 999)), None);
        assert_eq!(
            code(precheck(&sized(TOKEN_MAX + 1), "signet", 999)),
            Some(ErrorCode::AttestationRejected)
        );
        assert_eq!(
            code(precheck("", "signet", 999)),
            Some(ErrorCode::AttestationRejected)
        );
    }

    #[test]
    fn a_reviewer_token_sealed_for_one_cluster_does_not_open_for_another() {
        let root = crate::crypto::RootKey::generate();
        let sealed = root
            .key()
            .seal(b"reviewer", &reviewer_aad("east"))
            .unwrap_or_default();
        assert!(root.key().open(&sealed, &reviewer_aad("east")).is_ok());
        assert!(root.key().open(&sealed, &reviewer_aad("west")).is_err());
    }

    #[test]
    fn refusal_reasons_keep_the_apiserver_text_without_control_characters() {
        let error = classify_refusal("weird\u{7} failure");
        let message = error.public_message();
        assert!(message.contains("weird failure"), "{message}");
        // Another UID mismatch than the pod's is not a pod mismatch.
        assert_eq!(
            classify_refusal("service account UID (a) does not match claim (b)").code(),
            ErrorCode::AttestationRejected
        );
        assert_eq!(
            classify_refusal("pod UID (a) seen").code(),
            ErrorCode::AttestationRejected
        );
    }

    #[test]
    fn refusals_are_classified_from_the_apiserver_wording() {
        let code = |text: &str| classify_refusal(text).code();
        assert_eq!(
            code("[invalid bearer token, service account token has been invalidated]"),
            ErrorCode::AttestationPodGone
        );
        assert_eq!(
            code("pod UID (abc) does not match service account pod ref claim (def)"),
            ErrorCode::AttestationPodMismatch
        );
        assert_eq!(
            code("service account token has expired"),
            ErrorCode::AttestationExpired
        );
        assert_eq!(
            code("square/go-jose: error"),
            ErrorCode::AttestationRejected
        );
    }

    fn cluster() -> Cluster {
        Cluster {
            name: "c1".into(),
            api_url: "https://127.0.0.1:6443".into(),
            ca_pem: String::new(),
            audience: "signet".into(),
            sealed_reviewer_token: None,
            created_at: 0,
            created_by: "ad_x".into(),
        }
    }

    #[test]
    fn identity_comes_from_the_review_only() {
        let status: ReviewStatus = serde_json::from_value(serde_json::json!({
            "authenticated": true,
            "audiences": ["signet"],
            "user": {"username": "system:serviceaccount:team-a:app",
                     "extra": {EXTRA_POD_NAME: ["web-1"], EXTRA_POD_UID: ["uid-1"]}}
        }))
        .unwrap();
        assert_eq!(
            identity(&cluster(), status).unwrap(),
            PodIdentity {
                cluster: "c1".into(),
                namespace: "team-a".into(),
                service_account: "app".into(),
                pod_name: "web-1".into(),
                pod_uid: "uid-1".into(),
            }
        );
        let unbound: ReviewStatus = serde_json::from_value(serde_json::json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:team-a:app"}
        }))
        .unwrap();
        assert_eq!(
            identity(&cluster(), unbound).unwrap_err().code(),
            ErrorCode::AttestationNotPodBound
        );
        let user: ReviewStatus = serde_json::from_value(serde_json::json!({
            "authenticated": true,
            "user": {"username": "alice", "extra": {EXTRA_POD_NAME: ["x"], EXTRA_POD_UID: ["y"]}}
        }))
        .unwrap();
        assert_eq!(
            identity(&cluster(), user).unwrap_err().code(),
            ErrorCode::AttestationRejected
        );
        let refused = ReviewStatus {
            error: "service account token has been invalidated".into(),
            ..ReviewStatus::default()
        };
        assert_eq!(
            identity(&cluster(), refused).unwrap_err().code(),
            ErrorCode::AttestationPodGone
        );
    }
}
