//! The Durable Streams protocol at `/v1/stream/{path}`.

mod frames;
pub mod headers;
mod read;
mod response;
mod sse;
mod write;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::AppState;

pub use frames::FrameShare;

/// The URL prefix of every stream; `Stream-Forked-From` values carry it too.
pub const PREFIX: &str = "/v1/stream/";

pub fn routes(max_append_bytes: usize) -> Router<AppState> {
    Router::new().route(
        "/v1/stream/{*path}",
        get(read::get)
            .head(read::head)
            .put(write::put)
            .post(write::post)
            .delete(write::delete)
            .layer(DefaultBodyLimit::max(max_append_bytes)),
    )
}

/// The stream path inside a `Stream-Forked-From` value, which names the source by its URL path.
pub fn source_path(value: &str) -> &str {
    let value = value.trim();
    value
        .strip_prefix(PREFIX)
        .or_else(|| value.strip_prefix('/'))
        .unwrap_or(value)
}
