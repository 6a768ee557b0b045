//! The unsigned surface: health, readiness, metrics, the OpenAPI document,
//! and JSON errors for routes that do not exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kit;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use kit::Harness;

#[tokio::test]
async fn health_and_readiness_answer_without_a_signature() {
    let h = Harness::new();
    assert_eq!(h.text("/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(h.text("/readyz").await, (StatusCode::OK, "ready".into()));
}

#[tokio::test]
async fn metrics_count_decisions_by_outcome_and_code() {
    let h = Harness::new();
    h.seed("shop").await;
    let r = h.admin("GET", "/v1/secrets/shop/api-key", None).await;
    assert_eq!(r.code(), "not_a_machine");
    let (status, body) = h.text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(r#"signet_decisions_total{action="secret.write",outcome="allow",code=""} 2"#),
        "{body}"
    );
    assert!(
        body.contains(
            r#"signet_decisions_total{action="secret.read",outcome="deny",code="not_a_machine"} 1"#
        ),
        "{body}"
    );
}

#[tokio::test]
async fn the_openapi_document_lists_every_signed_route() {
    let h = Harness::new();
    let (status, body) = h.text("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/enroll",
        "/v1/admin/enroll",
        "/v1/machine/grants",
        "/v1/machine/changes",
        "/v1/machine/self",
        "/v1/secrets/{project}/{secret}",
        "/v1/projects",
        "/v1/projects/{project}/secrets/{secret}",
        "/v1/grants",
        "/v1/enrollment-tokens",
        "/v1/machines",
        "/v1/agents",
        "/v1/audit",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"].get("ErrorBody").is_some());
}

/// The router and the document come from one route table: every operation
/// the document lists is served, and every other method on its paths is
/// answered 405 (or 404 "no such route"), never served.
#[tokio::test]
async fn the_router_serves_exactly_the_operations_the_document_lists() {
    let h = Harness::new();
    let (_, body) = h.text("/v1/openapi.json").await;
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() > 40, "{}", paths.len());
    let mut probes = 0u32;
    for (path, item) in paths {
        let uri = path.replace(['{', '}'], "");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            probes += 1;
            // A source (an IPv6 /64) per probe: unsigned requests to signed
            // routes are denials, and a source over its budget gets 429s.
            let source = format!("2001:db8:{probes:x}::1");
            let (status, message) = h.probe(method, &uri, &source).await;
            let served = status != StatusCode::METHOD_NOT_ALLOWED
                && !(status == StatusCode::NOT_FOUND && message == "no such route");
            let documented = item.get(method.to_lowercase()).is_some();
            assert_eq!(
                served, documented,
                "{method} {path}: served {served}, documented {documented} ({status} {message})"
            );
        }
    }
    // The one route served and not documented: the document itself.
    assert!(doc["paths"].get("/v1/openapi.json").is_none());
}

#[tokio::test]
async fn unknown_routes_answer_json_errors() {
    let h = Harness::new();
    let r = h
        .raw(
            Request::builder()
                .uri("/v2/nothing")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "not_found"));
    let r = h
        .raw(
            Request::builder()
                .method("PATCH")
                .uri("/v1/projects")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "invalid_request");
}

#[tokio::test]
async fn a_path_parameter_that_is_not_utf8_is_a_json_bad_request_and_counted() {
    let h = Harness::new();
    for uri in ["/v1/grants/%FF", "/v1/projects/%C0%AF/secrets/db"] {
        let method = if uri.starts_with("/v1/grants") {
            "DELETE"
        } else {
            "GET"
        };
        let r = h
            .raw(
                Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{uri}: {}",
            r.body
        );
    }
    // Audited like any denial before a signature verified: counted, then
    // one row with the count.
    let rows = h.denials("invalid_request");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].action, "request.path");
    assert_eq!(kit::requests_of(&rows[0]), 2);
}
