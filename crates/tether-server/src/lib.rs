//! Tether's HTTP server.
//!
//! [`run`] serves the Durable Streams protocol at `/v1/stream/{path}` on a listener until the
//! shutdown future resolves, then drains: it stops accepting, lets in-flight appends commit,
//! ends live streams, and closes the store.

pub mod config;
mod cursor;
mod error;
mod middleware;
mod query;
mod streams;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{AuthMode, ServerConfig};
use tether_store::{SqliteStore, StreamStore};

/// Shared by every handler; cloning it is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Arc<dyn StreamStore>,
    pub config: ServerConfig,
    /// Flips to true when the server starts shutting down; live readers end on it.
    pub shutdown: watch::Receiver<bool>,
    /// SSE frames shared by the live readers of each stream.
    pub frames: streams::FrameShare,
}

impl AppState {
    pub fn new(
        store: Arc<dyn StreamStore>,
        config: ServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        AppState(Arc::new(Shared {
            store,
            config,
            shutdown,
            frames: streams::FrameShare::default(),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    streams::routes(state.config.max_append_bytes)
        .with_state(state)
        .layer(axum::middleware::from_fn(middleware::common_headers))
}

/// How long shutdown waits for live connections before giving up on them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the store the configuration names (the embedded SQLite store in the data dir),
/// applying migrations and recovering from an unclean stop.
pub fn open_store(config: &ServerConfig) -> anyhow::Result<Arc<dyn StreamStore>> {
    Ok(Arc::new(SqliteStore::open(&config.data_dir)?))
}

/// Serves with a given store (tests use this to share one store implementation).
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    store: Arc<dyn StreamStore>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState::new(store.clone(), config, stop_rx);
    let app = router(state);
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving");
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, ending live reads");
        let _ = stop_tx.send(true);
        let _ = drained_tx.send(());
    });
    let server = tokio::spawn(async move { server.await });
    // Wait for the server to finish draining, but not forever.
    let result = match drained_rx.await {
        Ok(()) => match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
            Ok(joined) => joined
                .map_err(anyhow::Error::from)
                .and_then(|r| r.map_err(Into::into)),
            Err(_) => {
                tracing::warn!("connections still open after the drain timeout; closing anyway");
                Ok(())
            }
        },
        Err(_) => server
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(Into::into)),
    };
    store.shutdown().await;
    tracing::info!("stopped");
    result
}
