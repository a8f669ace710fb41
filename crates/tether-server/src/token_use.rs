//! When each token was last used, without a database write per request.
//!
//! Every request authenticates, the append path included, so the time is noted in memory
//! and a job stores what was noted about once a minute, in one write for all tokens, and once
//! more at shutdown. `GET /v1/tokens` merges the noted times over the stored ones.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::Rng;
use tokio::task::JoinHandle;

use crate::shutdown::stopped;
use crate::AppState;

/// How often noted times are stored.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(60);
const JOB: &str = "token-use";

/// Last-use times noted since the last flush, by token id.
#[derive(Default)]
pub struct TokenUse {
    noted: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl TokenUse {
    /// A map update under a short lock; the key is copied only the first time a token is
    /// seen between flushes.
    pub fn note(&self, token_id: &str, now: DateTime<Utc>) {
        let mut noted = self.noted.lock();
        match noted.get_mut(token_id) {
            Some(at) => *at = now,
            None => {
                noted.insert(token_id.to_string(), now);
            }
        }
    }

    /// The noted time of a token not stored yet.
    pub fn pending(&self, token_id: &str) -> Option<DateTime<Utc>> {
        self.noted.lock().get(token_id).copied()
    }

    fn take(&self) -> Vec<(String, DateTime<Utc>)> {
        std::mem::take(&mut *self.noted.lock())
            .into_iter()
            .collect()
    }

    /// Stores the noted times; on failure they are noted again for the next flush.
    pub async fn flush(&self, control: &dyn tether_store::ControlStore) {
        let used = self.take();
        if used.is_empty() {
            return;
        }
        let count = used.len();
        if let Err(error) = control.record_token_use(used.clone()).await {
            tracing::warn!(job = JOB, %error, "could not store when tokens were last used");
            let mut noted = self.noted.lock();
            for (id, at) in used {
                let entry = noted.entry(id).or_insert(at);
                *entry = (*entry).max(at);
            }
            return;
        }
        tracing::debug!(
            job = JOB,
            tokens = count,
            "stored when tokens were last used"
        );
    }
}

/// Flushes every [`FLUSH_INTERVAL`] (with jitter) until shutdown, then once more.
pub fn spawn_flusher(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        loop {
            let jitter = rand::thread_rng().gen_range(0..=FLUSH_INTERVAL.as_millis() as u64 / 10);
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL + Duration::from_millis(jitter)) => {}
                _ = stopped(&mut shutdown) => break,
            }
            state.token_use.flush(state.control.as_ref()).await;
        }
        state.token_use.flush(state.control.as_ref()).await;
        tracing::debug!(job = JOB, "stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_used_many_times_between_flushes_is_stored_once_with_its_latest_time() {
        let uses = TokenUse::default();
        let at = |ms| DateTime::from_timestamp_millis(ms).unwrap();
        for ms in 1..=1000 {
            uses.note("t1", at(ms));
        }
        uses.note("t2", at(7));
        assert_eq!(uses.pending("t1"), Some(at(1000)));
        let mut taken = uses.take();
        taken.sort();
        assert_eq!(
            taken,
            [("t1".to_string(), at(1000)), ("t2".to_string(), at(7))]
        );
        assert!(uses.take().is_empty());
    }

    #[tokio::test]
    async fn a_flush_stores_the_noted_times_and_leaves_nothing_pending() {
        use tether_store::{ControlStore, NewToken, SqliteStore, StreamStore};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let now = Utc::now();
        store.create_user("ann", now).await.unwrap();
        store
            .create_token(NewToken {
                id: "t1".into(),
                user: "ann".into(),
                role: tether_types::Role::User,
                hash: b"h1".to_vec(),
                now,
            })
            .await
            .unwrap();
        let uses = TokenUse::default();
        let at = DateTime::from_timestamp_millis(now.timestamp_millis() + 5_000).unwrap();
        uses.note("t1", at);
        let stored = store.list_tokens(None).await.unwrap()[0].last_used_at;
        assert_eq!(stored, None, "nothing is written when a use is noted");
        uses.flush(&store).await;
        let stored = store.list_tokens(None).await.unwrap()[0].last_used_at;
        assert_eq!(stored, Some(at));
        assert_eq!(uses.pending("t1"), None);
        store.shutdown().await;
    }
}
