//! The connection settings and the request plumbing every call shares.

use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use crate::Error;

/// How long an ordinary call may take. Generous: a busy server on a small machine is slow
/// before it is dead.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting is the one step that should be quick; a server that is down refuses at once,
/// and a black hole should not stall a reconnect loop for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle on one Tether server. Cheap to clone: clones share the connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for Client {
    /// Never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.auth.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port`), sending `token` as a bearer
    /// token when given.
    pub fn new(base_url: &str, token: Option<&str>) -> Result<Client, Error> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Usage(format!(
                "the server URL must start with http:// (TLS is not supported yet), got {base_url:?}"
            )));
        }
        let auth = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                        Error::Usage("the token contains characters a header cannot carry".into())
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Below the server's default header read timeout (30 s), after which it closes an
            // idle connection: a request sent on a connection as it closes fails.
            .pool_idle_timeout(Duration::from_secs(20))
            .user_agent(concat!("tether-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { http, base, auth })
    }

    /// `http://host:port`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) with the token attached.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// Sends a request and turns a non-2xx answer into [`Error::Api`].
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        check(request.send().await?).await
    }

    /// Sends a request within [`CALL_TIMEOUT`] and decodes its JSON answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let response = self.send(request.timeout(CALL_TIMEOUT)).await?;
        decode(response).await
    }
}

/// Passes a 2xx answer on; reads the body of any other into an [`Error::Api`].
pub(crate) async fn check(response: Response) -> Result<Response, Error> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A body cut short still leaves the status and the request id to report.
    let body = response.bytes().await.unwrap_or_default();
    Err(Error::from_response(status, request_id, &body))
}

/// Reads a whole JSON body.
pub(crate) async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let body = response.bytes().await.map_err(Error::Network)?;
    serde_json::from_slice(&body).map_err(|e| Error::Decode(e.to_string()))
}

pub(crate) use tether_types::percent_encode as encode_segment;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape_their_place() {
        assert_eq!(encode_segment("tok_1"), "tok_1");
        assert_eq!(encode_segment("../x?y"), "..%2Fx%3Fy");
    }

    #[test]
    fn the_base_url_must_be_plain_http_and_loses_its_trailing_slash() {
        let client = Client::new("http://127.0.0.1:4437/", None).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:4437");
        assert!(matches!(
            Client::new("127.0.0.1:4437", None),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn debug_output_hides_the_token() {
        let client = Client::new("http://h:1", Some("tk_secret")).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("tk_secret"), "{shown}");
        assert!(shown.contains("<hidden>"));
    }
}
