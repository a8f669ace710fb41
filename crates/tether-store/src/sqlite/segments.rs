//! The chunk index, on disk: per stream, rows that each list a run of its chunks.
//!
//! A row `(stream_id, pos) -> chunks` lists chunks of one stream as `(position, seq)` pairs in
//! position order, `pos` being the first one's position. The writer adds one row per stream
//! per index flush, however many chunks that stream received since the last flush, so a flush
//! costs one B-tree insert per stream rather than one per append.
//!
//! PERSISTED: the row encoding is part of the on-disk format. A segment is a sequence of
//! LEB128 varints: the first chunk's position and seq, then for each further chunk the
//! increase in position and in seq (both always positive within a stream). A 256-byte append
//! costs about three bytes of index.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::model::StreamId;

/// One chunk in a segment: its first position and its row in `chunks`.
pub(crate) type Pair = (u64, i64);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub(crate) fn encode(pairs: &[Pair]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 3 + 16);
    let mut last = (0u64, 0u64);
    for (i, &(pos, seq)) in pairs.iter().enumerate() {
        let seq = seq as u64;
        if i == 0 {
            put_varint(&mut out, pos);
            put_varint(&mut out, seq);
        } else {
            put_varint(&mut out, pos.wrapping_sub(last.0));
            put_varint(&mut out, seq.wrapping_sub(last.1));
        }
        last = (pos, seq);
    }
    out
}

/// Decodes a segment; a damaged tail is ignored rather than trusted.
pub(crate) fn decode(blob: &[u8]) -> Vec<Pair> {
    let mut pairs = Vec::new();
    let mut at = 0;
    let mut last = (0u64, 0u64);
    while at < blob.len() {
        let (Some(a), Some(b)) = (get_varint(blob, &mut at), get_varint(blob, &mut at)) else {
            break;
        };
        let pair = if pairs.is_empty() {
            (a, b)
        } else {
            (last.0.wrapping_add(a), last.1.wrapping_add(b))
        };
        pairs.push((pair.0, pair.1 as i64));
        last = pair;
    }
    pairs
}

/// Groups chunks, given in commit order, into one segment per stream (in stream order, so
/// the index rows are written in key order). Commit order is position order within a stream.
pub(crate) fn group(
    chunks: impl IntoIterator<Item = (StreamId, u64, i64)>,
) -> BTreeMap<StreamId, Vec<Pair>> {
    let mut segments: BTreeMap<StreamId, Vec<Pair>> = BTreeMap::new();
    for (stream, pos, seq) in chunks {
        segments.entry(stream).or_default().push((pos, seq));
    }
    segments
}

/// Writes one index row per stream.
pub(crate) fn write(
    conn: &Connection,
    segments: &BTreeMap<StreamId, Vec<Pair>>,
) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT OR REPLACE INTO chunk_index (stream_id, pos, chunks) VALUES (?1, ?2, ?3)",
    )?;
    for (stream, pairs) in segments {
        if let Some((first, _)) = pairs.first() {
            insert.execute(params![stream, *first as i64, encode(pairs)])?;
        }
    }
    Ok(())
}

/// Where the index rows that may hold position `from` of `stream` begin: the position of
/// the row starting at or before it, or `from` when there is none.
pub(crate) fn first_covering(
    conn: &Connection,
    stream: StreamId,
    from: u64,
) -> rusqlite::Result<u64> {
    let first: Option<i64> = conn
        .prepare_cached(
            "SELECT pos FROM chunk_index WHERE stream_id = ?1 AND pos <= ?2
             ORDER BY pos DESC LIMIT 1",
        )?
        .query_row(params![stream, from as i64], |r| r.get(0))
        .optional()?;
    Ok(first.map_or(from, |pos| pos as u64))
}

/// The first index row of `stream` starting in `[at, end)`: its position and its chunks.
pub(crate) fn next_row(
    conn: &Connection,
    stream: StreamId,
    at: u64,
    end: u64,
) -> rusqlite::Result<Option<(u64, Vec<Pair>)>> {
    conn.prepare_cached(
        "SELECT pos, chunks FROM chunk_index WHERE stream_id = ?1 AND pos >= ?2 AND pos < ?3
         ORDER BY pos LIMIT 1",
    )?
    .query_row(params![stream, at as i64, end as i64], |r| {
        Ok((r.get::<_, i64>(0)? as u64, decode(r.get_ref(1)?.as_blob()?)))
    })
    .optional()
}

/// The chunk of `stream` that starts exactly at `pos`.
pub(crate) fn seq_at(
    conn: &Connection,
    stream: StreamId,
    pos: u64,
) -> rusqlite::Result<Option<i64>> {
    // Only the row starting at or before `pos` can hold it; later rows start after it.
    let at = first_covering(conn, stream, pos)?;
    let pairs = next_row(conn, stream, at, pos + 1)?.map_or_else(Vec::new, |(_, pairs)| pairs);
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

    use proptest::prelude::*;

    #[test]
    fn segments_round_trip_and_ignore_a_torn_tail() {
        let pairs = vec![(0, 5), (256, 9), (512, 300), (u64::MAX, i64::MAX)];
        let mut blob = encode(&pairs);
        assert_eq!(decode(&blob), pairs);
        blob.push(0x80);
        assert_eq!(decode(&blob), pairs);
        assert!(
            encode(&[(0, 1), (256, 2)]).len() <= 5,
            "small deltas are small"
        );
    }

    proptest! {
        #[test]
        fn increasing_pairs_round_trip(steps in proptest::collection::vec((1u64..1_000_000, 1i64..1_000_000), 0..50)) {
            let mut pairs = Vec::new();
            let (mut pos, mut seq) = (0u64, 1i64);
            for (dp, ds) in steps {
                pairs.push((pos, seq));
                pos += dp;
                seq += ds;
            }
            prop_assert_eq!(decode(&encode(&pairs)), pairs);
        }

        #[test]
        fn decoding_garbage_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&blob);
        }
    }
}
