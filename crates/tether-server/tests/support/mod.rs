//! A real server on a loopback port with a temporary data dir, on the embedded SQLite store
//! or on a scratch PostgreSQL database, and a typed way to talk to it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tempfile::TempDir;
use tether_server::{open_store, AuthMode, ServerConfig};
use tether_store::pg::scratch::ScratchDatabase;

/// The database a test server runs on.
pub enum Backend {
    Sqlite,
    Postgres(ScratchDatabase),
}

impl Backend {
    /// A fresh PostgreSQL database for `case`, or `None` (said on stderr) when
    /// `TETHER_TEST_DATABASE_URL` is not set.
    pub async fn postgres(case: &str) -> Option<Backend> {
        ScratchDatabase::create(case).await.map(Backend::Postgres)
    }

    /// Points `config` at this backend.
    pub fn configure(&self, config: &mut ServerConfig) {
        config.database = match self {
            Backend::Sqlite => None,
            Backend::Postgres(db) => Some(db.url().to_string()),
        };
    }
}

/// Instantiates each case, an `async fn(Backend)`, as one test on SQLite and one on
/// PostgreSQL (which says it skipped when `TETHER_TEST_DATABASE_URL` is not set).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case($crate::support::Backend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(backend) = $crate::support::Backend::postgres(stringify!($case)).await {
                        super::$case(backend).await;
                    }
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;

/// Generous: the machine may be slow; nothing should come near it unless something hangs.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub struct Server {
    /// The control store under the server, for writing what only later parts of Tether
    /// write through the API (a step's `stream_rewind`).
    pub control: std::sync::Arc<dyn tether_store::ControlStore>,
    pub base: String,
    pub admin: String,
    pub dir: TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Last, so the database outlives the server.
    _backend: Backend,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a `{"error":{...}}` body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::start_on(Backend::Sqlite).await
    }

    pub async fn start_on(backend: Backend) -> Server {
        Self::start_on_with(backend, |_| {}).await
    }

    /// Starts with settings changed by `tune` (short leases, low limits).
    pub async fn start_on_with(backend: Backend, tune: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            long_poll_timeout: Duration::from_millis(500),
            auth: AuthMode::Token,
            ..ServerConfig::default()
        };
        backend.configure(&mut config);
        tune(&mut config);
        // Where the first admin token is written: the temporary dir unless `tune` moved it.
        let token_file = config.data_dir.join("admin.token");
        let stores = open_store(&config).await.unwrap();
        let control = stores.control.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(tether_server::serve(config, listener, stores, async {
            let _ = stopped.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut server = Server {
            control,
            base,
            admin: String::new(),
            dir,
            client,
            stop: Some(stop),
            handle: Some(handle),
            _backend: backend,
        };
        // The first admin token is written during start; ask until the server answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let health = server
                .call("GET", "/healthz", None, &[], Bytes::new())
                .await;
            if health.status == StatusCode::OK {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.admin = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .to_string();
        server
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(PATIENCE, exchange).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => Reply {
                status: StatusCode::BAD_GATEWAY,
                headers: Default::default(),
                body: Bytes::from(e.to_string()),
            },
            Err(_) => panic!("{method} {path}: no answer within {PATIENCE:?}"),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), &[], Bytes::new()).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        let json = [("content-type", "application/json")];
        self.call("POST", path, Some(token), &json, body.to_string())
            .await
    }

    /// Creates a user and returns a token for it with `role`.
    pub async fn user(&self, name: &str, role: &str) -> String {
        let made = self
            .post("/v1/users", &self.admin, serde_json::json!({"name": name}))
            .await;
        assert!(
            made.status == StatusCode::CREATED || made.code() == "USER_EXISTS",
            "{made:?}"
        );
        let token = self
            .post(
                "/v1/tokens",
                &self.admin,
                serde_json::json!({"user": name, "role": role}),
            )
            .await;
        assert_eq!(token.status, StatusCode::CREATED, "{token:?}");
        token.json()["token"].as_str().unwrap().to_string()
    }

    /// Submits a task as `token` and returns its id.
    pub async fn submit(&self, token: &str, description: &str) -> String {
        let made = self
            .post(
                "/v1/tasks",
                token,
                serde_json::json!({"description": description}),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{made:?}");
        made.json()["id"].as_str().unwrap().to_string()
    }

    /// Appends events as `token`.
    pub async fn events(&self, token: &str, id: &str, events: Value) -> Reply {
        self.post(
            &format!("/v1/tasks/{id}/events"),
            token,
            serde_json::json!({ "events": events }),
        )
        .await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(PATIENCE, handle).await;
        }
    }
}

/// Polls `check` until it returns `Some`, for at most [`PATIENCE`]: for conditions that
/// another process or a background job brings about.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
