//! Appends and closes, checked by the protocol's rules against the writer's state.

use std::sync::Arc;

use rusqlite::params;

use super::{storage, Effect, PreparedAppend, Writer};
use crate::model::*;
use crate::rules::{check_append, AppendCheck, Verdict};
use crate::sqlite::entry::Entry;
use tether_types::Offset;

impl Writer {
    // ---- append --------------------------------------------------------------------------

    pub(super) fn append(
        &mut self,
        entry: &Arc<Entry>,
        prepared: PreparedAppend,
    ) -> Result<Appended, AppendError> {
        let PreparedAppend { request, body } = prepared;
        let Some(state) = self.state(entry.id).map_err(storage::<AppendError>)? else {
            return Err(AppendError::NotFound);
        };
        if state.soft_deleted {
            return Err(AppendError::Gone);
        }
        let check = AppendCheck {
            content_type: &entry.config.content_type,
            tail: state.tail,
            closed: state.closed,
            closed_by: state.closed_by.as_ref(),
            last_stream_seq: state.last_stream_seq.as_deref(),
            producer: request
                .producer
                .as_ref()
                .and_then(|p| state.producers.get(&p.id).copied()),
        };
        match check_append(&check, &request, body.as_ref().map(|_| ()))? {
            Verdict::Answer(answer) => return Ok(answer),
            Verdict::Write => {}
        }
        let body = body?;

        // Accepted: write.
        let first = state.tail;
        let new_tail = match &body {
            Some(body) => self
                .insert_chunk(entry, first, body)
                .map_err(storage::<AppendError>)?,
            None => first,
        };
        let state = self.states.get_mut(&entry.id).expect("state loaded above");
        // The tail itself is not written back: it is the end of the last record, recovered
        // from the records at load. Only rarer state changes rewrite the stream's row.
        state.tail = new_tail;
        if let Some(seq) = request.stream_seq {
            state.last_stream_seq = Some(seq);
            state.dirty = true;
        }
        let producer = request.producer.as_ref().map(|p| (p.epoch, p.seq));
        if let Some(p) = &request.producer {
            state.producers.insert(p.id.clone(), (p.epoch, p.seq));
            if request.close {
                state.closed_by = Some(p.clone());
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO producers (stream_id, producer_id, epoch, last_seq) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = ?3, last_seq = ?4",
                )
                .and_then(|mut s| s.execute(params![entry.id, p.id, p.epoch as i64, p.seq as i64]))
                .map_err(storage::<AppendError>)?;
        }
        let state = self.states.get_mut(&entry.id).expect("state loaded above");
        if request.close {
            state.closed = true;
            state.dirty = true;
        }
        let closed = state.closed;
        self.effects.push(Effect::Publish(entry.clone()));
        Ok(Appended {
            status: AppendStatus::Appended,
            next: Offset(new_tail),
            closed,
            producer,
        })
    }
}
