//! The webhook's own serving certificate.
//!
//! Without cert-manager, the operator generates a throwaway CA and a serving
//! certificate for its Service at startup, keeps both in memory only, and
//! writes the CA into the `caBundle` of its MutatingWebhookConfiguration so
//! the apiserver trusts it. A restart simply issues a new pair.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation, jsonptr::PointerBuf};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{
    Api, Client,
    api::{Patch as KubePatch, PatchParams},
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use zeroize::Zeroizing;

/// Certificate generation or installation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused the parameters or failed to sign.
    #[error("generating the webhook certificate")]
    Generate(#[from] rcgen::Error),
    /// Reading or patching the MutatingWebhookConfiguration failed.
    #[error("patching the caBundle of MutatingWebhookConfiguration {name}")]
    Patch {
        /// The configuration.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The configuration has no webhooks to patch.
    #[error("MutatingWebhookConfiguration {0} has no webhooks")]
    NoWebhooks(String),
}

/// A CA and the serving certificate it signed, all PEM.
///
/// No `Debug`: it holds the private key.
pub struct ServingCert {
    /// The CA certificate, for the `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl ServingCert {
    /// The serving certificate's private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// The names the apiserver may use to reach Service `service` in
/// `namespace`; it dials `<service>.<namespace>.svc`.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Issues a CA and a serving certificate for Service `service` in
/// `namespace`, valid from an hour before `now` (clock skew) for `validity`.
///
/// `extra_names` are added to the certificate's names: an IP address
/// becomes an IP SAN, anything else a DNS name. They are for an API server
/// that calls the webhook by URL (`clientConfig.url`) rather than through
/// the Service.
pub fn generate(
    service: &str,
    namespace: &str,
    extra_names: &[String],
    now: SystemTime,
    validity: Duration,
) -> Result<ServingCert, Error> {
    let not_before = time::OffsetDateTime::from(now - Duration::from_secs(3600));
    let not_after = time::OffsetDateTime::from(now + validity);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!("signet webhook CA ({namespace})"),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = dns_names(service, namespace);
    names.extend(extra_names.iter().cloned());
    // rcgen turns each name that parses as an IP address into an IP SAN.
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{namespace}.svc"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before;
    params.not_after = not_after;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;

    Ok(ServingCert {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

/// The JSON patch that sets `ca_pem` as the `caBundle` of every webhook of
/// `config`. Each write is guarded by a `test` of the webhook's name, so a
/// concurrent reordering makes the patch fail instead of hitting the wrong
/// entry.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    ca_pem: &str,
) -> Result<Patch, Error> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    if webhooks.is_empty() {
        return Err(Error::NoWebhooks(
            config.metadata.name.clone().unwrap_or_default(),
        ));
    }
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut ops = Vec::with_capacity(webhooks.len() * 2);
    for (index, webhook) in webhooks.iter().enumerate() {
        let index = index.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["webhooks", &index, "name"]),
            value: webhook.name.clone().into(),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["webhooks", &index, "clientConfig", "caBundle"]),
            value: bundle.clone().into(),
        }));
    }
    Ok(Patch(ops))
}

/// Writes `ca_pem` into every webhook of MutatingWebhookConfiguration `name`.
pub async fn patch_ca_bundle(client: Client, name: &str, ca_pem: &str) -> Result<(), Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let patch_error = |source| Error::Patch {
        name: name.to_owned(),
        source,
    };
    let config = api.get(name).await.map_err(patch_error)?;
    let patch = ca_bundle_patch(&config, ca_pem)?;
    api.patch(name, &PatchParams::default(), &KubePatch::Json::<()>(patch))
        .await
        .map_err(patch_error)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;
    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier as _},
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _},
    };

    use super::*;

    fn verifier(ca_pem: &str) -> Arc<WebPkiServerVerifier> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn serving_cert_verifies_against_its_ca_for_every_service_name() {
        let now = SystemTime::now();
        let certs = generate(
            "signet-webhook",
            "signet-system",
            &[],
            now,
            Duration::from_secs(86400),
        )
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).unwrap();
        let verifier = verifier(&certs.ca_pem);
        let at = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        for name in dns_names("signet-webhook", "signet-system") {
            let server_name = ServerName::try_from(name.clone()).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], at)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(certs.key_pem().contains("PRIVATE KEY"));
    }

    #[test]
    fn extra_names_cover_an_ip_address_and_a_host_name() {
        let now = SystemTime::now();
        let certs = generate(
            "signet-webhook",
            "signet-system",
            &["127.0.0.1".to_owned(), "webhook.example".to_owned()],
            now,
            Duration::from_secs(86400),
        )
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).unwrap();
        let verifier = verifier(&certs.ca_pem);
        let at = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        for name in [
            "127.0.0.1",
            "webhook.example",
            "signet-webhook.signet-system.svc",
        ] {
            let server_name = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &server_name, &[], at)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other_ip = ServerName::try_from("127.0.0.2").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other_ip, &[], at)
                .is_err()
        );
    }

    #[test]
    fn serving_cert_is_rejected_for_other_names_other_cas_and_after_expiry() {
        let now = SystemTime::now();
        let certs = generate(
            "signet-webhook",
            "signet-system",
            &[],
            now,
            Duration::from_secs(86400),
        )
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).unwrap();
        let at = UnixTime::since_unix_epoch(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        let other_name = ServerName::try_from("evil.signet-system.svc").unwrap();
        assert!(
            verifier(&certs.ca_pem)
                .verify_server_cert(&leaf, &[], &other_name, &[], at)
                .is_err()
        );

        let good_name = ServerName::try_from("signet-webhook.signet-system.svc").unwrap();
        let other = generate(
            "signet-webhook",
            "signet-system",
            &[],
            now,
            Duration::from_secs(86400),
        )
        .unwrap();
        assert!(
            verifier(&other.ca_pem)
                .verify_server_cert(&leaf, &[], &good_name, &[], at)
                .is_err()
        );

        let later = UnixTime::since_unix_epoch(
            (now + Duration::from_secs(2 * 86400))
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap(),
        );
        assert!(
            verifier(&certs.ca_pem)
                .verify_server_cert(&leaf, &[], &good_name, &[], later)
                .is_err()
        );
    }

    #[test]
    fn ca_bundle_patch_sets_every_webhook_guarded_by_name() {
        let config = MutatingWebhookConfiguration {
            metadata: kube::api::ObjectMeta {
                name: Some("signet".into()),
                ..Default::default()
            },
            webhooks: Some(vec![
                MutatingWebhook {
                    name: "inject.signet.dev".into(),
                    ..Default::default()
                },
                MutatingWebhook {
                    name: "other.signet.dev".into(),
                    ..Default::default()
                },
            ]),
        };
        let patch = ca_bundle_patch(&config, "PEM").unwrap();
        let mut doc = serde_json::to_value(&config).unwrap();
        json_patch::patch(&mut doc, &patch).unwrap();
        let patched: MutatingWebhookConfiguration = serde_json::from_value(doc).unwrap();
        for webhook in patched.webhooks.unwrap() {
            assert_eq!(webhook.client_config.ca_bundle.unwrap().0, b"PEM");
        }

        let empty = MutatingWebhookConfiguration::default();
        assert!(matches!(
            ca_bundle_patch(&empty, "PEM"),
            Err(Error::NoWebhooks(_))
        ));
    }
}
