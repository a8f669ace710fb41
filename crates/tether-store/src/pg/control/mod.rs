//! [`ControlStore`] and [`WorkStore`] on PostgreSQL, for several nodes on one database.
//!
//! Every change is one transaction that first locks the task's row (`SELECT ... FOR UPDATE`),
//! then asks [`crate::execution`] what to do with what it read under that lock, then writes
//! the row and appends the task's events through [`StreamWrites`] in the same transaction.
//! The row lock is the compare-and-set of G5: a duplicate of the same change on another node
//! waits for it, then reads the changed row and is told the earlier result or refused, so
//! each change (and each terminal event) happens once. Worker writes are fenced under the
//! same lock (G6), and admission counts task states inside the claiming transaction (G7; see
//! `work::claim`).
//!
//! Lock order, the same everywhere, so transactions wait for each other instead of
//! deadlocking: the task's row (a claim takes its candidate's with SKIP LOCKED, never
//! waiting), then the owner's `users` row (claims only), then the task's stream row. Should
//! PostgreSQL still abort a transaction as a deadlock or serialisation failure, it is tried
//! again from the start.

mod rows;
mod tasks;
mod users;
mod work;

use crate::error::StorageFailure;
use crate::StoreError;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Transaction};
use tether_core::TaskOp;
use tether_types::{Event, TaskId, TaskState};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use super::streams::tx::StreamWrites;
use super::PgStore;
use crate::control::*;
use crate::model::ProducerStamp;

/// Attempts of a transaction that hit a deadlock or serialisation failure.
const MAX_ATTEMPTS: usize = 4;

/// One transaction of the control plane, with the stream writes that commit with it.
pub(super) struct Tx<'c> {
    tx: Transaction<'c>,
    writes: StreamWrites,
    /// The change may let a waiting claim succeed: announce it on commit.
    work: bool,
}

impl<'c> Tx<'c> {
    async fn begin(client: &'c mut Object) -> Result<Tx<'c>, StoreError> {
        let tx = client.transaction().await?;
        Ok(Tx {
            tx,
            writes: StreamWrites::new(),
            work: false,
        })
    }

    // The statements of the transaction; their errors convert into every operation's error.
    // Statements are prepared once per pooled connection and cached there, which saves a
    // round trip on every later use.

    async fn prepare(&self, sql: &str) -> Result<Statement, StoreError> {
        Ok(self.tx.prepare_cached(sql).await?)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let statement = self.prepare(sql).await?;
        Ok(self.tx.execute(&statement, params).await?)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let statement = self.prepare(sql).await?;
        Ok(self.tx.query(&statement, params).await?)
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StoreError> {
        let statement = self.prepare(sql).await?;
        Ok(self.tx.query_one(&statement, params).await?)
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        let statement = self.prepare(sql).await?;
        Ok(self.tx.query_opt(&statement, params).await?)
    }

    /// Writes the buffered stream rows, commits, and then tells this node's live readers and
    /// waiting claims, and the other nodes, about the new tails and work.
    async fn commit(self, store: &PgStore) -> Result<(), StoreError> {
        let Tx {
            tx,
            mut writes,
            work,
        } = self;
        writes.flush(&tx).await?;
        tx.commit().await?;
        if work {
            // The stream store's listener on every node turns this into its work Notify.
            store.shared().announcer.work();
        }
        writes.published(store);
        Ok(())
    }
}

/// Runs `|t| body` in a transaction `t` ([`Tx`]) on `store`, committing when `body` succeeds
/// and rolling back when it fails; the whole transaction is tried again (up to
/// [`MAX_ATTEMPTS`]) when it failed with a retryable conflict (a deadlock or serialisation
/// failure). `body` is an expression whose future yields `Result<T, E>`, E being an
/// operation's error with a storage case ([`StorageFailure`]).
///
/// A macro rather than a function taking a closure: the body's future borrows the
/// transaction the runner owns, which a closure's return type cannot say on stable Rust
/// without boxing every operation's future.
macro_rules! transaction {
    ($store:expr, |$t:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let again = attempt < MAX_ATTEMPTS;
            let mut client = match store.client().await {
                Ok(client) => client,
                Err(e) => break Err(e.into()),
            };
            let mut $t = match Tx::begin(&mut client).await {
                Ok(t) => t,
                Err(e) if again && e.is_retryable() => continue,
                Err(e) => break Err(e.into()),
            };
            let result = $body.await;
            match result {
                Ok(value) => match $t.commit(store).await {
                    Ok(()) => break Ok(value),
                    Err(e) if again && e.is_retryable() => continue,
                    Err(e) => break Err(e.into()),
                },
                // Dropping the transaction rolls it back.
                Err(e)
                    if again
                        && StorageFailure::storage(&e).is_some_and(StoreError::is_retryable) =>
                {
                    continue
                }
                Err(e) => break Err(e),
            }
        }
    }};
}

