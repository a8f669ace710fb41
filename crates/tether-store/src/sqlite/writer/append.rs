//! Appends and closes: every protocol rule checked against the writer's state.

use std::sync::Arc;

use rusqlite::params;

use super::{storage, Effect, PreparedAppend, Writer};
use crate::model::*;
use crate::sqlite::entry::Entry;
use tether_types::headers::same_media_type;
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
        let body_empty = request.body.is_empty();

        if state.closed {
            let same_closer =
                matches!((&request.producer, &state.closed_by), (Some(p), Some(c)) if p == c);
            if same_closer || (body_empty && request.close && request.producer.is_none()) {
                let producer = request.producer.as_ref().map(|p| (p.epoch, p.seq));
                return Ok(Appended {
                    status: if same_closer {
                        AppendStatus::Duplicate
                    } else {
                        AppendStatus::AlreadyClosed
                    },
                    next: Offset(state.tail),
                    closed: true,
                    producer,
                });
            }
            return Err(AppendError::Closed {
                next: Offset(state.tail),
            });
        }
        if !body_empty {
            let matches = request
                .content_type
                .as_deref()
                .is_some_and(|ct| same_media_type(ct, &entry.config.content_type));
            if !matches {
                return Err(AppendError::ContentTypeMismatch);
            }
        }
        if body_empty && !request.close {
            return Err(AppendError::EmptyBody);
        }
        let body = body?;

        // Idempotent producer: fencing, de-duplication, gap detection (protocol 5.2.1).
        if let Some(p) = &request.producer {
            match state.producers.get(&p.id).copied() {
                Some((epoch, _)) if p.epoch < epoch => {
                    return Err(AppendError::StaleEpoch { current: epoch });
                }
                Some((epoch, last)) if p.epoch == epoch => {
                    if p.seq <= last {
                        return Ok(Appended {
                            status: AppendStatus::Duplicate,
                            next: Offset(state.tail),
                            closed: state.closed,
                            producer: Some((epoch, last)),
                        });
                    }
                    if p.seq > last + 1 {
                        return Err(AppendError::SeqGap {
                            expected: last + 1,
                            received: p.seq,
                        });
                    }
                }
                // A new epoch, or a producer this stream has not seen: must start at 0.
                Some(_) if p.seq != 0 => return Err(AppendError::EpochNeedsSeqZero),
                None if p.seq != 0 => {
                    return Err(AppendError::SeqGap {
                        expected: 0,
                        received: p.seq,
                    })
                }
                _ => {}
            }
        }
        if let Some(seq) = &request.stream_seq {
            if state
                .last_stream_seq
                .as_ref()
                .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
            {
                return Err(AppendError::SeqConflict);
            }
        }

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
