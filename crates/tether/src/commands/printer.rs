//! Prints a task's events as a timeline: each event once, superseded ones left out.

use std::io::Write;

use tether_client::Timeline;
use tether_types::EventAt;

use super::connect::Output;
use super::render;

/// Writes events to `out`, rendered or as JSON lines, applying the rewind rule to what
/// arrives live (a catch-up read already left superseded events out on the server).
pub struct EventPrinter<W> {
    out: W,
    output: Output,
    timeline: Timeline,
    /// The task's terminal event, once printed (for the summary `watch` ends with).
    pub terminal: Option<tether_types::Event>,
}

impl<W: Write> EventPrinter<W> {
    pub fn new(out: W, output: Output) -> Self {
        EventPrinter {
            out,
            output,
            timeline: Timeline::new(),
            terminal: None,
        }
    }

    /// Prints `event` unless a rewind superseded it; says whether it printed. Each line is
    /// flushed at once: a person or a script is watching.
    pub fn print(&mut self, event: &EventAt) -> std::io::Result<bool> {
        if !self.timeline.admit(&event.event) {
            return Ok(false);
        }
        match self.output {
            Output::Text => writeln!(self.out, "{}", render::line(event))?,
            Output::Json => {
                serde_json::to_writer(&mut self.out, event)?;
                writeln!(self.out)?;
            }
        }
        self.out.flush()?;
        if tether_types::event::kind::is_terminal(&event.event.kind) {
            self.terminal = Some(event.event.clone());
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_types::{Event, Offset};

    fn at(offset: u64, kind: &str, step: Option<&str>, attempt: Option<u32>) -> EventAt {
        let data = if kind == "stream_rewind" {
            json!({"new_epoch": 2, "superseded_after": Offset(1).to_string()})
        } else {
            json!({"message": format!("event {offset}")})
        };
        EventAt {
            offset: Offset(offset),
            event: Event {
                kind: kind.into(),
                ts: String::new(),
                step: step.map(str::to_string),
                attempt,
                data,
            },
        }
    }

    #[test]
    fn a_dead_attempts_late_events_are_skipped_after_the_rewind_line() {
        let mut printer = EventPrinter::new(Vec::new(), Output::Text);
        let events = [
            at(1, "log", Some("clone"), Some(1)),
            at(2, "stream_rewind", Some("clone"), None),
            at(3, "log", Some("clone"), Some(1)),
            at(4, "log", Some("clone"), Some(2)),
            at(5, "log", None, None),
        ];
        let printed: Vec<bool> = events.iter().map(|e| printer.print(e).unwrap()).collect();
        assert_eq!(printed, [true, true, false, true, true]);
        let text = String::from_utf8(printer.out).unwrap();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "[clone#1] log: event 1",
                "↺ step clone retried (attempt 2); earlier output of that step is superseded",
                "[clone#2] log: event 4",
                "log: event 5",
            ]
        );
    }

    #[test]
    fn json_output_is_one_event_at_per_line() {
        let mut printer = EventPrinter::new(Vec::new(), Output::Json);
        printer.print(&at(1, "log", None, None)).unwrap();
        printer.print(&at(2, "log", None, None)).unwrap();
        let text = String::from_utf8(printer.out).unwrap();
        let back: Vec<EventAt> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, [at(1, "log", None, None), at(2, "log", None, None)]);
    }
}
