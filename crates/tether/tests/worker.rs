//! The workers that ship with Tether, as real processes against a real `tether serve`:
//! the demo worker runs a task end to end, survives a crash of its own process through the
//! lease and the rewind, and the exec worker turns a command's output, exit status, nudges
//! and cancel into the protocol.

mod common;

use std::path::Path;
use std::time::Duration;

use tether_types::event::kind;
use tether_types::{EventAt, Task, TaskState};

use common::cli::{CliEnv, Running};
use common::server::{free_loopback_addr, Auth, ServerHome, TestServer};

/// Bound for anything a worker does to a task; only a hang comes near it.
const TASK_TIMEOUT: Duration = Duration::from_secs(60);

/// Short leases, so a crashed worker's task is requeued within seconds.
const SHORT_LEASES: [&str; 4] = ["--lease", "2s", "--reconcile-interval", "200ms"];

async fn start(extra: &[&str]) -> (ServerHome, TestServer, CliEnv) {
    let mut home = ServerHome::new();
    let server = home.start_with("127.0.0.1:0", Auth::Token, extra).await;
    let cli = CliEnv::new(server.base_url(), &home.data_dir());
    (home, server, cli)
}

async fn submit(cli: &CliEnv, args: &[&str]) -> String {
    let mut all = vec!["submit"];
    all.extend_from_slice(args);
    let run = cli.run(&all).await;
    run.expect_code(0);
    let id = run.stdout.trim().to_string();
    assert!(id.starts_with("tsk_"), "submit printed {:?}", run.stdout);
    id
}

async fn task(cli: &CliEnv, id: &str) -> Task {
    let run = cli.run(&["status", id, "--output", "json"]).await;
    run.expect_code(0);
    serde_json::from_str(run.stdout.trim()).expect("status prints the task as JSON")
}

/// `watch` to the end of the task; returns its exit code and stdout.
async fn watch(cli: &CliEnv, id: &str) -> (Option<i32>, String) {
    let run = cli.run(&["watch", id]).await;
    (run.code(), run.stdout)
}

fn of_kind<'a>(events: &'a [EventAt], wanted: &str) -> Vec<&'a EventAt> {
    events.iter().filter(|e| e.event.kind == wanted).collect()
}

fn in_step<'a>(events: &'a [EventAt], wanted: &str, step: &str) -> Vec<&'a EventAt> {
    events
        .iter()
        .filter(|e| e.event.kind == wanted && e.event.step.as_deref() == Some(step))
        .collect()
}

/// Every task has exactly one terminal event, and it is the last.
fn assert_one_terminal_event_last(events: &[EventAt]) {
    let terminal: Vec<_> = events
        .iter()
        .filter(|e| kind::is_terminal(&e.event.kind))
        .collect();
    assert_eq!(terminal.len(), 1, "terminal events: {terminal:?}");
    assert!(kind::is_terminal(&events.last().unwrap().event.kind));
}

async fn demo_worker(cli: &CliEnv, extra: &[&str]) -> Running {
    let mut args = vec!["worker", "--demo", "--speed", "100", "--poll", "1s"];
    args.extend_from_slice(extra);
    cli.spawn(&args)
}

#[tokio::test]
async fn a_demo_worker_runs_a_task_to_completion_and_run_exits_0() {
    let (_home, _server, cli) = start(&[]).await;
    let _worker = demo_worker(&cli, &["--concurrency", "2"]).await;

    let run = cli
        .run(&["run", "fix the flaky test", "--repo", "org/app"])
        .await;
    run.expect_code(0);
    assert!(run.stdout.contains("step agent started"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("pull request opened: https://github.com/org/app/pull/"),
        "{}",
        run.stdout
    );
    let id = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("submitted "))
        .expect("run says which task it submitted")
        .trim()
        .to_string();

    let log = cli.events(&id, false).await;
    assert_one_terminal_event_last(&log);
    assert_eq!(log.last().unwrap().event.kind, kind::TASK_COMPLETED);
    for step in ["hydrate", "clone", "agent", "test", "open_pr"] {
        assert_eq!(in_step(&log, kind::STEP_STARTED, step).len(), 1, "{step}");
        assert_eq!(in_step(&log, kind::STEP_COMPLETED, step).len(), 1, "{step}");
    }
    assert!(!of_kind(&log, kind::AGENT_TOOL_CALL).is_empty());
    assert!(!of_kind(&log, kind::AGENT_COST_UPDATE).is_empty());
    let status = task(&cli, &id)
        .await
        .status
        .expect("a single task has a status");
    assert!(status.turns >= 1 && status.cost_usd > 0.0, "{status:?}");
}

