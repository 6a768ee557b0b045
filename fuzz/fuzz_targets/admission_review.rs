//! The operator's webhook on any body: decoding the AdmissionReview as
//! `mutate_handler` does, then `admit` against a namespace with an
//! enrollment token and grants (so that opted-in pods reach `mutate`).
//!
//! Input: the request body kube-apiserver would POST to `/mutate`.

#![no_main]

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview};
use libfuzzer_sys::fuzz_target;
use signet_operator::crd::{EnrollmentTokenSpec, FileFormat, GrantedSecret, SecretGrantSpec};
use signet_operator::webhook::lookup::InMemoryGrants;
use signet_operator::webhook::mutate::InjectConfig;
use signet_operator::webhook::server::admit;

static CONFIG: LazyLock<InjectConfig> = LazyLock::new(|| InjectConfig {
    vault_url: "https://signet.signet-system.svc:8443".into(),
    image: "registry.example/signet/signet-init:0.1.0".into(),
    image_pull_policy: Some("IfNotPresent".into()),
    size_limit: Quantity("1Mi".into()),
    vault_ca_pem: None,
    cluster: "prod".into(),
    audience: "signet".into(),
});

/// The `shop` namespace of operator/tests/webhook.rs: token `shop-api`
/// with two grants.
static GRANTS: LazyLock<InMemoryGrants> = LazyLock::new(|| {
    let token = EnrollmentTokenSpec {
        project: "shop".into(),
        max_uses: None,
        token_ttl: "24h".into(),
        machine_lifetime: "24h".into(),
        name_template: Some("{namespace}-{pod}".into()),
        allowed_service_accounts: vec!["shop-api".into(), "default".into()],
        hostname_regex: None,
        source_cidrs: vec![],
        raw_token: false,
    };
    let grant = |refresh: &str, secrets| SecretGrantSpec {
        enrollment_token: "shop-api".into(),
        mount_path: "/var/run/secrets/signet".into(),
        refresh: refresh.into(),
        secrets,
    };
    let secret = |name: &str, fields: &[&str], file: Option<&str>, format| GrantedSecret {
        secret: name.into(),
        fields: fields.iter().map(|s| (*s).to_owned()).collect(),
        file: file.map(str::to_owned),
        format,
    };
    InMemoryGrants::new()
        .with_token("shop", "shop-api", token)
        .with_grant(
            "shop",
            "shop-api-tls",
            grant("1m", vec![secret("tls", &[], None, FileFormat::Json)]),
        )
        .with_grant(
            "shop",
            "shop-api-db",
            grant(
                "5m",
                vec![
                    secret("db", &["user", "password"], Some("db.env"), FileFormat::Env),
                    secret("stripe-key", &[], None, FileFormat::Raw),
                ],
            ),
        )
});

fuzz_target!(|data: &[u8]| {
    // As `mutate_handler`: a body that does not decode is a 400, no panic.
    let Ok(review) = serde_json::from_slice::<AdmissionReview<DynamicObject>>(data) else {
        return;
    };
    let Ok(request): Result<AdmissionRequest<DynamicObject>, _> = review.try_into() else {
        return;
    };
    let response = admit(&request, &CONFIG, &*GRANTS);
    // The answer is to this request, and can be sent.
    assert_eq!(response.uid, request.uid);
    serde_json::to_vec(&response.into_review()).expect("the review encodes");
});
