//! docs/events.schema.json against what Tether really writes: every event of tasks run by a
//! real server, the demo worker (crashed once, so a rewind and a requeue), the example worker
//! of docs/worker-guide.md and an exec command that is nudged, is valid; the schema refuses
//! events that break it; and docs/events.md names every type. Docs and code cannot drift.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tether_types::event::kind;
use tether_types::EventAt;

use common::cli::CliEnv;
use common::server::{Auth, ServerHome, TestServer};

/// Bound for anything a worker does to a task; only a hang comes near it.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// Every type Tether names in its code: the schema and docs/events.md must know each.
const KNOWN: [&str; 20] = [
    kind::TASK_CREATED,
    kind::TASK_STARTED,
    kind::TASK_FINALIZING,
    kind::TASK_REQUEUED,
    kind::TASK_COMPLETED,
    kind::TASK_FAILED,
    kind::TASK_TIMED_OUT,
    kind::TASK_CANCELLED,
    kind::STREAM_REWIND,
    kind::STEP_STARTED,
    kind::STEP_COMPLETED,
    kind::AGENT_TURN,
    kind::AGENT_TOOL_CALL,
    kind::AGENT_TOOL_RESULT,
    kind::AGENT_MILESTONE,
    kind::AGENT_COST_UPDATE,
    kind::AGENT_ERROR,
    kind::LOG,
    kind::NUDGE_SENT,
    kind::NUDGE_ACKNOWLEDGED,
];

fn docs(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(docs(file)).unwrap_or_else(|e| panic!("read docs/{file}: {e}"))
}

fn schema() -> Value {
    serde_json::from_str(&read("events.schema.json")).expect("the schema is JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema is a valid JSON Schema")
}

