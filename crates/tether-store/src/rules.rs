//! The protocol's rules for an append, apart from any storage: every backend loads a stream's
//! state in its own way (the SQLite writer from memory, PostgreSQL under a row lock) and asks
//! [`check_append`] what to do with the request.

use crate::model::*;
use tether_types::headers::same_media_type;
use tether_types::Offset;

/// What an append is checked against: one stream's protocol state.
pub(crate) struct AppendCheck<'a> {
    pub content_type: &'a str,
    pub tail: u64,
    pub closed: bool,
    pub closed_by: Option<&'a ProducerStamp>,
    pub last_stream_seq: Option<&'a str>,
    /// `(epoch, last_seq)` of the request's producer on this stream, when it has one.
    pub producer: Option<(u64, u64)>,
}

/// What to do with an append that broke no rule.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Write the body (if any); then record the `Stream-Seq`, the producer's sequence and the
    /// close the request carries.
    Write,
    /// Answer this without writing anything: a producer's repeat, or a close of a closed
    /// stream.
    Answer(Appended),
}

/// Checks `request` against the stream's state (protocol 5.2, 5.2.1). `body` is whether the
/// request body parsed into the stream's stored form; its error counts only once the request
/// is otherwise one that would write.
pub(crate) fn check_append(
    s: &AppendCheck<'_>,
    request: &Append,
    body: Result<(), &AppendError>,
) -> Result<Verdict, AppendError> {
    let body_empty = request.body.is_empty();
    if s.closed {
        let same_closer = matches!((&request.producer, s.closed_by), (Some(p), Some(c)) if p == c);
        if same_closer || (body_empty && request.close && request.producer.is_none()) {
            return Ok(Verdict::Answer(Appended {
                status: if same_closer {
                    AppendStatus::Duplicate
                } else {
                    AppendStatus::AlreadyClosed
                },
                next: Offset(s.tail),
                closed: true,
                producer: request.producer.as_ref().map(|p| (p.epoch, p.seq)),
            }));
        }
        return Err(AppendError::Closed {
            next: Offset(s.tail),
        });
    }
    if !body_empty {
        let matches = request
            .content_type
            .as_deref()
            .is_some_and(|ct| same_media_type(ct, s.content_type));
        if !matches {
            return Err(AppendError::ContentTypeMismatch);
        }
    }
    if body_empty && !request.close {
        return Err(AppendError::EmptyBody);
    }
    body.map_err(Clone::clone)?;

    // Idempotent producer: fencing, de-duplication, gap detection (protocol 5.2.1).
    if let Some(p) = &request.producer {
        match s.producer {
            Some((epoch, _)) if p.epoch < epoch => {
                return Err(AppendError::StaleEpoch { current: epoch });
            }
            Some((epoch, last)) if p.epoch == epoch => {
                if p.seq <= last {
                    return Ok(Verdict::Answer(Appended {
                        status: AppendStatus::Duplicate,
                        next: Offset(s.tail),
                        closed: s.closed,
                        producer: Some((epoch, last)),
                    }));
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
        if s.last_stream_seq
            .is_some_and(|last| seq.as_bytes() <= last.as_bytes())
        {
            return Err(AppendError::SeqConflict);
        }
    }
    Ok(Verdict::Write)
}
