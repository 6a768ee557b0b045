//! The OpenBao target: setup with the given token over its HTTP API, then
//! `GET /v1/<mount>/data/<path>` with `X-Vault-Token`.

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{HOST, HeaderValue};
use http::{Request, Uri};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::cli::OpenbaoArgs;
use crate::load::{Endpoint, MakeRequest, Req};

const TOKEN_HEADER: &str = "x-vault-token";
const POLICY: &str = "signet-bench";

/// Everything the clients need.
pub struct Setup {
    pub endpoint: Endpoint,
    pub target: String,
    pub tokens: Vec<HeaderValue>,
}

/// Writes the secret, then (unless reads use the setup token) a policy that
/// may only read it and `tokens` tokens holding just that policy (plus
/// `default` if asked); checks each token reads the value back.
pub async fn setup(args: &OpenbaoArgs, tokens: u32) -> anyhow::Result<Setup> {
    let OpenbaoArgs {
        addr,
        token,
        mount,
        path,
        token_type,
        default_policy,
        setup_token_reads,
    } = args;
    let endpoint = Endpoint::resolve(addr).await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = addr.trim_end_matches('/');
    let data_path = format!("{mount}/data/{path}");
    let value = format!(
        "bench-value-{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>())
    );

    let call = |method: reqwest::Method, route: &str, token: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{base}/v1/{route}"))
            .header(TOKEN_HEADER, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let route = route.to_owned();
        async move {
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach OpenBao for /v1/{route}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("OpenBao refused /v1/{route} ({status}): {text}");
            }
            let body = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text)
                    .with_context(|| format!("OpenBao's answer to /v1/{route} is not JSON"))?
            };
            Ok(body)
        }
    };

    call(
        reqwest::Method::POST,
        &data_path,
        token,
        Some(json!({"data": {"value": value}})),
    )
    .await
    .with_context(|| format!("cannot write the KV v2 secret (is KV v2 enabled at {mount}/?)"))?;

    let mut read_tokens = Vec::with_capacity(tokens as usize);
    if *setup_token_reads {
        read_tokens.push(token.clone());
    } else {
        let policy = format!("path \"{data_path}\" {{\n  capabilities = [\"read\"]\n}}\n");
        call(
            reqwest::Method::PUT,
            &format!("sys/policies/acl/{POLICY}"),
            token,
            Some(json!({"policy": policy})),
        )
        .await?;
        for index in 0..tokens {
            let created = call(
                reqwest::Method::POST,
                "auth/token/create",
                token,
                Some(json!({
                    "policies": [POLICY],
                    "type": token_type,
                    "no_default_policy": !default_policy,
                    "ttl": "24h",
                    "display_name": format!("signet-bench-{index}"),
                })),
            )
            .await?;
            let client_token = created["auth"]["client_token"]
                .as_str()
                .context("token creation answered without auth.client_token")?;
            read_tokens.push(client_token.to_owned());
        }
    }

    let mut headers = Vec::with_capacity(read_tokens.len());
    for (index, read_token) in read_tokens.iter().enumerate() {
        let read = call(reqwest::Method::GET, &data_path, read_token, None)
            .await
            .with_context(|| format!("token {index} cannot read {data_path}"))?;
        if read["data"]["data"]["value"].as_str() != Some(value.as_str()) {
            bail!("token {index} read another value than the one written");
        }
        let mut header = HeaderValue::from_str(read_token)?;
        header.set_sensitive(true);
        headers.push(header);
    }
    let target = format!("{}/v1/{data_path}", endpoint.path_prefix);
    Ok(Setup {
        endpoint,
        target,
        tokens: headers,
    })
}

/// One client's token read: every header is built once.
pub struct TokenRead {
    uri: Uri,
    host: HeaderValue,
    token: HeaderValue,
}

impl TokenRead {
    pub fn new(token: HeaderValue, host: HeaderValue, target: &str) -> anyhow::Result<Self> {
        Ok(Self {
            uri: target.parse()?,
            host,
            token,
        })
    }
}

impl MakeRequest for TokenRead {
    fn request(&mut self) -> anyhow::Result<Req> {
        let mut request = Request::new(Full::default());
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(2);
        headers.insert(HOST, self.host.clone());
        headers.insert(TOKEN_HEADER, self.token.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_read_carries_host_and_token() {
        let mut read = TokenRead::new(
            HeaderValue::from_static("s.abc"),
            HeaderValue::from_static("127.0.0.1:8201"),
            "/v1/secret/data/bench/db-password",
        )
        .unwrap();
        let request = read.request().unwrap();
        assert_eq!(request.uri(), "/v1/secret/data/bench/db-password");
        assert_eq!(request.headers()[HOST], "127.0.0.1:8201");
        assert_eq!(request.headers()[TOKEN_HEADER], "s.abc");
    }
}
