//! Reading a task's events from its stream, and the per-task view kept beside it: the
//! status projection and the rewinds seen so far, advanced incrementally from the log.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tether_core::status::Applied;
use tether_core::{project, Projector, Rewinds};
use tether_store::{LookupError, StoreError, StreamStore};
use tether_types::{Event, EventAt, Offset, ReadFrom, TaskId, TaskStatus};

use crate::error::ApiError;

/// Events read from one stretch of a task's stream.
pub struct Read {
    pub events: Vec<EventAt>,
    /// The position after the last event read.
    pub next: Offset,
    /// The tail when the read began.
    pub tail: Offset,
    pub closed: bool,
}

impl Read {
    pub fn at_end(&self) -> bool {
        self.next >= self.tail
    }
}

/// Parses stored records (messages joined by commas) starting at position `from`, until `out`
/// holds `room` events: a read returns up to `max_bytes` of records, and parsing all of them
/// for a page of a few hundred events made folding a 100,000-event log quadratic (30 s).
fn parse(
    records: &[Bytes],
    from: u64,
    room: usize,
    out: &mut Vec<EventAt>,
) -> Result<(), ApiError> {
    let mut pos = from;
    for record in records {
        if out.len() >= room {
            break;
        }
        let mut body = Vec::with_capacity(record.len() + 2);
        body.push(b'[');
        body.extend_from_slice(record);
        body.push(b']');
        let events: Vec<Event> = serde_json::from_slice(&body).map_err(|e| {
            ApiError::from(StoreError::corrupt_by(
                "a stored event of this task is not readable",
                e,
            ))
        })?;
        for event in events {
            pos += 1;
            out.push(EventAt {
                offset: Offset(pos),
                event,
            });
        }
    }
    Ok(())
}

/// Reads up to `limit` events after `after`, and at most up to `until` when given.
pub async fn read(
    store: &dyn StreamStore,
    id: &TaskId,
    after: Offset,
    limit: usize,
    until: Option<Offset>,
    max_bytes: usize,
) -> Result<Read, ApiError> {
    let path = id.stream_path();
    let mut events = Vec::new();
    let mut pos = after;
    let mut first = true;
    let mut tail = after;
    let mut closed = false;
    loop {
        let chunk = store
            .read(&path, ReadFrom::At(pos), max_bytes)
            .await
            .map_err(|e| match e {
                LookupError::OffsetBeyondTail => ApiError::bad_request(format!(
                    "offset {after} is past the end of this task's events"
                )),
                other => ApiError::from(other),
            })?;
        if first {
            tail = until.map_or(chunk.info.next, |u| u.min(chunk.info.next));
            closed = chunk.info.closed;
            first = false;
        }
        let before = events.len();
        parse(&chunk.records, chunk.from.0, limit, &mut events)?;
        let read_any = events.len() > before;
        events.retain(|e| e.offset <= tail);
        if let Some(last) = events.last() {
            pos = last.offset;
        }
        if events.len() >= limit || !read_any || pos >= tail || chunk.up_to_date {
            break;
        }
    }
    events.truncate(limit);
    let next = events.last().map_or(after, |e| e.offset);
    Ok(Read {
        events,
        next,
        tail,
        closed,
    })
}

/// The status projection and rewinds of one task, as far as `status.offset`.
#[derive(Default)]
struct View {
    projector: Projector,
    rewinds: Rewinds,
}

/// Per-task views, advanced on demand. Derived from the log only, so losing one (eviction,
/// restart, another node) costs a re-read, never correctness.
#[derive(Default)]
pub struct Views {
    views: parking_lot::Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<View>>>>,
}

/// Views kept before the cache starts over.
const MAX_VIEWS: usize = 10_000;
/// Events read per step while catching a view up.
const CATCH_UP_BATCH: usize = 1000;

/// What a caller gets from a view: the snapshot and the rewinds it was derived with.
pub struct Snapshot {
    pub status: TaskStatus,
    pub rewinds: Rewinds,
}

impl Views {
    fn slot(&self, id: &TaskId) -> Arc<tokio::sync::Mutex<View>> {
        let mut views = self.views.lock();
        if views.len() >= MAX_VIEWS && !views.contains_key(id) {
            views.clear();
        }
        views.entry(id.clone()).or_default().clone()
    }

    /// The view brought up to the stream's current tail.
    pub async fn current(
        &self,
        store: &dyn StreamStore,
        id: &TaskId,
        max_bytes: usize,
    ) -> Result<Snapshot, ApiError> {
        let slot = self.slot(id);
        let mut view = slot.lock().await;
        loop {
            let from = view.projector.status().offset;
            let read = read(store, id, from, CATCH_UP_BATCH, None, max_bytes).await?;
            let mut rebuild = false;
            for e in &read.events {
                view.rewinds.note(e.offset, &e.event);
                if view.projector.apply(e.offset, &e.event) == Applied::NeedsRebuild {
                    rebuild = true;
                }
            }
            if rebuild {
                *view = rebuilt(store, id, read.next, max_bytes).await?;
            }
            if read.at_end() || read.events.is_empty() {
                break;
            }
        }
        Ok(Snapshot {
            status: view.projector.status().clone(),
            rewinds: view.rewinds.clone(),
        })
    }

    /// Recomputes the snapshot from the whole log, replaces the cached view with it, and
    /// says whether the incremental one agreed.
    pub async fn rebuild(
        &self,
        store: &dyn StreamStore,
        id: &TaskId,
        max_bytes: usize,
    ) -> Result<(TaskStatus, bool), ApiError> {
        let incremental = self.current(store, id, max_bytes).await?.status;
        let slot = self.slot(id);
        let mut view = slot.lock().await;
        let fresh = rebuilt(store, id, incremental.offset, max_bytes).await?;
        let status = fresh.projector.status().clone();
        let unchanged = status == incremental;
        *view = fresh;
        Ok((status, unchanged))
    }
}

/// A view folded from the start of the log up to `until`.
async fn rebuilt(
    store: &dyn StreamStore,
    id: &TaskId,
    until: Offset,
    max_bytes: usize,
) -> Result<View, ApiError> {
    let mut all = Vec::new();
    let mut pos = Offset(0);
    while pos < until {
        let read = read(store, id, pos, CATCH_UP_BATCH, Some(until), max_bytes).await?;
        if read.events.is_empty() {
            break;
        }
        pos = read.next;
        all.extend(read.events);
    }
    let rewinds = Rewinds::from_events(all.iter().map(|e| (e.offset, &e.event)));
    let status = project(all.into_iter().map(|e| (e.offset, e.event)));
    let mut projector = Projector::default();
    projector.replace(status);
    Ok(View { projector, rewinds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_stops_once_the_page_is_full() {
        let records = [
            Bytes::from(r#"{"type":"a","ts":"t"},{"type":"b","ts":"t"}"#),
            Bytes::from(r#"{"type":"c","ts":"t"}"#),
            // Never reached: a page of two is full before it.
            Bytes::from("not an event"),
        ];
        let mut out = Vec::new();
        parse(&records, 4, 2, &mut out).unwrap();
        let got: Vec<(u64, &str)> = out
            .iter()
            .map(|e| (e.offset.0, e.event.kind.as_str()))
            .collect();
        assert_eq!(got, [(5, "a"), (6, "b")]);
        // With room for more, the next record follows with its offsets.
        parse(&records[1..2], 6, 10, &mut out).unwrap();
        assert_eq!(out.last().map(|e| e.offset.0), Some(7));
    }
}
