//! Coordination between nodes: singleton jobs under session advisory locks, and remote work
//! notifications from the LISTEN/NOTIFY bridge.
//!
//! A session lock belongs to a connection. The leader keeps a connection of its own, outside
//! the pool, for as long as it leads; if the node dies or loses the database, the connection
//! ends and PostgreSQL releases the lock, so another node's next attempt takes the job over.

use crate::StoreError;
use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use super::PgStore;
use crate::coord::{Coordinator, Held, Leadership};

/// The first key of every job lock (the second is the hash of the job's name), so Tether's
/// locks cannot collide with an application's own advisory locks on a shared database.
const JOB_LOCKS: i32 = 0x7465_7468;

/// A held advisory lock, on its own connection.
struct AdvisoryLock {
    client: Client,
    connection: JoinHandle<()>,
}

impl Held for AdvisoryLock {
    fn is_lost(&self) -> bool {
        self.connection.is_finished() || self.client.is_closed()
    }
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        // Closing the connection releases the lock.
        self.connection.abort();
    }
}

#[async_trait]
impl Coordinator for PgStore {
    async fn try_lead(&self, job: &str) -> Result<Option<Leadership>, StoreError> {
        let mut config = self.config().clone();
        config.application_name(format!("tether job {job}"));
        let (client, connection) = config.connect(NoTls).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        let won: Result<bool, _> = client
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&JOB_LOCKS, &job],
            )
            .await
            .and_then(|row| row.try_get(0));
        match won {
            Ok(true) => Ok(Some(Box::new(AdvisoryLock { client, connection }))),
            Ok(false) => {
                connection.abort();
                Ok(None)
            }
            Err(e) => {
                connection.abort();
                Err(e.into())
            }
        }
    }

    fn remote_work(&self) -> Option<&Notify> {
        Some(self.work_notify())
    }
}
