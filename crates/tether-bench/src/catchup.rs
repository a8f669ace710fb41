//! The catch-up workload: how fast a reader that starts from the beginning replays a long
//! stream, following `Stream-Next-Offset` until `Stream-Up-To-Date: true`.
//!
//! The stream is `application/json`, preloaded with arrays of fixed-size messages that the
//! server flattens into separate messages. Only the read is timed.
//!
//! To check that the read returned every message without making the client the bottleneck,
//! each message is `{"i":"<10 digits>","p":"<letters>"}`: the key `"i"` occurs exactly once per
//! message and nowhere else (the padding has no quotes), so counting it with a vectorised
//! substring search counts messages, whatever whitespace or key order a server re-serialises
//! with. Each response must also be one JSON array, as the protocol requires.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::CONTENT_TYPE;
use hyper::{Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use crate::target::{create_stream, encode_query_value, send, Target};

/// Bytes of a message other than its padding: `{"i":"` + 10 digits + `","p":"` + `"}`.
const MESSAGE_OVERHEAD: usize = 25;
/// What marks one message in a response body.
const MARKER: &[u8] = b"\"i\"";

#[derive(Debug, Clone)]
pub struct CatchupConfig {
    pub messages: usize,
    pub message_size: usize,
    /// Messages per preload POST.
    pub batch: usize,
    pub preload_connections: usize,
    /// Reuse this stream if it exists (assumed complete), else create and preload it.
    pub stream: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchupResult {
    pub stream: String,
    pub message_size: usize,
    pub messages_expected: usize,
    /// False when an existing stream was reused.
    pub preloaded: bool,
    pub preload_s: Option<f64>,
    pub messages_read: u64,
    pub bytes_read: u64,
    pub requests: u64,
    pub read_s: f64,
    pub messages_per_s: f64,
    /// Megabytes (10^6 bytes) of response body per second.
    pub mb_per_s: f64,
    /// `messages_read == messages_expected`.
    pub verified: bool,
}

pub async fn run(
    target: &Target,
    cfg: &CatchupConfig,
    run_id: &str,
) -> anyhow::Result<CatchupResult> {
    anyhow::ensure!(
        cfg.message_size >= MESSAGE_OVERHEAD,
        "catch-up messages must be at least {MESSAGE_OVERHEAD} bytes"
    );
    anyhow::ensure!(
        cfg.batch > 0,
        "the preload batch must hold at least one message"
    );
    let name = cfg
        .stream
        .clone()
        .unwrap_or_else(|| format!("bench-{run_id}-catchup"));
    let path = target.stream_path(&name);
    let mut conn = target.connect().await?;

    let exists = {
        let req = target
            .request(Method::HEAD, path.as_str())
            .body(Full::new(Bytes::new()))?;
        let resp = send(&mut conn, req).await?;
        match resp.status {
            StatusCode::NOT_FOUND => false,
            s if s.is_success() && cfg.stream.is_some() => true,
            _ => bail!("HEAD {name} answered {}", resp.describe()),
        }
    };
    let preload_s = if exists {
        None
    } else {
        create_stream(target, &mut conn, &name, "application/json").await?;
        let start = Instant::now();
        preload(target, &path, cfg).await?;
        Some(start.elapsed().as_secs_f64())
    };

    let mut offset = "-1".to_string();
    let mut counter = MarkerCounter::new(MARKER);
    let (mut bytes_read, mut requests) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let uri: Uri = format!("{path}?offset={}", encode_query_value(&offset)).parse()?;
        let req = target
            .request(Method::GET, uri)
            .body(Full::new(Bytes::new()))?;
        conn.ready().await?;
        let resp = conn.send_request(req).await.context("catch-up read")?;
        requests += 1;
        if resp.status() != StatusCode::OK {
            bail!("GET at offset {offset} answered {}", resp.status());
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = header("stream-next-offset")
            .with_context(|| format!("GET at offset {offset} gave no Stream-Next-Offset"))?;
        let up_to_date = header("stream-up-to-date").is_some_and(|v| v == "true");

        let mut body = resp.into_body();
        let mut shape = ArrayShape::default();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.context("reading a catch-up response")?;
            if let Ok(chunk) = frame.into_data() {
                counter.feed(&chunk);
                shape.feed(&chunk);
                len += chunk.len() as u64;
            }
        }
        if !shape.is_array() {
            bail!("the response at offset {offset} is not one JSON array");
        }
        bytes_read += len;
        if up_to_date {
            break;
        }
        if next == offset && len == 0 {
            bail!("no progress at offset {offset} and not up to date");
        }
        offset = next;
    }
    let read_s = start.elapsed().as_secs_f64();
    let messages_read = counter.count();
    Ok(CatchupResult {
        stream: name,
        message_size: cfg.message_size,
        messages_expected: cfg.messages,
        preloaded: preload_s.is_some(),
        preload_s,
        messages_read,
        bytes_read,
        requests,
        read_s,
        messages_per_s: messages_read as f64 / read_s,
        mb_per_s: bytes_read as f64 / 1e6 / read_s,
        verified: messages_read == cfg.messages as u64,
    })
}

/// Appends `cfg.messages` messages in JSON arrays of `cfg.batch`, over a few connections.
async fn preload(target: &Target, path: &str, cfg: &CatchupConfig) -> anyhow::Result<()> {
    let batches = cfg.messages.div_ceil(cfg.batch);
    let next_batch = AtomicUsize::new(0);
    let uri: Uri = path.parse()?;
    futures::future::try_join_all((0..cfg.preload_connections.max(1)).map(|_| async {
        let mut conn = target.connect().await?;
        loop {
            let b = next_batch.fetch_add(1, Ordering::Relaxed);
            if b >= batches {
                return anyhow::Ok(());
            }
            let first = b * cfg.batch;
            let last = (first + cfg.batch).min(cfg.messages);
            let req = target
                .request(Method::POST, uri.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(batch_body(
                    first..last,
                    cfg.message_size,
                ))))?;
            let resp = send(&mut conn, req).await?;
            if !resp.status.is_success() {
                bail!(
                    "preload POST of messages {first}..{last} answered {}",
                    resp.describe()
                );
            }
        }
    }))
    .await
    .context("preloading the catch-up stream")?;
    Ok(())
}