#[tokio::test]
async fn a_worker_that_crashes_mid_step_has_its_task_retried_with_the_step_rewound() {
    let (_home, _server, cli) = start(&SHORT_LEASES).await;
    let crashing = demo_worker(&cli, &["--crash-at", "clone:1"]).await;
    let id = submit(&cli, &["crash in clone", "--repo", "org/app"]).await;

    // The worker process ends by itself, abruptly, in the middle of step clone.
    let (status, _, stderr) = crashing.finish(TASK_TIMEOUT).await;
    assert!(
        !status.success(),
        "the crashing worker exited with {status}"
    );
    assert!(
        stderr.iter().any(|l| l.contains("crashing in step clone")),
        "{stderr:?}"
    );

    // A healthy worker picks the task up once its lease has expired.
    let _healthy = demo_worker(&cli, &[]).await;
    let (code, shown) = watch(&cli, &id).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("step clone retried (attempt 2)"),
        "watch shows the rewind:\n{shown}"
    );

    let log = cli.events(&id, false).await;
    assert_one_terminal_event_last(&log);
    assert_eq!(of_kind(&log, kind::TASK_REQUEUED).len(), 1);
    let rewinds = of_kind(&log, kind::STREAM_REWIND);
    assert_eq!(rewinds.len(), 1, "{rewinds:?}");
    assert_eq!(rewinds[0].event.step.as_deref(), Some("clone"));
    assert_eq!(rewinds[0].event.rewind_epoch(), Some(2));
    // The raw log keeps the first attempt's output of clone; hydrate completed in attempt 1
    // and was skipped by attempt 2 through its checkpoint.
    let clone_starts = in_step(&log, kind::STEP_STARTED, "clone");
    let attempts: Vec<_> = clone_starts.iter().map(|e| e.event.attempt).collect();
    assert_eq!(attempts, [Some(1), Some(2)]);
    assert_eq!(in_step(&log, kind::STEP_STARTED, "hydrate").len(), 1);
    assert_eq!(task(&cli, &id).await.attempt, 2);

    // The timeline leaves the superseded attempt out: each step once.
    let timeline = cli.events(&id, true).await;
    for step in ["hydrate", "clone", "agent", "test", "open_pr"] {
        assert_eq!(
            in_step(&timeline, kind::STEP_STARTED, step).len(),
            1,
            "{step}"
        );
        assert_eq!(
            in_step(&timeline, kind::STEP_COMPLETED, step).len(),
            1,
            "{step}"
        );
    }
    assert!(timeline
        .iter()
        .filter(|e| e.event.step.as_deref() == Some("clone") && e.event.kind != kind::STREAM_REWIND)
        .all(|e| e.event.attempt == Some(2)));
}

#[tokio::test]
async fn a_demo_worker_fails_the_task_at_the_step_asked() {
    let (_home, _server, cli) = start(&[]).await;
    let _worker = demo_worker(&cli, &["--fail-at", "test"]).await;
    let id = submit(&cli, &["fail in test"]).await;
    let (code, shown) = watch(&cli, &id).await;
    assert_eq!(code, Some(1), "{shown}");
    let task = task(&cli, &id).await;
    assert_eq!(task.state, TaskState::Failed);
    let failure = task.status.and_then(|s| s.failure).expect("a failure");
    assert_eq!(failure.code, "DEMO_FAILURE");
    let log = cli.events(&id, false).await;
    assert!(in_step(&log, kind::STEP_COMPLETED, "test").is_empty());
    assert_eq!(in_step(&log, kind::STEP_COMPLETED, "agent").len(), 1);
}

