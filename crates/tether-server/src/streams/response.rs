//! Building the protocol's response headers.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::headers as h;
use tether_types::Offset;

pub struct ResponseHeaders(HeaderMap);

impl ResponseHeaders {
    pub fn new() -> Self {
        ResponseHeaders(HeaderMap::new())
    }

    pub fn set(&mut self, name: HeaderName, value: &str) -> &mut Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.0.insert(name, v);
        }
        self
    }

    pub fn content_type(&mut self, ct: &str) -> &mut Self {
        self.set(CONTENT_TYPE, ct)
    }

    pub fn next_offset(&mut self, next: Offset) -> &mut Self {
        self.set(h::STREAM_NEXT_OFFSET, &next.to_string())
    }

    pub fn closed(&mut self, closed: bool) -> &mut Self {
        if closed {
            self.set(h::STREAM_CLOSED, "true");
        }
        self
    }

    pub fn up_to_date(&mut self, up_to_date: bool) -> &mut Self {
        if up_to_date {
            self.set(h::STREAM_UP_TO_DATE, "true");
        }
        self
    }

    pub fn into_map(self) -> HeaderMap {
        self.0
    }
}
