//! The backends the control-plane suites (`control.rs`, `work.rs`) run on.
//!
//! A case is a function generic over [`Backend`]; each suite's macro turns every case into
//! one `#[tokio::test]` per backend. SQLite always runs; PostgreSQL runs on a scratch
//! database when `TETHER_TEST_DATABASE_URL` is set and says that it skipped otherwise.

#![allow(dead_code, unused_macros)]

use std::sync::Arc;

use tether_store::*;
use tether_types::{Event, ReadFrom, TaskId};

/// One `#[tokio::test]` per case for `$backend`: each runs the generic function of the same
/// name at the crate's root on a fresh backend, or returns when the backend cannot run here.
macro_rules! backend_cases {
    ($backend:ty; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use crate::backends::Backend;
                let Some(backend) = <$backend>::create(stringify!($case)).await else {
                    return;
                };
                crate::$case(&backend).await;
            }
        )+
    };
}

/// One backend under test: a place where stores keep their data.
pub trait Backend: Sized + Send + Sync + 'static {
    type Store: ControlStore + WorkStore + StreamStore;

    /// A fresh, empty backend, or `None` (after saying so) when it cannot run here.
    async fn create(what: &str) -> Option<Self>;

    /// Opens a store over this backend's storage.
    async fn open(&self) -> Arc<Self::Store>;

    /// Another node on the same storage as `first`, where the backend has nodes; else
    /// `first` itself (one process owns a SQLite database).
    async fn another_node(&self, first: &Arc<Self::Store>) -> Arc<Self::Store> {
        first.clone()
    }
}

/// Every event of a task's stream, parsed, and whether the stream is closed.
pub async fn events(store: &impl StreamStore, id: &TaskId) -> (Vec<Event>, bool) {
    let chunk = store
        .read(&id.stream_path(), ReadFrom::Start, usize::MAX)
        .await
        .expect("read the task's stream");
    let mut body = b"[".to_vec();
    body.extend_from_slice(&chunk.records.join(&b","[..]));
    body.push(b']');
    (
        serde_json::from_slice(&body).expect("task events are JSON"),
        chunk.info.closed,
    )
}

/// The embedded store in a temporary data dir.
pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn create(_what: &str) -> Option<Self> {
        Some(Sqlite {
            dir: tempfile::tempdir().expect("a temporary data dir"),
        })
    }

    async fn open(&self) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(self.dir.path()).expect("open the SQLite store"))
    }
}

/// PostgreSQL on a scratch database of its own; every `open` is another node on it.
pub struct Postgres {
    db: tether_store::pg::scratch::ScratchDatabase,
}

impl Backend for Postgres {
    type Store = PgStore;

    async fn create(what: &str) -> Option<Self> {
        tether_store::pg::scratch::ScratchDatabase::create(what)
            .await
            .map(|db| Postgres { db })
    }

    async fn open(&self) -> Arc<PgStore> {
        Arc::new(
            PgStore::connect(self.db.url(), PgOptions::default())
                .await
                .expect("connect to the scratch database"),
        )
    }

    async fn another_node(&self, _first: &Arc<PgStore>) -> Arc<PgStore> {
        self.open().await
    }
}
