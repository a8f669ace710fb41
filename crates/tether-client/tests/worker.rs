//! The worker runtime against a scripted fake server: what it sends, in which order, what it
//! repeats after a failure (and with which producer sequence), and what it stops doing once
//! the lease is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tether_client::worker::{
    run_worker, Outcome, Runner, StepStart, Stop, TaskError, TaskRun, WorkerConfig,
};
use tether_client::Client;
use tether_types::TaskId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    /// The last path segment(s) that name the call: `claim`, `heartbeat`, `begin`, ...
    call: String,
    producer_seq: Option<String>,
    producer_id: Option<String>,
    body: Value,
}

/// How the fake answers each call, in order; a call with no script left gets a 200.
#[derive(Default)]
struct Fake {
    /// Per call name, the statuses to answer first (503 or 409 with a code).
    script: HashMap<&'static str, Vec<(u16, &'static str)>>,
    seen: Vec<Seen>,
    claims: u32,
}

fn task_json(id: &TaskId) -> Value {
    json!({
        "id": id.as_str(), "owner": "alice", "state": "RUNNING", "attempt": 1,
        "description": "d", "stream_url": "/v1/stream/tasks/x",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    })
}

fn call_name(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

async fn serve(fake: Arc<Mutex<Fake>>, done: Arc<Notify>, id: TaskId) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            tokio::spawn(connection(socket, fake.clone(), done.clone(), id.clone()));
        }
    });
    format!("http://{addr}")
}

