//! The OpenAPI document, generated from the handlers' annotations.
//!
//! Its paths come from the route table (`super::routes`), the same
//! declaration that mounts the routes, so no list here has to be kept in
//! step by hand; [`ApiDoc`] holds the rest (info, shared schemas) and
//! [`complete`] adds the shared refusals once the paths are in.
//!
//! Each handler's annotation lists its own outcomes: success, and the
//! refusals of its operation (a bad body or query, something that does not
//! exist, a conflict). The refusals every route shares are added here, once,
//! by [`SharedRefusals`]: those of the request pipeline, of reading the body,
//! of the limit of requests in flight, of the per-source budget of
//! unverified denials and of decoding path parameters.

use std::sync::Arc;

use axum::Json;
use signet_client::api::*;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi as Document, Ref, RefOr, Response, ResponseBuilder, Type,
};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Signet vault",
        description = "Every route except /healthz, /readyz, /metrics and /v1/openapi.json is signed: \
            headers Signet-Key, Signet-Timestamp, Signet-Nonce and Signet-Signature as docs/protocol.md \
            (signet wire protocol, version 1) describes. There are no bearer tokens."
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ErrorCode,
        Scope,
        TokenGrant,
        VersionMeta,
        TokenView,
        TokenConstraints,
        TimeWindow,
        AccessPolicy,
        AuditAnchor,
        AuditBreak,
        AuditBreakKind,
        Attestation,
        KubernetesBinding,
        MachineKubernetes,
        NamespaceRef,
        Provider,
        RotationTarget,
        Alphabet,
        PasswordPolicy,
        JobState,
        Step,
        Outcome
    ))
)]
pub struct ApiDoc;

/// Routes answered without a signature.
const UNSIGNED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// The one route the limit of requests in flight does not apply to.
const UNLIMITED: &str = "/healthz";

/// A shared refusal: its status and its name under `components/responses`.
struct Shared {
    status: &'static str,
    name: &'static str,
    description: &'static str,
}

/// What any signed request can be answered besides its route's own
/// outcomes (the codes and their statuses: `super::error::status`).
const SIGNED: [Shared; 5] = [
    Shared {
        status: "401",
        name: "Unauthenticated",
        description: "not authenticated: signature headers missing or malformed, timestamp out of the \
            skew window, a key id that names no identity this route serves, a disabled identity, a \
            signature that does not verify or a nonce already used (docs/protocol.md)",
    },
    Shared {
        status: "403",
        name: "Forbidden",
        description: "authenticated, but refused: an identity of another class than the route \
            serves, a missing scope or delegation, a machine's restrictions or a secret's access \
            policy, an invalid enrollment token",
    },
    Shared {
        status: "408",
        name: "RequestTimeout",
        description: "the request body did not arrive within the vault's body timeout",
    },
    Shared {
        status: "413",
        name: "BodyTooLarge",
        description: "the request body is larger than the vault's limit",
    },
    Shared {
        status: "500",
        name: "Internal",
        description: "internal error (a storage failure); the vault's log has the details",
    },
];

/// Any route but `/healthz`, signed or not, over the limit of requests in flight.
const OVERLOADED: Shared = Shared {
    status: "503",
    name: "Overloaded",
    description: "the vault is at its limit of requests in flight; retry after `Retry-After` seconds",
};

/// Any signed route, from a source over its budget of unverified denials.
const RATE_LIMITED: Shared = Shared {
    status: "429",
    name: "RateLimited",
    description: "rate_limited: too many requests from this source address (an IPv6 /64) were denied \
        before their signature verified; retry after `Retry-After` seconds. A request signed by a \
        key the vault has verified before is still served",
};

/// A route with path parameters, when one is not percent-encoded UTF-8.
const BAD_PATH: Shared = Shared {
    status: "400",
    name: "BadPath",
    description: "a path parameter is not percent-encoded UTF-8",
};

/// The document of `paths`, the route table's: with the shared refusals.
pub fn complete(mut paths: Document) -> Document {
    SharedRefusals.modify(&mut paths);
    paths
}

/// Adds the shared refusals to every operation, as references to
/// `components/responses`, keeping a status a route documents itself.
struct SharedRefusals;