#[async_trait]
impl ControlStore for PgStore {
    async fn create_task(
        &self,
        task: NewTask,
        created: Event,
    ) -> Result<CreatedTask, CreateTaskError> {
        transaction!(self, |t| tasks::create(&mut t, &task, &created))
    }

    async fn task(&self, id: &TaskId) -> Result<Option<TaskRecord>, StoreError> {
        let client = self.client().await?;
        rows::task(&**client, id).await
    }

    async fn list_tasks(&self, filter: TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let client = self.client().await?;
        rows::list(&**client, &filter).await
    }

    async fn transition(
        &self,
        id: &TaskId,
        op: TaskOp,
        now: DateTime<Utc>,
    ) -> Result<Transitioned, TransitionFailed> {
        transaction!(self, |t| tasks::transition(&mut t, id, &op, now))
    }

    async fn append_events(
        &self,
        id: &TaskId,
        batch: EventAppend,
    ) -> Result<EventsAppended, AppendEventsError> {
        transaction!(self, |t| tasks::append_events(&mut t, id, &batch))
    }

    async fn count_tasks(&self) -> Result<Vec<(TaskState, u64)>, StoreError> {
        let client = self.client().await?;
        rows::count_by_state(&**client).await
    }

    async fn create_user(&self, name: &str, now: DateTime<Utc>) -> Result<UserRecord, UserError> {
        transaction!(self, |t| users::create_user(&mut t, name, now))
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        users::count(&**client).await
    }

    async fn user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        users::user(&**client, name).await
    }

    async fn set_max_concurrent(&self, name: &str, limit: Option<u64>) -> Result<(), UserError> {
        transaction!(self, |t| users::set_max_concurrent(&mut t, name, limit))
    }

    async fn create_token(&self, token: NewToken) -> Result<(), UserError> {
        transaction!(self, |t| users::create_token(&mut t, &token))
    }

    async fn revoke_token(&self, id: &str, now: DateTime<Utc>) -> Result<(), UserError> {
        transaction!(self, |t| users::revoke_token(&mut t, id, now))
    }

    async fn principal(&self, hash: &[u8]) -> Result<Option<Principal>, StoreError> {
        let client = self.client().await?;
        users::principal(&**client, hash).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let client = self.client().await?;
        users::list_users(&**client).await
    }

    async fn list_tokens(&self, user: Option<UserId>) -> Result<Vec<TokenRecord>, StoreError> {
        let client = self.client().await?;
        users::list_tokens(&**client, user).await
    }

    async fn record_token_use(&self, used: Vec<(String, DateTime<Utc>)>) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        users::record_token_use(&**client, &used).await
    }

    async fn create_login_code(&self, code: NewSecret) -> Result<(), UserError> {
        transaction!(self, |t| users::create_secret(&mut t, "login_codes", &code))
    }

    async fn take_login_code(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        users::take_login_code(&**client, hash, now).await
    }

    async fn create_session(&self, session: NewSecret) -> Result<(), UserError> {
        transaction!(self, |t| users::create_secret(&mut t, "sessions", &session))
    }

    async fn session(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<Principal>, StoreError> {
        let client = self.client().await?;
        users::session(&**client, hash, now).await
    }

    async fn delete_session(&self, hash: &[u8]) -> Result<(), StoreError> {
        let client = self.client().await?;
        users::delete_session(&**client, hash).await
    }
}

#[async_trait]
impl WorkStore for PgStore {
    async fn claim(&self, claim: Claim) -> Result<Option<Claimed>, WorkError> {
        transaction!(self, |t| work::claim(&mut t, &claim))
    }

    async fn heartbeat(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Beat, WorkError> {
        transaction!(self, |t| work::heartbeat(&mut t, id, lease, now, ttl))
    }

    async fn begin_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        now: DateTime<Utc>,
    ) -> Result<StepStart, WorkError> {
        transaction!(self, |t| work::begin_step(&mut t, id, lease, step, now))
    }

