//! Tether's HTTP server.
//!
//! [`run`] serves the Durable Streams protocol at `/v1/stream/{path}` on a listener until the
//! shutdown future resolves, then drains: it stops accepting, lets in-flight appends commit,
//! ends live streams, and closes the store.
//!
//! Modules depend downwards only, in these layers (a module imports nothing from a layer
//! above its own):
//!
//! 1. leaves: `config`, `headers` (protocol names), `request_id`, `shutdown`, `cursor`,
//!    `query`, `timed_body`, `stamp` (response headers), `takeover` (bodies that may leave
//!    hyper), `health`, `handover`, `metrics`;
//! 2. `error` (errors become HTTP answers), `live` (the one live SSE body and socket loop),
//!    `jobs`, `token_use`, and the transport, `connection`;
//! 3. `extract` (request parts, each failure an `ApiError`), `auth`, `guard`;
//! 4. `shared` (what several resources need of tasks and producers), `middleware`;
//! 5. resources: `streams`, `tasks`, `workers`, `users`, `sessions`; none calls another's
//!    internals;
//! 6. `openapi`, then `router` (routes, layers, and the direct append path it registers with
//!    the transport); [`serve`] wires the router to the transport.
//!
//! [`AppState`], defined here, is the exception: every layer receives it, and it holds the
//! state of a few modules above the leaves (`streams`' frame cache and parking lot, `tasks`'
//! views).

pub mod auth;
pub mod config;
mod connection;
mod cursor;
mod error;
mod extract;
mod guard;
mod handover;
mod headers;
mod health;
mod jobs;
mod live;
mod metrics;
mod middleware;
mod openapi;
mod query;
mod request_id;
mod router;
mod sessions;
mod shared;
mod shutdown;
mod stamp;
mod streams;
mod takeover;
pub(crate) mod tasks;
mod timed_body;
mod token_use;
mod ui;
mod users;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{AuthMode, ServerConfig};
pub use router::router;
use tether_store::{
    ControlStore, Coordinator, PgOptions, PgStore, Principal, SqliteStore, StreamStore, WorkStore,
};

/// The backends a server runs on (the stream, control and execution stores and the
/// coordination between nodes, one database behind the four traits), opened and ready: the
/// first admin exists.
#[derive(Clone)]
pub struct Stores {
    pub streams: Arc<dyn StreamStore>,
    pub control: Arc<dyn ControlStore>,
    pub work: Arc<dyn WorkStore>,
    pub coord: Arc<dyn Coordinator>,
    /// The first admin, whom every request acts as when auth is off.
    pub admin: Principal,
}

/// Shared by every handler; cloning it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Arc<dyn StreamStore>,
    pub control: Arc<dyn ControlStore>,
    pub work: Arc<dyn WorkStore>,
    /// Which node runs singleton jobs; news of work from other nodes.
    pub coord: Arc<dyn Coordinator>,
    /// Woken when a claim might now succeed: a task was submitted or requeued, a slot freed
    /// (on this node; `coord.remote_work()` tells of other nodes).
    pub work_ready: tokio::sync::Notify,
    /// When a worker last claimed or heartbeat (ms since the epoch; 0: never), for validate.
    pub worker_seen_ms: std::sync::atomic::AtomicI64,
    pub config: ServerConfig,
    /// Who every request acts as when auth is off.
    pub local_admin: Principal,
    /// Each task's status projection and rewinds, derived from its log.
    pub views: tasks::Views,
    pub metrics: metrics::Metrics,
    /// Flips to true when the server starts shutting down; live readers end on it.
    pub shutdown: watch::Receiver<bool>,
    /// SSE frames shared by the live readers of each stream.
    pub frames: streams::FrameShare,
    /// Idle SSE subscribers waiting without a task, by stream.
    pub parking: Arc<streams::Parking>,
    /// When tokens were last used, noted per request and stored about once a minute.
    pub token_use: token_use::TokenUse,
}

