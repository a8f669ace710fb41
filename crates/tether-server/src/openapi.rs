//! `GET /openapi.json`: the tasks, events, users and tokens API and the worker protocol as an
//! OpenAPI 3 document.
//!
//! The document is generated from the handlers' `#[utoipa::path]` annotations and the wire
//! types' `ToSchema` derives, so it moves with the code. A copy is checked in at
//! `docs/openapi.json`; `tests/openapi.rs` fails when the two differ, so a change to the API
//! shows up in review as a change to that file.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tether",
        version = env!("CARGO_PKG_VERSION"),
        description = "Background agent tasks with durable, resumable event streams. \
            Errors are `{\"error\":{\"code\",\"message\",\"request_id\"}}` with a stable `code`; \
            every response carries `X-Request-Id`. The Durable Streams protocol at \
            `/v1/stream/*` is described by that protocol, not here."
    ),
    paths(
        crate::tasks::handlers::create,
        crate::tasks::handlers::validate,
        crate::tasks::handlers::list,
        crate::tasks::handlers::get_task,
        crate::tasks::handlers::cancel,
        crate::tasks::handlers::rebuild,
        crate::tasks::events::get,
        crate::tasks::events::append,
        crate::tasks::export::export,
        crate::tasks::nudges::create,
        crate::users::create_user,
        crate::users::list_users,
        crate::users::update_user,
        crate::users::create_token,
        crate::users::list_tokens,
        crate::users::revoke_token,
        crate::users::whoami,
        crate::sessions::create_code,
        crate::sessions::create_session,
        crate::sessions::logout,
        crate::workers::claim,
        crate::workers::heartbeat,
        crate::workers::begin_step,
        crate::workers::complete_step,
        crate::workers::events,
        crate::workers::ack_nudge,
        crate::workers::finish,
        crate::health::healthz,
        document,
    ),
    modifiers(&BearerAuth, &TaskWithSpec, &HeadersNotNull),
    tags(
        (name = "tasks", description = "Submit, read, list, cancel and nudge tasks."),
        (name = "events", description = "Each task's event stream: pages, long-poll, SSE, appends."),
        (name = "users", description = "Users and tokens (admin), and `whoami`."),
        (name = "sessions", description = "Browser sign-in: one-time login codes and session \
            cookies. A change made with the cookie must carry the server's own `Origin` (else \
            403 `SESSION_ORIGIN_REFUSED`)."),
        (name = "workers", description = "The worker protocol (worker or admin tokens): claim a \
            task, hold its lease with heartbeats, run steps, append events, finish. A call with a \
            lease that expired or a task that moved on is 409 `LEASE_LOST`; a write under the \
            lease of a task that was cancelled is 409 `TASK_CANCELLED` (stop gracefully); a \
            write for an older attempt of a step is 409 `STALE_ATTEMPT`. None is ever stored."),
        (name = "operations", description = "Health and this document; no token needed."),
    )
)]
pub struct ApiDoc;

/// Registers the `bearer` scheme the operations name in their `security`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "`Authorization: Bearer <token>`. A missing, unknown or revoked token is 401 \
                 `UNAUTHORIZED`; a role that may not do something is 403 `FORBIDDEN`.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Writes `Task` as one object holding its spec's fields.
///
/// `Task` flattens `TaskSpec`, which utoipa renders as `allOf: [TaskSpec, {id, ...}]`; but
/// `TaskSpec` refuses unknown fields (`additionalProperties: false`), so under `allOf` no task
/// could match both. Merging keeps `TaskSpec` strict as a request body and `Task` satisfiable.
struct TaskWithSpec;

impl Modify for TaskWithSpec {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else {
            return;
        };
        let Some(RefOr::T(Schema::Object(spec))) = schemas.get("TaskSpec").cloned() else {
            return;
        };
        let Some(RefOr::T(Schema::AllOf(all_of))) = schemas.get("Task") else {
            return;
        };
        let own = all_of.items.iter().find_map(|item| match item {
            RefOr::T(Schema::Object(own)) => Some(own.clone()),
            _ => None,
        });
        let Some(mut task) = own else {
            return;
        };
        task.description = all_of.description.clone();
        task.required.extend(spec.required);
        task.properties.extend(spec.properties);
        schemas.insert("Task".into(), RefOr::T(Schema::Object(task)));
    }
}

/// Drops `null` from optional header parameters.
///
/// utoipa writes an `Option<T>` header as nullable, but a header is either sent or not: it is
/// never null. (It already does this for query parameters.)
struct HeadersNotNull;

impl Modify for HeadersNotNull {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in operations.into_iter().flatten() {
                op.parameters
                    .iter_mut()
                    .flatten()
                    .filter(|p| p.parameter_in == ParameterIn::Header)
                    .for_each(header_not_null);
            }
        }
    }
}

fn header_not_null(param: &mut Parameter) {
    let Some(RefOr::T(schema)) = param.schema.as_mut() else {
        return;
    };
    match schema {
        Schema::Object(object) => {
            if let SchemaType::Array(types) = &object.schema_type {
                let kept: Vec<Type> = types
                    .iter()
                    .filter(|t| **t != Type::Null)
                    .cloned()
                    .collect();
                if let [only] = kept.as_slice() {
                    object.schema_type = SchemaType::Type(only.clone());
                }
            }
        }
        Schema::OneOf(one_of) => {
            let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
            let kept: Vec<_> = one_of
                .items
                .iter()
                .filter(|s| !is_null(s))
                .cloned()
                .collect();
            if let [only] = kept.as_slice() {
                param.schema = Some(only.clone());
            }
        }
        _ => {}
    }
}

/// Built once: the document only changes with the code.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("an OpenAPI document of strings and maps always serializes");
    json.push('\n');
    json
});

/// The document, pretty-printed exactly as `docs/openapi.json` holds it.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This document",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// `GET /openapi.json`; it needs no token.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}
