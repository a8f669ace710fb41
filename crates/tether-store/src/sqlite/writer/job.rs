//! Jobs: work from outside the stream protocol (the control plane's task, user and token
//! changes) run on the writer thread, inside a group-commit batch, so a task's row and the
//! events of its stream commit in one transaction (G5).
//!
//! A job must decide everything it can refuse before it writes: a refusal after a write
//! would leave that write in the shared transaction. Only storage failures may come after,
//! and they roll the whole batch back.

use std::sync::Arc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::{PreparedAppend, Writer};
use crate::model::*;
use crate::sqlite::entry::Entry;
use crate::StoreError;

/// An error a job can end with; storage failures doom the batch.
pub(crate) trait JobError: From<StoreError> + Send + 'static {
    fn is_storage(&self) -> bool;
}

/// A job's answer, held until the batch's fate is known.
pub(crate) trait Answer: Send {
    fn send(self: Box<Self>);
    fn fail(self: Box<Self>, e: &StoreError);
    fn storage_failed(&self) -> bool;
}

/// A job waiting in the writer's queue.
pub(crate) trait Runnable: Send {
    fn run(self: Box<Self>, writer: &mut Writer) -> Box<dyn Answer>;
    /// Answers with a storage failure without running (the batch could not begin).
    fn abandon(self: Box<Self>, e: &StoreError);
}

pub(crate) type Job = Box<dyn Runnable>;

struct Pending<T, E> {
    tx: oneshot::Sender<Result<T, E>>,
    result: Result<T, E>,
}

impl<T: Send + 'static, E: JobError> Answer for Pending<T, E> {
    fn send(self: Box<Self>) {
        let _ = self.tx.send(self.result);
    }

    fn fail(self: Box<Self>, e: &StoreError) {
        let _ = self.tx.send(Err(E::from(e.clone())));
    }

    fn storage_failed(&self) -> bool {
        self.result.as_ref().err().is_some_and(JobError::is_storage)
    }
}

struct Queued<T, E, F> {
    tx: oneshot::Sender<Result<T, E>>,
    f: F,
}

impl<T, E, F> Runnable for Queued<T, E, F>
where
    T: Send + 'static,
    E: JobError,
    F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
{
    fn run(self: Box<Self>, writer: &mut Writer) -> Box<dyn Answer> {
        let result = (self.f)(writer);
        Box::new(Pending {
            tx: self.tx,
            result,
        })
    }

    fn abandon(self: Box<Self>, e: &StoreError) {
        let _ = self.tx.send(Err(E::from(e.clone())));
    }
}

/// Packs `f` as a job whose result arrives on the returned channel after the commit.
pub(crate) fn job<T, E, F>(f: F) -> (Job, oneshot::Receiver<Result<T, E>>)
where
    T: Send + 'static,
    E: JobError,
    F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    (Box::new(Queued { tx, f }), rx)
}

/// What a job may do with the writer.
impl Writer {
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn stream(&mut self, path: &str) -> rusqlite::Result<Option<Arc<Entry>>> {
        self.find(path)
    }

    pub(crate) fn create_stream(
        &mut self,
        path: &str,
        request: CreateStream,
    ) -> Result<Created, CreateError> {
        self.create(path, request)
    }

    pub(crate) fn append_to(
        &mut self,
        entry: &Arc<Entry>,
        append: PreparedAppend,
    ) -> Result<Appended, AppendError> {
        self.append(entry, append)
    }
}
