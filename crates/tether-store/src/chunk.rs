//! Stored appends and how reads gather them across a fork chain, the same for every backend.

use std::future::Future;

use bytes::Bytes;
use tether_types::{Offset, ReadFrom};

use crate::model::{LookupError, ReadChunk, StreamInfo};

/// One append as stored: positions `[pos, end)` and the bytes (JSON: messages joined by
/// commas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub pos: u64,
    pub end: u64,
    pub data: Bytes,
}

/// The part of `chunk` in `[from, hi)`; whole unless a fork point cuts it. `None` when the
/// stored chunk does not agree with its own bounds (damaged data): an error, not a panic.
pub(crate) fn slice_chunk(chunk: &Chunk, from: u64, hi: u64, json: bool) -> Option<Bytes> {
    let skip = from.saturating_sub(chunk.pos);
    let stop = hi.min(chunk.end).checked_sub(chunk.pos)?;
    if skip == 0 && stop == chunk.end - chunk.pos {
        return Some(chunk.data.clone());
    }
    if skip > stop {
        return None;
    }
    if json {
        tether_types::json::slice_joined(&chunk.data, skip as usize, (stop - skip) as usize)
            .map(Bytes::from)
    } else if stop as usize <= chunk.data.len() {
        Some(chunk.data.slice(skip as usize..stop as usize))
    } else {
        None
    }
}

/// A stream in a fork chain, as [`read_view`] walks it.
pub(crate) trait ViewLink: Clone {
    /// First position of the stream's own records.
    fn start(&self) -> u64;
    fn json(&self) -> bool;
    /// The fork source and the fork point, for a fork.
    fn source(&self) -> Option<(Self, u64)>;
}

/// Implements [`ViewLink`] for `Arc<$t>`, where `$t` has `start`, `json` and
/// `fork: Option<_>` with `source` and `point`, as both backends' in-memory streams do.
macro_rules! view_link {
    ($t:ty) => {
        impl $crate::chunk::ViewLink for std::sync::Arc<$t> {
            fn start(&self) -> u64 {
                self.start
            }

            fn json(&self) -> bool {
                self.json
            }

            fn source(&self) -> Option<(Self, u64)> {
                self.fork.as_ref().map(|f| (f.source.clone(), f.point))
            }
        }
    };
}
pub(crate) use view_link;

/// Where a read from `from` starts, given the committed tail `end`.
pub(crate) fn read_start(from: ReadFrom, end: u64) -> Result<u64, LookupError> {
    let start = match from {
        ReadFrom::Start => 0,
        ReadFrom::Now => end,
        ReadFrom::At(o) => o.0,
    };
    if start > end {
        return Err(LookupError::OffsetBeyondTail);
    }
    Ok(start)
}

/// A read's answer: what [`read_view`] found from `start`, against the tail `end` that was
/// committed when the read began.
pub(crate) fn read_chunk(
    info: StreamInfo,
    start: u64,
    end: u64,
    (records, next): (Vec<Bytes>, u64),
) -> ReadChunk {
    ReadChunk {
        up_to_date: next >= end,
        info,
        from: Offset(start),
        records,
        next: Offset(next),
    }
}

/// Reads `[from, end)` of `stream`'s view: inherited ranges from its fork sources, then its
/// own chunks. `fetch(stream, pos, hi, budget)` returns the stored chunks of that one stream
/// from the one holding `pos`, in order, below `hi` (at least one if any, about `budget`
/// bytes). Returns the pieces to concatenate (JSON: to join with commas) and the position
/// after the last; short of `end` when the budget ran out or a chunk was missing.
pub(crate) async fn read_view<S, F, Fut, E>(
    stream: &S,
    from: u64,
    end: u64,
    max_bytes: usize,
    mut fetch: F,
) -> Result<(Vec<Bytes>, u64), E>
where
    S: ViewLink,
    F: FnMut(S, u64, u64, usize) -> Fut,
    Fut: Future<Output = Result<Vec<Chunk>, E>>,
    E: From<crate::StoreError>,
{
    // Segments from the oldest ancestor to the stream itself: (stream, lo, hi).
    let mut segments = Vec::new();
    let mut current = stream.clone();
    let mut hi = end;
    loop {
        segments.push((current.clone(), current.start(), hi));
        match current.source() {
            Some((source, point)) => {
                hi = point.min(hi);
                current = source;
            }
            None => break,
        }
    }
    segments.reverse();

    let mut out = Vec::new();
    let mut size = 0usize;
    let mut pos = from;
    for (stream, lo, hi) in segments {
        if pos >= hi || lo >= hi {
            continue;
        }
        pos = pos.max(lo);
        let json = stream.json();
        while pos < hi && size < max_bytes {
            let chunks = fetch(stream.clone(), pos, hi, max_bytes - size).await?;
            let before = pos;
            for chunk in chunks {
                if chunk.end <= pos || chunk.pos >= hi || chunk.pos > pos {
                    break;
                }
                let piece = slice_chunk(&chunk, pos, hi, json).ok_or_else(|| {
                    E::from(crate::StoreError::corrupt(
                        "a stored chunk does not match its bounds",
                    ))
                })?;
                pos = chunk.end.min(hi);
                size += piece.len();
                out.push(piece);
                if size >= max_bytes {
                    break;
                }
            }
            if pos == before {
                // The next chunk was not found: stop here rather than skip anything; the
                // caller continues from `pos` next time.
                return Ok((out, pos));
            }
        }
        if pos < hi {
            return Ok((out, pos));
        }
    }
    Ok((out, pos))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chunk of `data` at `pos`, for tests.
    pub(crate) fn chunk(pos: u64, data: &'static [u8]) -> Chunk {
        Chunk {
            pos,
            end: pos + data.len() as u64,
            data: Bytes::from_static(data),
        }
    }

    #[test]
    fn a_chunk_that_disagrees_with_its_bounds_is_an_error_not_a_panic() {
        let chunk = Chunk {
            pos: 10,
            end: 20,
            data: Bytes::from_static(b"short"),
        };
        assert_eq!(slice_chunk(&chunk, 12, 18, false), None);
        assert_eq!(
            slice_chunk(&chunk, 10, 13, false).as_deref(),
            Some(&b"sho"[..])
        );
        assert_eq!(
            slice_chunk(&chunk, 10, 20, false).as_deref(),
            Some(&b"short"[..])
        );
    }
}
