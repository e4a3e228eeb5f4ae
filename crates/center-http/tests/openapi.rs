//! The published OpenAPI document: it describes every route the service has (the endpoint
//! table of the crate's documentation, and the router itself), it is a well-formed OpenAPI 3
//! document whose references all resolve, `/openapi.json` serves it unsigned, and the copy
//! published in `docs/openapi.json` is the one the code generates.
//!
//! `VALUECARD_BLESS=1 cargo test -p valuecard-center-http --test openapi` writes the published
//! copy again after a change to the routes or their bodies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use rand_core::SeedableRng;
use serde_json::Value;
use tower::ServiceExt;
use valuecard_center::Center;
use valuecard_center_http::openapi::{self, header_names};
use valuecard_center_http::problem::{ProblemDocument, ProblemKind};
use valuecard_center_http::{content_type, headers, server};
use valuecard_sim::WorldRng;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(openapi::json().unwrap()).unwrap()
}

/// `(METHOD, path)` of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

/// The endpoint table of the crate's documentation: rows ``//! | `METHOD /path` | ...``.
fn documented_endpoints() -> BTreeSet<(String, String)> {
    include_str!("../src/lib.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|row| row.split_once('`').map(|(endpoint, _)| endpoint))
        .filter_map(|endpoint| endpoint.split_once(' '))
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect()
}

#[test]
fn the_document_describes_every_documented_route() {
    let documented = documented_endpoints();
    assert!(documented.len() >= 16, "{documented:?}");
    assert_eq!(operations(&document()), documented);
}

/// The router answers every operation of the document itself (never with its fallbacks for
/// an unknown path or method), signed operations refuse an unsigned request with a 401
/// problem document, and the unsigned ones answer 200; a path the document does not have is
/// not served.
#[tokio::test]
async fn the_router_serves_exactly_what_the_document_describes() {
    let center = Center::ephemeral(common::clock(), &mut WorldRng::seed_from_u64(41)).unwrap();
    let router = server::router(Arc::new(Mutex::new(center))).unwrap();
    for (method, path) in operations(&document()) {
        let uri = path.replace("{card_id}", "c000000000000001");
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(&uri);
        if method == "POST" {
            request = request.header("content-type", content_type::JSON);
        }
        let body = if method == "POST" { "{}" } else { "" };
        let response = router
            .clone()
            .oneshot(request.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        if path.starts_with("/v1/") {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            let problem: ProblemDocument = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                problem.kind(),
                Some(ProblemKind::Unauthenticated),
                "{method} {uri}"
            );
        } else {
            assert_eq!(status, StatusCode::OK, "{method} {uri}");
        }
    }
    let response = router
        .oneshot(Request::get("/v1/unknown").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_json_is_served_unsigned() {
    let center = Center::ephemeral(common::clock(), &mut WorldRng::seed_from_u64(42)).unwrap();
    let router = server::router(Arc::new(Mutex::new(center))).unwrap();
    let response = router
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], content_type::JSON);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&bytes).unwrap(),
        openapi::json().unwrap()
    );
}

/// Every `$ref` in `value`, with where it was found.
fn references<'a>(value: &'a Value, at: String, found: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref" {
                    if let Some(target) = inner.as_str() {
                        found.push((at.clone(), target));
                    }
                } else {
                    references(inner, format!("{at}/{key}"), found);
                }
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                references(inner, format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_well_formed_openapi_3() {
    let document = document();
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(document["info"]["title"], "valuecard center");
    assert!(document["info"]["version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));

    // Every reference resolves inside the document.
    let mut found = Vec::new();
    references(&document, String::new(), &mut found);
    assert!(found.len() > 20);
    for (at, target) in found {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {target} is not local"));
        assert!(
            document.pointer(pointer).is_some(),
            "{at}: {target} does not resolve"
        );
    }

    let mut operation_ids = BTreeSet::new();
    for (method, path) in operations(&document) {
        let operation = &document["paths"][&path][method.to_lowercase()];
        let id = operation["operationId"].as_str().unwrap().to_owned();
        assert!(
            operation_ids.insert(id),
            "{method} {path}: operationId repeated"
        );
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.contains_key("200"), "{method} {path}");
        // Path parameters are declared as the path names them.
        for segment in path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            let declared = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true);
            assert!(declared, "{method} {path}: path parameter {name}");
        }
        if !path.starts_with("/v1/") {
            continue;
        }
        // Signed operations: the three headers, the answer's signature, every refusal.
        let parameters = operation["parameters"].as_array().unwrap();
        for (name, read_as) in [
            (header_names::DEVICE, headers::DEVICE),
            (header_names::SEQUENCE, headers::SEQUENCE),
            (header_names::SIGNATURE, headers::SIGNATURE),
        ] {
            assert_eq!(name.to_lowercase(), read_as);
            assert!(
                parameters
                    .iter()
                    .any(|p| p["in"] == "header" && p["name"] == name && p["required"] == true),
                "{method} {path}: {name}"
            );
        }
        assert_eq!(
            header_names::ANSWER_SIGNATURE.to_lowercase(),
            headers::ANSWER_SIGNATURE
        );
        assert!(
            responses["200"]["headers"]
                .get(header_names::ANSWER_SIGNATURE)
                .is_some(),
            "{method} {path}"
        );
        if method == "POST" {
            assert!(
                operation["requestBody"]["content"][content_type::JSON]["schema"]["$ref"]
                    .is_string(),
                "{method} {path}"
            );
        }
        for kind in ProblemKind::ALL {
            if matches!(
                kind,
                ProblemKind::NotFound | ProblemKind::MethodNotAllowed | ProblemKind::Unavailable
            ) {
                continue;
            }
            let status = kind.status().as_u16().to_string();
            let response = responses
                .get(&status)
                .unwrap_or_else(|| panic!("{method} {path}: no {status}"));
            let target = response["$ref"].as_str().unwrap();
            let resolved = document.pointer(&target[1..]).unwrap();
            assert!(
                resolved["description"]
                    .as_str()
                    .unwrap()
                    .contains(kind.slug()),
                "{target} does not name {}",
                kind.slug()
            );
            assert!(resolved["content"][content_type::PROBLEM].is_object());
        }
    }
}

fn published() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_published_document_is_the_generated_one() {
    let generated = openapi::json().unwrap();
    if std::env::var_os("VALUECARD_BLESS").is_some_and(|value| value == "1") {
        std::fs::write(published(), generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(published()).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates: run \
         `VALUECARD_BLESS=1 cargo test -p valuecard-center-http --test openapi` and commit it"
    );
}
