//! Turning an HTTP request into a [`Request`] for the pipeline: the target
//! exactly as sent, the four signature headers, the source address and the
//! body, read up to the configured limit. Path parameters come through
//! [`Param`], which refuses like every other denial (a JSON body, counted).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use signet_client::api::ErrorCode;
use signet_client::protocol::{HEADER_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP};

use crate::error::Error;
use crate::vault::{Request, Vault};

/// A request ready for [`Vault::handle`].
pub struct Signed(pub Request);

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    // A header sent twice is ambiguous: treat it as malformed (absent).
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(String::new());
    }
    first.to_str().ok().map(str::to_owned)
}

/// The request of `parts`, its body not read yet.
pub(super) fn unread(parts: &Parts) -> Request {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string())
        .unwrap_or_default();
    Request {
        method: parts.method.as_str().to_owned(),
        target,
        key_id: header(&parts.headers, HEADER_KEY),
        timestamp: header(&parts.headers, HEADER_TIMESTAMP),
        nonce: header(&parts.headers, HEADER_NONCE),
        signature: header(&parts.headers, HEADER_SIGNATURE),
        body: Vec::new(),
        source_ip,
    }
}

/// A route's path parameters, as axum's `Path` decodes them. One that is
/// not percent-encoded UTF-8 is `400 invalid_request` with a JSON body, and
/// counted like any denial before the signature verified.
pub struct Param<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<Vault>> for Param<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        vault: &Arc<Vault>,
    ) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, vault).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(_) => {
                let error = Error::denied(
                    ErrorCode::InvalidRequest,
                    "a path parameter is not percent-encoded UTF-8",
                );
                vault.deny_early(&unread(parts), "request.path", &error);
                Err(error)
            }
        }
    }
}

impl FromRequest<Arc<Vault>> for Signed {
    type Rejection = Error;

    async fn from_request(
        req: axum::extract::Request,
        vault: &Arc<Vault>,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let mut request = unread(&parts);
        let limit = vault.config().max_body_bytes;
        // A client that trickles its body cannot hold the request (and its
        // slot among the requests in flight) for longer than this.
        let deadline = vault.settings().limits.body_timeout;
        let error = match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
            Ok(Ok(bytes)) => {
                request.body = bytes.to_vec();
                return Ok(Self(request));
            }
            Ok(Err(_)) => Error::denied(
                ErrorCode::BodyTooLarge,
                format!("request body is larger than {limit} bytes"),
            ),
            Err(_) => Error::denied(
                ErrorCode::RequestTimeout,
                format!(
                    "request body not received within {} s",
                    deadline.as_secs_f32()
                ),
            ),
        };
        // Counted in memory; audited with the next grouped row.
        vault.deny_early(&request, "request.read_body", &error);
        Err(error)
    }
}
