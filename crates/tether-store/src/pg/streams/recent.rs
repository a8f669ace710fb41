//! The newest chunks of the streams this node's live readers follow.
//!
//! When an append commits, every live reader of the stream wakes and reads from where it was,
//! usually the same few chunks. Chunks never change once committed (a stream id is never
//! reused and a chunk at `(stream, end)` is never rewritten), so serving them from memory is
//! safe; what a reader may read still comes from the tail it read from the database, so the
//! cache can only answer what the database already says.

use std::collections::VecDeque;

use crate::chunk::Chunk;

/// How much of a stream's tail stays in memory.
const MAX_BYTES: usize = 256 << 10;
const MAX_CHUNKS: usize = 1024;

/// A contiguous run of one stream's newest chunks known to this node.
#[derive(Default)]
pub(crate) struct Run {
    chunks: VecDeque<Chunk>,
    bytes: usize,
}

impl Run {
    /// Adds a committed chunk. One that continues the run extends it; one already covered or
    /// older is ignored; one past a gap (written by another node and not read here yet)
    /// starts the run over, so that it stays contiguous.
    pub fn record(&mut self, chunk: Chunk) {
        match self.chunks.back() {
            Some(last) if last.end == chunk.pos => {}
            Some(last) if chunk.end <= last.end => return,
            _ => {
                self.chunks.clear();
                self.bytes = 0;
            }
        }
        self.bytes += chunk.data.len();
        self.chunks.push_back(chunk);
        while self.chunks.len() > 1 && (self.bytes > MAX_BYTES || self.chunks.len() > MAX_CHUNKS) {
            if let Some(old) = self.chunks.pop_front() {
                self.bytes -= old.data.len();
            }
        }
    }

    /// The chunks from the one holding `from` up to (not including) `hi`, if the run holds
    /// `from`; the caller goes to the database for the rest.
    pub fn read(&self, from: u64, hi: u64) -> Option<Vec<Chunk>> {
        if self.chunks.front()?.pos > from {
            return None;
        }
        let first = self.chunks.partition_point(|c| c.end <= from);
        if first == self.chunks.len() {
            return None;
        }
        Some(
            self.chunks
                .range(first..)
                .take_while(|c| c.pos < hi)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::tests::chunk;
    use bytes::Bytes;

    #[test]
    fn a_run_answers_only_what_it_holds_contiguously() {
        let mut run = Run::default();
        assert_eq!(run.read(0, 10), None, "empty");
        run.record(chunk(10, b"abc"));
        run.record(chunk(13, b"de"));
        run.record(chunk(10, b"abc"));
        assert_eq!(run.read(9, 20), None, "before the run");
        assert_eq!(
            run.read(11, 20).unwrap()[0].pos,
            10,
            "the chunk holding `from`"
        );
        assert_eq!(run.read(13, 20).unwrap(), vec![chunk(13, b"de")]);
        assert_eq!(run.read(10, 13).unwrap().len(), 1, "stops below `hi`");
        assert_eq!(
            run.read(15, 20),
            None,
            "past the run: the database knows more"
        );

        // Another node wrote [15, 18); this node's next chunk starts a new run.
        run.record(chunk(18, b"xy"));
        assert_eq!(run.read(13, 20), None);
        assert_eq!(run.read(18, 20).unwrap(), vec![chunk(18, b"xy")]);
    }

    #[test]
    fn a_run_keeps_only_the_newest_chunks() {
        let mut run = Run::default();
        let big = Bytes::from(vec![0u8; MAX_BYTES]);
        run.record(Chunk {
            pos: 0,
            end: MAX_BYTES as u64,
            data: big,
        });
        run.record(chunk(MAX_BYTES as u64, b"x"));
        assert_eq!(run.read(0, u64::MAX), None, "the big one was evicted");
        assert_eq!(run.read(MAX_BYTES as u64, u64::MAX).unwrap().len(), 1);
    }
}
