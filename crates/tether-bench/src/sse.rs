//! A small incremental Server-Sent Events parser.
//!
//! With a thousand subscribers in the same process as the load it measures, the client's own
//! parsing cost shows up in the latencies, so this parser works directly on the body chunks as
//! they arrive: it copies a line only when it straddles two chunks, and hands each event to a
//! callback as borrowed slices instead of allocating an event per frame.
//!
//! It follows the event-stream rules that matter here: lines end in `\n`, `\r\n` or `\r`; a
//! line starting with `:` is a comment; one space after `field:` is dropped; several `data:`
//! lines join with `\n`; a blank line dispatches the event if it had any `data:` line.

/// One dispatched event. `event` is `b"message"` when the server named none.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    pub event: &'a [u8],
    pub data: &'a [u8],
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// The start of a line whose end is in a later chunk.
    partial: Vec<u8>,
    /// The previous chunk ended in `\r`, so a leading `\n` in the next one ends no line.
    after_cr: bool,
    event: Vec<u8>,
    data: Vec<u8>,
    data_lines: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body, calling `on_event` for every event it completes.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        if self.after_cr {
            self.after_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) {
            let terminator = chunk[end];
            if self.partial.is_empty() {
                self.line(&chunk[..end], &mut on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&chunk[..end]);
                self.line(&line, &mut on_event);
                line.clear();
                self.partial = line;
            }
            let mut next = end + 1;
            if terminator == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            chunk = &chunk[next..];
        }
        self.partial.extend_from_slice(chunk);
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            if self.data_lines > 0 {
                let event: &[u8] = if self.event.is_empty() {
                    b"message"
                } else {
                    &self.event
                };
                on_event(SseEvent {
                    event,
                    data: &self.data,
                });
            }
            self.event.clear();
            self.data.clear();
            self.data_lines = 0;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, mut value) = match memchr::memchr(b':', line) {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &[][..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match field {
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"data" => {
                if self.data_lines > 0 {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.data_lines += 1;
            }
            // `id` and `retry` do not matter to a benchmark; unknown fields are ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` in order and returns every event as owned `(event, data)` strings.
    fn parse(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, |e| {
                out.push((
                    String::from_utf8_lossy(e.event).into_owned(),
                    String::from_utf8_lossy(e.data).into_owned(),
                ))
            });
        }
        out
    }

    fn owned(event: &str, data: &str) -> (String, String) {
        (event.to_string(), data.to_string())
    }

    #[test]
    fn parses_a_control_then_a_data_event() {
        let body = b"event: control\ndata:{\"upToDate\":true}\n\nevent: data\ndata: 1:20;\n\n";
        assert_eq!(
            parse(&[body]),
            vec![
                owned("control", "{\"upToDate\":true}"),
                owned("data", "1:20;")
            ]
        );
    }

    #[test]
    fn events_split_at_every_byte_come_out_the_same() {
        let body: &[u8] = b"event: data\r\ndata: [\r\ndata: {\"k\":1}\r\ndata: ]\r\n\r\n: ping\r\n\r\nevent: control\rdata: x\r\r";
        let whole = parse(&[body]);
        assert_eq!(
            whole,
            vec![owned("data", "[\n{\"k\":1}\n]"), owned("control", "x")]
        );
        for cut in 0..=body.len() {
            let (a, b) = body.split_at(cut);
            assert_eq!(parse(&[a, b]), whole, "split at byte {cut}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse(&bytes), whole);
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(parse(&[b"event: data\ndata: 1;\n"]), vec![]);
    }

    #[test]
    fn a_blank_line_without_data_dispatches_nothing_and_resets_the_name() {
        assert_eq!(
            parse(&[b"event: control\n\ndata: plain\n\n"]),
            vec![owned("message", "plain")]
        );
    }

    #[test]
    fn only_one_leading_space_is_dropped_and_fields_without_colon_are_ignored() {
        assert_eq!(
            parse(&[b"data\nevent:data\ndata:  two\nid: 7\n\n"]),
            vec![owned("data", "\n two")]
        );
    }
}
