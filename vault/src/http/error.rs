//! The one place HTTP status codes are chosen.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use signet_client::api::{ErrorBody, ErrorCode, ErrorDetail};

use crate::error::Error;

/// The HTTP status of each error code.
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        BadSignatureHeaders
        | TimestampSkew
        | UnknownKey
        | IdentityDisabled
        | BadSignature
        | NonceReplayed
        | UnknownCluster
        | AttestationExpired
        | AttestationAudience
        | AttestationNotPodBound
        | AttestationPodGone
        | AttestationPodMismatch
        | AttestationRejected => StatusCode::UNAUTHORIZED,
        NotAMachine
        | Forbidden
        | NotGranted
        | FieldNotGranted
        | InvalidToken
        | TokenExhausted
        | TokenExpired
        | PolicyTimeWindow
        | PolicyIp
        | PolicyCountry
        | PolicyDailyCap
        | CosignRequired
        | HostnameNotAllowed
        | SourceNotAllowed
        | NotDelegated
        | UnknownPolicy
        | ServiceAccountNotAllowed => StatusCode::FORBIDDEN,
        AttestationUnavailable | Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ProjectLocked => StatusCode::LOCKED,
        NotFound => StatusCode::NOT_FOUND,
        Conflict => StatusCode::CONFLICT,
        TooManyWaiting | RateLimited => StatusCode::TOO_MANY_REQUESTS,
        InvalidRequest | MalformedJson | DestinationNotAllowed => StatusCode::BAD_REQUEST,
        BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON error body of docs/protocol.md; a refusal for the per-source
/// budget says when to retry. The code also travels in the response's
/// extensions, for the middleware that holds such refusals
/// ([`super::limit::budget`]).
pub fn body(code: ErrorCode, message: String) -> Response {
    let mut response = (
        status(code),
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response();
    response.extensions_mut().insert(code);
    if code == ErrorCode::RateLimited {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::budget::RETRY_AFTER_SECONDS),
        );
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        body(self.code(), self.public_message())
    }
}
