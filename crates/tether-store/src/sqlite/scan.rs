//! Reading a stream's stored chunks from the log: the chunk index names them, their rows are
//! read in runs, and consecutive small chunks come back joined into pieces.
//!
//! A stream written one small append at a time has a row per append. Looking each row up by
//! its seq cost a B-tree descent and a buffer per append, and the response then copied every
//! buffer again to join them: catching up on 200,000 single-message appends ran at a fifth of
//! the speed of the same messages appended a thousand at a time. Rows of one stream that
//! were committed close together lie close together in `chunks`, so a run of them is read
//! with one range scan (stepping over other streams' rows between them), and each small
//! chunk's bytes are copied once, from the row into a piece of up to [`PIECE`] bytes.
//!
//! A piece is itself a chunk as [`crate::chunk`] knows them: positions `[pos, end)` and the
//! bytes of the appends it joins (JSON: their messages, joined by commas), so readers slice
//! and frame it like any stored append.

use bytes::Bytes;
use rusqlite::blob::Blob;
use rusqlite::types::ValueRef;
use rusqlite::{params, CachedStatement, Connection, MAIN_DB};

use super::entry::Chunk;
use super::segments::{self, Pair};
use crate::model::StreamId;

/// Chunks this large or larger are read with SQLite's blob API straight into their own
/// buffer. Reading the column instead makes SQLite gather the overflow pages into a buffer of
/// its own, which is then copied again; for small chunks the row's bytes are copied directly.
const BLOB_READ_FROM: i64 = 64 << 10;
/// The chunks of one run are at most this many rows apart; farther, the next run seeks anew.
const MAX_GAP: i64 = 16;
/// At most this many chunks are read by one range scan.
const MAX_RUN: usize = 1024;
/// Small chunks are joined into pieces of up to this many bytes.
const PIECE: usize = 256 << 10;

/// Reads the indexed chunks of `stream` that overlap `[from, end)`, in order, stopping once
/// `max_bytes` are gathered (always at least one chunk if any overlaps). The first may start
/// before `from` when `from` falls inside it, and the last may end after `end`; the caller
/// slices. Consecutive small chunks are joined (`json`: with commas between their messages).
pub(crate) fn query_chunks(
    conn: &Connection,
    stream: StreamId,
    json: bool,
    from: u64,
    end: u64,
    max_bytes: usize,
) -> rusqlite::Result<Vec<Chunk>> {
    // One snapshot for the index and every chunk it names.
    let snapshot = conn.unchecked_transaction()?;
    let mut scan = Scan {
        conn,
        fetch: conn.prepare_cached(
            // `length(data)` does not load the blob: a large one is not loaded here.
            "SELECT seq, pos, end_pos, iif(length(data) < ?3, data, length(data))
             FROM chunks WHERE seq >= ?1 AND seq <= ?2",
        )?,
        blob: None,
        from,
        end,
        max_bytes,
        run: Vec::new(),
        pieces: Pieces::new(json),
        stopped: false,
    };
    // The chunk that contains `from` is the last one starting at or before it, which may be
    // the last of an earlier index row: held back until the next pair shows whether it is.
    let mut before: Option<Pair> = None;
    let mut index_at = segments::first_covering(conn, stream, from)?;
    'index: while let Some((row_pos, pairs)) = segments::next_row(conn, stream, index_at, end)? {
        // A damaged index could hold any position; never step past the end of the range.
        let Some(next_at) = row_pos.checked_add(1) else {
            break;
        };
        index_at = next_at;
        for pair in pairs {
            if pair.0 <= from {
                before = Some(pair);
                continue;
            }
            if let Some(held) = before.take() {
                scan.want(held)?;
            }
            scan.want(pair)?;
            if scan.stopped {
                break 'index;
            }
        }
    }
    if let Some(held) = before {
        scan.want(held)?;
    }
    scan.flush()?;
    let pieces = scan.into_pieces();
    snapshot.commit()?;
    Ok(pieces.finish())
}

struct Scan<'c> {
    conn: &'c Connection,
    fetch: CachedStatement<'c>,
    /// One blob handle, moved from row to row.
    blob: Option<Blob<'c>>,
    from: u64,
    end: u64,
    max_bytes: usize,
    /// Chunks wanted next, to be read with one range scan: seqs increasing, a few rows apart.
    run: Vec<Pair>,
    pieces: Pieces,
    /// Enough is gathered, `end` is reached, or a chunk the index names is missing.
    stopped: bool,
}

