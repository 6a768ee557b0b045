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
        TooManyWaiting => StatusCode::TOO_MANY_REQUESTS,
        InvalidRequest | MalformedJson | DestinationNotAllowed => StatusCode::BAD_REQUEST,
        BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON error body of docs/protocol.md.
pub fn body(code: ErrorCode, message: String) -> Response {
    (
        status(code),
        Json(ErrorBody {
            error: ErrorDetail { code, message },
        }),
    )
        .into_response()
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        body(self.code(), self.public_message())
    }
}
