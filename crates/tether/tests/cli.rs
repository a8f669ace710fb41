//! The `tether` CLI against a real `tether serve` with token auth and a temporary data dir.
//! The CLI finds the admin token in the data dir, as it does on a single-machine install.

mod common;

use std::path::Path;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tether_types::event::kind;
use tether_types::{EventAt, Task, TaskState};

use common::cli::CliEnv;
use common::http::HttpClient;
use common::server::{free_loopback_addr, Auth, ServerHome, TestServer};

/// Bound for a live watch to show what was appended; only a hang comes near it.
const LIVE_TIMEOUT: Duration = Duration::from_secs(60);

async fn start() -> (ServerHome, TestServer, CliEnv) {
    let mut home = ServerHome::new();
    let server = home.start_at("127.0.0.1:0", Auth::Token).await;
    let cli = CliEnv::new(server.base_url(), &home.data_dir());
    (home, server, cli)
}

/// Submits a task through the CLI and returns its id.
async fn submit(cli: &CliEnv, description: &str) -> String {
    let run = cli.run(&["submit", description]).await;
    run.expect_code(0);
    let id = run.stdout.trim().to_string();
    assert!(id.starts_with("tsk_"), "submit printed {:?}", run.stdout);
    id
}

/// Appends producer events the way a worker does, with the admin token.
async fn append(base_url: &str, token: &str, id: &str, events: Vec<Value>) {
    let http = HttpClient::new();
    let body = json!({ "events": events }).to_string();
    let auth = format!("Bearer {token}");
    let response = http
        .send(
            Method::POST,
            &format!("{base_url}/v1/tasks/{id}/events"),
            &[
                ("Authorization", auth.as_str()),
                ("Content-Type", "application/json"),
            ],
            body,
        )
        .await
        .expect("append events");
    assert_eq!(
        response.status,
        StatusCode::OK,
        "append: {}",
        response.body_text()
    );
}

fn logs(range: std::ops::Range<u64>) -> Vec<Value> {
    range
        .map(|n| json!({"type": "log", "data": {"message": format!("line {n}"), "n": n}}))
        .collect()
}

fn parse_events(lines: &[String]) -> Vec<EventAt> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an EventAt: {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn submit_list_status_cancel_then_watch_exits_1_and_prints_task_cancelled_once() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "fix the flaky test").await;

    let list = cli.run(&["list"]).await;
    list.expect_code(0);
    let row = list
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} missing from:\n{}", list.stdout));
    assert!(row.contains("SUBMITTED"), "{row}");
    assert!(row.contains("fix the flaky test"), "{row}");

    let status = cli.run(&["status", &id]).await;
    status.expect_code(0);
    assert!(
        status.stdout.starts_with(&format!("{id} SUBMITTED")),
        "{}",
        status.stdout
    );
    let status = cli.run(&["status", &id, "--output", "json"]).await;
    let task: Task = serde_json::from_str(&status.stdout).expect("status --output json is a Task");
    assert_eq!(task.state, TaskState::Submitted);
    assert_eq!(task.spec.description, "fix the flaky test");

    let cancel = cli.run(&["cancel", &id]).await;
    cancel.expect_code(0);
    assert_eq!(cancel.stdout.trim(), format!("{id} CANCELLED"));

    let watch = cli.run(&["watch", &id]).await;
    watch.expect_code(1);
    let cancelled = watch
        .stdout_lines()
        .iter()
        .filter(|l| l.contains("✘ task cancelled"))
        .count();
    assert_eq!(cancelled, 1, "{}", watch.stdout);
    assert!(
        watch.stdout_lines()[0].contains("task created"),
        "{}",
        watch.stdout
    );
    // The terminal event, then the summary.
    let lines = watch.stdout_lines();
    assert!(
        lines[lines.len() - 2].contains("✘ task cancelled"),
        "{}",
        watch.stdout
    );
    assert!(
        lines[lines.len() - 1].starts_with("= cancelled in "),
        "{}",
        watch.stdout
    );

    let json = cli.run(&["watch", &id, "--output", "json"]).await;
    json.expect_code(1);
    let lines: Vec<String> = json.stdout_lines().iter().map(|l| l.to_string()).collect();
    let events = parse_events(&lines);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds, [kind::TASK_CREATED, kind::TASK_CANCELLED]);

    let tail = cli.run(&["watch", &id, "--tail", "1"]).await;
    tail.expect_code(1);
    assert_eq!(tail.stdout_lines().len(), 2, "{}", tail.stdout);
    assert!(
        tail.stdout_lines()[0].contains("✘ task cancelled"),
        "{}",
        tail.stdout
    );

    cli.run(&["status", &id, "--wait"]).await.expect_code(1);
}