impl Scan<'_> {
    /// Adds the next chunk to read, first reading the run so far if the chunk is too far
    /// from it.
    fn want(&mut self, pair: Pair) -> rusqlite::Result<()> {
        if let Some(last) = self.run.last() {
            // Checked: seqs come from disk, and a damaged index must not panic.
            let near = pair
                .1
                .checked_sub(last.1)
                .is_some_and(|d| (1..=MAX_GAP).contains(&d));
            if !near || self.run.len() >= MAX_RUN {
                self.flush()?;
            }
        }
        if !self.stopped {
            self.run.push(pair);
        }
        Ok(())
    }

    /// Reads the chunks of the run with one range scan.
    fn flush(&mut self) -> rusqlite::Result<()> {
        let run = std::mem::take(&mut self.run);
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        if self.stopped {
            return Ok(());
        }
        let mut rows = self.fetch.query(params![first.1, last.1, BLOB_READ_FROM])?;
        let mut wanted = run.iter().map(|&(_, seq)| seq).peekable();
        while let Some(&seq) = wanted.peek() {
            let Some(row) = rows.next()? else {
                // The index names a chunk that is not there: a gap. Stop rather than skip
                // past it.
                self.stopped = true;
                return Ok(());
            };
            let row_seq: i64 = row.get(0)?;
            if row_seq < seq {
                // Another stream's chunk between two of this one's.
                continue;
            }
            if row_seq > seq {
                self.stopped = true;
                return Ok(());
            }
            wanted.next();
            let pos = row.get::<_, i64>(1)? as u64;
            let chunk_end = row.get::<_, i64>(2)? as u64;
            if pos >= self.end || self.pieces.full(self.max_bytes) {
                self.stopped = true;
                return Ok(());
            }
            if chunk_end <= self.from {
                continue;
            }
            // A chunk cut by `from` or `end` stays whole and on its own, for the caller to
            // slice: a piece the caller slices would be parsed whole for a JSON stream.
            let inside = pos >= self.from && chunk_end <= self.end;
            match row.get_ref(3)? {
                ValueRef::Integer(len) => {
                    let data = read_blob(self.conn, &mut self.blob, seq, len)?;
                    self.pieces.whole(Chunk {
                        pos,
                        end: chunk_end,
                        data,
                    });
                }
                value => self.pieces.small(pos, chunk_end, value.as_blob()?, inside),
            }
        }
        Ok(())
    }

    /// What was gathered; the statement and the blob handle are let go, so the read's
    /// snapshot can end.
    fn into_pieces(self) -> Pieces {
        self.pieces
    }
}

/// The `data` of chunk `seq`, `len` bytes, read through one blob handle moved from row to row.
fn read_blob<'c>(
    conn: &'c Connection,
    blob: &mut Option<Blob<'c>>,
    seq: i64,
    len: i64,
) -> rusqlite::Result<Bytes> {
    let handle = match blob {
        Some(handle) => {
            handle.reopen(seq)?;
            handle
        }
        None => blob.insert(conn.blob_open(MAIN_DB, c"chunks", c"data", seq, true)?),
    };
    if i64::try_from(handle.len()).ok() != Some(len) {
        return Err(rusqlite::Error::BlobSizeError);
    }
    // Read into uninitialised memory: zeroing the buffer first costs as much as a copy.
    let mut data = Vec::with_capacity(handle.len());
    let filled = handle
        .raw_read_at_exact(&mut data.spare_capacity_mut()[..handle.len()], 0)?
        .len();
    // SAFETY: `raw_read_at_exact` succeeded, so it initialised all of the first `filled`
    // bytes of the spare capacity, which is at least `filled` long.
    unsafe { data.set_len(filled) };
    Ok(Bytes::from(data))
}

/// The chunks a read gathers, consecutive small ones joined.
struct Pieces {
    json: bool,
    out: Vec<Chunk>,
    /// The piece being joined: positions `[pos, end)` and their bytes.
    open: Option<(u64, u64, Vec<u8>)>,
    size: usize,
}

impl Pieces {
    fn new(json: bool) -> Self {
        Pieces {
            json,
            out: Vec::new(),
            open: None,
            size: 0,
        }
    }

