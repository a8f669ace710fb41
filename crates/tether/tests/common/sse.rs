//! A minimal Server-Sent Events parser that follows the dispatch rules browsers use: an event
//! is complete only at its terminating blank line, `data:` lines are joined with "\n", and an
//! `id:` line updates the last event id.

/// One dispatched SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with "\n".
    pub data: String,
    /// The `id:` field of this event, when it had one.
    pub id: Option<String>,
}

#[derive(Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
    has_fields: bool,
}

impl SseParser {
    /// Feeds a chunk of the response body; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&byte| byte == b'\n') {
            let mut line: Vec<u8> = self.pending.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
        }
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if !self.has_fields {
                return None;
            }
            let event = SseEvent {
                event: self.event.take().unwrap_or_else(|| "message".to_string()),
                data: std::mem::take(&mut self.data).join("\n"),
                id: self.id.take(),
            };
            self.has_fields = false;
            return Some(event);
        }
        if line.starts_with(':') {
            return None; // comment, e.g. a keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => self.data.push(value.to_string()),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => return None,
        }
        self.has_fields = true;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_are_joined() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: data\nid: 7\ndata: [\n").is_empty());
        let events = parser.push(b"data: 1]\n\n: keep-alive\n\nevent: control\ndata: {}\n\n");
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: "data".into(),
                    data: "[\n1]".into(),
                    id: Some("7".into())
                },
                SseEvent {
                    event: "control".into(),
                    data: "{}".into(),
                    id: None
                },
            ]
        );
    }
}
