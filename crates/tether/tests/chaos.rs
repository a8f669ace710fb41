//! Fault tests with real processes: many tasks run by demo workers that are SIGKILLed,
//! crash by themselves, or are frozen past their lease (a real zombie), and a server that is
//! SIGKILLed and restarted under its workers. Afterwards every task's log is checked against
//! the guarantees: one terminal event, last (G5); gap-free offsets (G2); nothing superseded in
//! the timeline, everything kept in the raw log (G4); no zombie write appended (G6); per-user
//! limits never exceeded and no slot leaked (G7). The same chaos also runs on three nodes
//! sharing one PostgreSQL database, with workers spread over the nodes and the node that runs
//! the reconciler SIGKILLed midway: another node must take the job over.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tether_core::rewind::Rewinds;
use tether_store::pg::scratch::ScratchDatabase;
use tether_types::event::kind;
use tether_types::{EventAt, EventPage, Task, TaskState};
use tokio::process::{Child, Command};

use common::cli::CliEnv;
use common::http::{BoxError, HttpClient};
use common::server::{free_loopback_addr, log_tail, Auth, ServerHome, TestServer};
use common::streams::encode_query;

/// Per-user admission limit the chaos server runs with.
const MAX_CONCURRENT: usize = 3;
const USERS: [&str; 3] = ["ana", "bo", "cy"];
const CHAOS_TASKS: usize = 400;
/// Generous: a debug build on a busy 2-core machine; a normal run takes well under this.
const CHAOS_DEADLINE: Duration = Duration::from_secs(300);
/// The chaos server's lease (`--lease`).
const LEASE: Duration = Duration::from_secs(1);
const STEPS: [&str; 5] = ["hydrate", "clone", "agent", "test", "open_pr"];

// ---------------------------------------------------------------------------------------------
// HTTP as the test's users, admin and observers.

#[derive(Clone)]
struct Api {
    http: HttpClient,
    base: String,
}

impl Api {
    fn new(base: &str) -> Api {
        Api {
            http: HttpClient::new(),
            base: base.to_string(),
        }
    }

    async fn try_call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), BoxError> {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let body = body.map(Value::to_string).unwrap_or_default();
        let response = self
            .http
            .send(method, &format!("{}{path}", self.base), &headers, body)
            .await?;
        let value = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap_or(Value::String(response.body_text()))
        };
        Ok((response.status, value))
    }

    /// One call that must answer `expected`; anything else fails the test with the answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Value {
        let described = format!("{method} {path}");
        let (status, value) = self
            .try_call(method, path, token, body)
            .await
            .unwrap_or_else(|e| panic!("{described}: {e}"));
        assert_eq!(status, expected, "{described} answered {value}");
        value
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        self.call(Method::GET, path, token, None, StatusCode::OK)
            .await
    }

    async fn metrics(&self) -> String {
        let response = self
            .http
            .send(Method::GET, &format!("{}/metrics", self.base), &[], "")
            .await
            .expect("GET /metrics");
        assert_eq!(response.status, StatusCode::OK);
        response.body_text()
    }

    /// Creates a user and a token of `role` for it; returns the secret.
    async fn user_with_token(&self, admin: &str, name: &str, role: &str) -> String {
        self.call(
            Method::POST,
            "/v1/users",
            admin,
            Some(&json!({ "name": name })),
            StatusCode::CREATED,
        )
        .await;
        let token = self
            .call(
                Method::POST,
                "/v1/tokens",
                admin,
                Some(&json!({ "user": name, "role": role })),
                StatusCode::CREATED,
            )
            .await;
        token["token"].as_str().expect("a token secret").to_string()
    }

    async fn submit(&self, token: &str, description: &str) -> Task {
        let spec = json!({
            "description": description,
            "repository": "org/app",
            "max_attempts": 10,
        });
        let task = self
            .call(
                Method::POST,
                "/v1/tasks",
                token,
                Some(&spec),
                StatusCode::CREATED,
            )
            .await;
        serde_json::from_value(task).expect("a Task")
    }

    async fn task(&self, token: &str, id: &str) -> Task {
        serde_json::from_value(self.get(&format!("/v1/tasks/{id}"), token).await).expect("a Task")
    }

    /// Every task in `state`, following `next_cursor`.
    async fn tasks_in(&self, token: &str, state: &str) -> Vec<Task> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/tasks?status={state}&limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode_query(c)));
            }
            let page = self.get(&path, token).await;
            let data: Vec<Task> =
                serde_json::from_value(page["data"].clone()).expect("a page of tasks");
            all.extend(data);
            match page["next_cursor"].as_str() {
                Some(next) if !next.is_empty() => cursor = Some(next.to_string()),
                _ => return all,
            }
        }
    }

    /// The whole log of a task (raw or timeline), paginated with `after`/`next_after`; also
    /// whether the last page said the stream is closed.
    async fn events(&self, token: &str, id: &str, timeline: bool) -> (Vec<EventAt>, bool) {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10_000 {
            let mut path = format!("/v1/tasks/{id}/events?limit=1000");
            if timeline {
                path.push_str("&view=timeline");
            }
            if let Some(a) = &after {
                path.push_str(&format!("&after={}", encode_query(a)));
            }
            let page: EventPage =
                serde_json::from_value(self.get(&path, token).await).expect("an event page");
            all.extend(page.data);
            if !page.has_more {
                return (all, page.closed);
            }
            after = Some(page.next_after.to_string());
        }
        panic!("reading the events of {id} did not end in 10000 pages");
    }
}

