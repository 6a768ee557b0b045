//! Enrollment as a request of the closed loop: each request is a fresh
//! Ed25519 key enrolling with a raw enrollment token, `POST /v1/enroll`
//! signed by that key, answered `201 Created` with a new machine.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;

use signet_client::api::EnrollRequest;
use signet_client::protocol::{self, IdentityKey};

use crate::load::{MakeRequest, Req};

/// One client's enrollments. The key is generated and the request signed
/// in [`MakeRequest::request`], before the request's clock starts: the
/// latency is the vault's, the rate includes the client's key generation.
pub struct SignedEnroll {
    token: String,
    host: HeaderValue,
    target: String,
    uri: Uri,
    /// Hostnames are `<hostname_prefix>-<count>`, unique per run.
    hostname_prefix: String,
    count: u64,
}

impl SignedEnroll {
    /// Enrollments at `{path_prefix}/v1/enroll` with `token`.
    pub fn new(
        token: &str,
        host: HeaderValue,
        path_prefix: &str,
        hostname_prefix: String,
    ) -> anyhow::Result<Self> {
        let target = format!("{path_prefix}/v1/enroll");
        Ok(Self {
            token: token.to_owned(),
            host,
            uri: target.parse()?,
            target,
            hostname_prefix,
            count: 0,
        })
    }
}

impl MakeRequest for SignedEnroll {
    const SUCCESS: StatusCode = StatusCode::CREATED;

    fn request(&mut self) -> anyhow::Result<Req> {
        self.count += 1;
        let key = IdentityKey::generate();
        let body = serde_json::to_vec(&EnrollRequest {
            token: self.token.clone(),
            public_key: key.public_key(),
            hostname: format!("{}-{}", self.hostname_prefix, self.count),
            metadata: BTreeMap::new(),
            attestation: None,
        })?;
        let signed = protocol::sign_now(
            &key,
            protocol::ENROLL_KEY_ID,
            Method::POST.as_str(),
            &self.target,
            &body,
        );
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in signed.pairs() {
            headers.insert(name, HeaderValue::from_str(value)?);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn each_enrollment_is_a_fresh_key_signing_its_own_body() {
        let mut enroll = SignedEnroll::new(
            "raw-token",
            HeaderValue::from_static("127.0.0.1:8200"),
            "",
            "host".to_owned(),
        )
        .unwrap();
        let mut keys = Vec::new();
        for n in 1..=2 {
            let request = enroll.request().unwrap();
            assert_eq!(request.method(), Method::POST);
            assert_eq!(request.uri(), "/v1/enroll");
            let h = request.headers().clone();
            assert_eq!(h[HOST], "127.0.0.1:8200");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(sent["token"], "raw-token");
            assert_eq!(sent["hostname"], format!("host-{n}"));
            let public_key = sent["public_key"].as_str().unwrap().to_owned();
            let text = |name: &str| h.get(name).map(|v| v.to_str().unwrap());
            assert_eq!(text(protocol::HEADER_KEY), Some(protocol::ENROLL_KEY_ID));
            let parsed = protocol::ParsedHeaders::parse(
                text(protocol::HEADER_KEY),
                text(protocol::HEADER_TIMESTAMP),
                text(protocol::HEADER_NONCE),
                text(protocol::HEADER_SIGNATURE),
            )
            .unwrap();
            let key = protocol::PublicKey::parse(&public_key).unwrap();
            parsed.verify(&key, "POST", "/v1/enroll", &body).unwrap();
            keys.push(public_key);
        }
        assert_ne!(keys[0], keys[1]);
    }
}