/// A command that reports what it was given, declares a step, prints JSON events, plain
/// lines and stderr, and exits with the status the description asks for.
const REPORTING_COMMAND: &str = r#"
read -r task
printf '{"type":"task_seen","data":%s}\n' "$task"
echo "env id=$TETHER_TASK_ID attempt=$TETHER_TASK_ATTEMPT repo=$TETHER_TASK_REPOSITORY type=$TETHER_TASK_TYPE"
echo '{"type":"step_started","step":"build"}'
echo 'compiling 3 crates'
echo 'warning: unused variable' >&2
echo '{"type":"agent_milestone","step":"build","data":{"milestone":"built"},"ignored":true}'
echo '{"type":"step_completed","step":"build","data":{"artifact":"a.out"}}'
case "$TETHER_TASK_DESCRIPTION" in
  fail*) exit 3 ;;
esac
"#;

#[tokio::test]
async fn an_exec_worker_turns_output_into_events_and_its_exit_status_into_the_outcome() {
    let (_home, _server, cli) = start(&[]).await;
    let _worker = cli.spawn(&["worker", "--exec", REPORTING_COMMAND, "--poll", "1s"]);

    let ok = submit(
        &cli,
        &["succeed please", "--repo", "org/app", "--type", "fix"],
    )
    .await;
    assert_eq!(watch(&cli, &ok).await.0, Some(0));
    let log = cli.events(&ok, false).await;
    assert_one_terminal_event_last(&log);

    let seen = of_kind(&log, "task_seen");
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].event.data["id"],
        ok.as_str(),
        "the task JSON on stdin"
    );
    assert_eq!(seen[0].event.data["description"], "succeed please");

    let lines: Vec<(&str, Option<&str>, Option<&str>)> = of_kind(&log, kind::LOG)
        .iter()
        .map(|e| {
            (
                e.event.data_str("line").unwrap_or_default(),
                e.event.data_str("stream"),
                e.event.step.as_deref(),
            )
        })
        .collect();
    // Output before any declared step belongs to the implicit step `run`.
    let env_line = format!("env id={ok} attempt=1 repo=org/app type=fix");
    assert!(
        lines.contains(&(env_line.as_str(), None, Some("run"))),
        "{lines:?}"
    );
    assert_eq!(seen[0].event.step.as_deref(), Some("run"));
    assert_eq!(seen[0].event.attempt, Some(1));
    assert!(
        lines.contains(&("compiling 3 crates", None, Some("build"))),
        "{lines:?}"
    );
    // stdout and stderr are separate pipes, so which step a stderr line lands in is a race;
    // that it arrives, marked as stderr, is not.
    assert!(
        lines
            .iter()
            .any(|l| l.0 == "warning: unused variable" && l.1 == Some("stderr")),
        "{lines:?}"
    );

    let started = in_step(&log, kind::STEP_STARTED, "build");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].event.attempt, Some(1));
    let milestone = in_step(&log, kind::AGENT_MILESTONE, "build");
    assert_eq!(milestone.len(), 1);
    assert_eq!(
        milestone[0].event.data,
        serde_json::json!({"milestone": "built"})
    );
    assert_eq!(milestone[0].event.attempt, Some(1));
    assert_eq!(in_step(&log, kind::STEP_COMPLETED, "build").len(), 1);
    // The step's events come before its completion.
    let position = |e: &EventAt| log.iter().position(|x| x.offset == e.offset).unwrap();
    assert!(position(milestone[0]) < position(in_step(&log, kind::STEP_COMPLETED, "build")[0]));

    let failing = submit(&cli, &["fail with 3"]).await;
    assert_eq!(watch(&cli, &failing).await.0, Some(1));
    let task = task(&cli, &failing).await;
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(
        task.status.and_then(|s| s.failure).map(|f| f.code),
        Some("EXIT_3".to_string())
    );
}