#[tokio::test]
async fn export_refuses_to_overwrite_an_existing_file_without_force() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "export me").await;
    let target = cli.home().join("out.jsonl");
    std::fs::write(&target, "keep me\n").unwrap();
    let target_arg = target.to_str().unwrap();

    let refused = cli.run(&["export", &id, "-o", target_arg]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("already exists"),
        "{}",
        refused.stderr
    );
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");

    cli.run(&["export", &id, "-o", target_arg, "--force"])
        .await
        .expect_code(0);
    let written = std::fs::read_to_string(&target).unwrap();
    let first: Value = serde_json::from_str(written.lines().next().unwrap()).unwrap();
    assert_eq!(first["task"]["id"], id.as_str());

    let to_stdout = cli.run(&["export", &id]).await;
    to_stdout.expect_code(0);
    assert_eq!(to_stdout.stdout, written);
}

#[tokio::test]
async fn watch_survives_a_server_restart_and_prints_every_event_exactly_once() {
    let mut home = ServerHome::new();
    let addr = free_loopback_addr();
    let server = home.start_at(&addr, Auth::Token).await;
    let base = server.base_url().to_string();
    let token = home.admin_token();
    let cli = CliEnv::new(&base, &home.data_dir());
    let id = submit(&cli, "outlive a restart").await;

    let mut watch = cli.spawn(&["watch", &id, "--output", "json"]);
    watch.wait_for_stdout_lines(1, LIVE_TIMEOUT).await;
    append(&base, &token, &id, logs(0..5)).await;
    watch.wait_for_stdout_lines(6, LIVE_TIMEOUT).await;

    server.kill().await;
    watch.wait_for_stderr("connection lost", LIVE_TIMEOUT).await;
    let server = home.start_at(&addr, Auth::Token).await;
    append(&base, &token, &id, logs(5..10)).await;
    watch.wait_for_stdout_lines(11, LIVE_TIMEOUT).await;
    cli.run(&["cancel", &id]).await.expect_code(0);

    let (status, stdout, stderr) = watch.finish(LIVE_TIMEOUT).await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", stderr.join("\n"));
    let events = parse_events(&stdout);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    let mut want = vec![kind::TASK_CREATED];
    want.extend(std::iter::repeat_n(kind::LOG, 10));
    want.push(kind::TASK_CANCELLED);
    assert_eq!(kinds, want);
    let ns: Vec<u64> = events
        .iter()
        .filter_map(|e| e.event.data.get("n").and_then(Value::as_u64))
        .collect();
    assert_eq!(ns, (0..10).collect::<Vec<_>>());
    assert!(
        events.windows(2).all(|w| w[0].offset < w[1].offset),
        "offsets must strictly increase"
    );
    let outages = stderr
        .iter()
        .filter(|l| l.contains("connection lost"))
        .count();
    assert_eq!(outages, 1, "one line per outage:\n{}", stderr.join("\n"));
    drop(server);
}

#[tokio::test]
async fn a_created_token_is_printed_alone_acts_as_its_user_and_stops_working_when_revoked() {
    let (_home, _server, cli) = start().await;
    cli.run(&["user", "create", "alice"]).await.expect_code(0);

    let created = cli
        .run(&["token", "create", "--user", "alice", "--role", "user"])
        .await;
    created.expect_code(0);
    let lines = created.stdout_lines();
    assert_eq!(
        lines.len(),
        1,
        "only the secret on stdout: {:?}",
        created.stdout
    );
    let secret = lines[0];
    assert!(
        !created.stderr.contains(secret),
        "the secret leaked to stderr"
    );

    let me = cli.run(&["whoami", "--token", secret]).await;
    me.expect_code(0);
    assert_eq!(me.stdout.trim(), "alice (user)");

    // The admin cannot see the secret again, but the JSON form names the id to revoke.
    let issued = cli
        .run(&[
            "token", "create", "--user", "alice", "--role", "user", "--output", "json",
        ])
        .await;
    issued.expect_code(0);
    let issued: Value = serde_json::from_str(&issued.stdout).unwrap();
    let (token_id, second) = (
        issued["id"].as_str().unwrap(),
        issued["token"].as_str().unwrap(),
    );
    cli.run(&["whoami", "--token", second]).await.expect_code(0);
    cli.run(&["token", "revoke", token_id]).await.expect_code(0);
    let refused = cli.run(&["whoami", "--token", second]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("UNAUTHORIZED"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(second), "the token was printed");
}

#[tokio::test]
async fn another_users_task_and_an_unknown_task_both_exit_2_as_not_found() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "admin's task").await;
    cli.run(&["user", "create", "bob"]).await.expect_code(0);
    let bob = cli
        .run(&["token", "create", "--user", "bob", "--role", "user"])
        .await;
    bob.expect_code(0);
    let bob = bob.stdout.trim().to_string();

    for target in [id.as_str(), "tsk_00000000000000000000"] {
        let run = cli.run(&["watch", target, "--token", &bob]).await;
        run.expect_code(2);
        assert!(run.stderr.contains("TASK_NOT_FOUND"), "{}", run.stderr);
        assert!(run.stdout.is_empty());
    }
}