async fn connection(mut socket: TcpStream, fake: Arc<Mutex<Fake>>, done: Arc<Notify>, id: TaskId) {
    let mut buffer = Vec::new();
    loop {
        // Read one request: head, then a Content-Length body.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value =
            serde_json::from_slice(&buffer[head_end..head_end + length]).unwrap_or(Value::Null);
        buffer.drain(..head_end + length);
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let call = call_name(&path);

        let (status, answer) = {
            let mut fake = fake.lock().unwrap();
            fake.seen.push(Seen {
                call: call.clone(),
                producer_seq: header("producer-seq"),
                producer_id: header("producer-id"),
                body: body.clone(),
            });
            let scripted = fake
                .script
                .get_mut(call.as_str())
                .and_then(|s| (!s.is_empty()).then(|| s.remove(0)));
            match scripted {
                Some((status, code)) => (
                    status,
                    json!({"error": {"code": code, "message": "scripted", "request_id": null}}),
                ),
                None => match call.as_str() {
                    "claim" => {
                        fake.claims += 1;
                        if fake.claims == 1 {
                            (
                                200,
                                json!({
                                    "task": task_json(&id), "attempt": 1,
                                    "lease": {"id": "lease_1", "expires_at": "2099-01-01T00:00:00Z"},
                                    "checkpoints": {},
                                }),
                            )
                        } else {
                            (204, Value::Null)
                        }
                    }
                    "heartbeat" => (
                        200,
                        json!({"expires_at": "2099-01-01T00:00:00Z", "cancel_requested": false, "nudges": []}),
                    ),
                    "begin" => (200, json!({"epoch": 1})),
                    "complete" => (200, json!({"epoch": 1})),
                    "events" => (
                        200,
                        json!({"next_after": "0000000000000000_0000000000000009", "appended": true}),
                    ),
                    "finish" => {
                        done.notify_one();
                        (200, task_json(&id))
                    }
                    _ => (
                        404,
                        json!({"error": {"code": "NOT_FOUND", "message": path, "request_id": null}}),
                    ),
                },
            }
        };
        let text = if status == 204 {
            String::new()
        } else {
            answer.to_string()
        };
        let reason = match status {
            200 => "OK",
            204 => "No Content",
            409 => "Conflict",
            _ => "Service Unavailable",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if socket.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Runs one step with three events and completes the task; records how its calls ended.
struct OneStep {
    ended: Arc<Mutex<Option<Result<(), String>>>>,
    stopped: Arc<Notify>,
}

#[async_trait::async_trait]
impl Runner for OneStep {
    async fn run(&self, run: TaskRun) -> Result<Outcome, TaskError> {
        let result = async {
            assert_eq!(run.begin("build").await?, StepStart::Run { epoch: 1 });
            for i in 0..3 {
                run.emit_in("build", "log", json!({"i": i}));
            }
            run.complete("build", json!({"ok": true})).await
        }
        .await;
        *self.ended.lock().unwrap() = Some(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        self.stopped.notify_one();
        result?;
        Ok(Outcome::Completed(None))
    }
}

async fn run_one(
    script: HashMap<&'static str, Vec<(u16, &'static str)>>,
) -> (Vec<Seen>, Option<Result<(), String>>) {
    let id = TaskId::from_random(42);
    let fake = Arc::new(Mutex::new(Fake {
        script,
        ..Fake::default()
    }));
    let finished = Arc::new(Notify::new());
    let url = serve(fake.clone(), finished.clone(), id).await;
    let client = Client::new(&url, Some("tk")).unwrap();
    let ended = Arc::new(Mutex::new(None));
    let stopped = Arc::new(Notify::new());
    let runner = Arc::new(OneStep {
        ended: ended.clone(),
        stopped: stopped.clone(),
    });
    let config = WorkerConfig {
        name: "w".into(),
        concurrency: 1,
        claim_wait: Duration::from_millis(50),
        drain: Duration::from_secs(5),
    };
    // Until the runner ended and, when it completed, the finish got through.
    let shutdown = {
        let ended = ended.clone();
        async move {
            stopped.notified().await;
            if matches!(*ended.lock().unwrap(), Some(Ok(()))) {
                finished.notified().await;
            }
        }
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        run_worker(client, config, runner, shutdown),
    )
    .await
    .expect("the worker stops")
    .expect("the worker ran");
    let seen = fake.lock().unwrap().seen.clone();
    let ended = ended.lock().unwrap().clone();
    (seen, ended)
}

fn calls(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .map(|s| s.call.as_str())
        .filter(|c| *c != "heartbeat" && *c != "claim")
        .collect()
}

#[tokio::test]
async fn a_failed_batch_is_resent_with_the_same_sequence_and_finish_is_retried() {
    let script = HashMap::from([
        ("events", vec![(503, "UNAVAILABLE")]),
        ("finish", vec![(503, "UNAVAILABLE"), (503, "UNAVAILABLE")]),
    ]);
    let (seen, ended) = run_one(script).await;
    assert_eq!(ended, Some(Ok(())));
    // step_started and three events go out before complete, then finish: nothing is lost
    // and nothing reordered by the retries.
    assert_eq!(
        calls(&seen),
        ["begin", "events", "events", "complete", "finish", "finish", "finish"]
    );
    let batches: Vec<&Seen> = seen.iter().filter(|s| s.call == "events").collect();
    assert_eq!(batches[0].producer_seq.as_deref(), Some("0"));
    assert_eq!(
        batches[1].producer_seq.as_deref(),
        Some("0"),
        "a retry keeps its number"
    );
    assert_eq!(
        batches[0].body, batches[1].body,
        "a retry resends the same batch"
    );
    assert_eq!(batches[0].producer_id.as_deref(), Some("lease_1"));
    let kinds: Vec<&str> = batches[1].body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["step_started", "log", "log", "log"]);
    assert!(batches[1].body["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["step"] == "build" && e["attempt"] == 1));
    let finishes: Vec<&Seen> = seen.iter().filter(|s| s.call == "finish").collect();
    assert!(finishes
        .iter()
        .all(|f| f.body == json!({"lease": "lease_1", "outcome": "completed"})));
}

#[tokio::test]
async fn a_lost_lease_stops_the_work_and_nothing_more_is_written() {
    let script = HashMap::from([("events", vec![(409, "LEASE_LOST")])]);
    let (seen, ended) = run_one(script).await;
    let ended = ended.expect("the runner ended");
    assert_eq!(
        ended,
        Err(TaskError::Stopped(Stop::Fenced).to_string()),
        "complete reports the stop"
    );
    // One refused batch; no retry, no complete, no finish.
    assert_eq!(calls(&seen), ["begin", "events"]);
}
