//! The chunk index, on disk: per stream, rows that each list a run of its chunks.
//!
//! A row `(stream_id, pos) -> chunks` lists chunks of one stream as `(position, seq)` pairs in
//! position order, `pos` being the first one's position. The writer adds one row per stream
//! per index flush, however many chunks that stream received since the last flush, so a flush
//! costs one B-tree insert per stream rather than one per append.
//!
//! PERSISTED: the pair encoding (16 bytes each: position as u64, seq as i64, little-endian)
//! is part of the on-disk format.

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::StreamId;

/// One chunk in a segment: its first position and its row in `chunks`.
pub(crate) type Pair = (u64, i64);

const PAIR: usize = 16;

pub(crate) fn encode(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * PAIR);
    for (pos, seq) in pairs {
        out.extend_from_slice(&pos.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
    }
    out
}

/// Decodes a segment; a damaged tail (not a whole pair) is ignored rather than trusted.
pub(crate) fn decode(blob: &[u8]) -> Vec<Pair> {
    blob.chunks_exact(PAIR)
        .map(|p| {
            let mut pos = [0u8; 8];
            let mut seq = [0u8; 8];
            pos.copy_from_slice(&p[..8]);
            seq.copy_from_slice(&p[8..]);
            (u64::from_le_bytes(pos), i64::from_le_bytes(seq))
        })
        .collect()
}

/// Writes one segment per stream for `pairs`, which must be sorted by stream then position.
pub(crate) fn write(conn: &Connection, pairs: &[(StreamId, u64, i64)]) -> rusqlite::Result<usize> {
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO chunk_index (stream_id, pos, chunks) VALUES (?1, ?2, ?3)",
    )?;
    let mut rows = 0;
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        let segment: Vec<Pair> = run.iter().map(|(_, pos, seq)| (*pos, *seq)).collect();
        insert.execute(params![run[0].0, run[0].1 as i64, encode(&segment)])?;
        rows += 1;
    }
    Ok(rows)
}

/// The segments of `stream` that may hold positions in `[from, end)`, in order: the one that
/// starts at or before `from`, then the ones starting before `end`.
pub(crate) fn covering(
    conn: &Connection,
    stream: StreamId,
    from: u64,
    end: u64,
) -> rusqlite::Result<Vec<Pair>> {
    let first: Option<i64> = conn
        .prepare_cached(
            "SELECT pos FROM chunk_index WHERE stream_id = ?1 AND pos <= ?2
             ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![stream, from as i64], |r| r.get(0))
        .optional()?;
    let mut stmt = conn.prepare_cached(
        "SELECT chunks FROM chunk_index WHERE stream_id = ?1 AND pos >= ?2 AND pos < ?3
         ORDER BY pos",
    )?;
    let mut rows = stmt.query(params![stream, first.unwrap_or(from as i64), end as i64])?;
    let mut pairs = Vec::new();
    while let Some(row) = rows.next()? {
        let blob = row.get_ref(0)?.as_blob()?;
        pairs.extend(decode(blob));
    }
    Ok(pairs)
}

/// The chunk of `stream` that starts exactly at `pos`.
pub(crate) fn seq_at(
    conn: &Connection,
    stream: StreamId,
    pos: u64,
) -> rusqlite::Result<Option<i64>> {
    let pairs = covering(conn, stream, pos, pos + 1)?;
    Ok(pairs.iter().find(|(p, _)| *p == pos).map(|(_, seq)| *seq))
}

/// The last indexed chunk of `stream`.
pub(crate) fn last_seq(conn: &Connection, stream: StreamId) -> rusqlite::Result<Option<i64>> {
    let blob: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT chunks FROM chunk_index WHERE stream_id = ?1 ORDER BY pos DESC LIMIT 1",
        )?
        .query_row([stream], |r| r.get(0))
        .optional()?;
    Ok(blob.and_then(|b| decode(&b).last().map(|(_, seq)| *seq)))
}

/// Every indexed chunk of `stream`.
pub(crate) fn all_seqs(conn: &Connection, stream: StreamId) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached("SELECT chunks FROM chunk_index WHERE stream_id = ?1")?;
    let mut rows = stmt.query([stream])?;
    let mut seqs = Vec::new();
    while let Some(row) = rows.next()? {
        seqs.extend(
            decode(row.get_ref(0)?.as_blob()?)
                .into_iter()
                .map(|(_, s)| s),
        );
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_and_ignore_a_torn_tail() {
        let pairs = vec![(0, 5), (10, 9), (u64::MAX, i64::MAX)];
        let mut blob = encode(&pairs);
        assert_eq!(decode(&blob), pairs);
        blob.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&blob), pairs);
    }
}