/// Panics naming every event of `log` the schema refuses, and why.
fn assert_valid(validator: &jsonschema::Validator, log: &[EventAt]) {
    let mut refused = Vec::new();
    for at in log {
        let event = serde_json::to_value(&at.event).expect("an event serializes");
        for error in validator.iter_errors(&event) {
            refused.push(format!("{event}: {error} at {}", error.instance_path()));
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn the_schema_and_the_docs_know_every_type_tether_names() {
    let schema = schema();
    let page = read("events.md");
    for name in KNOWN {
        assert!(
            schema["$defs"].get(name).is_some(),
            "{name} is not in the schema"
        );
        assert!(
            page.contains(&format!("`{name}`")),
            "{name} is not in events.md"
        );
    }
    let defs = schema["$defs"].as_object().unwrap();
    assert_eq!(
        defs.len(),
        KNOWN.len(),
        "the schema has types Tether does not name"
    );
    // The guide shows the example worker as it is.
    let example = read("examples/worker.py");
    assert!(
        read("worker-guide.md").contains(&example),
        "docs/worker-guide.md does not show docs/examples/worker.py as it is"
    );
}

#[test]
fn the_schema_refuses_events_the_views_could_not_read() {
    let validator = validator();
    for good in [
        json!({"type": "agent_tool_call", "step": "agent", "attempt": 1,
               "data": {"tool_name": "bash", "tool_input_preview": "ls"}}),
        json!({"type": "agent_cost_update", "data": {"cost_usd": 0.5}}),
        json!({"type": "log", "data": {"message": "hi", "level": "warn"}}),
        json!({"type": "deploy_preview", "data": ["anything", 1]}),
        json!({"type": "task_finalizing", "ts": "2026-11-21T10:00:00.123Z", "attempt": 1}),
    ] {
        assert!(validator.is_valid(&good), "refused {good}");
    }
    for bad in [
        json!({"data": {}}),
        json!({"type": "log", "data": {"line": "x"}, "extra": 1}),
        json!({"type": "agent_tool_call", "data": {"tool_input_preview": "ls"}}),
        json!({"type": "agent_cost_update", "data": {"input_tokens": "1200"}}),
        json!({"type": "agent_cost_update", "data": {}}),
        json!({"type": "agent_turn", "data": {"turn": 0}}),
        json!({"type": "agent_milestone", "data": {"url": "https://x"}}),
        json!({"type": "log", "data": {"level": "warn"}}),
        json!({"type": "nudge_sent", "data": {"nudge_id": "n", "message": "hi"}}),
        json!({"type": "stream_rewind", "step": "s", "data": {"new_epoch": 1,
               "superseded_after": "0000000000000000_0000000000000001"}}),
        json!({"type": "task_failed", "attempt": 1, "data": {"message": "no code"}}),
    ] {
        assert!(!validator.is_valid(&bad), "accepted {bad}");
    }
}

async fn start() -> (ServerHome, TestServer, CliEnv) {
    let mut home = ServerHome::new();
    // Short leases: a crashed worker's task is requeued within seconds.
    let extra = ["--lease", "2s", "--reconcile-interval", "200ms"];
    let server = home.start_with("127.0.0.1:0", Auth::Token, &extra).await;
    let cli = CliEnv::new(server.base_url(), &home.data_dir());
    (home, server, cli)
}

async fn submit(cli: &CliEnv, description: &str) -> String {
    let run = cli.run(&["submit", description]).await;
    run.expect_code(0);
    run.stdout.trim().to_string()
}

async fn log(cli: &CliEnv, id: &str) -> Vec<EventAt> {
    let run = cli.run(&["events", id]).await;
    run.expect_code(0);
    run.stdout_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn wait_for_event(cli: &CliEnv, id: &str, wanted: &str) {
    let found = tokio::time::timeout(TASK_TIMEOUT, async {
        while !log(cli, id).await.iter().any(|e| e.event.kind == wanted) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no {wanted} event within {TASK_TIMEOUT:?}");
}

/// Watches `id` to its end; `code` is what `watch` must exit with.
async fn finished(cli: &CliEnv, id: &str, code: i32) {
    cli.run(&["watch", id]).await.expect_code(code);
}

/// Stops a worker process the way Ctrl-C does, and waits for it.
async fn stop(worker: common::cli::Running) {
    worker.interrupt().await;
    worker.finish(TASK_TIMEOUT).await;
}

#[tokio::test]
async fn every_event_a_real_server_and_its_workers_write_matches_the_schema() {
    let (_home, _server, cli) = start().await;
    let demo = ["worker", "--demo", "--speed", "100", "--poll", "1s"];
    let mut ids = Vec::new();

    // The demo worker, crashed in clone: requeue, rewind, and every kind of agent progress.
    let crashing = cli.spawn(&[&demo[..], &["--crash-at", "clone:1"]].concat());
    let crashed = submit(&cli, "fix the flaky test").await;
    crashing.finish(TASK_TIMEOUT).await;
    let healthy = cli.spawn(&demo);
    finished(&cli, &crashed, 0).await;
    stop(healthy).await;
    ids.push(crashed);

    // The example worker of docs/worker-guide.md.
    let script = docs("examples/worker.py");
    let command = format!("python3 {}", script.display());
    let example = cli.spawn(&["worker", "--exec", &command, "--poll", "1s"]);
    let guided = submit(&cli, "list the repository").await;
    finished(&cli, &guided, 0).await;
    stop(example).await;
    ids.push(guided);

    // An exec command that waits for a nudge, reports an error and fails; a second task
    // waits behind it and is cancelled.
    let listening = r#"read -r task
echo '{"type":"step_started","step":"listen"}'
while read -r line; do
  case "$line" in
    *'"type":"nudge"'*)
      echo '{"type":"agent_error","step":"listen","data":{"code":"E1","message":"gave up"}}'
      echo 'a line on stderr' >&2
      exit 3 ;;
  esac
done"#;
    let exec = cli.spawn(&["worker", "--exec", listening, "--poll", "1s"]);
    let nudged = submit(&cli, "wait for a nudge").await;
    wait_for_event(&cli, &nudged, kind::STEP_STARTED).await;
    let waiting = submit(&cli, "never runs").await;
    cli.run(&["cancel", &waiting]).await.expect_code(0);
    cli.run(&["nudge", &nudged, "stop here"])
        .await
        .expect_code(0);
    finished(&cli, &nudged, 1).await;
    stop(exec).await;
    ids.extend([nudged, waiting]);

    let validator = validator();
    let mut seen = BTreeSet::new();
    for id in &ids {
        let events = log(&cli, id).await;
        assert_valid(&validator, &events);
        seen.extend(events.into_iter().map(|e| e.event.kind));
    }
    // What this run must have produced, so the check above is not vacuous. (Finalizing and
    // timing out are left to the schema's own cases.)
    let missing: Vec<&str> = KNOWN
        .iter()
        .filter(|k| ![kind::TASK_FINALIZING, kind::TASK_TIMED_OUT].contains(k))
        .filter(|k| !seen.contains(**k))
        .copied()
        .collect();
    assert!(missing.is_empty(), "no real {missing:?} event was checked");
}
