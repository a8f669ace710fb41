//! The PostgreSQL store: the same traits as the embedded SQLite store, for several `tether
//! serve` nodes sharing one database.
//!
//! Every node is stateless: what must be decided once (a stream's next offset, a task's state
//! change, a claim) is decided under a row lock in one transaction, so two nodes can never
//! both decide it. What a node keeps in memory is only a cache of what the database says.

mod control;
mod coord;
mod error;
mod schema;
pub mod scratch;
mod streams;

pub use streams::LISTENER_APPLICATION_NAME;

use crate::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Settings of the connection to the database.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections this node keeps open at most.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PgOpenError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
    #[error(
        "the database's schema is at version {found}, newer than this tether knows ({known}): \
         upgrade tether"
    )]
    TooNew { found: usize, known: usize },
}

/// A pool's error with the server's own words: deadpool shows a refused connection only as
/// "db error", which hides "database \"x\" does not exist" or a failed password.
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => error::describe(e),
        other => other.to_string(),
    }
}

pub struct PgStore {
    pool: Pool,
    /// Where the pool connects; live tail notifications need a connection of their own.
    config: tokio_postgres::Config,
    streams: streams::Streams,
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and applies the
    /// migrations the database has not seen.
    pub async fn connect(url: &str, options: PgOptions) -> Result<Self, PgOpenError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| PgOpenError::Url(e.to_string()))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .build()
            .map_err(|e| PgOpenError::Connect(e.to_string()))?;
        let mut client = pool
            .get()
            .await
            .map_err(|e| PgOpenError::Connect(pool_error(&e)))?;
        let found = schema::migrate(&mut client)
            .await
            .map_err(|e| PgOpenError::Migrate(error::describe(&e)))?;
        if found > schema::latest() {
            return Err(PgOpenError::TooNew {
                found,
                known: schema::latest(),
            });
        }
        drop(client);
        let streams = streams::Streams::start(&pool, &config, &options);
        Ok(PgStore {
            pool,
            config,
            streams,
        })
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// The connection settings, for connections outside the pool.
    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

/// Whether `url` names a PostgreSQL database (rather than, say, a typo of a path).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
