//! Creating a stream or fork (protocol 4.2, 5.1), written once for both backends.
//!
//! The procedure (look at what holds the path, resolve the fork source, compare with an
//! identical stream, insert) is the same on SQLite and PostgreSQL, step for step; what
//! differs is how each backend finds and locks a stream, what it keeps in memory of it, and
//! how it writes the row. [`CreateTx`] is that difference: a small set of steps inside the
//! backend's transaction (the SQLite writer's batch, a PostgreSQL transaction), each
//! implemented per backend; [`create`] is the procedure over them.
//!
//! The steps are `async` because PostgreSQL's are. SQLite's never wait: the writer thread
//! runs the procedure with [`run_ready`], with no runtime and no cost beyond a poll.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::body::{stored_body, StoredBody};
use crate::lifecycle::{self, Shape};
use crate::model::*;
use crate::StoreError;
use tether_types::Offset;

/// A new stream's row, as the procedure decided it.
pub(crate) struct NewStream<S> {
    pub config: StreamConfig,
    /// The fork source, the fork point and the resolved fork request.
    pub fork: Option<(S, u64, ForkFrom)>,
    /// Where the stream starts: the fork point, or 0.
    pub start: u64,
    pub body: Option<StoredBody>,
    pub closed: bool,
    pub owner: Option<i64>,
}

/// The steps of a create inside one backend transaction. `Stream` is the backend's view of
/// a stream it found (a catalog entry, a locked row).
// Only this crate implements and calls it, so the futures' auto traits need no bounds.
#[allow(async_fn_in_trait)]
pub(crate) trait CreateTx {
    type Stream;

    /// The stream at `path` in any state (locked until the transaction ends, where the
    /// backend locks).
    async fn find(&mut self, path: &str) -> Result<Option<Self::Stream>, StoreError>;

    fn owner(&self, stream: &Self::Stream) -> Option<i64>;

    /// The stream's configuration, and its resolved fork request if it is a fork.
    fn shape<'s>(&self, stream: &'s Self::Stream) -> (&'s StreamConfig, Option<&'s ForkFrom>);

    fn info(&self, stream: &Self::Stream) -> StreamInfo;

    fn expired(&self, stream: &Self::Stream) -> bool;

    /// Deleted, but kept (soft-deleted) while forks read from it.
    async fn is_deleted(&mut self, stream: &Self::Stream) -> Result<bool, StoreError>;

    /// Removes a stream whose time is up. Returns whether it still holds its path
    /// (soft-deleted, because forks read from it).
    async fn remove_expired(&mut self, stream: &Self::Stream) -> Result<bool, StoreError>;

    /// The stream's tail and closure as of this point in the transaction; `None` when its
    /// row is gone.
    async fn current(&mut self, stream: &Self::Stream) -> Result<Option<(u64, bool)>, StoreError>;

    /// The end of the append that starts at `pos` in the stream's view, clipped to `limit`;
    /// `None` if no append starts there.
    async fn boundary(
        &mut self,
        stream: &Self::Stream,
        pos: u64,
        limit: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// Inserts the stream's row (and its initial body, and the source's fork count). `None`
    /// when another transaction took the path meanwhile: the procedure looks again.
    async fn insert(
        &mut self,
        path: &str,
        stream: NewStream<Self::Stream>,
    ) -> Result<Option<StreamInfo>, StoreError>;
}

/// How many times a create looks again after losing the path to a concurrent create.
const ROUNDS: usize = 3;

/// Creates a stream or fork, or confirms that an identical one exists (idempotent PUT).
pub(crate) async fn create<T: CreateTx>(
    t: &mut T,
    path: &str,
    request: &CreateStream,
) -> Result<Created, CreateError> {
    // Two nodes creating the same path at once: the loser's insert finds the winner's
    // committed row, and the next round compares against it.
    for _ in 0..ROUNDS {
        if let Some(created) = attempt(t, path, request).await? {
            return Ok(created);
        }
    }
    Err(StoreError::unavailable("the stream at this path kept changing while being created").into())
}

async fn attempt<T: CreateTx>(
    t: &mut T,
    path: &str,
    request: &CreateStream,
) -> Result<Option<Created>, CreateError> {
    let mut existing = t.find(path).await?;
    if let Some(e) = &existing {
        // A stream the request may not see holds the path, whatever its state.
        let blocked = if request.access.sees(t.owner(e)) {
            CreateError::PathBlocked
        } else {
            CreateError::PathTaken
        };
        if t.is_deleted(e).await? {
            return Err(blocked);
        }
        if t.expired(e) {
            if t.remove_expired(e).await? {
                // Soft-deleted: forks still read from it, so the path stays taken.
                return Err(blocked);
            }
            existing = None;
        } else if !request.access.sees(t.owner(e)) {
            return Err(CreateError::PathTaken);
        }
    }

    // Resolve the fork source first: its content type is the default for the fork.
    let source = match &request.fork {
        Some(fork) => {
            let src = t.find(&fork.source).await?;
            let Some(src) = src.filter(|s| request.source_access.sees(t.owner(s))) else {
                return Err(CreateError::SourceNotFound);
            };
            if t.is_deleted(&src).await? {
                return Err(CreateError::SourceGone);
            }
            if t.expired(&src) {
                t.remove_expired(&src).await?;
                return Err(CreateError::SourceNotFound);
            }
            Some(src)
        }
        None => None,
    };
    let config = lifecycle::stream_config(request, source.as_ref().map(|s| t.shape(s).0))?;
    let fork = match (&request.fork, source) {
        (Some(spec), Some(src)) => {
            let (src_tail, _) = t.current(&src).await?.ok_or(CreateError::SourceNotFound)?;
            let anchor = lifecycle::fork_anchor(spec, src_tail)?;
            let boundary = if lifecycle::needs_boundary(spec) {
                t.boundary(&src, anchor, src_tail).await?
            } else {
                None
            };
            let (point, spec) = lifecycle::fork_point(spec, anchor, boundary)?;
            Some((src, point, spec))
        }
        _ => None,
    };

    if let Some(existing) = existing {
        let (tail, closed) = t
            .current(&existing)
            .await?
            .ok_or_else(|| StoreError::corrupt("stream row vanished"))?;
        let (existing_config, existing_fork) = t.shape(&existing);
        let same = lifecycle::same_stream(
            &Shape {
                config: existing_config,
                closed,
                fork: existing_fork,
            },
            &Shape {
                config: &config,
                closed: request.closed,
                fork: fork.as_ref().map(|(_, _, spec)| spec),
            },
        );
        if !same {
            return Err(CreateError::ConfigMismatch);
        }
        return Ok(Some(Created {
            created: false,
            info: StreamInfo {
                next: Offset(tail),
                closed,
                ..t.info(&existing)
            },
        }));
    }

    let json = tether_types::headers::is_json(&config.content_type);
    let body = stored_body(json, &request.body, true)
        .map_err(|e| CreateError::InvalidBody(e.to_string()))?;
    let start = fork.as_ref().map_or(0, |(_, point, _)| *point);
    let new = NewStream {
        config,
        fork,
        start,
        body,
        closed: request.closed,
        owner: request.owner,
    };
    let info = t.insert(path, new).await?;
    Ok(info.map(|info| Created {
        created: true,
        info,
    }))
}

/// Runs a future that never waits to its end, on the calling thread: SQLite's steps are
/// synchronous calls in `async` clothing.
///
/// # Panics
///
/// If the future waits: a step that does cannot run on the SQLite writer thread.
pub(crate) fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a synchronous backend's step waited"),
    }
}
