//! The web UI in a real headless Chromium against the real binary: the task list and the task
//! page, live, across a SIGKILL of the server, with a retried step, with nudge and cancel, and
//! with 100,000 events. Every check waits for a condition in the page with a deadline.
//!
//! Needs `chromium` and `chromedriver` on the PATH (Debian: `chromium chromium-driver`);
//! without them each test says it was skipped, or fails when `TETHER_REQUIRE_BROWSER` is set.

mod common;

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use common::browser::{screenshot_dir, Browser, DEADLINE};
use common::http::HttpClient;
use common::server::{free_loopback_addr, Auth, ServerHome};

/// The JSON API as the tests' worker and checker use it: without a token against a server
/// with `--auth off`, or with a bearer token.
struct Api {
    http: HttpClient,
    base: String,
    bearer: Option<String>,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            http: HttpClient::new(),
            base: base.to_string(),
            bearer: None,
        }
    }

    fn with_token(base: &str, token: &str) -> Api {
        Api {
            bearer: Some(format!("Bearer {token}")),
            ..Api::new(base)
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(bearer) = &self.bearer {
            headers.push(("Authorization", bearer));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .send(method, &url, &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        (response.status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    async fn create_task(&self, spec: Value) -> String {
        let task = self.ok(Method::POST, "/v1/tasks", Some(spec)).await;
        task["id"].as_str().expect("a task id").to_string()
    }

    async fn task(&self, id: &str) -> Value {
        self.ok(Method::GET, &format!("/v1/tasks/{id}"), None).await
    }

    /// Claims the oldest waiting task as a worker: its id and lease.
    async fn claim(&self) -> (String, String) {
        let claimed = self
            .ok(
                Method::POST,
                "/v1/worker/claim",
                Some(json!({"worker": "ui-test-worker", "wait_ms": 10_000})),
            )
            .await;
        (
            claimed["task"]["id"]
                .as_str()
                .expect("a claimed task")
                .to_string(),
            claimed["lease"]["id"]
                .as_str()
                .expect("a lease")
                .to_string(),
        )
    }

    async fn begin(&self, id: &str, lease: &str, step: &str) -> u64 {
        let begun = self
            .ok(
                Method::POST,
                &format!("/v1/worker/tasks/{id}/steps/{step}/begin"),
                Some(json!({"lease": lease})),
            )
            .await;
        begun["epoch"].as_u64().expect("an epoch")
    }

    async fn complete(&self, id: &str, lease: &str, step: &str, epoch: u64) {
        self.ok(
            Method::POST,
            &format!("/v1/worker/tasks/{id}/steps/{step}/complete"),
            Some(json!({"lease": lease, "epoch": epoch, "checkpoint": {"ok": true}})),
        )
        .await;
    }

    async fn worker_events(&self, id: &str, lease: &str, events: Vec<Value>) {
        self.ok(
            Method::POST,
            &format!("/v1/worker/tasks/{id}/events"),
            Some(json!({"lease": lease, "events": events})),
        )
        .await;
    }

    /// Appends as a producer (admin), without a lease.
    async fn events(&self, id: &str, events: Vec<Value>) {
        self.ok(
            Method::POST,
            &format!("/v1/tasks/{id}/events"),
            Some(json!({ "events": events })),
        )
        .await;
    }

    async fn finish(&self, id: &str, lease: &str, result: Value) {
        self.ok(
            Method::POST,
            &format!("/v1/worker/tasks/{id}/finish"),
            Some(json!({"lease": lease, "outcome": "completed", "result": result})),
        )
        .await;
    }

    /// Every event's offset, from the start, in order: the raw log or the timeline view.
    async fn offsets(&self, id: &str, timeline: bool) -> Vec<String> {
        let mut offsets = Vec::new();
        let mut after = String::from("0000000000000000_0000000000000000");
        let view = if timeline { "&view=timeline" } else { "" };
        loop {
            let page = self
                .ok(
                    Method::GET,
                    &format!("/v1/tasks/{id}/events?after={after}&limit=1000{view}"),
                    None,
                )
                .await;
            for e in page["data"].as_array().expect("events") {
                offsets.push(e["offset"].as_str().expect("an offset").to_string());
            }
            after = page["next_after"].as_str().expect("next_after").to_string();
            if page["has_more"] != true {
                return offsets;
            }
        }
    }
}

fn agent_events(from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| match i % 4 {
            0 => json!({"type": "agent_turn", "step": "agent", "data": {"turn": i / 4 + 1, "text": format!("thinking about part {i}")}}),
            1 => json!({"type": "agent_tool_call", "step": "agent", "data": {"tool_name": "bash", "tool_input_preview": format!("cargo test -p part{i}")}}),
            2 => json!({"type": "agent_tool_result", "step": "agent", "data": {"tool_name": "bash", "ok": true, "output_preview": format!("test result: ok. {i} passed")}}),
            _ => json!({"type": "log", "step": "agent", "data": {"line": format!("line {i}")}}),
        })
        .collect()
}

/// The rendered events are exactly the API's, in the same order, each once.
async fn wait_for_exactly(browser: &Browser, api: &Api, id: &str) -> Vec<String> {
    let expected = api.offsets(id, false).await;
    browser
        .wait_for(
            &format!("{} rendered events", expected.len()),
            "return document.querySelectorAll('[data-offset]').length >= arguments[0];",
            json!([expected.len()]),
        )
        .await;
    let shown = browser.offsets().await;
    assert_eq!(shown, expected, "the page shows other events than the API");
    shown
}

const TASK_ROW: &str =
    "return document.querySelector(`[data-task-id=\"${arguments[0]}\"]`)?.dataset.state ?? null;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_task_appears_in_the_list_and_its_events_render_once_in_order() {
    let test = "a_live_task_appears_in_the_list_and_its_events_render_once_in_order";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start().await;
    let api = Api::new(server.base_url());

    browser.goto(&format!("{}/", server.base_url())).await;
    browser
        .wait_for(
            "the task table",
            "return !!document.querySelector('table.tasks');",
            json!([]),
        )
        .await;
    let id = api
        .create_task(json!({"description": "render me live", "repository": "acme/app"}))
        .await;
    let state = browser
        .wait_for("the new task's row", TASK_ROW, json!([id]))
        .await;
    assert_eq!(state, "SUBMITTED");
    let (claimed, lease) = api.claim().await;
    assert_eq!(claimed, id);
    browser
        .wait_for(
            "the row to turn RUNNING without a reload",
            "return document.querySelector(`[data-task-id=\"${arguments[0]}\"]`)?.dataset.state === 'RUNNING' || null;",
            json!([id]),
        )
        .await;

    api.begin(&id, &lease, "agent").await;
    api.worker_events(&id, &lease, agent_events(0, 20)).await;
    browser
        .goto(&format!("{}/tasks/{id}", server.base_url()))
        .await;
    browser.wait_live_state("live").await;
    wait_for_exactly(&browser, &api, &id).await;

    // A burst while the page watches, in batches of 1000 so that the appends take little of
    // the time measured: every event lands once, in order.
    const BURST: usize = 5000;
    let started = Instant::now();
    for batch in 0..BURST / 1000 {
        api.worker_events(&id, &lease, agent_events(20 + batch * 1000, 1000))
            .await;
    }
    let appended = started.elapsed();
    wait_for_exactly(&browser, &api, &id).await;
    let rendered = started.elapsed();
    // What the rate is worth: printed by the run, not asserted (the machine is shared).
    println!(
        "{test}: {BURST} live events appended in {appended:?}, all rendered after {rendered:?} \
         ({:.0} events/s end to end, {:?} after the last append)",
        BURST as f64 / rendered.as_secs_f64(),
        rendered - appended
    );

    api.finish(&id, &lease, json!({"pr": "https://example.com/pr/1"}))
        .await;
    browser.wait_live_state("ended").await;
    wait_for_exactly(&browser, &api, &id).await;
    browser.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_after_a_sigkill_and_holds_every_event_once() {
    let test = "the_page_reconnects_after_a_sigkill_and_holds_every_event_once";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let addr = free_loopback_addr();
    let server = home.start_at(&addr, Auth::Off).await;
    let base = server.base_url().to_string();
    let api = Api::new(&base);
    let id = api
        .create_task(json!({"description": "survive a kill"}))
        .await;
    api.events(&id, agent_events(0, 30)).await;

    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.wait_live_state("live").await;
    wait_for_exactly(&browser, &api, &id).await;

    server.kill().await;
    browser.wait_live_state("reconnecting").await;
    let server = home.start_at(&addr, Auth::Off).await;
    browser.wait_live_state("live").await;
    for batch in 0..5 {
        api.events(&id, agent_events(30 + batch * 10, 10)).await;
    }
    let shown = wait_for_exactly(&browser, &api, &id).await;
    assert_eq!(shown.len(), 1 + 30 + 50, "task_created and 80 events");
    // The refused connections while the server was down are expected in the console.
    browser
        .assert_no_console_errors(&["ERR_CONNECTION_REFUSED", "net::ERR_"])
        .await;
    drop(server);
}

/// The crashed attempt of `clone`, the retry, and a finished task; superseded events hidden,
/// then shown; the raw log. Also takes the screenshots (light and dark, wide and narrow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_step_shows_as_one_story_with_the_superseded_attempt_on_demand() {
    let test = "a_retried_step_shows_as_one_story_with_the_superseded_attempt_on_demand";
    let Some(browser) = Browser::start(test, 1280, 1400).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home
        .start_with(
            "127.0.0.1:0",
            Auth::Off,
            &["--lease", "1s", "--reconcile-interval", "100ms"],
        )
        .await;
    let base = server.base_url().to_string();
    let api = Api::new(&base);
    for (description, repository) in [
        ("bump the tokio dependency", "acme/api"),
        ("write the release notes for 2.3", "acme/docs"),
    ] {
        api.create_task(json!({"description": description, "repository": repository}))
            .await;
    }
    let id = api
        .create_task(json!({
            "description": "fix the flaky login test",
            "repository": "acme/app",
            "metadata": {"ticket": "OPS-7"},
        }))
        .await;

    // Attempt 1 clones halfway, then its worker goes silent: the lease runs out.
    let (first, lease) = api.claim().await;
    assert_ne!(first, id, "the oldest task comes first");
    api.finish(&first, &lease, json!("bumped")).await;
    let (second, lease) = api.claim().await;
    assert_ne!(second, id);
    api.ok(
        Method::POST,
        &format!("/v1/worker/tasks/{second}/finish"),
        Some(json!({"lease": lease, "outcome": "failed",
            "error": {"code": "BUILD_FAILED", "message": "docs build failed"}})),
    )
    .await;
    let (claimed, lease) = api.claim().await;
    assert_eq!(claimed, id);
    let epoch = api.begin(&id, &lease, "clone").await;
    api.worker_events(
        &id,
        &lease,
        vec![
            json!({"type": "step_started", "step": "clone"}),
            json!({"type": "log", "step": "clone", "data": {"line": "Cloning into 'app'..."}}),
            json!({"type": "log", "step": "clone", "data": {"line": "remote: Counting objects: 41% (4211/10270)"}}),
        ],
    )
    .await;
    assert_eq!(epoch, 1);
    let started = Instant::now();
    loop {
        let task = api.task(&id).await;
        if task["state"] == "SUBMITTED" && task["attempt"] == 2 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the task was not requeued: {task}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Attempt 2 clones again (the server writes the rewind), runs the agent, finishes.
    let (claimed, lease) = api.claim().await;
    assert_eq!(claimed, id);
    let epoch = api.begin(&id, &lease, "clone").await;
    assert_eq!(epoch, 2);
    api.worker_events(
        &id,
        &lease,
        vec![
            json!({"type": "step_started", "step": "clone"}),
            json!({"type": "log", "step": "clone", "data": {"line": "Cloning into 'app'..."}}),
            json!({"type": "log", "step": "clone", "data": {"line": "done."}}),
        ],
    )
    .await;
    api.complete(&id, &lease, "clone", epoch).await;
    let agent = api.begin(&id, &lease, "agent").await;
    let long = "thread 'login::flaky' panicked at src/login.rs:88:9: ".repeat(12);
    api.worker_events(
        &id,
        &lease,
        vec![
            json!({"type": "step_started", "step": "agent"}),
            json!({"type": "agent_turn", "step": "agent", "data": {"turn": 1, "text": "Reading the failing test and the login handler."}}),
            json!({"type": "agent_tool_call", "step": "agent", "data": {"tool_name": "bash", "tool_input_preview": "cargo test -p app login::flaky -- --nocapture"}}),
            json!({"type": "agent_tool_result", "step": "agent", "data": {"tool_name": "bash", "is_error": true, "output_preview": long}}),
            json!({"type": "agent_cost_update", "step": "agent", "data": {"total_cost_usd": 0.0412, "input_tokens": 5120, "output_tokens": 830}}),
            json!({"type": "agent_turn", "step": "agent", "data": {"turn": 2, "text": "The test races the session expiry; freezing the clock."}}),
            json!({"type": "agent_tool_call", "step": "agent", "data": {"tool_name": "edit", "tool_input_preview": "src/login.rs: use the injected clock"}}),
            json!({"type": "agent_tool_result", "step": "agent", "data": {"tool_name": "edit", "ok": true, "output_preview": "1 file changed"}}),
            json!({"type": "agent_milestone", "step": "agent", "data": {"milestone": "pull request opened", "url": "https://example.com/acme/app/pull/42"}}),
            json!({"type": "agent_cost_update", "step": "agent", "data": {"total_cost_usd": 0.0968, "input_tokens": 11800, "output_tokens": 2140}}),
        ],
    )
    .await;
    api.complete(&id, &lease, "agent", agent).await;
    api.finish(
        &id,
        &lease,
        json!({"pull_request": "https://example.com/acme/app/pull/42"}),
    )
    .await;

    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.wait_live_state("ended").await;
    wait_for_exactly(&browser, &api, &id).await;

    // The page's superseded events are exactly those the server's timeline view leaves out.
    let raw = api.offsets(&id, false).await;
    let timeline = api.offsets(&id, true).await;
    let expected: Vec<String> = raw
        .iter()
        .filter(|o| !timeline.contains(o))
        .cloned()
        .collect();
    assert_eq!(
        expected.len(),
        3,
        "the first attempt of clone: its step_started and two logs ({expected:?})"
    );
    let superseded: Vec<String> = serde_json::from_value(
        browser
            .eval(
                "return [...document.querySelectorAll('[data-superseded=\"true\"]')].map(e => e.dataset.offset);",
                json!([]),
            )
            .await,
    )
    .unwrap();
    assert_eq!(superseded, expected);
    let visible = "return [...document.querySelectorAll('[data-offset]')]\
        .filter(e => getComputedStyle(e).display !== 'none').map(e => e.dataset.offset);";
    let shown: Vec<String> =
        serde_json::from_value(browser.eval(visible, json!([])).await).unwrap();
    assert_eq!(
        shown, timeline,
        "by default the page shows the timeline view"
    );
    let rewind = browser
        .eval(
            "return document.querySelector('[data-type=stream_rewind]').textContent;",
            json!([]),
        )
        .await;
    assert!(
        rewind
            .as_str()
            .unwrap()
            .contains("step clone retried (attempt 2)"),
        "{rewind}"
    );

    // Keyboard: a collapsed tool output opens with Enter on its summary.
    let summary = "[data-type=agent_tool_result] details > summary";
    browser.press_enter(summary).await;
    browser
        .wait_for(
            "the tool output expanded",
            "return document.querySelector('[data-type=agent_tool_result] details').open || null;",
            json!([]),
        )
        .await;

    browser.click("label[for=show-superseded]").await;
    let shown: Vec<String> =
        serde_json::from_value(browser.eval(visible, json!([])).await).unwrap();
    assert_eq!(shown, raw, "shown on demand, in place");
    let group = browser
        .eval(
            "return [...document.querySelectorAll('.sup-group')].map(g => g.textContent);",
            json!([]),
        )
        .await;
    assert!(
        group.to_string().contains("clone · attempt 1 (superseded)"),
        "{group}"
    );
    // The retry's story in view: from the first attempt's events to the rewind line.
    browser
        .eval(
            "const s = document.querySelector('.timeline-scroll'); \
             s.scrollTop = document.querySelector('.sup-group').offsetTop - s.offsetTop - 60;",
            json!([]),
        )
        .await;
    let dir = screenshot_dir();
    browser.screenshot(&dir.join("task-light.png")).await;
    browser.color_scheme("dark").await;
    browser.screenshot(&dir.join("task-dark.png")).await;

    browser.click("label[for=raw-log]").await;
    let raw_lines: Vec<String> = serde_json::from_value(
        browser
            .eval(
                "return [...document.querySelectorAll('[data-offset]')]\
                 .filter(e => getComputedStyle(e).display !== 'none' && e.querySelector('.json'))\
                 .map(e => JSON.parse(e.querySelector('.json').textContent).offset);",
                json!([]),
            )
            .await,
    )
    .unwrap();
    assert_eq!(raw_lines, raw, "the raw log holds every event");

    browser.goto(&format!("{base}/")).await;
    browser.wait_for("the list", TASK_ROW, json!([id])).await;
    browser.screenshot(&dir.join("list-dark.png")).await;
    browser.color_scheme("light").await;
    browser.screenshot(&dir.join("list-light.png")).await;

    // Searched on the server (the metadata matches), then filtered by state.
    let rows = "return [...document.querySelectorAll('[data-task-id]')].map(r => r.dataset.taskId).join(' ');";
    browser.type_into("#filter-q", "ops-7").await;
    browser
        .wait_for(
            "only the matching task",
            &format!("const r = (() => {{ {rows} }})(); return r === arguments[0] ? r : null;"),
            json!([id]),
        )
        .await;
    browser
        .eval(
            "const s = document.querySelector('#filter-q'); s.value = ''; \
             s.dispatchEvent(new Event('input')); \
             const f = document.querySelector('#filter-state'); f.value = 'FAILED'; \
             f.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "only the failed task",
            &format!("const r = (() => {{ {rows} }})(); return r === arguments[0] ? r : null;"),
            json!([second]),
        )
        .await;
    browser.window(390, 844).await;
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.wait_live_state("ended").await;
    browser.screenshot(&dir.join("task-phone.png")).await;
    println!("{test}: screenshots in {}", dir.display());
    browser.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nudge_and_cancel_from_the_page_reach_the_task() {
    let test = "nudge_and_cancel_from_the_page_reach_the_task";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start().await;
    let base = server.base_url().to_string();
    let api = Api::new(&base);
    let id = api
        .create_task(json!({"description": "listen to me"}))
        .await;
    let (_, lease) = api.claim().await;
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser.wait_live_state("live").await;

    browser
        .type_into("#nudge-text", "also update the changelog")
        .await;
    browser.click("form.nudge button[type=submit]").await;
    // The worker hears of it at a heartbeat.
    let started = Instant::now();
    loop {
        let beat = api
            .ok(
                Method::POST,
                &format!("/v1/worker/tasks/{id}/heartbeat"),
                Some(json!({ "lease": lease })),
            )
            .await;
        if let Some(nudge) = beat["nudges"].as_array().and_then(|n| n.first()) {
            assert_eq!(nudge["message"], "also update the changelog", "{beat}");
            break;
        }
        assert!(started.elapsed() < DEADLINE, "no nudge reached the worker");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser
        .wait_for(
            "the nudge in the timeline",
            "return document.querySelector('[data-type=nudge_sent]')?.textContent.includes('also update the changelog') || null;",
            json!([]),
        )
        .await;

    browser.click("[data-action=cancel]").await;
    browser.click("[data-action=confirm-cancel]").await;
    browser.wait_live_state("ended").await;
    assert_eq!(api.task(&id).await["state"], "CANCELLED");
    browser
        .wait_for(
            "the actions disabled with a reason",
            "return (document.querySelector('#nudge-text').disabled \
              && document.querySelector('[data-action=cancel]').disabled \
              && document.querySelector('.actions').textContent.includes('The task has ended (CANCELLED)')) || null;",
            json!([]),
        )
        .await;
    wait_for_exactly(&browser, &api, &id).await;
    browser.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_100000_events_opens_with_its_newest_events_quickly() {
    let test = "a_task_with_100000_events_opens_with_its_newest_events_quickly";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start().await;
    let base = server.base_url().to_string();
    let api = Api::new(&base);
    let id = api
        .create_task(json!({"description": "a very long task"}))
        .await;
    const EVENTS: usize = 100_000;
    let started = Instant::now();
    for batch in 0..EVENTS / 1000 {
        api.events(&id, agent_events(batch * 1000, 1000)).await;
    }
    println!(
        "{test}: {EVENTS} events appended in {:?}",
        started.elapsed()
    );
    let tail = format!("0000000000000000_{:016}", EVENTS + 1);

    browser.goto(&format!("{base}/")).await;
    let started = Instant::now();
    browser.goto(&format!("{base}/tasks/{id}")).await;
    browser
        .wait_for(
            "the newest event",
            "return !!document.querySelector(`[data-offset=\"${arguments[0]}\"]`) || null;",
            json!([tail]),
        )
        .await;
    let opened = started.elapsed();
    let in_page = browser.eval("return performance.now();", json!([])).await;
    let rendered = browser.offsets().await.len();
    println!(
        "{test}: opened with its newest event in {opened:?} (navigation to render: {in_page} ms in the page), {rendered} events in the page"
    );
    assert!(opened < Duration::from_secs(10), "took {opened:?}");
    assert!(
        rendered <= 1000,
        "loaded {rendered} events: not a page from the tail"
    );
    browser.wait_live_state("live").await;

    // Scrolling up loads older pages, still in order and each once.
    browser
        .eval(
            "document.querySelector('.timeline-scroll').scrollTop = 0;",
            json!([]),
        )
        .await;
    browser
        .wait_for(
            "an older page",
            "return document.querySelectorAll('[data-offset]').length > arguments[0] || null;",
            json!([rendered]),
        )
        .await;
    let shown = browser.offsets().await;
    let mut sorted = shown.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(shown, sorted, "in order, each once");
    assert_eq!(shown.last(), Some(&tail));

    let memory = browser
        .eval(
            "return performance.memory ? performance.memory.usedJSHeapSize : null;",
            json!([]),
        )
        .await;
    browser.cdp("Performance.enable", json!({})).await;
    let metrics = browser.cdp("Performance.getMetrics", json!({})).await;
    let metric = |name: &str| {
        metrics["metrics"]
            .as_array()
            .and_then(|m| m.iter().find(|x| x["name"] == name))
            .map(|x| x["value"].clone())
            .unwrap_or(Value::Null)
    };
    println!(
        "{test}: {} events in the page; JS heap used {memory} bytes (CDP JSHeapUsedSize {}, Nodes {})",
        shown.len(),
        metric("JSHeapUsedSize"),
        metric("Nodes")
    );
    browser.assert_no_console_errors(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_users_and_revoke_tokens_from_the_admin_page() {
    let test = "admins_create_users_and_revoke_tokens_from_the_admin_page";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start().await;
    let base = server.base_url().to_string();
    let api = Api::new(&base);
    api.ok(Method::POST, "/v1/users", Some(json!({"name": "ann"})))
        .await;
    // Minting a token takes the admin token even with auth off.
    let admin = loop {
        match std::fs::read_to_string(home.data_dir().join("admin.token")) {
            Ok(text) if text.ends_with('\n') => break text.trim().to_string(),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let minted = api
        .http
        .send(
            Method::POST,
            &format!("{base}/v1/tokens"),
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {admin}")),
            ],
            json!({"user": "ann", "role": "user"}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(minted.status, StatusCode::CREATED, "{}", minted.body_text());
    let token: Value = serde_json::from_slice(&minted.body).unwrap();
    let token_id = token["id"].as_str().unwrap().to_string();

    browser.goto(&format!("{base}/admin")).await;
    browser
        .wait_for(
            "ann and her token",
            "return (!!document.querySelector('[data-user=ann]') \
              && !!document.querySelector(`[data-token-id=\"${arguments[0]}\"]`)) || null;",
            json!([token_id]),
        )
        .await;
    browser.type_into("#user-name", "bob").await;
    browser.click("#user-name + button").await;
    browser
        .wait_for(
            "bob in the list",
            "return !!document.querySelector('[data-user=bob]') || null;",
            json!([]),
        )
        .await;
    let users = api.ok(Method::GET, "/v1/users", None).await;
    assert!(users.to_string().contains("\"bob\""), "{users}");

    // Revoking asks twice.
    let revoke = format!("[data-token-id=\"{token_id}\"] button");
    browser.click(&revoke).await;
    browser.click(&revoke).await;
    browser
        .wait_for(
            "the token gone from the page",
            "return !document.querySelector(`[data-token-id=\"${arguments[0]}\"]`) || null;",
            json!([token_id]),
        )
        .await;
    let tokens = api.ok(Method::GET, "/v1/tokens", None).await;
    assert!(!tokens.to_string().contains(&token_id), "{tokens}");

    // With auth off and no session the page cannot mint one: it says why and stays.
    browser.click("#token-role + button").await;
    browser
        .wait_for(
            "the reason",
            "return document.querySelector('main').textContent.includes('Minting a token takes signing in with an admin token') || null;",
            json!([]),
        )
        .await;
    browser
        .screenshot(&screenshot_dir().join("admin-light.png"))
        .await;
    let path = browser.eval("return location.pathname;", json!([])).await;
    assert_eq!(path, "/admin");
    browser.assert_no_console_errors(&["401"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_refused_by_the_api_goes_to_the_login_page() {
    let test = "a_page_refused_by_the_api_goes_to_the_login_page";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start_at("127.0.0.1:0", Auth::Token).await;
    let base = server.base_url().to_string();
    browser.goto(&format!("{base}/tasks/tsk_somewhere")).await;
    let landed = browser
        .wait_for(
            "the login page",
            "return (location.pathname === '/login' \
              && document.querySelector('h1')?.textContent === 'Sign in') ? location.search : null;",
            json!([]),
        )
        .await;
    assert_eq!(landed, "?next=%2Ftasks%2Ftsk_somewhere");
    browser.assert_no_console_errors(&["401"]).await;
}

/// Waits until the page's path is `path`.
async fn wait_path(browser: &Browser, path: &str) {
    browser
        .wait_for(
            &format!("the page at {path}"),
            "return location.pathname === arguments[0];",
            json!([path]),
        )
        .await;
}

/// The signed-in user the header shows.
async fn wait_signed_in_as(browser: &Browser, who: &str) {
    browser
        .wait_for(
            &format!("the header to show {who}"),
            "return document.getElementById('who').textContent === arguments[0] \
             && !document.getElementById('sign-out').hidden;",
            json!([who]),
        )
        .await;
}

/// A 401 from the API is logged by Chromium as a failed resource: expected where a test
/// signs out or uses a spent code.
const UNAUTHORIZED_LOAD: &str = "status of 401";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_link_signs_in_once_and_the_admin_page_works_with_the_session() {
    let test = "a_login_link_signs_in_once_and_the_admin_page_works_with_the_session";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start_at("127.0.0.1:0", Auth::Token).await;
    let base = server.base_url().to_string();
    let admin = Api::with_token(&base, &home.admin_token());
    let code = admin.ok(Method::POST, "/v1/login-codes", None).await;
    let link = code["url"].as_str().expect("a login link").to_string();
    assert_eq!(
        link,
        format!("{base}/login?code={}", code["code"].as_str().unwrap())
    );

    browser.goto(&link).await;
    wait_path(&browser, "/").await;
    wait_signed_in_as(&browser, "admin (admin)").await;

    // The admin page, with the session alone: a token is minted (its secret shown once),
    // then revoked.
    admin
        .ok(Method::POST, "/v1/users", Some(json!({"name": "carol"})))
        .await;
    browser.goto(&format!("{base}/admin")).await;
    browser
        .wait_for(
            "carol in the token form",
            "return !!document.querySelector('#token-user option[value=\"carol\"]');",
            json!([]),
        )
        .await;
    browser
        .eval(
            "const s = document.getElementById('token-user'); s.value = 'carol'; \
             s.dispatchEvent(new Event('change')); return true;",
            json!([]),
        )
        .await;
    browser.click("#token-user ~ button[type=submit]").await;
    let secret = browser
        .wait_for(
            "the new token's secret",
            "return document.querySelector('.secret:not([hidden]) pre.token')?.textContent ?? null;",
            json!([]),
        )
        .await;
    let secret = secret.as_str().unwrap().to_string();
    assert!(secret.starts_with("tether_"), "{secret}");
    let id = secret.split('_').nth(1).unwrap().to_string();
    let row = format!("tr[data-token-id=\"{id}\"] button");
    browser.click(&row).await;
    browser.click(&row).await;
    browser
        .wait_for(
            "the revoked token's row to go",
            "return !document.querySelector(`tr[data-token-id=\"${arguments[0]}\"]`);",
            json!([id]),
        )
        .await;
    let carol = Api::with_token(&base, &secret);
    let (status, _) = carol.call(Method::GET, "/v1/whoami", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked from the page");

    // Sign out; the same link again is refused and the browser stays signed out.
    browser.click("#sign-out").await;
    wait_path(&browser, "/login").await;
    browser.goto(&link).await;
    let error = browser
        .wait_for(
            "the login page's error",
            "return document.querySelector('#login-note .error')?.textContent ?? null;",
            json!([]),
        )
        .await;
    assert!(
        error.as_str().unwrap().contains("LOGIN_CODE_INVALID"),
        "{error}"
    );
    wait_path(&browser, "/login").await;
    browser.goto(&format!("{base}/")).await;
    wait_path(&browser, "/login").await;
    browser.assert_no_console_errors(&[UNAUTHORIZED_LOAD]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_token_signs_in_and_a_user_sees_only_their_own_tasks() {
    let test = "a_pasted_token_signs_in_and_a_user_sees_only_their_own_tasks";
    let Some(browser) = Browser::start(test, 1280, 900).await else {
        return;
    };
    let mut home = ServerHome::new();
    let server = home.start_at("127.0.0.1:0", Auth::Token).await;
    let base = server.base_url().to_string();
    let admin = Api::with_token(&base, &home.admin_token());
    let mut tokens = Vec::new();
    for name in ["ann", "bob"] {
        admin
            .ok(Method::POST, "/v1/users", Some(json!({"name": name})))
            .await;
        let issued = admin
            .ok(
                Method::POST,
                "/v1/tokens",
                Some(json!({"user": name, "role": "user"})),
            )
            .await;
        tokens.push(issued["token"].as_str().unwrap().to_string());
    }
    let ann = Api::with_token(&base, &tokens[0]);
    let bob = Api::with_token(&base, &tokens[1]);
    let anns = ann
        .create_task(json!({"description": "ann's own task"}))
        .await;
    let bobs = bob
        .create_task(json!({"description": "bob's private task"}))
        .await;

    // Another user's task page sends a stranger to sign in, then says it is not there.
    browser.goto(&format!("{base}/tasks/{bobs}")).await;
    wait_path(&browser, "/login").await;
    browser.type_into("#login-token", &tokens[0]).await;
    browser.press_enter("#login-token").await;
    wait_path(&browser, &format!("/tasks/{bobs}")).await;
    wait_signed_in_as(&browser, "ann (user)").await;
    let shown = browser
        .wait_for(
            "the not-found message",
            "return document.querySelector('main .error')?.textContent ?? null;",
            json!([]),
        )
        .await;
    assert!(
        shown.as_str().unwrap().contains("TASK_NOT_FOUND"),
        "{shown}"
    );
    assert!(!browser
        .eval("return document.body.textContent;", json!([]))
        .await
        .as_str()
        .unwrap()
        .contains("bob's private task"));

    browser.goto(&format!("{base}/")).await;
    browser
        .wait_for("ann's task in the list", TASK_ROW, json!([anns]))
        .await;
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('[data-task-id]')].map(e => e.dataset.taskId);",
            json!([]),
        )
        .await;
    assert_eq!(rows, json!([anns]), "only ann's own task is listed");
    browser
        .assert_no_console_errors(&[UNAUTHORIZED_LOAD, "status of 404"])
        .await;
}