    /// Whether `max_bytes` are gathered (at least one chunk always is).
    fn full(&self, max_bytes: usize) -> bool {
        self.size >= max_bytes && (self.open.is_some() || !self.out.is_empty())
    }

    /// Adds a small chunk, joined to the open piece if it follows it, fits, and `joinable`.
    fn small(&mut self, pos: u64, end: u64, data: &[u8], joinable: bool) {
        self.size += data.len();
        if joinable {
            if let Some((_, open_end, bytes)) = &mut self.open {
                let comma = self.json && !bytes.is_empty() && !data.is_empty();
                let fits = bytes.len() + usize::from(comma) + data.len() <= bytes.capacity();
                if *open_end == pos && fits {
                    if comma {
                        bytes.push(b',');
                    }
                    bytes.extend_from_slice(data);
                    *open_end = end;
                    return;
                }
            }
        }
        self.close();
        if joinable {
            let mut bytes = Vec::with_capacity(PIECE.max(data.len()));
            bytes.extend_from_slice(data);
            self.open = Some((pos, end, bytes));
        } else {
            self.out.push(Chunk {
                pos,
                end,
                data: Bytes::copy_from_slice(data),
            });
        }
    }

    /// Adds a chunk as it is.
    fn whole(&mut self, chunk: Chunk) {
        self.size += chunk.data.len();
        self.close();
        self.out.push(chunk);
    }

    fn close(&mut self) {
        if let Some((pos, end, mut bytes)) = self.open.take() {
            // A short read should not keep a whole piece's buffer alive.
            if bytes.capacity() > 2 * bytes.len() {
                bytes.shrink_to_fit();
            }
            self.out.push(Chunk {
                pos,
                end,
                data: Bytes::from(bytes),
            });
        }
    }

    fn finish(mut self) -> Vec<Chunk> {
        self.close();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_index_ends_the_read_early_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("db.sqlite")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn.execute("INSERT INTO chunks VALUES (1, 7, 1, 2, X'61')", [])
            .unwrap();
        // Seqs no writer would give, whose difference overflows.
        let damaged = segments::encode(&[(0, i64::MIN), (1, 1)]);
        conn.execute(
            "INSERT INTO chunk_index VALUES (7, 0, ?1)",
            rusqlite::params![damaged],
        )
        .unwrap();
        let read = query_chunks(&conn, 7, false, 0, 2, 1 << 20).unwrap();
        assert!(
            read.is_empty(),
            "the chunk the index names first is missing"
        );
    }

    fn pieces(json: bool, chunks: &[(u64, u64, &str, bool)]) -> Vec<(u64, u64, String)> {
        let mut p = Pieces::new(json);
        for &(pos, end, data, joinable) in chunks {
            p.small(pos, end, data.as_bytes(), joinable);
        }
        p.finish()
            .into_iter()
            .map(|c| (c.pos, c.end, String::from_utf8(c.data.to_vec()).unwrap()))
            .collect()
    }

    #[test]
    fn consecutive_text_chunks_are_joined_as_they_are() {
        assert_eq!(
            pieces(false, &[(0, 2, "ab", true), (2, 5, "cde", true)]),
            [(0, 5, "abcde".to_string())]
        );
    }

    #[test]
    fn consecutive_json_chunks_are_joined_with_a_comma() {
        assert_eq!(
            pieces(true, &[(0, 2, "1,2", true), (2, 3, "{}", true)]),
            [(0, 3, "1,2,{}".to_string())]
        );
    }

    #[test]
    fn a_chunk_that_does_not_follow_or_may_not_join_starts_anew() {
        assert_eq!(
            pieces(
                false,
                &[(0, 2, "ab", false), (2, 3, "c", true), (7, 8, "h", true)]
            ),
            [
                (0, 2, "ab".to_string()),
                (2, 3, "c".to_string()),
                (7, 8, "h".to_string())
            ]
        );
    }

    #[test]
    fn a_piece_never_grows_past_its_buffer() {
        let big = "x".repeat(PIECE - 1);
        let end = PIECE as u64 - 1;
        let joined = pieces(false, &[(0, end, &big, true), (end, end + 2, "yz", true)]);
        assert_eq!(joined.len(), 2);
        assert_eq!(joined[1], (end, end + 2, "yz".to_string()));
    }
}
