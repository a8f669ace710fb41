//! The UI's files. Release builds carry them inside the binary; debug builds read them from
//! `crates/tether-server/ui/` on each request (rust-embed's default), so editing the
//! JavaScript or CSS needs no rebuild.

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;
use tether_types::ErrorCode;

use crate::error::ApiError;

#[derive(RustEmbed)]
#[folder = "ui/"]
struct Files;

/// The pages load scripts, styles and data from this origin only, and may not be framed: a
/// page that renders other people's agent output must not run or load anything it names.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// Answers `file` (a path under `ui/`). Each answer carries the file's hash as its ETag and
/// `no-cache`, so a browser revalidates (a 304 without a body) and never runs the scripts of
/// an older binary. `page`: the HTML shell, which gets the content security policy.
pub fn serve(file: &str, request: &HeaderMap, page: bool) -> Response {
    let Some(found) = Files::get(file) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex(&found.metadata.sha256_hash()[..16]));
    let mut response = match request.get(IF_NONE_MATCH) {
        Some(v) if v.as_bytes() == etag.as_bytes() => StatusCode::NOT_MODIFIED.into_response(),
        _ => Response::new(Body::from(found.data.into_owned())),
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type(file)));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(ETAG, v);
    }
    if page {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static(PAGE_POLICY),
        );
        headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    }
    response
}

pub fn not_found() -> Response {
    ApiError::new(ErrorCode::NotFound, "no such file").into_response()
}

/// The types of the files `ui/` holds; anything else is served as bytes.
fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_and_its_scripts_are_there() {
        for file in ["index.html", "app.js", "style.css"] {
            assert!(Files::get(file).is_some(), "ui/{file} is missing");
        }
    }

    #[test]
    fn a_matching_etag_answers_not_modified_without_a_body() {
        let first = serve("style.css", &HeaderMap::new(), false);
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(IF_NONE_MATCH, etag);
        assert_eq!(
            serve("style.css", &again, false).status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[test]
    fn the_shell_forbids_foreign_scripts_and_framing() {
        let page = serve("index.html", &HeaderMap::new(), true);
        let policy = page.headers()["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"));
        assert!(policy.contains("frame-ancestors 'none'"));
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
    }

    #[test]
    fn a_path_outside_the_folder_is_not_found() {
        let response = serve("../Cargo.toml", &HeaderMap::new(), false);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
