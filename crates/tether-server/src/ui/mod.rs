//! The web UI: one HTML shell for every page and the static files it loads, built into the
//! binary so that running the UI needs nothing else installed and no build step.
//!
//! The pages hold no data: the shell's JavaScript reads everything through the JSON API with
//! the browser's credentials (`credentials: 'same-origin'`), so the pages are served to
//! anyone and the API decides what each caller may see. A 401 from the API sends the browser
//! to `/login`.

mod assets;

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/tasks/{id}", get(page))
        .route("/admin", get(page))
        .route("/login", get(page))
        .route("/ui/{*file}", get(asset))
}

/// Every page is the same shell; its script picks the view from the path.
async fn page(headers: HeaderMap) -> Response {
    assets::serve("index.html", &headers, true)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return assets::not_found();
    }
    assets::serve(&file, &headers, false)
}