#[tokio::test]
async fn ctrl_c_ends_a_live_watch_with_exit_code_130() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "never finishes").await;
    let mut watch = cli.spawn(&["watch", &id]);
    watch.wait_for_stdout_lines(1, LIVE_TIMEOUT).await;
    watch.interrupt().await;
    let (status, stdout, _) = watch.finish(LIVE_TIMEOUT).await;
    assert_eq!(status.code(), Some(130));
    assert_eq!(stdout.len(), 1, "{stdout:?}");
}

#[tokio::test]
async fn without_flags_the_config_file_names_the_server_and_the_token() {
    let (home, server, cli) = start().await;
    let config_dir = cli.home().join(".config/tether");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("config.toml"),
        format!(
            "url = \"{}\"\ntoken = \"{}\"\n",
            server.base_url(),
            home.admin_token()
        ),
    )
    .unwrap();
    let mut command = cli.command(&["whoami"]);
    // Nothing but the config file can say where the server is or what the token is.
    command
        .env_remove("TETHER_URL")
        .env("TETHER_DATA_DIR", cli.home().join("no-data-here"));
    let run = cli.run_command(command).await;
    run.expect_code(0);
    assert_eq!(run.stdout.trim(), "admin (admin)");
}

#[tokio::test]
async fn config_show_layers_file_then_environment_then_flags_and_reads_back_as_the_same() {
    let cli = CliEnv::new("http://127.0.0.1:1", Path::new("./tether-data"));
    let file = cli.home().join("tether.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:5000\"\nlong_poll_timeout = \"5s\"\nlease = \"10s\"\n\
         max_concurrent = 3\nsse_takeover = false\n",
    )
    .unwrap();
    let mut command = cli.command(&["config", "show", "--max-concurrent", "5"]);
    command
        .env("TETHER_SERVER_CONFIG", &file)
        .env("TETHER_LEASE", "20s")
        .env("TETHER_MAX_CONCURRENT", "4")
        .env("TETHER_DATABASE_URL", "postgres://tether:s3cret@db/tether");
    let run = cli.run_command(command).await;
    run.expect_code(0);
    assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
    let shown: toml::Table = toml::from_str(&run.stdout).expect("config show prints TOML");
    let value = |key: &str| shown.get(key).map(ToString::to_string);
    assert_eq!(
        value("listen").as_deref(),
        Some("\"127.0.0.1:5000\""),
        "file"
    );
    assert_eq!(value("sse_takeover").as_deref(), Some("false"), "file");
    assert_eq!(
        value("long_poll_timeout").as_deref(),
        Some("\"5s\""),
        "file"
    );
    assert_eq!(value("lease").as_deref(), Some("\"20s\""), "env over file");
    assert_eq!(
        value("max_concurrent").as_deref(),
        Some("5"),
        "flag over env"
    );
    assert_eq!(
        value("max_read_bytes").as_deref(),
        Some("\"4MiB\""),
        "default"
    );
    assert_eq!(
        value("database").as_deref(),
        Some("\"postgres://tether:***@db/tether\""),
        "masked"
    );

    // Saved as a file, the output is the whole configuration: nothing else is needed.
    let saved = cli.home().join("saved.toml");
    std::fs::write(&saved, &run.stdout).unwrap();
    let again = cli
        .run(&["config", "show", "--config", saved.to_str().unwrap()])
        .await;
    again.expect_code(0);
    assert_eq!(again.stdout, run.stdout);
}