/// The value of an unlabelled counter, or of one labelled series, in Prometheus text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}")) as u64
}

fn unfinished(metrics: &str) -> u64 {
    ["SUBMITTED", "RUNNING", "FINALIZING"]
        .iter()
        .map(|s| metric(metrics, &format!("tether_tasks{{state=\"{s}\"}}")))
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Worker processes.

/// One `tether worker --demo` process, its stderr in a file.
struct WorkerProc {
    name: String,
    crash_at: Option<String>,
    child: Child,
    log: PathBuf,
}

impl WorkerProc {
    fn pid(&self) -> String {
        self.child.id().expect("the worker is running").to_string()
    }

    async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.name);
    }

    /// SIGKILL, and reap.
    async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL a worker");
    }
}

/// Starts and tracks the worker processes of a test, spread over the nodes' CLIs in turn.
struct Fleet<'a> {
    clis: Vec<&'a CliEnv>,
    token: String,
    logs: PathBuf,
    args: Vec<String>,
    started: usize,
}

impl<'a> Fleet<'a> {
    fn new(clis: Vec<&'a CliEnv>, token: &str, logs: &Path, args: &[&str]) -> Fleet<'a> {
        Fleet {
            clis,
            token: token.to_string(),
            logs: logs.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
            started: 0,
        }
    }

    fn spawn(&mut self, crash_at: Option<String>) -> WorkerProc {
        self.started += 1;
        let name = format!("chaos-{}", self.started);
        let log = self.logs.join(format!("{name}.log"));
        let mut args: Vec<&str> = vec!["worker", "--demo", "--name", &name, "--poll", "1s"];
        args.extend(self.args.iter().map(String::as_str));
        if let Some(at) = &crash_at {
            args.extend(["--crash-at", at]);
        }
        let mut command = self.clis[self.started % self.clis.len()].command(&args);
        command
            .env("TETHER_TOKEN", &self.token)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("create a worker log"),
            ));
        let child = command.spawn().expect("spawn a worker");
        WorkerProc {
            name,
            crash_at,
            child,
            log,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks on one task's log.

/// What one task's log showed.
#[derive(Default)]
struct LogFigures {
    requeues: usize,
    rewinds: usize,
}

/// Every event of `raw` that a later `stream_rewind` supersedes, by offset, by the rule the
/// server's views apply ([`tether_core::rewind::Rewinds`], itself checked by property tests
/// against the literal definition: E, with a step and not itself a rewind, is superseded when
/// a later rewind R has R.step == E.step and E.attempt < R.new_epoch).
fn superseded(raw: &[EventAt]) -> HashSet<u64> {
    let rule = Rewinds::from_events(raw.iter().map(|e| (e.offset, &e.event)));
    raw.iter()
        .filter(|e| rule.supersedes(e.offset, &e.event))
        .map(|e| e.offset.position())
        .collect()
}

fn excerpt(events: &[EventAt]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  {} {} step={:?} attempt={:?} data={}",
                e.offset.position(),
                e.event.kind,
                e.event.step,
                e.event.attempt,
                e.event.data
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// G2, G4, G5, G6 on one finished task's raw log and timeline.
fn check_task_log(
    id: &str,
    raw: &[EventAt],
    raw_closed: bool,
    timeline: &[EventAt],
    timeline_closed: bool,
) -> LogFigures {
    let show = || format!("task {id}, raw log:\n{}", excerpt(raw));
    assert!(!raw.is_empty(), "task {id} has no events");

    // Gap-free: the k-th event sits at offset k.
    for (k, e) in raw.iter().enumerate() {
        assert_eq!(
            e.offset.position(),
            k as u64 + 1,
            "offsets are not consecutive; {}",
            show()
        );
    }
    // Exactly one terminal event, last; the stream is closed.
    let terminal = raw
        .iter()
        .filter(|e| kind::is_terminal(&e.event.kind))
        .count();
    assert_eq!(terminal, 1, "terminal events; {}", show());
    assert!(
        kind::is_terminal(&raw.last().unwrap().event.kind),
        "the terminal event is not last; {}",
        show()
    );
    assert!(raw_closed, "the raw read is not closed; {}", show());
    assert!(
        timeline_closed,
        "the timeline read is not closed; {}",
        show()
    );
    assert_eq!(raw[0].event.kind, kind::TASK_CREATED, "{}", show());

    // One claim at a time: a start only after the creation or a requeue, a requeue only
    // after a start. Outside a claim nothing but the server's lifecycle events is written
    // (a worker whose claim ended is fenced), and within one claim each step runs as one
    // attempt (a write from an earlier claim would show up as a second attempt).
    let mut running = false;
    let mut figures = LogFigures::default();
    let mut claim_attempts: HashMap<&str, u32> = HashMap::new();
    for e in raw {
        match e.event.kind.as_str() {
            kind::TASK_STARTED => {
                assert!(
                    !running,
                    "two task_started without a task_requeued between; {}",
                    show()
                );
                running = true;
                claim_attempts.clear();
            }
            kind::TASK_REQUEUED => {
                assert!(running, "task_requeued without a start; {}", show());
                running = false;
                figures.requeues += 1;
            }
            kind::TASK_CREATED => {}
            other if kind::is_terminal(other) => {}
            other => {
                assert!(
                    running,
                    "{other} at {} written while no worker held the task; {}",
                    e.offset.position(),
                    show()
                );
                if let (Some(step), false) = (e.event.step.as_deref(), other == kind::STREAM_REWIND)
                {
                    let attempt = e.event.attempt.unwrap_or(1);
                    let first = *claim_attempts.entry(step).or_insert(attempt);
                    assert_eq!(
                        attempt,
                        first,
                        "step {step} written as two attempts within one claim (at {}); {}",
                        e.offset.position(),
                        show()
                    );
                }
            }
        }
    }

    // No write from a superseded attempt after the rewind that superseded it (a zombie's
    // write would be one).
    let mut newest: HashMap<&str, u32> = HashMap::new();
    for e in raw {
        let Some(step) = e.event.step.as_deref() else {
            continue;
        };
        if e.event.kind == kind::STREAM_REWIND {
            figures.rewinds += 1;
            let epoch = e
                .event
                .rewind_epoch()
                .expect("a rewind names its new epoch");
            let before = newest.insert(step, epoch).unwrap_or(0);
            assert!(
                epoch > before,
                "rewind of {step} to epoch {epoch} after epoch {before}; {}",
                show()
            );
            continue;
        }
        let attempt = e.event.attempt.unwrap_or(1);
        if let Some(&epoch) = newest.get(step) {
            assert!(
                attempt >= epoch,
                "an event of {step} attempt {attempt} after its rewind to epoch {epoch} \
                 (a fenced write was appended); {}",
                show()
            );
        }
    }

    // The timeline is exactly the raw log minus the superseded events.
    let gone = superseded(raw);
    let expected: Vec<u64> = raw
        .iter()
        .map(|e| e.offset.position())
        .filter(|o| !gone.contains(o))
        .collect();
    let got: Vec<u64> = timeline.iter().map(|e| e.offset.position()).collect();
    assert_eq!(
        got,
        expected,
        "the timeline is not the raw log minus the superseded events; timeline:\n{}\n{}",
        excerpt(timeline),
        show()
    );
    assert!(raw.len() >= timeline.len());
    if figures.rewinds > 0 {
        // A rewind is written only when the earlier attempt wrote events, so the raw log
        // keeps something the timeline leaves out.
        assert!(
            raw.len() > timeline.len(),
            "a rewind but nothing superseded; {}",
            show()
        );
    }
    for step in STEPS {
        let completed = timeline
            .iter()
            .filter(|e| {
                e.event.kind == kind::STEP_COMPLETED && e.event.step.as_deref() == Some(step)
            })
            .count();
        assert!(
            completed <= 1,
            "{step} completed {completed} times in the timeline; {}",
            show()
        );
    }
    figures
}

// ---------------------------------------------------------------------------------------------
// The per-user limit, sampled while the chaos runs.

/// Samples the running tasks every ~100 ms until `stop`; returns the number of samples, the
/// most tasks one user had running in a sample, and every sample in which a user had more
/// than [`MAX_CONCURRENT`] tasks running.
async fn sample_admission(
    api: Api,
    admin: String,
    stop: Arc<AtomicBool>,
) -> (usize, usize, Vec<String>) {
    let mut samples = 0;
    let mut most = 0;
    let mut violations = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut ids = HashSet::new();
        let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
        for state in ["RUNNING", "FINALIZING"] {
            for task in api.tasks_in(&admin, state).await {
                if ids.insert(task.id.as_str().to_string()) {
                    *per_user.entry(task.owner.clone()).or_default() += 1;
                }
            }
        }
        samples += 1;
        most = most.max(per_user.values().copied().max().unwrap_or(0));
        if per_user.values().any(|&n| n > MAX_CONCURRENT) {
            violations.push(format!("{per_user:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (samples, most, violations)
}

// ---------------------------------------------------------------------------------------------
// The zombie: a worker frozen past its lease, then thawed.

enum Zombie {
    /// Not yet: waiting for the run to get going.
    Later(Instant),
    /// Frozen with these tasks (id, attempt) claimed; thawed once all were requeued.
    Frozen {
        index: usize,
        held: Vec<(String, u32)>,
        since: Instant,
    },
    /// Thawed; protected from random kills until a fenced write shows in the metrics.
    Thawed {
        index: usize,
        fenced_before: u64,
        since: Instant,
    },
    Done,
}

/// The RUNNING tasks whose current claim belongs to the worker `name`, with their attempt.
async fn claimed_by(api: &Api, admin: &str, name: &str) -> Vec<(String, u32)> {
    let mut held = Vec::new();
    for task in api.tasks_in(admin, "RUNNING").await {
        let id = task.id.as_str().to_string();
        let (raw, _) = api.events(admin, &id, false).await;
        let started = raw
            .iter()
            .rev()
            .find(|e| e.event.kind == kind::TASK_STARTED);
        if let Some(started) = started {
            if started.event.data["worker"] == name {
                held.push((id, task.attempt));
            }
        }
    }
    held
}

fn random_crash(rng: &mut StdRng) -> String {
    let step = STEPS[rng.gen_range(0..STEPS.len())];
    match rng.gen_range(0..3) {
        0 => step.to_string(),
        n => format!("{step}:{n}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_survive_workers_killed_at_random_with_one_terminal_event_each() {
    let test = "many_tasks_survive_workers_killed_at_random_with_one_terminal_event_each";
    run_chaos(test, Cluster::start(1, None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_across_three_nodes_survives_the_reconcilers_node_being_killed() {
    let test = "chaos_across_three_nodes_survives_the_reconcilers_node_being_killed";
    let Some(database) = ScratchDatabase::create(test).await else {
        return;
    };
    run_chaos(test, Cluster::start(3, Some(database)).await).await;
}

/// The servers a chaos run talks to: one on SQLite, or several nodes on one PostgreSQL
/// database. Each listens on a fixed address, so a node restarted after a kill is found where
/// its workers left it.
struct Cluster {
    homes: Vec<ServerHome>,
    listens: Vec<String>,
    /// `None` while a node is down.
    servers: Vec<Option<TestServer>>,
    flags: Vec<String>,
    /// Last, so the database outlives the nodes.
    _database: Option<ScratchDatabase>,
}

impl Cluster {
    async fn start(nodes: usize, database: Option<ScratchDatabase>) -> Cluster {
        let max_concurrent = MAX_CONCURRENT.to_string();
        let mut flags: Vec<String> = [
            "--lease",
            "1s",
            "--reconcile-interval",
            "100ms",
            "--max-concurrent",
            &max_concurrent,
        ]
        .iter()
        .map(|f| f.to_string())
        .collect();
        if let Some(db) = &database {
            flags.extend(["--database".to_string(), db.url().to_string()]);
        }
        let mut cluster = Cluster {
            homes: Vec::new(),
            listens: Vec::new(),
            servers: Vec::new(),
            flags,
            _database: database,
        };
        // One at a time: the first node creates the first admin and its token file.
        for node in 0..nodes {
            cluster.homes.push(ServerHome::new());
            cluster.listens.push(free_loopback_addr());
            cluster.servers.push(None);
            cluster.restart(node).await;
        }
        cluster
    }

    async fn restart(&mut self, node: usize) {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let auth = match node {
            0 => Auth::Token,
            _ => Auth::TokenOfAnotherNode,
        };
        let server = self.homes[node]
            .start_with(&self.listens[node], auth, &flags)
            .await;
        self.servers[node] = Some(server);
    }

    async fn kill(&mut self, node: usize) {
        if let Some(server) = self.servers[node].take() {
            server.kill().await;
        }
    }

    fn url(&self, node: usize) -> String {
        format!("http://{}", self.listens[node])
    }

    fn log_tails(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .filter_map(|(node, server)| {
                server
                    .as_ref()
                    .map(|s| format!("node {node}:\n{}", log_tail(s.log_path())))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A counter summed over the nodes that are up.
    async fn metric_sum(&self, series: &str) -> u64 {
        let mut sum = 0;
        for (node, server) in self.servers.iter().enumerate() {
            if server.is_some() {
                sum += metric(&Api::new(&self.url(node)).metrics().await, series);
            }
        }
        sum
    }

    /// The nodes that say they run the reconciler.
    async fn reconciler_leaders(&self) -> Vec<usize> {
        let mut leaders = Vec::new();
        for (node, server) in self.servers.iter().enumerate() {
            if server.is_some() {
                let metrics = Api::new(&self.url(node)).metrics().await;
                if metric(&metrics, "tether_reconciler_leader") == 1 {
                    leaders.push(node);
                }
            }
        }
        leaders
    }

    /// Waits until exactly one node says it runs the reconciler; returns it.
    async fn reconciler_leader(&self, deadline: Instant) -> usize {
        loop {
            let leaders = self.reconciler_leaders().await;
            if let [one] = leaders[..] {
                return one;
            }
            assert!(
                Instant::now() < deadline,
                "no single reconciler (nodes leading: {leaders:?}); logs:\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The kill of the node that runs the reconciler, in a run with several nodes.
enum LeaderKill {
    Later(Instant),
    Done { from: usize, to: usize },
    NotApplicable,
}

async fn run_chaos(test: &str, mut cluster: Cluster) {
    let seed = common::test_seed(test);
    let mut rng = common::rng(seed, 0);
    let started = Instant::now();
    let nodes = cluster.homes.len();

    // Users, tasks and observations go through one node. With several nodes, the one that
    // runs the reconciler is killed later: observe another.
    let admin = cluster.homes[0].admin_token();
    let observer = match nodes {
        1 => 0,
        _ => {
            let leader = cluster
                .reconciler_leader(Instant::now() + CHAOS_DEADLINE)
                .await;
            (leader + 1) % nodes
        }
    };
    let api = Api::new(&cluster.url(observer));
    let clis: Vec<CliEnv> = (0..nodes)
        .map(|n| CliEnv::new(&cluster.url(n), &cluster.homes[0].data_dir()))
        .collect();
    let mut tokens = Vec::new();
    for user in USERS {
        tokens.push(api.user_with_token(&admin, user, "user").await);
    }
    let worker_token = api.user_with_token(&admin, "fleet", "worker").await;

    let mut ids = Vec::new();
    for n in 0..CHAOS_TASKS {
        let task = api
            .submit(&tokens[n % USERS.len()], &format!("chaos task {n}"))
            .await;
        ids.push(task.id.as_str().to_string());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_admission(api.clone(), admin.clone(), stop.clone()));

    // Four steady workers and one slot for a worker that crashes by itself; all replaced
    // when they die.
    let logs = cluster.homes[0].data_dir();
    let mut fleet = Fleet::new(
        clis.iter().collect(),
        &worker_token,
        &logs,
        &["--speed", "50", "--concurrency", "3"],
    );
    let mut workers: Vec<WorkerProc> = (0..4).map(|_| fleet.spawn(None)).collect();
    workers.push(fleet.spawn(Some(random_crash(&mut rng))));

    let mut kills = 0usize;
    let mut crashes = 0usize;
    let mut zombie_fenced = false;
    let mut next_kill = Instant::now() + Duration::from_millis(rng.gen_range(200..1000));
    let mut zombie = Zombie::Later(Instant::now() + Duration::from_secs(2));
    let mut leader_kill = match nodes {
        1 => LeaderKill::NotApplicable,
        _ => LeaderKill::Later(Instant::now() + Duration::from_secs(1)),
    };
    let deadline = Instant::now() + CHAOS_DEADLINE;
    loop {
        let metrics = api.metrics().await;
        let left = unfinished(&metrics);
        // The zombie must get its turn: the run is long enough for that by far.
        if left == 0 && !matches!(zombie, Zombie::Frozen { .. } | Zombie::Thawed { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} tasks unfinished after {CHAOS_DEADLINE:?}; server logs:\n{}",
            cluster.log_tails()
        );

        // Several nodes: SIGKILL the one running the reconciler (before the zombie, whose
        // check counts fenced writes on every node); another must take the job over, and the
        // workers of the dead node get their server back when it restarts.
        if let LeaderKill::Later(at) = leader_kill {
            if Instant::now() >= at {
                let from = cluster.reconciler_leader(deadline).await;
                assert_ne!(
                    from, observer,
                    "the reconciler moved by itself to node {from}"
                );
                cluster.kill(from).await;
                let killed_at = Instant::now();
                let to = cluster.reconciler_leader(deadline).await;
                println!(
                    "killed node {from}, which ran the reconciler; node {to} took it over \
                     within {} ms (lease {} ms)",
                    killed_at.elapsed().as_millis(),
                    LEASE.as_millis()
                );
                cluster.restart(from).await;
                leader_kill = LeaderKill::Done { from, to };
            }
        }

        // Replace the workers that ended: crashing ones were asked to; others must not.
        for worker in &mut workers {
            let Ok(Some(status)) = worker.child.try_wait() else {
                continue;
            };
            assert!(
                worker.crash_at.is_some(),
                "worker {} exited by itself ({status}); its log:\n{}",
                worker.name,
                log_tail(&worker.log)
            );
            crashes += 1;
            *worker = fleet.spawn(Some(random_crash(&mut rng)));
        }

        let leader_kill_pending = matches!(leader_kill, LeaderKill::Later(_));
        zombie = match zombie {
            Zombie::Later(at) if Instant::now() >= at && !leader_kill_pending => {
                // Freeze a steady worker that holds at least one task.
                let index = rng.gen_range(0..4);
                workers[index].signal("-STOP").await;
                let held = claimed_by(&api, &admin, &workers[index].name).await;
                if held.is_empty() {
                    workers[index].signal("-CONT").await;
                    Zombie::Later(Instant::now() + Duration::from_millis(200))
                } else {
                    println!("froze {} holding {held:?}", workers[index].name);
                    Zombie::Frozen {
                        index,
                        held,
                        since: Instant::now(),
                    }
                }
            }
            Zombie::Frozen { index, held, since } => {
                let mut requeued = true;
                for (id, attempt) in &held {
                    let task = api.task(&admin, id).await;
                    // A frozen worker cannot finish its task: only the reconciler moves it on.
                    requeued &= task.attempt > *attempt || task.state.is_terminal();
                }
                // Frozen for longer than a whole lease, and every claim it held moved on.
                if requeued && since.elapsed() > LEASE + Duration::from_millis(500) {
                    let fenced_before = cluster.metric_sum("tether_fenced_writes_total").await;
                    workers[index].signal("-CONT").await;
                    println!(
                        "thawed {} after {:.1}s, its tasks requeued",
                        workers[index].name,
                        since.elapsed().as_secs_f64()
                    );
                    Zombie::Thawed {
                        index,
                        fenced_before,
                        since: Instant::now(),
                    }
                } else {
                    Zombie::Frozen { index, held, since }
                }
            }
            Zombie::Thawed {
                index,
                fenced_before,
                since,
            } => {
                let fenced = cluster.metric_sum("tether_fenced_writes_total").await;
                if fenced > fenced_before {
                    zombie_fenced = true;
                    Zombie::Done
                } else if since.elapsed() > Duration::from_secs(20) {
                    Zombie::Done
                } else {
                    Zombie::Thawed {
                        index,
                        fenced_before,
                        since,
                    }
                }
            }
            other => other,
        };

        if Instant::now() >= next_kill && left > 0 {
            let protected = match zombie {
                Zombie::Frozen { index, .. } | Zombie::Thawed { index, .. } => Some(index),
                _ => None,
            };
            let slot = rng.gen_range(0..workers.len());
            if Some(slot) != protected {
                let crash_at = workers[slot]
                    .crash_at
                    .as_ref()
                    .map(|_| random_crash(&mut rng));
                let replacement = fleet.spawn(crash_at);
                std::mem::replace(&mut workers[slot], replacement)
                    .kill()
                    .await;
                kills += 1;
            }
            next_kill = Instant::now() + Duration::from_millis(rng.gen_range(200..1000));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let chaos_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (samples, most_running, violations) = sampler.await.expect("the sampler ran");
    assert!(
        samples > 0 && most_running > 0,
        "the sampler never saw a running task"
    );
    assert!(
        violations.is_empty(),
        "a user had more than {MAX_CONCURRENT} tasks running: {violations:?}"
    );
    for worker in workers {
        worker.kill().await;
    }

    // Every task's log.
    let mut requeues = 0;
    let mut rewinds = 0;
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let task = api.task(&admin, id).await;
        assert!(task.state.is_terminal(), "task {id} is {}", task.state);
        *states.entry(task.state.to_string()).or_default() += 1;
        let (raw, raw_closed) = api.events(&admin, id, false).await;
        let (timeline, timeline_closed) = api.events(&admin, id, true).await;
        let figures = check_task_log(id, &raw, raw_closed, &timeline, timeline_closed);
        requeues += figures.requeues;
        rewinds += figures.rewinds;
        let terminal = raw.last().unwrap().event.kind.as_str();
        let expected_terminal = match task.state {
            TaskState::Completed => kind::TASK_COMPLETED,
            TaskState::Failed => kind::TASK_FAILED,
            TaskState::TimedOut => kind::TASK_TIMED_OUT,
            TaskState::Cancelled => kind::TASK_CANCELLED,
            other => panic!("task {id} is {other}"),
        };
        assert_eq!(terminal, expected_terminal, "task {id}");
    }

    // No slot leaked, and the zombie was fenced.
    for token in &tokens {
        assert!(api.tasks_in(token, "RUNNING").await.is_empty());
    }
    let metrics = api.metrics().await;
    assert_eq!(metric(&metrics, "tether_tasks{state=\"RUNNING\"}"), 0);
    assert_eq!(metric(&metrics, "tether_tasks{state=\"FINALIZING\"}"), 0);
    let fenced = cluster.metric_sum("tether_fenced_writes_total").await;
    assert!(
        zombie_fenced && fenced > 0,
        "the thawed worker's writes were not fenced within 20s"
    );
    assert!(requeues > 0 && rewinds > 0, "the chaos caused no retry");
    let leader_moved = match leader_kill {
        LeaderKill::Done { from, to } => {
            assert_ne!(from, to, "the reconciler stayed on the killed node");
            format!("reconciler moved from node {from} to node {to}")
        }
        LeaderKill::NotApplicable => "one node".to_string(),
        LeaderKill::Later(_) => panic!("the run ended before the reconciler's node was killed"),
    };

    println!(
        "chaos summary: {nodes} node(s) ({leader_moved}), seed {seed}, tasks {}, kills {kills}, self-crashes {crashes}, workers \
         started {}, requeues {requeues}, rewinds {rewinds}, fenced writes {fenced}, final \
         states {states:?}, admission samples {samples} (most running for one user: {most_running}), chaos phase {:.1}s, total {:.1}s",
        ids.len(),
        fleet.started,
        chaos_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_ride_out_a_server_restart_and_streams_stay_gap_free() {
    let mut home = ServerHome::new();
    let listen = free_loopback_addr();
    let flags = ["--lease", "2s", "--reconcile-interval", "200ms"];
    let server = home.start_with(&listen, Auth::Token, &flags).await;
    let api = Api::new(server.base_url());
    let admin = home.admin_token();
    let cli = CliEnv::new(server.base_url(), &home.data_dir());
    let user = api.user_with_token(&admin, "dev", "user").await;
    let worker_token = api.user_with_token(&admin, "fleet", "worker").await;

    let logs = home.data_dir();
    let mut fleet = Fleet::new(
        vec![&cli],
        &worker_token,
        &logs,
        &["--speed", "10", "--concurrency", "4"],
    );
    let mut workers = [fleet.spawn(None), fleet.spawn(None)];

    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(
            api.submit(&user, &format!("restart task {n}"))
                .await
                .id
                .as_str()
                .to_string(),
        );
    }

    // Kill the server mid-run: once some tasks finished and others are running.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = api.metrics().await;
        let done = metric(&metrics, "tether_tasks{state=\"COMPLETED\"}");
        let running = metric(&metrics, "tether_tasks{state=\"RUNNING\"}");
        if done >= 2 && running >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not get going:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let in_flight = unfinished(&api.metrics().await);
    let running_at_kill: HashSet<String> = api
        .tasks_in(&admin, "RUNNING")
        .await
        .into_iter()
        .map(|t| t.id.as_str().to_string())
        .collect();
    assert!(in_flight > 0, "every task ended before the kill");
    server.kill().await;
    let server = home.start_with(&listen, Auth::Token, &flags).await;
    let api = Api::new(server.base_url());

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let metrics = api.metrics().await;
        if unfinished(&metrics) == 0 {
            break;
        }
        for worker in &mut workers {
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!(
                    "worker {} exited ({status}); its log:\n{}",
                    worker.name,
                    log_tail(&worker.log)
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "tasks unfinished after the restart:\n{metrics}\nserver log:\n{}",
            log_tail(server.log_path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut requeues = 0;
    let mut leases_kept = 0;
    for id in &ids {
        let task = api.task(&admin, id).await;
        *states.entry(task.state.to_string()).or_default() += 1;
        let (raw, raw_closed) = api.events(&admin, id, false).await;
        let (timeline, timeline_closed) = api.events(&admin, id, true).await;
        let figures = check_task_log(id, &raw, raw_closed, &timeline, timeline_closed);
        requeues += figures.requeues;
        if running_at_kill.contains(id) && figures.requeues == 0 {
            leases_kept += 1;
        }
    }
    // The workers came back to the restarted server: tasks they ran after it completed.
    assert!(
        states.get("COMPLETED").copied().unwrap_or(0) == ids.len(),
        "final states {states:?}"
    );
    println!(
        "restart summary: tasks {}, unfinished at the kill {in_flight}, running at the kill {} \
         (lease kept through the restart: {leases_kept}), requeues {requeues}, final states \
         {states:?}",
        ids.len(),
        running_at_kill.len()
    );
    for worker in workers {
        worker.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------
// An exec worker killed for real: the rewind covers everything its command printed.

/// Attempt 1 prints agent events (JSON, no step named), a plain line and a stderr line, then
/// waits for its worker to die; attempt 2 prints its own and ends.
const AGENT_COMMAND: &str = r#"read -r task
echo '{"type":"agent_turn","data":{"turn":1,"attempt_seen":'"$TETHER_TASK_ATTEMPT"'}}'
echo '{"type":"agent_tool_call","data":{"tool_name":"bash","tool_input_preview":"cargo test"}}'
echo "plain line of attempt $TETHER_TASK_ATTEMPT"
echo "stderr line of attempt $TETHER_TASK_ATTEMPT" >&2
if [ "$TETHER_TASK_ATTEMPT" = 1 ]; then
  echo '{"type":"agent_milestone","data":{"milestone":"waiting to be killed"}}'
  # Orphaned once the worker is SIGKILLed: end with it rather than linger.
  while kill -0 "$PPID" 2>/dev/null; do sleep 0.05; done
  exit 1
fi"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_workers_json_events_are_superseded_when_its_task_is_retried_after_a_kill() {
    let mut home = ServerHome::new();
    let flags = ["--lease", "1s", "--reconcile-interval", "100ms"];
    let server = home.start_with("127.0.0.1:0", Auth::Token, &flags).await;
    let cli = CliEnv::new(server.base_url(), &home.data_dir());
    let mut doomed = cli.spawn(&["worker", "--exec", AGENT_COMMAND, "--poll", "1s"]);
    let submitted = cli.run(&["submit", "agent that crashes"]).await;
    submitted.expect_code(0);
    let id = submitted.stdout.trim().to_string();

    // Kill the worker process for real once attempt 1's events are stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw = cli.events(&id, false).await;
        if raw.iter().any(|e| e.event.kind == kind::AGENT_MILESTONE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "attempt 1 printed nothing:\n{}",
            excerpt(&raw)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    doomed.kill().await;

    let _healthy = cli.spawn(&["worker", "--exec", AGENT_COMMAND, "--poll", "1s"]);
    let watched = cli.run(&["watch", &id]).await;
    watched.expect_code(0);

    let raw = cli.events(&id, false).await;
    let timeline = cli.events(&id, true).await;
    let show = || format!("raw log:\n{}", excerpt(&raw));
    let rewinds: Vec<_> = raw
        .iter()
        .filter(|e| e.event.kind == kind::STREAM_REWIND)
        .collect();
    assert_eq!(rewinds.len(), 1, "{}", show());
    assert_eq!(rewinds[0].event.step.as_deref(), Some("run"), "{}", show());
    assert_eq!(rewinds[0].event.rewind_epoch(), Some(2), "{}", show());

    // Everything attempt 1's command printed, JSON or not, stdout or stderr, is in the
    // implicit step with attempt 1, kept in the raw log...
    let printed_by_attempt_1: Vec<&EventAt> = raw
        .iter()
        .filter(|e| e.event.attempt == Some(1) && e.event.step.as_deref() == Some("run"))
        .collect();
    for wanted in [
        kind::AGENT_TURN,
        kind::AGENT_TOOL_CALL,
        kind::AGENT_MILESTONE,
        kind::LOG,
    ] {
        assert!(
            printed_by_attempt_1.iter().any(|e| e.event.kind == wanted),
            "no {wanted} of attempt 1 in step run\n{}",
            show()
        );
    }
    let unstamped: Vec<_> = raw
        .iter()
        .filter(|e| {
            [kind::AGENT_TURN, kind::AGENT_TOOL_CALL, kind::LOG].contains(&e.event.kind.as_str())
                && (e.event.step.is_none() || e.event.attempt.is_none())
        })
        .collect();
    assert!(
        unstamped.is_empty(),
        "events without step or attempt: {unstamped:?}"
    );

    // ...and superseded by the rule tether-core applies, so the timeline shows none of them.
    let hidden = superseded(&raw);
    for e in &printed_by_attempt_1 {
        assert!(
            hidden.contains(&e.offset.position()),
            "not superseded: {e:?}"
        );
    }
    let in_timeline: HashSet<u64> = timeline.iter().map(|e| e.offset.position()).collect();
    let expected: HashSet<u64> = raw
        .iter()
        .map(|e| e.offset.position())
        .filter(|at| !hidden.contains(at))
        .collect();
    assert_eq!(in_timeline, expected, "{}", show());
    assert!(
        timeline
            .iter()
            .filter(
                |e| e.event.step.as_deref() == Some("run") && e.event.kind != kind::STREAM_REWIND
            )
            .all(|e| e.event.attempt == Some(2)),
        "timeline:\n{}",
        excerpt(&timeline)
    );
    assert!(timeline
        .iter()
        .any(|e| e.event.kind == kind::AGENT_TOOL_CALL));
}
