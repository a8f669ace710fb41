//! `GET /openapi.json` against a real server: it needs no token, it equals the checked-in
//! `docs/openapi.json`, and it names every route docs/api.md promises.
//!
//! After an intended API change, regenerate the checked-in copy with
//! `TETHER_UPDATE_OPENAPI=1 cargo test -p tether-server --test openapi`.

// Each test binary uses only part of the shared helpers.
#[allow(dead_code)]
mod support;

use std::path::PathBuf;

use hyper::StatusCode;
use serde_json::Value;
use support::Server;

const REGENERATE: &str = "TETHER_UPDATE_OPENAPI=1 cargo test -p tether-server --test openapi";

/// Every route in docs/api.md's tables and sections, as OpenAPI path and lowercase method.
const DOCUMENTED_ROUTES: [(&str, &str); 26] = [
    ("/v1/tasks", "post"),
    ("/v1/tasks/validate", "post"),
    ("/v1/tasks/{id}", "get"),
    ("/v1/tasks", "get"),
    ("/v1/tasks/{id}", "delete"),
    ("/v1/tasks/{id}/export", "get"),
    ("/v1/tasks/{id}/status/rebuild", "post"),
    ("/v1/tasks/{id}/events", "get"),
    ("/v1/tasks/{id}/events", "post"),
    ("/v1/tasks/{id}/nudges", "post"),
    ("/v1/users", "post"),
    ("/v1/users", "get"),
    ("/v1/users/{name}", "patch"),
    ("/v1/tokens", "post"),
    ("/v1/tokens", "get"),
    ("/v1/tokens/{id}", "delete"),
    ("/v1/whoami", "get"),
    ("/v1/worker/claim", "post"),
    ("/v1/worker/tasks/{id}/heartbeat", "post"),
    ("/v1/worker/tasks/{id}/steps/{step}/begin", "post"),
    ("/v1/worker/tasks/{id}/steps/{step}/complete", "post"),
    ("/v1/worker/tasks/{id}/events", "post"),
    ("/v1/worker/tasks/{id}/nudges/{nudge}/ack", "post"),
    ("/v1/worker/tasks/{id}/finish", "post"),
    ("/healthz", "get"),
    ("/openapi.json", "get"),
];

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

async fn served_document(s: &Server) -> (Value, String) {
    let reply = s.call("GET", "/openapi.json", None, &[], "").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let text = String::from_utf8(reply.body.to_vec()).expect("the document is UTF-8");
    (reply.json(), text)
}

#[tokio::test]
async fn the_served_document_matches_docs_openapi_json() {
    let s = Server::start().await;
    let (served, text) = served_document(&s).await;
    s.stop().await;
    let path = checked_in_path();
    if std::env::var_os("TETHER_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); create it with `{REGENERATE}`",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&stored).unwrap_or_else(|e| {
        panic!(
            "{} is not JSON ({e}); regenerate it with `{REGENERATE}`",
            path.display()
        )
    });
    assert!(
        served == stored,
        "GET /openapi.json differs from docs/openapi.json. If the API change is intended, \
         regenerate the file with `{REGENERATE}` and commit it."
    );
}

#[tokio::test]
async fn every_route_in_the_api_doc_is_in_the_document_with_its_method() {
    let s = Server::start().await;
    let (doc, _) = served_document(&s).await;
    s.stop().await;
    let missing: Vec<String> = DOCUMENTED_ROUTES
        .iter()
        .filter(|(path, method)| doc["paths"][path][method].is_null())
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a #[utoipa::path] listed in crate::openapi::ApiDoc: {missing:?}"
    );
}

#[tokio::test]
async fn the_document_is_openapi_3_with_bearer_auth_except_on_open_routes() {
    let s = Server::start().await;
    let (doc, _) = served_document(&s).await;
    s.stop().await;
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3."), "openapi is {version:?}");
    assert_eq!(doc["info"]["title"], "Tether");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["type"], "http", "{schemes}");
    assert_eq!(schemes["scheme"], "bearer", "{schemes}");

    let paths = doc["paths"].as_object().expect("paths is an object");
    for (path, item) in paths {
        let operations = item.as_object().expect("a path item is an object");
        for (method, op) in operations {
            // Signing in and out takes a code, a token in the body, or the session cookie.
            let open = matches!(
                path.as_str(),
                "/healthz" | "/openapi.json" | "/v1/sessions" | "/v1/sessions/logout"
            );
            let security = &op["security"];
            if open {
                assert!(security.is_null(), "{method} {path} should need no token");
            } else {
                assert_eq!(
                    security,
                    &serde_json::json!([{"bearer": []}]),
                    "{method} {path} should need a bearer token"
                );
            }
            // A query parameter or header is sent or left out; it is never null.
            for param in op["parameters"].as_array().into_iter().flatten() {
                let schema = param["schema"].to_string();
                assert!(
                    !schema.contains("\"null\""),
                    "{method} {path}: parameter {} may be null: {schema}",
                    param["name"]
                );
            }
        }
    }
    // Every `$ref` must resolve, or a client generator would fail on the document.
    assert_refs_resolve(&doc, &doc);
    // A closed schema inside `allOf` makes the whole unsatisfiable: nothing matches both.
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        for part in schema["allOf"].as_array().into_iter().flatten() {
            let target = part["$ref"].as_str().unwrap_or_default();
            let referenced = doc.pointer(target.trim_start_matches('#'));
            assert!(
                referenced.is_none_or(|r| r["additionalProperties"] != false),
                "{name} extends {target}, which allows no further properties"
            );
        }
    }
    for name in [
        "TaskSpec",
        "Task",
        "EventAt",
        "ErrorBody",
        "Offset",
        "TaskId",
        "Claimed",
        "Heartbeat",
        "WorkerEvents",
        "Finish",
        "NewNudge",
    ] {
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "components.schemas has no {name}"
        );
    }
}

#[tokio::test]
async fn the_document_states_the_task_spec_limits_the_server_enforces() {
    use tether_types::task::{MAX_DESCRIPTION_CHARS, MAX_LABEL_CHARS, MAX_TURNS_RANGE};
    let s = Server::start().await;
    let (doc, _) = served_document(&s).await;
    s.stop().await;
    let spec = &doc["components"]["schemas"]["TaskSpec"]["properties"];
    assert_eq!(spec["description"]["maxLength"], MAX_DESCRIPTION_CHARS);
    assert_eq!(spec["repository"]["maxLength"], MAX_LABEL_CHARS);
    assert_eq!(spec["task_type"]["maxLength"], MAX_LABEL_CHARS);
    assert_eq!(spec["max_turns"]["minimum"], *MAX_TURNS_RANGE.start());
    assert_eq!(spec["max_turns"]["maximum"], *MAX_TURNS_RANGE.end());
}

fn assert_refs_resolve(doc: &Value, node: &Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let pointer = target.strip_prefix('#').unwrap_or(target);
                assert!(
                    doc.pointer(pointer).is_some(),
                    "{target} resolves to nothing"
                );
            }
            map.values().for_each(|v| assert_refs_resolve(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| assert_refs_resolve(doc, v)),
        _ => {}
    }
}