#[tokio::test]
async fn serve_refuses_a_config_file_with_an_unknown_key_or_a_bad_duration_naming_it() {
    let cli = CliEnv::new("http://127.0.0.1:1", Path::new("./tether-data"));
    let file = cli.home().join("tether.toml");
    for (text, expected) in [
        ("lisen = \"127.0.0.1:0\"\n", "unknown key `lisen`"),
        (
            "long_poll_timeout = \"soon\"\n",
            "`long_poll_timeout`: expected a duration like \"30s\"",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let run = cli
            .run(&["serve", "--config", file.to_str().unwrap()])
            .await;
        run.expect_code(1);
        assert!(run.stderr.contains("tether.toml: "), "{}", run.stderr);
        assert!(run.stderr.contains(expected), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[tokio::test]
async fn a_repeated_idempotency_key_gives_back_the_first_task() {
    let (_home, _server, cli) = start().await;
    let args = ["submit", "once only", "--idempotency-key", "deploy-42"];
    let first = cli.run(&args).await;
    first.expect_code(0);
    let again = cli.run(&args).await;
    again.expect_code(0);
    assert_eq!(first.stdout, again.stdout);
    assert!(again.stderr.contains("used before"), "{}", again.stderr);
    let list = cli.run(&["list", "--output", "json"]).await;
    assert_eq!(list.stdout_lines().len(), 1, "{}", list.stdout);
}

#[tokio::test]
async fn status_wait_returns_when_the_task_ends_with_the_watch_exit_code() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "wait for me").await;
    let waiting = cli.spawn(&["status", &id, "--wait"]);
    cli.run(&["cancel", &id]).await.expect_code(0);
    let (status, stdout, _) = waiting.finish(LIVE_TIMEOUT).await;
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout[0].starts_with(&format!("{id} CANCELLED")),
        "{stdout:?}"
    );
}

#[tokio::test]
async fn events_prints_the_raw_log_as_json_lines_from_an_offset() {
    let (home, server, cli) = start().await;
    let id = submit(&cli, "log some").await;
    append(server.base_url(), &home.admin_token(), &id, logs(0..3)).await;
    let all = cli.run(&["events", &id]).await;
    all.expect_code(0);
    let lines: Vec<String> = all.stdout_lines().iter().map(|l| l.to_string()).collect();
    let events = parse_events(&lines);
    assert_eq!(events.len(), 4);
    let after = events[1].offset.to_string();
    let rest = cli
        .run(&["events", &id, "--after", &after, "--limit", "1"])
        .await;
    rest.expect_code(0);
    assert_eq!(rest.stdout_lines(), [lines[2].as_str()]);
}

#[tokio::test]
async fn submit_with_watch_follows_the_new_task() {
    let (_home, _server, cli) = start().await;
    let mut watch = cli.spawn(&["submit", "watch me", "--watch", "--output", "json"]);
    watch.wait_for_stdout_lines(1, LIVE_TIMEOUT).await;
    let created: EventAt = serde_json::from_str(&watch.stdout_lines()[0]).unwrap();
    assert_eq!(created.event.kind, kind::TASK_CREATED);
    watch.wait_for_stderr("submitted tsk_", LIVE_TIMEOUT).await;
    let id = watch
        .stderr_lines()
        .iter()
        .find_map(|l| l.strip_prefix("submitted ").map(str::to_string))
        .unwrap();
    cli.run(&["cancel", &id]).await.expect_code(0);
    let (status, stdout, _) = watch.finish(LIVE_TIMEOUT).await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(stdout.len(), 2, "{stdout:?}");
}

#[tokio::test]
async fn control_characters_are_escaped_in_list_status_and_watch_and_exact_in_json() {
    let (home, server, cli) = start().await;
    let description = "fix \u{1b}[31mred\u{1b}]0;owned\u{7} \u{9b}2J it";
    let id = submit(&cli, description).await;
    // NUL and ESC from an agent's output too.
    let message = "done\u{0}\u{1b}[2J";
    append(
        server.base_url(),
        &home.admin_token(),
        &id,
        vec![json!({"type": "log", "data": {"message": message}})],
    )
    .await;
    cli.run(&["cancel", &id]).await.expect_code(0);

    let raw = |run: &common::cli::Run| -> Vec<char> {
        run.stdout
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect()
    };
    for args in [vec!["list"], vec!["status", &id], vec!["watch", &id]] {
        let run = cli.run(&args).await;
        assert!(
            raw(&run).is_empty(),
            "{args:?} printed control characters: {:?}",
            run.stdout
        );
        assert!(
            run.stdout.contains("\\u{1b}[31mred"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let watch = cli.run(&["watch", &id]).await;
    assert!(
        watch.stdout.contains("done\\u{0}\\u{1b}[2J"),
        "{}",
        watch.stdout
    );

    let status = cli.run(&["status", &id, "--output", "json"]).await;
    let task: Task = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(task.spec.description, description);
    let list = cli.run(&["list", "--output", "json"]).await;
    let task: Task = serde_json::from_str(list.stdout.trim()).unwrap();
    assert_eq!(task.spec.description, description);
    let json = cli.run(&["watch", &id, "--output", "json"]).await;
    let lines: Vec<String> = json.stdout_lines().iter().map(|l| l.to_string()).collect();
    let events = parse_events(&lines);
    assert_eq!(events[0].event.data["description"], description);
    assert_eq!(events[1].event.data["message"], message);
}

#[tokio::test]
async fn cancelling_a_cancelled_task_says_so_and_exits_0() {
    let (_home, _server, cli) = start().await;
    let id = submit(&cli, "cancel me twice").await;
    cli.run(&["cancel", &id]).await.expect_code(0);
    let again = cli.run(&["cancel", &id]).await;
    again.expect_code(0);
    assert_eq!(again.stdout.trim(), format!("{id} CANCELLED"));
    assert!(
        again.stderr.contains("already cancelled"),
        "{}",
        again.stderr
    );
}

#[tokio::test]
async fn with_output_json_errors_are_json_on_stderr_too() {
    let (_home, _server, cli) = start().await;
    let run = cli
        .run(&["status", "tsk_00000000000000000000", "--output", "json"])
        .await;
    run.expect_code(2);
    assert_eq!(run.stdout, "");
    let error: Value = serde_json::from_str(run.stderr.trim())
        .unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {}", run.stderr));
    assert_eq!(error["error"]["code"], "TASK_NOT_FOUND", "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");
    assert!(error["error"]["request_id"].is_string(), "{error}");
    let text = cli.run(&["status", "tsk_00000000000000000000"]).await;
    assert!(text.stderr.starts_with("error: "), "{}", text.stderr);
}

#[tokio::test]
async fn a_refused_token_says_where_the_cli_found_it_and_where_it_looks() {
    let (_home, _server, cli) = start().await;
    let run = cli.run(&["whoami", "--token", "tether_bad_token"]).await;
    run.expect_code(2);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("the token came from --token / TETHER_TOKEN")),
        "{}",
        run.stderr
    );
    for place in ["config.toml", "admin.token", "local-server.toml"] {
        assert!(
            run.stderr.contains(place),
            "{place} not named: {}",
            run.stderr
        );
    }
    // No token anywhere.
    let mut command = cli.command(&["whoami"]);
    command.env("TETHER_DATA_DIR", cli.home().join("no-data-here"));
    let run = cli.run_command(command).await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("no token found; the CLI looked in"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_port_in_use_is_named_and_logs_to_a_file_carry_no_colour_codes() {
    let (_home, server, cli) = start().await;
    let addr = server.base_url().trim_start_matches("http://").to_string();
    let run = cli.run(&["serve", "--listen", &addr]).await;
    assert_ne!(run.code(), Some(0));
    assert!(
        run.stderr.contains(&format!("cannot listen on {addr}")),
        "{}",
        run.stderr
    );
    // The server under test logs to a file: plain text.
    let log = std::fs::read_to_string(server.log_path()).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file: {log:?}"
    );
}

#[tokio::test]
async fn on_first_start_the_port_accepts_only_once_the_admin_token_exists() {
    let mut home = ServerHome::new();
    let addr = free_loopback_addr();
    let token_path = home.data_dir().join("admin.token");
    // Knock on the port from before the server starts; the first connection accepted must
    // find the whole token file there, or a client could reach the server without one.
    let probe = async {
        let deadline = std::time::Instant::now() + LIVE_TIMEOUT;
        loop {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return std::fs::read_to_string(&token_path).ok();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{addr} never accepted"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let (token_when_accepted, _server) = tokio::join!(probe, home.start_at(&addr, Auth::Token));
    let token = token_when_accepted.expect("admin.token exists when the port first accepts");
    assert!(
        token.trim().len() > 16 && token.ends_with('\n'),
        "{token:?}"
    );
}