    async fn complete_step(
        &self,
        id: &TaskId,
        lease: &str,
        step: &str,
        epoch: u32,
        checkpoint: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError> {
        transaction!(self, |t| work::complete_step(
            &mut t,
            id,
            lease,
            step,
            epoch,
            &checkpoint,
            now
        ))
    }

    async fn worker_events(
        &self,
        id: &TaskId,
        lease: &str,
        events: Vec<Event>,
        producer: Option<ProducerStamp>,
        now: DateTime<Utc>,
    ) -> Result<EventsAppended, WorkError> {
        transaction!(self, |t| work::worker_events(
            &mut t,
            id,
            lease,
            events.clone(),
            producer.clone(),
            now
        ))
    }

    async fn finish(
        &self,
        id: &TaskId,
        lease: &str,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Finished, WorkError> {
        transaction!(self, |t| work::finish(
            &mut t,
            id,
            lease,
            outcome.clone(),
            now
        ))
    }

    async fn release(
        &self,
        id: &TaskId,
        lease: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, WorkError> {
        transaction!(self, |t| work::release(&mut t, id, lease, now))
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<Vec<Expired>, StoreError> {
        let candidates = {
            let client = self.client().await?;
            work::expired(&**client, now).await?
        };
        // One transaction per task: each is checked again under its row lock, so nodes
        // expiring at once each change a task at most once between them.
        let mut out = Vec::new();
        for id in candidates {
            let expired: Result<_, WorkError> =
                transaction!(self, |t| work::expire(&mut t, &id, now));
            let expired = expired.map_err(|e| match e {
                WorkError::Storage(e) => e,
                other => StoreError::corrupt(format!("expiring task {id}: {other}")),
            })?;
            if let Some(state) = expired {
                out.push(Expired { task: id, state });
            }
        }
        Ok(out)
    }

    async fn create_nudge(
        &self,
        id: &TaskId,
        nudge: NewNudge<'_>,
        now: DateTime<Utc>,
        per_minute: u32,
    ) -> Result<(), NudgeError> {
        transaction!(self, |t| work::create_nudge(
            &mut t, id, nudge, now, per_minute
        ))
    }

    async fn ack_nudge(
        &self,
        id: &TaskId,
        lease: &str,
        nudge_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WorkError> {
        transaction!(self, |t| work::ack_nudge(&mut t, id, lease, nudge_id, now))
    }

    async fn running_by_owner(
        &self,
        owner: Option<UserId>,
    ) -> Result<Vec<(UserId, u64)>, StoreError> {
        let client = self.client().await?;
        work::running_by_owner(&**client, owner).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::sync::Barrier;

    use super::*;
    use crate::pg::scratch::ScratchDatabase;
    use crate::PgOptions;

    /// Two transactions that lock two rows in opposite orders deadlock; PostgreSQL aborts
    /// one of them, and the runner tries that one again, so both succeed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_aborted_by_a_deadlock_is_tried_again() {
        let Some(db) = ScratchDatabase::create("deadlock retry").await else {
            return;
        };
        let store = Arc::new(
            PgStore::connect(db.url(), PgOptions::default())
                .await
                .unwrap(),
        );
        let a = store.create_user("a", Utc::now()).await.unwrap().id;
        let b = store.create_user("b", Utc::now()).await.unwrap().id;
        let barrier = Arc::new(Barrier::new(2));
        let attempts = Arc::new(AtomicUsize::new(0));
        let run = |first: UserId, second: UserId| {
            let (store, barrier, attempts) = (store.clone(), barrier.clone(), attempts.clone());
            tokio::spawn(async move {
                let store: &PgStore = &store;
                let done: Result<(), UserError> = transaction!(store, |t| async {
                    let t = &mut t;
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                    let lock = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE";
                    t.execute(lock, &[&first]).await?;
                    // Both first attempts hold their first row before either takes its
                    // second: a deadlock for certain.
                    if attempt < 2 {
                        barrier.wait().await;
                    }
                    t.execute(lock, &[&second]).await?;
                    Ok(())
                });
                done
            })
        };
        let (one, two) = (run(a, b), run(b, a));
        assert_eq!(one.await.unwrap(), Ok(()));
        assert_eq!(two.await.unwrap(), Ok(()));
        // At least one retry. Usually exactly one, but PostgreSQL's row locks are not a fair
        // queue: when the victim rolls back, its retry may take its first row again before
        // the survivor, woken, takes it, and the two deadlock once more; the runner then
        // retries again, which is right, so a fourth attempt is no failure.
        let attempts = attempts.load(Ordering::SeqCst);
        assert!(
            attempts >= 3,
            "both succeeded, so the aborted one must have been tried again: {attempts} attempts"
        );
    }
}
