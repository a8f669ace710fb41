//! G2/G3 for readers that hang up: SSE and long-poll readers drop their connection at random
//! points while writers append, resume from their last `streamNextOffset` /
//! `Stream-Next-Offset` (or, for SSE, from the `Last-Event-ID` of the last `id:` seen), and
//! must end up with exactly the log a catch-up read returns: same messages, same order, no
//! duplicates, no gaps. One variant kills the server with SIGKILL in the middle and the
//! readers resume on the restarted server. Another runs three nodes on one PostgreSQL
//! database: the readers follow node A while the writers append through nodes B and C, and
//! when node A is SIGKILLed the readers resume on node B with their last offset.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tether_store::pg::scratch::ScratchDatabase;
use tokio::sync::watch;

use common::http::{
    describe, header_str, read_body, Connection, HttpClient, Response, REQUEST_TIMEOUT,
};
use common::server::{Auth, ServerHome, TestServer};
use common::sse::SseParser;
use common::streams::{
    append_json, close_stream, create_json_stream, encode_query, parse_messages, read_all_json,
    stream_route, HEADER_CLOSED, HEADER_CURSOR, HEADER_NEXT_OFFSET, START,
};

const WRITERS: usize = 3;
const MESSAGES_PER_WRITER: u64 = 100;
/// Each reader must have connected at least this often before the stream is closed, so that
/// every reader really resumed several times.
const MIN_SESSIONS_BEFORE_CLOSE: usize = 4;
/// In the restart variant, the kill comes after this many acknowledged appends.
const ACKED_BEFORE_KILL: usize = 120;
/// Bounds for the phases of a run; none is expected to come close on a healthy server.
const PHASE_LIMIT: Duration = Duration::from_secs(40);
const READER_LIMIT: Duration = Duration::from_secs(55);
const RESTART_WAIT_LIMIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_long_poll_readers_that_hang_up_resume_without_gaps_or_duplicates() {
    run_scenario(
        "sse_and_long_poll_readers_that_hang_up_resume_without_gaps_or_duplicates",
        "resume/hang-ups",
        Mode::OneServer,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_resume_with_their_last_offset_on_a_server_restarted_after_sigkill() {
    run_scenario(
        "readers_resume_with_their_last_offset_on_a_server_restarted_after_sigkill",
        "resume/restart",
        Mode::Restart,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_killed_node_resume_on_another_and_see_what_other_nodes_appended() {
    let test = "readers_of_a_killed_node_resume_on_another_and_see_what_other_nodes_appended";
    let Some(database) = ScratchDatabase::create(test).await else {
        return;
    };
    run_scenario(test, "resume/nodes", Mode::Nodes(database)).await;
}

/// Where the scenario's clients run.
enum Mode {
    /// Readers and writers on one server that stays up.
    OneServer,
    /// One server, SIGKILLed midway and restarted on the same data.
    Restart,
    /// Three nodes on one PostgreSQL database: readers on node A, writers on nodes B and C;
    /// node A is SIGKILLed midway and its readers move to node B.
    Nodes(ScratchDatabase),
}

/// A reader that waits at the tail must learn of the close from the SSE stream itself: the
/// protocol's final `control` event carries `streamClosed: true`, then the server ends the
/// response. (Ending the response without it makes the client reconnect just to find out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_reader_waiting_at_the_tail_gets_a_closed_control_event_when_the_stream_is_closed() {
    let mut home = ServerHome::new();
    let server = home.start().await;
    let http = HttpClient::new();
    let path = "resume/closed-while-tailing";
    create_json_stream(&http, server.base_url(), path)
        .await
        .unwrap_or_else(|error| panic!("creating {path}: {error}"));
    let appended = append_json(&http, server.base_url(), path, &json!({"n": 0}))
        .await
        .expect("append");
    assert!(appended.status.is_success(), "append: {}", appended.status);

    let target = format!("{}?offset={START}&live=sse", stream_route(path));
    let mut connection = Connection::open(server.base_url()).await.expect("connect");
    let response = connection.get(&target, &[]).await.expect("GET");
    assert_eq!(response.status(), StatusCode::OK, "GET {target}");
    let mut body = response.into_body();
    let mut parser = SseParser::default();
    let mut before_close = Vec::new();
    let caught_up = async {
        loop {
            let frame = body
                .frame()
                .await
                .expect("the server ended the SSE response before the reader caught up")
                .expect("SSE body");
            for event in parser.push(frame.data_ref().map_or(&[][..], |data| &data[..])) {
                let up_to_date = event.event == "control"
                    && serde_json::from_str::<Value>(&event.data)
                        .is_ok_and(|control| control["upToDate"] == Value::Bool(true));
                before_close.push(event);
                if up_to_date {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(PHASE_LIMIT, caught_up)
        .await
        .unwrap_or_else(|_| panic!("GET {target}: no up-to-date control event"));

    close_stream(&http, server.base_url(), path)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let mut after_close = Vec::new();
    let mut ended_with = String::from("the end of the response");
    let until_end = async {
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    ended_with = format!("a body error: {}", describe(&error));
                    break;
                }
            };
            after_close.extend(parser.push(frame.data_ref().map_or(&[][..], |data| &data[..])));
        }
    };
    tokio::time::timeout(PHASE_LIMIT, until_end)
        .await
        .unwrap_or_else(|_| panic!("GET {target}: the SSE response went on after the close"));

    let last_control = after_close
        .iter()
        .rev()
        .find(|event| event.event == "control")
        .and_then(|event| serde_json::from_str::<Value>(&event.data).ok());
    assert!(
        last_control
            .as_ref()
            .is_some_and(|control| control["streamClosed"] == Value::Bool(true)),
        "GET {target}: after POST Stream-Closed: true the SSE response ended ({ended_with}); \
         expected a final control event with \"streamClosed\":true first, got events {:?} \
         (before the close: {:?})",
        after_close,
        before_close
    );
    server.kill().await;
}

/// Which server the clients should talk to: replaced when the test restarts the server.
#[derive(Clone, Debug)]
struct Generation {
    number: usize,
    base_url: String,
}

#[derive(Clone)]
struct Endpoint {
    current: watch::Receiver<Generation>,
    restart_expected: bool,
}

impl Endpoint {
    fn current(&self) -> Generation {
        self.current.borrow().clone()
    }

    /// Called when a request to `failed` got no answer. That is only expected while the test
    /// restarts the server: then this waits until the new server is published.
    async fn after_lost_connection(
        &mut self,
        failed: &Generation,
        error: &str,
    ) -> Result<Generation, String> {
        if !self.restart_expected {
            return Err(format!(
                "lost the connection to {} although the server was not killed: {error}",
                failed.base_url
            ));
        }
        let newer = self
            .current
            .wait_for(|generation| generation.number > failed.number);
        match tokio::time::timeout(RESTART_WAIT_LIMIT, newer).await {
            Ok(Ok(generation)) => Ok(generation.clone()),
            _ => Err(format!(
                "lost the connection to {} and no restarted server came within \
                 {RESTART_WAIT_LIMIT:?}: {error}",
                failed.base_url
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// SSE, reconnecting with `offset=<streamNextOffset of the last control event>`.
    SseOffset,
    /// SSE, reconnecting with `Last-Event-ID: <last id: seen>` and no offset parameter, the
    /// way a browser's EventSource does.
    SseLastEventId,
    /// Long-poll, following `Stream-Next-Offset`.
    LongPoll,
}

#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    sessions: usize,
    generation: usize,
}

/// How one connection of a reader ended.
enum SessionEnd {
    /// The reader hung up on purpose.
    HungUp,
    /// The server ended the response or the connection without a closed signal.
    ServerEnded,
    /// The reader saw the stream's closed signal: it is done.
    StreamClosed,
    /// No answer: connection refused or reset.
    Lost(String),
}

struct Reader {
    name: String,
    kind: Kind,
    path: String,
    endpoint: Endpoint,
    rng: StdRng,
    progress: watch::Sender<Progress>,
    /// The messages delivered to the application, in order.
    messages: Vec<Value>,
    /// The next offset to read from (last `streamNextOffset` / `Stream-Next-Offset`).
    offset: String,
    last_event_id: Option<String>,
    cursor: Option<String>,
    sessions: usize,
    hang_ups: usize,
    server_ended: usize,
    lost: usize,
    /// SSE events that carried an `id:` line, by event type.
    ids_seen: BTreeMap<String, usize>,
}

impl Reader {
    async fn run(mut self) -> Result<Reader, String> {
        let started = Instant::now();
        let mut generation = self.endpoint.current();
        loop {
            if started.elapsed() > READER_LIMIT {
                return Err(format!(
                    "{}: no closed signal after {READER_LIMIT:?} ({} messages, offset {}, {} \
                     sessions)",
                    self.name,
                    self.messages.len(),
                    self.offset,
                    self.sessions
                ));
            }
            self.sessions += 1;
            let progress = Progress {
                sessions: self.sessions,
                generation: generation.number,
            };
            self.progress.send_replace(progress);
            let end = match self.kind {
                Kind::SseOffset | Kind::SseLastEventId => self.sse_session(&generation).await,
                Kind::LongPoll => self.long_poll_session(&generation).await,
            }
            .map_err(|error| format!("{} on {}: {error}", self.name, generation.base_url))?;
            match end {
                SessionEnd::StreamClosed => return Ok(self),
                SessionEnd::HungUp => self.hang_ups += 1,
                SessionEnd::ServerEnded => self.server_ended += 1,
                SessionEnd::Lost(error) => {
                    self.lost += 1;
                    generation = self
                        .endpoint
                        .after_lost_connection(&generation, &error)
                        .await
                        .map_err(|error| format!("{}: {error}", self.name))?;
                    continue;
                }
            }
            generation = self.endpoint.current();
        }
    }

    /// One SSE connection: reads events until the reader decides to hang up (after a random
    /// number of events, or when no byte came for a random short time), the server ends the
    /// response, or the stream's closed signal arrives.
    async fn sse_session(&mut self, generation: &Generation) -> Result<SessionEnd, String> {
        let route = stream_route(&self.path);
        let (target, last_event_id) = match (self.kind, &self.last_event_id) {
            (Kind::SseLastEventId, Some(id)) => (format!("{route}?live=sse"), Some(id.clone())),
            (Kind::SseLastEventId, None) => (format!("{route}?offset={START}&live=sse"), None),
            _ => (
                format!("{route}?offset={}&live=sse", encode_query(&self.offset)),
                None,
            ),
        };
        let mut headers = Vec::new();
        if let Some(id) = &last_event_id {
            headers.push(("Last-Event-ID", id.as_str()));
        }
        let request = format!("GET {target} (Last-Event-ID: {last_event_id:?})");

        let mut connection = match Connection::open(&generation.base_url).await {
            Ok(connection) => connection,
            Err(error) => return Ok(SessionEnd::Lost(error.to_string())),
        };
        let response = match connection.get(&target, &headers).await {
            Ok(response) => response,
            Err(error) => return Ok(SessionEnd::Lost(error.to_string())),
        };
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = tokio::time::timeout(REQUEST_TIMEOUT, read_body(response))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|response| response.body_text())
                .unwrap_or_default();
            return Err(format!("{request}: expected 200, got {status} {body}"));
        }
        let content_type = header_str(response.headers(), "content-type").unwrap_or("");
        if !content_type.starts_with("text/event-stream") {
            return Err(format!(
                "{request}: expected Content-Type text/event-stream, got {content_type:?}"
            ));
        }

        let hang_up_after_events = self.rng.gen_range(1..=8);
        let idle_hang_up = Duration::from_millis(self.rng.gen_range(50..=400));
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        // Data events wait here for their control event (offset-resuming reader only).
        let mut unconfirmed: Vec<Value> = Vec::new();
        let mut events = 0;
        loop {
            let frame = match tokio::time::timeout(idle_hang_up, body.frame()).await {
                Err(_) => return Ok(SessionEnd::HungUp),
                Ok(None) => return Ok(SessionEnd::ServerEnded),
                Ok(Some(Err(error))) => return Ok(SessionEnd::Lost(describe(&error))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Some(chunk) = frame.data_ref() else {
                continue;
            };
            for event in parser.push(chunk) {
                events += 1;
                if let Some(id) = &event.id {
                    *self.ids_seen.entry(event.event.clone()).or_default() += 1;
                    self.last_event_id = Some(id.clone());
                }
                match event.event.as_str() {
                    "data" => {
                        let messages = parse_messages(event.data.as_bytes())
                            .map_err(|error| format!("{request}: data event: {error}"))?;
                        match self.kind {
                            // A browser delivers a data event as soon as it is complete.
                            Kind::SseLastEventId => self.messages.extend(messages),
                            _ => unconfirmed.extend(messages),
                        }
                    }
                    "control" => {
                        let control: Value = serde_json::from_str(&event.data).map_err(|e| {
                            format!("{request}: control event {:?}: {e}", event.data)
                        })?;
                        let next = control["streamNextOffset"].as_str().ok_or_else(|| {
                            format!("{request}: control event without streamNextOffset: {control}")
                        })?;
                        self.messages.append(&mut unconfirmed);
                        self.offset = next.to_string();
                        if control["streamClosed"] == Value::Bool(true) {
                            return Ok(SessionEnd::StreamClosed);
                        }
                    }
                    other => {
                        return Err(format!(
                            "{request}: unexpected SSE event {other:?}: {}",
                            event.data
                        ))
                    }
                }
                if events >= hang_up_after_events {
                    // Hang up: whatever else this chunk holds is never seen.
                    return Ok(SessionEnd::HungUp);
                }
            }
        }
    }

    /// One connection used for a random number of long-polls. Some polls are abandoned while
    /// the server is still answering (the connection is dropped mid-request).
    async fn long_poll_session(&mut self, generation: &Generation) -> Result<SessionEnd, String> {
        let mut connection = match Connection::open(&generation.base_url).await {
            Ok(connection) => connection,
            Err(error) => return Ok(SessionEnd::Lost(error.to_string())),
        };
        let polls = self.rng.gen_range(1..=5);
        for _ in 0..polls {
            if connection.is_closed() {
                return Ok(SessionEnd::ServerEnded);
            }
            let mut target = format!(
                "{}?offset={}&live=long-poll",
                stream_route(&self.path),
                encode_query(&self.offset)
            );
            if let Some(cursor) = &self.cursor {
                target.push_str(&format!("&cursor={}", encode_query(cursor)));
            }
            let abandon_after = if self.rng.gen_bool(0.2) {
                Duration::from_millis(self.rng.gen_range(0..=300))
            } else {
                REQUEST_TIMEOUT
            };
            let exchange = async {
                let response = connection.get(&target, &[]).await?;
                read_body(response).await
            };
            let response: Response = match tokio::time::timeout(abandon_after, exchange).await {
                Err(_) if abandon_after < REQUEST_TIMEOUT => return Ok(SessionEnd::HungUp),
                Err(_) => {
                    return Err(format!(
                        "GET {target}: no answer within {REQUEST_TIMEOUT:?} (long-poll timeout \
                         is 500ms)"
                    ))
                }
                Ok(Err(error)) => return Ok(SessionEnd::Lost(error.to_string())),
                Ok(Ok(response)) => response,
            };
            if response.status != StatusCode::OK && response.status != StatusCode::NO_CONTENT {
                return Err(format!(
                    "GET {target}: expected 200 or 204, got {} {}",
                    response.status,
                    response.body_text()
                ));
            }
            let next = response.header(HEADER_NEXT_OFFSET).ok_or_else(|| {
                format!(
                    "GET {target}: {} without {HEADER_NEXT_OFFSET}",
                    response.status
                )
            })?;
            if response.status == StatusCode::OK {
                let messages = parse_messages(&response.body)
                    .map_err(|error| format!("GET {target}: {error}"))?;
                self.messages.extend(messages);
            }
            self.offset = next.to_string();
            self.cursor = response.header(HEADER_CURSOR).map(str::to_string);
            if response.flag(HEADER_CLOSED) {
                return Ok(SessionEnd::StreamClosed);
            }
        }
        Ok(SessionEnd::HungUp)
    }
}

struct WriterOutcome {
    writer: usize,
    acknowledged: Vec<u64>,
    unanswered: Vec<u64>,
}

/// Appends `{"writer":w,"n":n}` for n = 0.. with a little pacing. An append that gets no
/// answer (the server was killed) is not retried: it may or may not be in the log.
async fn run_writer(
    writer: usize,
    path: String,
    mut endpoint: Endpoint,
    http: HttpClient,
    mut rng: StdRng,
    acknowledged_total: watch::Sender<usize>,
) -> Result<WriterOutcome, String> {
    let mut outcome = WriterOutcome {
        writer,
        acknowledged: Vec::new(),
        unanswered: Vec::new(),
    };
    for n in 0..MESSAGES_PER_WRITER {
        // Pacing, so that readers see the log grow while they read.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..=8))).await;
        let generation = endpoint.current();
        let body = json!({"writer": writer, "n": n});
        match append_json(&http, &generation.base_url, &path, &body).await {
            Ok(response) if response.status.is_success() => {
                outcome.acknowledged.push(n);
                acknowledged_total.send_modify(|total| *total += 1);
            }
            Ok(response) => {
                return Err(format!(
                    "writer {writer}: POST {body}: expected 2xx, got {} {}",
                    response.status,
                    response.body_text()
                ))
            }
            Err(error) => {
                outcome.unanswered.push(n);
                endpoint
                    .after_lost_connection(&generation, &error.to_string())
                    .await
                    .map_err(|error| format!("writer {writer}: {error}"))?;
            }
        }
    }
    Ok(outcome)
}

/// A node of the [`Mode::Nodes`] scenario: a server of its own over the shared database.
struct Node {
    home: ServerHome,
    server: TestServer,
}

async fn start_node(database: &ScratchDatabase) -> Node {
    let mut home = ServerHome::new();
    let server = home
        .start_with("127.0.0.1:0", Auth::Off, &["--database", database.url()])
        .await;
    Node { home, server }
}

async fn run_scenario(test: &str, path: &str, mode: Mode) {
    let seed = common::test_seed(test);
    let mut rng = common::rng(seed, u64::MAX);
    let restart = matches!(mode, Mode::Restart);
    // `server` is where the readers start; in the nodes mode, `others` are nodes B and C.
    let (mut home, mut server, mut others) = match &mode {
        Mode::OneServer | Mode::Restart => {
            let mut home = ServerHome::new();
            let server = home.start().await;
            (home, server, Vec::new())
        }
        Mode::Nodes(database) => {
            let a = start_node(database).await;
            let others = vec![start_node(database).await, start_node(database).await];
            (a.home, a.server, others)
        }
    };
    let http = HttpClient::new();
    create_json_stream(&http, server.base_url(), path)
        .await
        .unwrap_or_else(|error| panic!("creating {path}: {error}"));

    let (generation_tx, generation_rx) = watch::channel(Generation {
        number: 0,
        base_url: server.base_url().to_string(),
    });
    let endpoint = Endpoint {
        current: generation_rx,
        restart_expected: !matches!(mode, Mode::OneServer),
    };
    // Writers write where the readers read, except across nodes: through B and C, which
    // stay up.
    let writer_endpoint = |writer: usize| match others.get(writer % others.len().max(1)) {
        Some(node) => Endpoint {
            current: watch::channel(Generation {
                number: 0,
                base_url: node.server.base_url().to_string(),
            })
            .1,
            restart_expected: false,
        },
        None => endpoint.clone(),
    };
    let kinds = [
        ("sse-offset-1", Kind::SseOffset),
        ("sse-offset-2", Kind::SseOffset),
        ("sse-last-event-id", Kind::SseLastEventId),
        ("long-poll-1", Kind::LongPoll),
        ("long-poll-2", Kind::LongPoll),
    ];
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for (index, (name, kind)) in kinds.into_iter().enumerate() {
        let (progress_tx, progress_rx) = watch::channel(Progress::default());
        progress.push((name, progress_rx));
        let reader = Reader {
            name: name.to_string(),
            kind,
            path: path.to_string(),
            endpoint: endpoint.clone(),
            rng: common::rng(seed, index as u64),
            progress: progress_tx,
            messages: Vec::new(),
            offset: START.to_string(),
            last_event_id: None,
            cursor: None,
            sessions: 0,
            hang_ups: 0,
            server_ended: 0,
            lost: 0,
            ids_seen: BTreeMap::new(),
        };
        readers.push(tokio::spawn(reader.run()));
    }

    let (acknowledged_tx, mut acknowledged_rx) = watch::channel(0usize);
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        writers.push(tokio::spawn(run_writer(
            writer,
            path.to_string(),
            writer_endpoint(writer),
            http.clone(),
            common::rng(seed, 100 + writer as u64),
            acknowledged_tx.clone(),
        )));
    }
    drop(acknowledged_tx);

    let mut final_generation = 0;
    let mut retired = Vec::new();
    if !matches!(mode, Mode::OneServer) {
        let enough = acknowledged_rx.wait_for(|&total| total >= ACKED_BEFORE_KILL);
        match tokio::time::timeout(PHASE_LIMIT, enough).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                // Every writer ended early: their results say why.
                join_writers(writers).await;
                panic!("the writers finished before {ACKED_BEFORE_KILL} appends were acknowledged");
            }
            Err(_) => {
                panic!("fewer than {ACKED_BEFORE_KILL} appends acknowledged within {PHASE_LIMIT:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=150))).await;
        let acknowledged_at_kill = *acknowledged_rx.borrow();
        server.kill().await;
        server = if others.is_empty() {
            home.start().await
        } else {
            // Node B takes over node A's readers; node A's home stays for its logs.
            let b = others.remove(0);
            retired.push(std::mem::replace(&mut home, b.home));
            b.server
        };
        final_generation = 1;
        println!(
            "SIGKILL after {acknowledged_at_kill} acknowledged appends; readers go on at {}",
            server.base_url()
        );
        generation_tx.send_replace(Generation {
            number: final_generation,
            base_url: server.base_url().to_string(),
        });
    }
    let writer_outcomes = join_writers(writers).await;

    // Close only once every reader has resumed several times (and, after a restart, has
    // connected to the new server), so that each one really exercised resuming.
    for (name, progress_rx) in &mut progress {
        let resumed = progress_rx.wait_for(|progress| {
            progress.sessions >= MIN_SESSIONS_BEFORE_CLOSE
                && progress.generation == final_generation
        });
        // An error means that the reader ended early; its result below says why.
        let timed_out = tokio::time::timeout(PHASE_LIMIT, resumed).await.is_err();
        assert!(
            !timed_out,
            "{name} did not reach {MIN_SESSIONS_BEFORE_CLOSE} sessions on the final server \
             within {PHASE_LIMIT:?}: {:?}",
            *progress_rx.borrow()
        );
    }
    close_stream(&http, server.base_url(), path)
        .await
        .unwrap_or_else(|error| panic!("{error}"));

    let mut finished = Vec::new();
    for handle in readers {
        let reader = tokio::time::timeout(READER_LIMIT, handle)
            .await
            .expect("readers finish after the stream is closed")
            .expect("reader task panicked")
            .unwrap_or_else(|error| panic!("{error}"));
        finished.push(reader);
    }

    let log = read_all_json(&http, server.base_url(), path)
        .await
        .unwrap_or_else(|error| panic!("catch-up read of {path}: {error}"));
    assert!(
        log.closed,
        "catch-up read of the closed stream {path} reached the tail without Stream-Closed: true"
    );
    check_log_against_writers(&log.messages, &writer_outcomes, restart);

    for reader in &finished {
        println!(
            "{:17} {:3} messages, {:2} sessions ({} hang-ups, {} ended by server, {} lost to \
             the kill), ids seen on {:?}",
            reader.name,
            reader.messages.len(),
            reader.sessions,
            reader.hang_ups,
            reader.server_ended,
            reader.lost,
            reader.ids_seen
        );
    }
    for reader in &finished {
        assert_same_sequence(reader, &log.messages);
    }
    server.kill().await;
    for node in others {
        node.server.kill().await;
    }
    drop(retired);
}

/// Waits for the writers; a writer's error fails the test.
async fn join_writers(
    writers: Vec<tokio::task::JoinHandle<Result<WriterOutcome, String>>>,
) -> Vec<WriterOutcome> {
    let mut outcomes = Vec::new();
    for handle in writers {
        let outcome = tokio::time::timeout(PHASE_LIMIT, handle)
            .await
            .unwrap_or_else(|_| panic!("a writer did not finish within {PHASE_LIMIT:?}"))
            .expect("writer task panicked")
            .unwrap_or_else(|error| panic!("{error}"));
        outcomes.push(outcome);
    }
    outcomes
}

/// The catch-up log itself: only the writers' messages, each at most once, each writer's in
/// order, every acknowledged one present.
fn check_log_against_writers(log: &[Value], writers: &[WriterOutcome], restart: bool) {
    let mut seen = HashSet::new();
    let mut last_n: BTreeMap<u64, u64> = BTreeMap::new();
    for (index, message) in log.iter().enumerate() {
        let (Some(writer), Some(n)) = (message["writer"].as_u64(), message["n"].as_u64()) else {
            panic!("log[{index}]: unexpected message {message}");
        };
        assert!(
            (writer as usize) < WRITERS && n < MESSAGES_PER_WRITER,
            "log[{index}]: {message} was never sent"
        );
        assert!(
            seen.insert((writer, n)),
            "log[{index}]: {message} appears twice"
        );
        if let Some(&previous) = last_n.get(&writer) {
            assert!(
                n > previous,
                "log[{index}]: {message} comes after n={previous}"
            );
        }
        last_n.insert(writer, n);
    }
    let mut acknowledged = 0;
    let mut unanswered_present = 0;
    let mut unanswered = 0;
    for outcome in writers {
        for &n in &outcome.acknowledged {
            acknowledged += 1;
            assert!(
                seen.contains(&(outcome.writer as u64, n)),
                "acknowledged message {{\"writer\":{},\"n\":{n}}} is missing from the log",
                outcome.writer
            );
        }
        for &n in &outcome.unanswered {
            unanswered += 1;
            if seen.contains(&(outcome.writer as u64, n)) {
                unanswered_present += 1;
            }
        }
    }
    if !restart {
        assert_eq!(
            unanswered, 0,
            "appends failed although the server was never killed"
        );
    }
    println!(
        "catch-up log: {} messages; {acknowledged} acknowledged appends all present; \
         {unanswered_present} of {unanswered} unanswered appends present",
        log.len()
    );
}

fn assert_same_sequence(reader: &Reader, log: &[Value]) {
    if reader.messages == log {
        return;
    }
    let first_difference = reader
        .messages
        .iter()
        .zip(log)
        .position(|(got, expected)| got != expected)
        .unwrap_or(reader.messages.len().min(log.len()));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for message in &reader.messages {
        *counts.entry(message.to_string()).or_default() += 1;
    }
    let duplicates = counts.values().filter(|&&count| count > 1).count();
    let in_log: HashSet<String> = log.iter().map(Value::to_string).collect();
    let missing = in_log.iter().filter(|m| !counts.contains_key(*m)).count();
    let around = |messages: &[Value]| {
        let start = first_difference.saturating_sub(2);
        let end = (first_difference + 3).min(messages.len());
        messages[start..end]
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    panic!(
        "{} ({:?}, {} sessions) did not see exactly the log: got {} messages, the log has {}; \
         {duplicates} messages seen more than once, {missing} never seen; first difference at \
         index {first_difference}: reader has [{}], log has [{}]; SSE ids seen on {:?}",
        reader.name,
        reader.kind,
        reader.sessions,
        reader.messages.len(),
        log.len(),
        around(&reader.messages),
        around(log),
        reader.ids_seen
    );
}