/// A JSON array of the messages numbered `range`, each exactly `size` bytes.
pub fn batch_body(range: std::ops::Range<usize>, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + range.len() * (size + 1));
    out.push(b'[');
    for i in range {
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"i\":\"{i:010}\",\"p\":\"").as_bytes());
        out.extend((0..size - MESSAGE_OVERHEAD).map(|k| b'a' + ((i + k) % 26) as u8));
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
    out
}

/// Counts occurrences of a needle in a byte stream that arrives in chunks, including the ones
/// that straddle two chunks.
pub struct MarkerCounter {
    finder: memchr::memmem::Finder<'static>,
    /// The last `needle.len() - 1` bytes seen.
    tail: Vec<u8>,
    count: u64,
}

impl MarkerCounter {
    pub fn new(needle: &'static [u8]) -> Self {
        assert!(!needle.is_empty());
        Self {
            finder: memchr::memmem::Finder::new(needle),
            tail: Vec::new(),
            count: 0,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let keep = self.finder.needle().len() - 1;
        if !self.tail.is_empty() {
            // Matches that start in the tail and end in this chunk.
            let mut joint = self.tail.clone();
            joint.extend_from_slice(&chunk[..chunk.len().min(keep)]);
            let tail_len = self.tail.len();
            self.count += self
                .finder
                .find_iter(&joint)
                .filter(|&at| at < tail_len && at + keep >= tail_len)
                .count() as u64;
        }
        self.count += self.finder.find_iter(chunk).count() as u64;
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Checks that a response body, seen in chunks, starts with `[` and ends with `]`.
#[derive(Default)]
struct ArrayShape {
    first: Option<u8>,
    last: Option<u8>,
}

impl ArrayShape {
    fn feed(&mut self, chunk: &[u8]) {
        let mut bytes = chunk.iter().copied().filter(|b| !b.is_ascii_whitespace());
        if self.first.is_none() {
            self.first = bytes.next();
        }
        if let Some(&b) = chunk.iter().rev().find(|b| !b.is_ascii_whitespace()) {
            self.last = Some(b);
        }
    }

    fn is_array(&self) -> bool {
        matches!(
            (self.first, self.last),
            (None, None) | (Some(b'['), Some(b']'))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_messages_have_the_exact_size_and_parse_as_json() {
        let body = batch_body(5..8, 256);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["i"], "0000000005");
        for m in &v {
            assert_eq!(serde_json::to_vec(m).unwrap().len(), 256);
        }
        assert_eq!(body.len(), 2 + 3 * 256 + 2);
    }

    #[test]
    fn the_marker_is_counted_once_per_message_at_every_chunk_split() {
        let body = batch_body(0..40, 40);
        for cut_a in 0..body.len() {
            let cut_b = (cut_a + 7).min(body.len());
            let mut c = MarkerCounter::new(MARKER);
            c.feed(&body[..cut_a]);
            c.feed(&body[cut_a..cut_b]);
            c.feed(&body[cut_b..]);
            assert_eq!(c.count(), 40, "cuts at {cut_a} and {cut_b}");
        }
        let mut c = MarkerCounter::new(MARKER);
        for byte in body.chunks(1) {
            c.feed(byte);
        }
        assert_eq!(c.count(), 40);
    }

    #[test]
    fn pretty_printed_json_still_counts() {
        let mut c = MarkerCounter::new(MARKER);
        c.feed(b"[\n  {\"p\": \"ab\", \"i\": 1},\n  {\"i\": 2, \"p\": \"cd\"}\n]");
        assert_eq!(c.count(), 2);
    }

    #[test]
    fn array_shape_accepts_arrays_and_empty_bodies_only() {
        let check = |chunks: &[&[u8]]| {
            let mut s = ArrayShape::default();
            for c in chunks {
                s.feed(c);
            }
            s.is_array()
        };
        assert!(check(&[b"[1,", b"2]\n"]));
        assert!(check(&[b"", b"  "]));
        assert!(!check(&[b"{\"i\":1}"]));
        assert!(!check(&[b"[1,", b"2"]));
    }
}