/// Waits, with a deadline, for a file a command writes.
async fn wait_for_file(path: &Path, within: Duration) -> String {
    let found = tokio::time::timeout(within, async {
        loop {
            if let Ok(text) = std::fs::read_to_string(path) {
                if text.ends_with('\n') {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{} did not appear within {within:?}", path.display()))
}

/// Waits until the task's log has an event of `wanted`.
async fn wait_for_event(cli: &CliEnv, id: &str, wanted: &str) {
    let found = tokio::time::timeout(TASK_TIMEOUT, async {
        loop {
            if cli
                .events(id, false)
                .await
                .iter()
                .any(|e| e.event.kind == wanted)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no {wanted} event within {TASK_TIMEOUT:?}");
}

#[tokio::test]
async fn cancel_reaches_an_exec_worker_as_sigterm_and_watch_exits_1() {
    let (home, _server, cli) = start(&SHORT_LEASES).await;
    let marker = home.data_dir().join("sigterm.txt");
    let command = format!(
        r#"trap 'echo "got SIGTERM" > {marker}; exit 143' TERM
echo '{{"type":"step_started","step":"work"}}'
while true; do sleep 0.05; done"#,
        marker = marker.display()
    );
    let _worker = cli.spawn(&[
        "worker", "--exec", &command, "--grace", "5s", "--poll", "1s",
    ]);
    let id = submit(&cli, &["run until cancelled"]).await;
    wait_for_event(&cli, &id, kind::STEP_STARTED).await;

    let watching = cli.spawn(&["watch", &id]);
    cli.run(&["cancel", &id]).await.expect_code(0);
    let (status, shown, _) = watching.finish(TASK_TIMEOUT).await;
    assert_eq!(status.code(), Some(1), "{shown:?}");

    // The next heartbeat tells the worker, which sends SIGTERM to the command.
    assert_eq!(wait_for_file(&marker, TASK_TIMEOUT).await, "got SIGTERM\n");
    let log = cli.events(&id, false).await;
    assert_eq!(of_kind(&log, kind::TASK_CANCELLED).len(), 1);
    assert_one_terminal_event_last(&log);
}

#[tokio::test]
async fn a_nudge_reaches_an_exec_command_on_stdin_and_is_acknowledged_once() {
    let (_home, _server, cli) = start(&SHORT_LEASES).await;
    // Reports the first nudge it reads as an event, then ends the task.
    let command = r#"read -r task
echo '{"type":"step_started","step":"listen"}'
while read -r line; do
  case "$line" in
    *'"type":"nudge"'*) printf '{"type":"nudge_seen","data":%s}\n' "$line"; exit 0 ;;
  esac
done
exit 9"#;
    let _worker = cli.spawn(&["worker", "--exec", command, "--poll", "1s"]);
    let id = submit(&cli, &["listen for a nudge"]).await;
    wait_for_event(&cli, &id, kind::STEP_STARTED).await;

    let nudged = cli.run(&["nudge", &id, "  try rg instead of grep  "]).await;
    nudged.expect_code(0);
    let nudge_id = nudged.stdout.trim().to_string();
    assert_eq!(watch(&cli, &id).await.0, Some(0));

    let log = cli.events(&id, false).await;
    let seen = of_kind(&log, "nudge_seen");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].event.data["id"], nudge_id.as_str());
    assert_eq!(seen[0].event.data["message"], "try rg instead of grep");
    assert_eq!(of_kind(&log, kind::NUDGE_ACKNOWLEDGED).len(), 1);
    assert_one_terminal_event_last(&log);
    // Nothing is sent to a task that ended.
    let late = cli.run(&["nudge", &id, "too late"]).await;
    late.expect_code(2);
}

#[tokio::test]
async fn tether_up_serves_and_runs_tasks_with_its_own_worker_and_stops_on_ctrl_c() {
    let data = tempfile::Builder::new()
        .prefix("tether-up-")
        .tempdir()
        .expect("a data dir");
    // `up` reads TETHER_DATA_DIR like `serve`; its URL is known only from its ready line.
    let launcher = CliEnv::new("http://127.0.0.1:9", data.path());
    let (up, url) = start_up_on(&launcher, "127.0.0.1:0").await;
    let lines = up.stdout_lines();
    assert!(
        lines.iter().any(|l| l.contains("tether run \"")),
        "up says how to submit and watch: {lines:?}"
    );

    let cli = CliEnv::new(&url, data.path());
    let run = cli.run(&["run", "fix the flaky test"]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("✔ task completed"), "{}", run.stdout);
    assert!(run.stdout.contains("= completed in "), "{}", run.stdout);

    // A first start submits a demo task, so the page the login link opens shows one running;
    // the demo worker runs it to the end.
    let mut up = up;
    let prefix = format!("demo task running: {url}/tasks/");
    let mut n = 1;
    let demo = loop {
        up.wait_for_stdout_lines(n, TASK_TIMEOUT).await;
        let lines = up.stdout_lines();
        if let Some(id) = lines.iter().find_map(|l| l.strip_prefix(prefix.as_str())) {
            break id.to_string();
        }
        n += 1;
    };
    let watched = cli.run(&["watch", &demo]).await;
    watched.expect_code(0);
    assert!(
        watched.stdout.contains("✔ task completed"),
        "{}",
        watched.stdout
    );

    up.interrupt().await;
    let (status, _, stderr) = up.finish(TASK_TIMEOUT).await;
    assert!(status.success(), "up exited with {status}: {stderr:?}");
}

/// Exchanges a login link's code for a session over HTTP, as the login page does: the
/// status and the session cookie (`name=value`), if one was set.
async fn exchange_login_link(link: &str) -> (hyper::StatusCode, Option<String>) {
    let (base, code) = link.split_once("/login?code=").expect("a login link");
    let http = common::http::HttpClient::new();
    let page = http
        .send(hyper::Method::GET, link, &[], "")
        .await
        .expect("the login page");
    assert_eq!(
        page.status,
        hyper::StatusCode::OK,
        "opening the link is only the page"
    );
    let body = serde_json::json!({ "code": code }).to_string();
    let made = http
        .send(
            hyper::Method::POST,
            &format!("{base}/v1/sessions"),
            &[("content-type", "application/json")],
            body,
        )
        .await
        .expect("the sign-in");
    let cookie = made
        .header("set-cookie")
        .map(|c| c.split(';').next().unwrap().to_string());
    (made.status, cookie)
}

#[tokio::test]
async fn tether_up_prints_a_login_link_that_works_once_and_tether_ui_prints_another() {
    let data = tempfile::Builder::new()
        .prefix("tether-up-")
        .tempdir()
        .expect("a data dir");
    let launcher = CliEnv::new("http://127.0.0.1:9", data.path());
    let (mut up, url) = start_up(&launcher).await;
    let mut n = 2;
    let link = loop {
        up.wait_for_stdout_lines(n, TASK_TIMEOUT).await;
        let lines = up.stdout_lines();
        if let Some(link) = lines.iter().find_map(|l| l.strip_prefix("web UI: ")) {
            break link.to_string();
        }
        n += 1;
    };
    assert!(link.starts_with(&format!("{url}/login?code=")), "{link}");

    let (status, cookie) = exchange_login_link(&link).await;
    assert_eq!(status, hyper::StatusCode::CREATED);
    let cookie = cookie.expect("a session cookie");
    let who = common::http::HttpClient::new()
        .send(
            hyper::Method::GET,
            &format!("{url}/v1/whoami"),
            &[("cookie", &cookie)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(who.body_text(), r#"{"user":"admin","role":"admin"}"#);
    let (again, cookie) = exchange_login_link(&link).await;
    assert_eq!(
        again,
        hyper::StatusCode::UNAUTHORIZED,
        "the link works once"
    );
    assert_eq!(cookie, None);

    let cli = CliEnv::new(&url, data.path());
    let ui = cli.run(&["ui"]).await;
    ui.expect_code(0);
    let fresh = ui.stdout.trim();
    assert!(fresh.starts_with(&format!("{url}/login?code=")), "{fresh}");
    assert_ne!(fresh, link);
    let (status, _) = exchange_login_link(fresh).await;
    assert_eq!(status, hyper::StatusCode::CREATED);

    up.interrupt().await;
    let (status, _, stderr) = up.finish(TASK_TIMEOUT).await;
    assert!(status.success(), "up exited with {status}: {stderr:?}");
}

/// Starts `tether up` on a free port with `launcher`'s home and data dir; returns it and its URL.
/// A fixed port: a server on port 0 records nothing for the CLI.
async fn start_up(launcher: &CliEnv) -> (Running, String) {
    start_up_on(launcher, &free_loopback_addr()).await
}

/// Starts `tether up` listening on `listen`; returns it and the URL from its ready line.
async fn start_up_on(launcher: &CliEnv, listen: &str) -> (Running, String) {
    let mut up = launcher.spawn(&["up", "--listen", listen, "--speed", "100"]);
    up.wait_for_stdout_lines(2, TASK_TIMEOUT).await;
    let lines = up.stdout_lines();
    let url = lines[0]
        .strip_prefix("tether listening on ")
        .unwrap_or_else(|| panic!("not a ready line: {lines:?}"))
        .to_string();
    (up, url)
}

#[tokio::test]
async fn after_tether_up_the_cli_finds_the_server_and_its_token_from_any_directory() {
    let data = tempfile::Builder::new()
        .prefix("tether-up-")
        .tempdir()
        .expect("a data dir");
    let launcher = CliEnv::new("http://127.0.0.1:9", data.path());
    let (up, url) = start_up(&launcher).await;

    let record = launcher.home().join(".config/tether/local-server.toml");
    let text = std::fs::read_to_string(&record).expect("up recorded the server");
    assert!(text.contains(&format!("url = \"{url}\"")), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&record).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the record holds a secret");
    }
    // Another directory, no URL and no data dir with a token: only the record can tell.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut command = launcher.command(&["whoami"]);
    command
        .env_remove("TETHER_URL")
        .env_remove("TETHER_DATA_DIR")
        .current_dir(elsewhere.path());
    let run = launcher.run_command(command).await;
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "admin (admin)");

    up.interrupt().await;
    let (status, _, stderr) = up.finish(TASK_TIMEOUT).await;
    assert!(status.success(), "up exited with {status}: {stderr:?}");
}

#[tokio::test]
async fn a_crashed_tether_up_leaves_no_live_worker_token_behind_at_its_next_start() {
    let data = tempfile::Builder::new()
        .prefix("tether-up-")
        .tempdir()
        .expect("a data dir");
    let launcher = CliEnv::new("http://127.0.0.1:9", data.path());
    let worker_tokens = |url: String| {
        let cli = CliEnv::new(&url, data.path());
        async move {
            let run = cli.run(&["token", "list", "--output", "json"]).await;
            run.expect_code(0);
            run.stdout_lines()
                .iter()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|t| t["role"] == "worker")
                .map(|t| t["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };

    let (mut up, url) = start_up(&launcher).await;
    let first = worker_tokens(url).await;
    assert_eq!(first.len(), 1, "{first:?}");
    up.kill().await;

    let (up, url) = start_up(&launcher).await;
    let second = worker_tokens(url).await;
    assert_eq!(
        second.len(),
        1,
        "the crashed run's token is still live: {second:?}"
    );
    assert_ne!(second, first);
    up.interrupt().await;
    let (status, _, stderr) = up.finish(TASK_TIMEOUT).await;
    assert!(status.success(), "up exited with {status}: {stderr:?}");
}

#[tokio::test]
async fn an_exec_commands_result_line_becomes_the_task_result_shown_by_status_and_watch() {
    let (_home, _server, cli) = start(&[]).await;
    // Two result lines: the last one wins.
    let command = r#"read -r task
echo '{"type":"result","data":"a first guess"}'
echo '{"type":"step_started","step":"work"}'
echo '{"type":"result","data":{"pr":"https://example.com/pull/7","files":2}}'
echo '{"type":"step_completed","step":"work"}'"#;
    let _worker = cli.spawn(&["worker", "--exec", command, "--poll", "1s"]);
    let id = submit(&cli, &["return a result"]).await;
    let (code, shown) = watch(&cli, &id).await;
    assert_eq!(code, Some(0), "{shown}");
    let wanted = serde_json::json!({"pr": "https://example.com/pull/7", "files": 2});
    assert!(
        shown.contains(&format!("result {wanted}")),
        "watch shows the result:\n{shown}"
    );

    let log = cli.events(&id, false).await;
    let completed = of_kind(&log, kind::TASK_COMPLETED);
    assert_eq!(completed[0].event.data["result"], wanted);
    assert!(
        of_kind(&log, "result").is_empty(),
        "not stored twice: {log:?}"
    );
    assert_eq!(
        task(&cli, &id).await.status.and_then(|s| s.result),
        Some(wanted.clone())
    );
    let status = cli.run(&["status", &id]).await;
    status.expect_code(0);
    assert!(
        status.stdout.contains(&format!("result      {wanted}")),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn every_cancel_of_a_command_that_prints_continuously_gets_sigterm_and_no_fenced_warning() {
    // The default lease: heartbeats come every 10 s, so the event upload, not the heartbeat,
    // is what hears of each cancel first.
    let (home, _server, cli) = start(&[]).await;
    let markers = home.data_dir();
    let command = format!(
        r#"trap 'echo "got SIGTERM" > {markers}/term-$TETHER_TASK_ID; exit 143' TERM
while true; do
  echo '{{"type":"agent_turn","data":{{}}}}'
  echo "still working"
  sleep 0.01
done"#,
        markers = markers.display()
    );
    let worker = cli.spawn(&[
        "worker", "--exec", &command, "--grace", "10s", "--poll", "1s",
    ]);
    for n in 0..3 {
        let id = submit(&cli, &[&format!("busy agent {n}")]).await;
        wait_for_event(&cli, &id, kind::AGENT_TURN).await;
        cli.run(&["cancel", &id]).await.expect_code(0);
        let marker = markers.join(format!("term-{id}"));
        assert_eq!(
            wait_for_file(&marker, TASK_TIMEOUT).await,
            "got SIGTERM\n",
            "cancel {n}"
        );
    }
    let stderr = worker.stderr_lines();
    assert!(
        !stderr
            .iter()
            .any(|l| l.contains("WARN") && (l.contains("fenced") || l.contains("lost the lease"))),
        "a cancel is not a lost lease:\n{}",
        stderr.join("\n")
    );
}

#[tokio::test]
async fn a_worker_reads_its_token_from_a_file_and_warns_about_one_on_the_command_line() {
    let (home, server, cli) = start(&[]).await;
    let token = std::fs::read_to_string(home.data_dir().join("admin.token")).unwrap();
    let file = cli.home().join("worker.token");
    std::fs::write(&file, &token).unwrap();
    // An empty data dir for the workers: the token can only come from the file or the flag.
    let elsewhere = tempfile::tempdir().unwrap();
    let bare = CliEnv::new(server.base_url(), elsewhere.path());

    let file_arg = file.display().to_string();
    let from_file = bare.spawn(&[
        "worker",
        "--exec",
        "true",
        "--poll",
        "1s",
        "--token-file",
        &file_arg,
    ]);
    let id = submit(&cli, &["run with a token file"]).await;
    assert_eq!(watch(&cli, &id).await.0, Some(0));
    from_file.interrupt().await;
    let (_, _, stderr) = from_file.finish(TASK_TIMEOUT).await;
    assert!(
        !stderr.iter().any(|l| l.contains("process list")),
        "{stderr:?}"
    );

    let mut on_argv = bare.spawn(&[
        "worker",
        "--exec",
        "true",
        "--poll",
        "1s",
        "--token",
        token.trim(),
    ]);
    on_argv
        .wait_for_stderr("--token puts the secret in the process list", TASK_TIMEOUT)
        .await;
    on_argv.interrupt().await;
}

#[tokio::test]
async fn a_worker_that_stops_with_its_claim_open_leaves_the_next_task_to_another_worker() {
    // The default 30 s lease: a stranded task would wait for it to expire.
    let (home, _server, cli) = start(&[]).await;
    let gate = home.data_dir().join("gate");
    let held = format!(
        "read -r task\nwhile [ ! -e {} ]; do sleep 0.05; done",
        gate.display()
    );
    // Two slots: one runs the held task, the other has a claim open on the server.
    let mut stopping = cli.spawn(&[
        "worker",
        "--exec",
        &held,
        "--concurrency",
        "2",
        "--drain",
        "60s",
        "--poll",
        "20s",
    ]);
    let first = submit(&cli, &["held open"]).await;
    wait_for_event(&cli, &first, kind::TASK_STARTED).await;
    stopping.interrupt().await;
    stopping
        .wait_for_stderr("waiting for running tasks", TASK_TIMEOUT)
        .await;

    // The stopping worker claims nothing more; the next task goes to a worker that runs.
    let next = submit(&cli, &["for another worker"]).await;
    let _other = cli.spawn(&["worker", "--exec", "true", "--poll", "1s"]);
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if task(&cli, &next).await.state == TaskState::Completed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let log = cli.events(&next, false).await;
    assert!(
        done.is_ok(),
        "the task waited for the stopped worker's lease:\n{log:#?}"
    );
    assert_eq!(task(&cli, &next).await.attempt, 1, "{log:#?}");

    std::fs::write(&gate, "").unwrap();
    let (status, _, stderr) = stopping.finish(TASK_TIMEOUT).await;
    assert!(status.success(), "{stderr:?}");
}
