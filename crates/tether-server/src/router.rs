//! The app: every route and the layers around them, and the direct path registered with the
//! transport beside them. Above the resources (it names their routes), below the transport,
//! which knows neither.

use axum::http::Request;
use axum::Router;

use crate::connection::{Direct, DirectAnswer};
use crate::timed_body::TimedBody;
use crate::{
    health, metrics, middleware, openapi, sessions, streams, tasks, ui, users, workers, AppState,
};

/// The whole HTTP surface, but for one path that bypasses it: see [`DirectAppend`].
///
/// The direct append path bypasses every layer set up here. An append (`POST
/// /v1/stream/{path}` with a body of known length within `max_append_bytes`) is answered by
/// [`streams::direct`] straight from the connection, without the route's body limit, without
/// `middleware::common_headers` (request id, the guard's checks, the task-local request id
/// for error bodies, stream latency metrics, JSON for handler-less errors, security and CORS
/// headers) and without axum's path and body extractors. It keeps the same guarantees by
/// doing each of those itself, with the same functions: it makes a request id and passes it
/// to every error, runs `guard::check` first, reads the body through the same limit (and the
/// transport's body read timeout, which applies to both paths), records
/// `metrics::observe_stream` and stamps `stamp::stamp` with CORS; it decodes the path as the
/// router's `{*path}` does and leaves anything it cannot answer exactly as the router would
/// (chunked or oversized bodies, undecodable paths) to the router. Authentication, admission
/// and the append itself are the handler's own code (`streams::write::answer_post`), shared
/// by both paths. A layer added here therefore does not reach appends: add it to
/// `streams::direct::answer` too, or make that path give such requests up.
pub fn router(state: AppState) -> Router {
    let limit = axum::extract::DefaultBodyLimit::max(state.config.max_append_bytes);
    // Timed by route pattern. The stream routes, the append path, are left out of this layer
    // and timed by the outer middleware instead: a layer costs a boxed clone per request.
    let api = tasks::routes()
        .layer(limit)
        .merge(users::routes())
        .merge(sessions::routes())
        .merge(workers::routes())
        .merge(openapi::routes())
        .route("/healthz", axum::routing::get(health::healthz))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    streams::routes(&state)
        .merge(api)
        .merge(ui::routes())
        .route("/metrics", axum::routing::get(metrics::scrape))
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::common_headers,
        ))
}

/// The stream append path, answered straight from the connection ([`streams::direct`]):
/// registered with the transport, which knows it only as a [`Direct`]. Static dispatch: the
/// transport is generic over it.
#[derive(Clone)]
pub struct DirectAppend(pub AppState);

impl Direct for DirectAppend {
    /// The stream path.
    type Taken = String;

    fn takes(&self, req: &Request<TimedBody>) -> Option<String> {
        streams::direct::takes(&self.0, req)
    }

    fn answer(&self, path: String, req: Request<TimedBody>) -> DirectAnswer {
        streams::direct::answer(&self.0, path, req)
    }
}
