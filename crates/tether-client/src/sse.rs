//! A `text/event-stream` parser: bytes in, frames out.
//!
//! Pure and incremental, because network chunks split lines (and even a CRLF pair) anywhere;
//! the subscription feeds it whatever arrives and takes complete frames out. It follows the
//! WHATWG rules that matter to Tether: lines end in LF, CRLF or CR; `:` starts a comment (the
//! server's keep-alives); `field: value` loses one leading space; `data` lines join with LF;
//! a blank line ends a frame.

/// One dispatched frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    /// `event:`; `None` means the default type, `message`.
    pub event: Option<String>,
    /// `id:`; Tether puts the event's offset here.
    pub id: Option<String>,
    /// All `data:` lines, joined with `\n`.
    pub data: String,
}

/// A line longer than this is refused rather than buffered without bound. Events are at most
/// 1 MiB as JSON; this leaves room for framing and escaping.
pub const MAX_LINE_BYTES: usize = 8 << 20;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line is longer than {MAX_LINE_BYTES} bytes")]
pub struct LineTooLong;

#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line end, so a long line arriving in many chunks
    /// is scanned once.
    scanned: usize,
    /// The last chunk ended in CR: a LF at the start of the next one belongs to it.
    skip_lf: bool,
    /// The frame being assembled.
    event: Option<String>,
    id: Option<String>,
    data: Option<String>,
    /// Comment lines seen since the last call to [`SseParser::take_comments`].
    comments: usize,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Adds received bytes; call [`SseParser::next_frame`] until it gives `None`.
    pub fn push(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        let chunk = match (self.skip_lf, chunk[0]) {
            (true, b'\n') => &chunk[1..],
            _ => chunk,
        };
        self.skip_lf = false;
        self.buf.extend_from_slice(chunk);
    }

    /// How many comment lines (keep-alives) went by since the last call.
    pub fn take_comments(&mut self) -> usize {
        std::mem::take(&mut self.comments)
    }

    /// The next complete frame, if the bytes pushed so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LineTooLong> {
        while let Some(line) = self.next_line()? {
            if let Some(frame) = self.process_line(&line) {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    fn next_line(&mut self) -> Result<Option<String>, LineTooLong> {
        let Some(rel) = self.buf[self.scanned..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        else {
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE_BYTES {
                return Err(LineTooLong);
            }
            return Ok(None);
        };
        let end = self.scanned + rel;
        let mut consumed = end + 1;
        if self.buf[end] == b'\r' {
            match self.buf.get(end + 1) {
                Some(b'\n') => consumed += 1,
                Some(_) => {}
                // The LF of a CRLF may be in the next chunk.
                None => self.skip_lf = true,
            }
        }
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..consumed);
        self.scanned = 0;
        Ok(Some(line))
    }

    fn process_line(&mut self, line: &str) -> Option<Frame> {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field.trim_start_matches('\u{feff}') {
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            // `retry` and unknown fields do not change what Tether delivers.
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<Frame> {
        if self.event.is_none() && self.id.is_none() && self.data.is_none() {
            return None;
        }
        Some(Frame {
            event: self.event.take(),
            id: self.id.take(),
            data: self.data.take().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut parser = SseParser::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            parser.push(chunk);
            while let Some(frame) = parser.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        frames
    }

    fn frame(id: &str, data: &str) -> Frame {
        Frame {
            event: None,
            id: Some(id.into()),
            data: data.into(),
        }
    }

    #[test]
    fn a_frame_ends_at_a_blank_line_and_keeps_its_id_and_data() {
        let frames = frames_of(&[b"id: 1\ndata: {\"a\":1}\n\nid: 2\ndata: x\n\n"]);
        assert_eq!(frames, [frame("1", "{\"a\":1}"), frame("2", "x")]);
    }

    #[test]
    fn a_frame_without_its_blank_line_is_not_dispatched_yet() {
        assert!(frames_of(&[b"id: 1\ndata: x\n"]).is_empty());
    }

    #[test]
    fn frames_split_across_chunks_anywhere_come_out_whole() {
        let text = b"id: 7\ndata: hello\n\n: keep-alive\n\nid: 8\ndata: world\n\n";
        for cut in 0..text.len() {
            let frames = frames_of(&[&text[..cut], &text[cut..]]);
            assert_eq!(
                frames,
                [frame("7", "hello"), frame("8", "world")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_even_when_the_pair_is_split() {
        let text = b"id: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\r";
        for cut in 0..text.len() {
            let frames = frames_of(&[&text[..cut], &text[cut..]]);
            assert_eq!(frames, [frame("1", "a"), frame("2", "b")], "cut at {cut}");
        }
    }

    #[test]
    fn multi_line_data_joins_with_newlines() {
        let frames = frames_of(&[b"data: first\ndata:second\ndata\n\n"]);
        assert_eq!(frames[0].data, "first\nsecond\n");
    }

    #[test]
    fn comments_are_counted_and_never_become_frames() {
        let mut parser = SseParser::new();
        parser.push(b": keep-alive\n\n:\n\n");
        assert_eq!(parser.next_frame().unwrap(), None);
        assert_eq!(parser.take_comments(), 2);
        assert_eq!(parser.take_comments(), 0);
    }

    #[test]
    fn named_events_carry_their_type() {
        let frames = frames_of(&[b"event: error\ndata: {\"error\":{}}\n\n"]);
        assert_eq!(frames[0].event.as_deref(), Some("error"));
        assert_eq!(frames[0].id, None);
    }

    #[test]
    fn only_one_space_after_the_colon_is_removed() {
        let frames = frames_of(&[b"data:  two\n\n"]);
        assert_eq!(frames[0].data, " two");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut refused = false;
        for _ in 0..9 {
            parser.push(&chunk);
            if parser.next_frame().is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_frames(
            cuts in proptest::collection::vec(0usize..120, 0..6),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text = format!(
                "id: 1{nl}data: a{nl}data: b{nl}{nl}: ka{nl}{nl}event: error{nl}data: e{nl}{nl}id: 3{nl}data: c{nl}{nl}"
            );
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts {
                chunks.push(&bytes[start..cut]);
                start = cut;
            }
            chunks.push(&bytes[start..]);
            let whole = frames_of(&[bytes]);
            prop_assert_eq!(frames_of(&chunks), whole.clone());
            prop_assert_eq!(whole.len(), 3);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = frames_of(&[&bytes]);
        }
    }
}