impl AppState {
    pub fn new(stores: Stores, config: ServerConfig, shutdown: watch::Receiver<bool>) -> Self {
        AppState(Arc::new(Shared {
            store: stores.streams,
            control: stores.control,
            work: stores.work,
            coord: stores.coord,
            work_ready: tokio::sync::Notify::new(),
            worker_seen_ms: std::sync::atomic::AtomicI64::new(0),
            config,
            local_admin: stores.admin,
            views: tasks::Views::default(),
            metrics: metrics::Metrics::default(),
            shutdown,
            frames: streams::FrameShare::default(),
            parking: Arc::default(),
            token_use: token_use::TokenUse::default(),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// How long shutdown waits for live connections before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the store the configuration names (PostgreSQL with `--database`, else the embedded
/// SQLite store in the data dir), applying migrations and recovering from an unclean stop. On
/// a fresh database it creates the first admin and writes its token file into the data dir,
/// so the file exists before the server is ready.
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Stores> {
    match &config.database {
        Some(url) => {
            let options = PgOptions {
                pool_size: config.database_pool,
            };
            let store = Arc::new(PgStore::connect(url, options).await?);
            stores(store, config).await
        }
        None => {
            let store = SqliteStore::open_in(
                &config.data_dir,
                tether_store::SweepPolicy::default(),
                config.disk_reserve_bytes,
            )?;
            stores(Arc::new(store), config).await
        }
    }
}

async fn stores<S>(store: Arc<S>, config: &ServerConfig) -> anyhow::Result<Stores>
where
    S: StreamStore + ControlStore + WorkStore + Coordinator,
{
    let admin = auth::bootstrap(store.as_ref(), &config.data_dir).await?;
    Ok(Stores {
        streams: store.clone(),
        control: store.clone(),
        work: store.clone(),
        coord: store,
        admin,
    })
}

/// Reserves the listening address without accepting connections yet: a busy address is
/// reported before the data dir is touched, and [`listen`] after [`open_store`] means no
/// client can connect before the first admin token exists.
pub fn reserve(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's TcpListener::bind does: a restart may reuse an address in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Starts accepting connections on a reserved address.
pub fn listen(socket: tokio::net::TcpSocket) -> std::io::Result<TcpListener> {
    socket.listen(LISTEN_BACKLOG)
}

/// Pending connections the kernel queues before `accept` (the usual `SOMAXCONN`).
const LISTEN_BACKLOG: u32 = 4096;

/// Serves with a given store (tests use this to share one store implementation).
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    stores: Stores,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let store = stores.streams.clone();
    let state = AppState::new(stores, config, stop_rx.clone());
    let reconciler = jobs::spawn_reconciler(state.clone());
    let token_use = token_use::spawn_flusher(state.clone());
    let app = router(state.clone());
    let direct = router::DirectAppend(state.clone());
    let limits = connection::Limits {
        max_connections: state.config.max_connections,
        header_read_timeout: state.config.header_read_timeout,
        body_read_timeout: state.config.body_read_timeout,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let server = tokio::spawn(connection::accept_until(
        listener, app, direct, limits, stop_rx,
    ));
    shutdown.await;
    tracing::info!("shutting down: no new connections, ending live reads");
    let _ = stop_tx.send(true);
    // Wait for the connections to finish, but not forever.
    let result = match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(joined) => joined.map_err(anyhow::Error::from),
        Err(_) => {
            tracing::warn!("connections still open after the drain timeout; closing anyway");
            Ok(())
        }
    };
    // Its store calls are on the writer, which finishes them; only the waiting stops here.
    reconciler.abort();
    let _ = reconciler.await;
    // It stores the last-use times noted since its last round, then ends.
    if tokio::time::timeout(DRAIN_TIMEOUT, token_use)
        .await
        .is_err()
    {
        tracing::warn!("could not store when tokens were last used before stopping");
    }
    store.shutdown().await;
    tracing::info!("stopped");
    result
}