impl Modify for SharedRefusals {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for shared in SIGNED.iter().chain([&BAD_PATH]) {
            components
                .responses
                .insert(shared.name.into(), RefOr::T(error_response(shared)));
        }
        for retried in [&OVERLOADED, &RATE_LIMITED] {
            let mut response = error_response(retried);
            response.headers.insert(
                "Retry-After".into(),
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::Integer))
                    .description(Some("seconds to wait before retrying"))
                    .build(),
            );
            components
                .responses
                .insert(retried.name.into(), RefOr::T(response));
        }

        for (path, item) in doc.paths.paths.iter_mut() {
            let signed = !UNSIGNED.contains(&path.as_str());
            let limited = path != UNLIMITED;
            for operation in operations(item) {
                let mut shared: Vec<&Shared> = Vec::new();
                if signed {
                    shared.extend(&SIGNED);
                    shared.push(&RATE_LIMITED);
                }
                if limited {
                    shared.push(&OVERLOADED);
                }
                let has_path_params = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| matches!(p.parameter_in, ParameterIn::Path));
                if has_path_params {
                    shared.push(&BAD_PATH);
                }
                for refusal in shared {
                    operation
                        .responses
                        .responses
                        .entry(refusal.status.into())
                        .or_insert_with(|| Ref::from_response_name(refusal.name).into());
                }
            }
        }
    }
}

fn error_response(shared: &Shared) -> Response {
    ResponseBuilder::new()
        .description(shared.description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// `GET /v1/openapi.json`: the document built once, with the router.
pub async fn document(document: Arc<Document>) -> Json<Document> {
    Json(Document::clone(&document))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::Value;
    use signet_client::api::ErrorCode;

    use super::*;

    /// `(path, method, documented statuses)` of every operation.
    fn operations_of(doc: &Value) -> Vec<(String, String, Vec<String>)> {
        let mut all = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let statuses = operation["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .cloned()
                    .collect();
                all.push((path.clone(), method.clone(), statuses));
            }
        }
        all
    }

    /// The document as the vault serves it.
    fn served() -> Value {
        serde_json::to_value(complete(super::super::routes().into_openapi())).unwrap()
    }

    fn status_of(code: ErrorCode) -> String {
        super::super::error::status(code).as_u16().to_string()
    }

    #[test]
    fn every_signed_route_documents_the_refusals_every_request_can_get() {
        let doc = served();
        // A refusal of the pipeline, of reading the body, of the limit of
        // requests in flight, of a store failure: statuses as the one
        // table of `error::status` gives them.
        let signed: Vec<String> = [
            ErrorCode::BadSignatureHeaders,
            ErrorCode::UnknownKey,
            ErrorCode::NotAMachine,
            ErrorCode::Forbidden,
            ErrorCode::RequestTimeout,
            ErrorCode::BodyTooLarge,
            ErrorCode::Internal,
            ErrorCode::RateLimited,
            ErrorCode::Overloaded,
        ]
        .into_iter()
        .map(status_of)
        .collect();
        let operations = operations_of(&doc);
        assert!(operations.len() > 40, "{}", operations.len());
        for (path, method, statuses) in operations {
            let expected: &[String] = match path.as_str() {
                "/healthz" => &[],
                "/readyz" | "/metrics" => &signed[signed.len() - 1..],
                _ => &signed,
            };
            for status in expected {
                assert!(
                    statuses.contains(status),
                    "{method} {path} does not document {status}: {statuses:?}"
                );
            }
        }
    }

    #[test]
    fn only_routes_that_can_refuse_a_request_as_bad_document_400() {
        let doc = served();
        let bad = status_of(ErrorCode::InvalidRequest);
        for (path, method, statuses) in operations_of(&doc) {
            let operation = &doc["paths"][&path][&method];
            let parameters = operation["parameters"].as_array();
            // A path parameter (not UTF-8), a query (bad limit or cursor),
            // a body (not the expected JSON) can each be refused as bad.
            let can_be_bad =
                parameters.is_some_and(|p| !p.is_empty()) || operation.get("requestBody").is_some();
            if can_be_bad {
                assert!(statuses.contains(&bad), "{method} {path}: {statuses:?}");
            }
        }
        // Nothing to parse, nothing to refuse as bad.
        for (path, method) in [
            ("/v1/machine/grants", "get"),
            ("/v1/machine/self", "delete"),
            ("/v1/audit/checkpoint", "get"),
        ] {
            let responses = &doc["paths"][path][method]["responses"];
            assert!(
                responses.get(&bad).is_none(),
                "{method} {path}: {responses}"
            );
        }
    }

    #[test]
    fn every_shared_refusal_is_a_json_error_body() {
        let doc = served();
        let shared = doc["components"]["responses"].as_object().unwrap();
        for (path, method, _) in operations_of(&doc) {
            for (status, response) in doc["paths"][&path][&method]["responses"]
                .as_object()
                .unwrap()
            {
                if let Some(reference) = response["$ref"].as_str() {
                    let name = reference.trim_start_matches("#/components/responses/");
                    assert!(
                        shared.contains_key(name),
                        "{method} {path} {status}: {name}"
                    );
                }
            }
        }
        for (name, response) in shared {
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{name}"
            );
        }
        assert!(shared["Overloaded"]["headers"].get("Retry-After").is_some());
        assert!(
            shared["RateLimited"]["headers"]
                .get("Retry-After")
                .is_some()
        );
    }
}
