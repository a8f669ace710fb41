//! G1 (durable acknowledgement) under SIGKILL: appends that got a 2xx survive the process
//! being killed at a random moment under concurrent load, again and again on one data
//! directory; nothing appears twice and each client's messages stay in order.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::watch;

use common::http::HttpClient;
use common::server::{ServerHome, TestServer};
use common::streams::{append_json, create_json_stream, read_all_json, read_json_from};

const CYCLES: usize = 10;
const CLIENTS: usize = 8;
const STREAMS: [&str; 3] = ["crash/alpha", "crash/beta", "crash/gamma"];
/// Acknowledged messages to wait for in each cycle before the random kill delay starts, so
/// that every cycle kills the server under load, however slow the machine is.
const MIN_ACKED_BEFORE_KILL: usize = 16;
const LOAD_WAIT_LIMIT: Duration = Duration::from_secs(30);
const CLIENTS_STOP_LIMIT: Duration = Duration::from_secs(30);

/// What the test sent in one POST and what it learned about its fate.
#[derive(Debug, Clone)]
struct Post {
    cycle: usize,
    client: usize,
    stream: usize,
    /// The `n` of each message in the POST body, increasing.
    ns: Vec<u64>,
    outcome: Outcome,
}

#[derive(Debug, Clone)]
enum Outcome {
    /// 2xx: the messages must be in the log, forever.
    Acknowledged,
    /// No answer (connection reset or refused by the kill): in the log at most once, or not.
    Unknown(String),
    /// An HTTP answer that is not 2xx. Never expected under this load.
    Rejected(String),
}

/// Everything the test has sent so far, over all cycles.
#[derive(Default)]
struct Model {
    posts: Vec<Post>,
    /// (client, n) -> index in `posts`
    by_message: HashMap<(usize, u64), usize>,
    /// The logs read after the previous restart: the next reads must extend them.
    previous_logs: Vec<Vec<Value>>,
    /// The `Stream-Next-Offset` at the end of each of those reads: a reader holding it must
    /// get exactly the messages added since.
    previous_tails: Vec<Option<String>>,
}

impl Model {
    fn record(&mut self, posts: Vec<Post>) {
        for post in posts {
            let index = self.posts.len();
            for &n in &post.ns {
                let earlier = self.by_message.insert((post.client, n), index);
                assert!(
                    earlier.is_none(),
                    "test bug: ({}, {n}) sent twice",
                    post.client
                );
            }
            self.posts.push(post);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_repeated_sigkill() {
    let seed = common::test_seed("acknowledged_appends_survive_repeated_sigkill");
    let mut rng = common::rng(seed, u64::MAX);
    let mut home = ServerHome::new();
    let mut model = Model {
        previous_logs: vec![Vec::new(); STREAMS.len()],
        previous_tails: vec![None; STREAMS.len()],
        ..Model::default()
    };
    let mut next_n = [0u64; CLIENTS];

    for cycle in 1..=CYCLES {
        let server = home.start().await;
        let http = HttpClient::new();
        if cycle == 1 {
            for path in STREAMS {
                create_json_stream(&http, server.base_url(), path)
                    .await
                    .unwrap_or_else(|e| panic!("creating {path}: {e}"));
            }
        } else {
            verify_after_restart(&http, &server, &mut model, cycle - 1).await;
        }

        // Load: every client appends in a loop until the kill cuts it off.
        let (acked_tx, mut acked_rx) = watch::channel(0usize);
        let mut clients = Vec::new();
        for (client, first_n) in next_n.iter().copied().enumerate() {
            let http = http.clone();
            let base_url = server.base_url().to_string();
            let acked_tx = acked_tx.clone();
            let client_rng = common::rng(seed, (cycle * CLIENTS + client) as u64);
            clients.push(tokio::spawn(run_client(
                http, base_url, cycle, client, first_n, client_rng, acked_tx,
            )));
        }
        drop(acked_tx);
        let load_started = Instant::now();
        // `is_ok` drops the borrow of the watch value at once: holding it would block the
        // clients' updates.
        let enough_load = tokio::time::timeout(
            LOAD_WAIT_LIMIT,
            acked_rx.wait_for(|&acked| acked >= MIN_ACKED_BEFORE_KILL),
        )
        .await
        .is_ok_and(|result| result.is_ok());
        let kill_delay = Duration::from_millis(rng.gen_range(100..=600));
        if enough_load {
            tokio::time::sleep(kill_delay).await;
        }
        let load_time = load_started.elapsed();
        let log_path = server.log_path().to_path_buf();
        server.kill().await;

        let mut posts = Vec::new();
        for (client, handle) in clients.into_iter().enumerate() {
            let (client_posts, client_next) = tokio::time::timeout(CLIENTS_STOP_LIMIT, handle)
                .await
                .unwrap_or_else(|_| panic!("client {client} did not stop after the kill"))
                .expect("client task panicked");
            next_n[client] = client_next;
            posts.extend(client_posts);
        }

        let rejected: Vec<&str> = posts
            .iter()
            .filter_map(|post| match &post.outcome {
                Outcome::Rejected(detail) => Some(detail.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            rejected.is_empty(),
            "cycle {cycle}: the live server answered {} appends with an error status, first: \
             {}; stderr:\n{}",
            rejected.len(),
            rejected[0],
            common::server::log_tail(&log_path)
        );
        let acked_posts = posts
            .iter()
            .filter(|post| matches!(post.outcome, Outcome::Acknowledged))
            .count();
        let acked_messages: usize = posts
            .iter()
            .filter(|post| matches!(post.outcome, Outcome::Acknowledged))
            .map(|post| post.ns.len())
            .sum();
        let unanswered: Vec<&str> = posts
            .iter()
            .filter_map(|post| match &post.outcome {
                Outcome::Unknown(error) => Some(error.as_str()),
                _ => None,
            })
            .collect();
        println!(
            "cycle {cycle:2}: SIGKILL after {:4} ms of load: {acked_posts} POSTs acknowledged \
             ({acked_messages} messages), {} POSTs without an answer (e.g. {:?})",
            load_time.as_millis(),
            unanswered.len(),
            unanswered.first().copied().unwrap_or("-"),
        );
        assert!(
            acked_messages > 0,
            "cycle {cycle}: no append was acknowledged before the kill (first failure: {:?})",
            unanswered.first()
        );
        model.record(posts);
    }

    let server = home.start().await;
    verify_after_restart(&HttpClient::new(), &server, &mut model, CYCLES).await;
    server.kill().await;
}

/// One client: POSTs one message (or a small batch) at a time to a random stream, waits for
/// the answer, and stops at the first request that gets none.
async fn run_client(
    http: HttpClient,
    base_url: String,
    cycle: usize,
    client: usize,
    mut next_n: u64,
    mut rng: rand::rngs::StdRng,
    acked: watch::Sender<usize>,
) -> (Vec<Post>, u64) {
    let mut posts = Vec::new();
    loop {
        let stream = rng.gen_range(0..STREAMS.len());
        let count = if rng.gen_bool(0.25) {
            rng.gen_range(2..=4)
        } else {
            1
        };
        let ns: Vec<u64> = (next_n..next_n + count).collect();
        next_n += count;
        let messages: Vec<Value> = ns
            .iter()
            .map(|n| json!({"client": client, "n": n}))
            .collect();
        let body = if count == 1 {
            messages[0].clone()
        } else {
            Value::Array(messages)
        };
        let outcome = match append_json(&http, &base_url, STREAMS[stream], &body).await {
            Ok(response) if response.status.is_success() => Outcome::Acknowledged,
            Ok(response) => Outcome::Rejected(format!(
                "POST {} {body}: {} {}",
                STREAMS[stream],
                response.status,
                response.body_text()
            )),
            Err(error) => Outcome::Unknown(error.to_string()),
        };
        let stop = !matches!(outcome, Outcome::Acknowledged);
        if !stop {
            acked.send_modify(|total| *total += ns.len());
        }
        posts.push(Post {
            cycle,
            client,
            stream,
            ns,
            outcome,
        });
        if stop {
            return (posts, next_n);
        }
    }
}

/// Reads every stream from the start on the restarted server and checks it against what was
/// sent and acknowledged.
async fn verify_after_restart(
    http: &HttpClient,
    server: &TestServer,
    model: &mut Model,
    last_cycle: usize,
) {
    let mut violations = Vec::new();
    let mut found: HashSet<(usize, u64)> = HashSet::new();
    let mut logs = Vec::new();
    let mut tails = Vec::new();
    for (stream, path) in STREAMS.iter().enumerate() {
        let log = read_all_json(http, server.base_url(), path)
            .await
            .unwrap_or_else(|e| panic!("after cycle {last_cycle}: reading {path}: {e}"));
        let messages = log.messages;
        tails.push(Some(log.next_offset.clone()));

        // An offset handed out before the crash still means the same position after it.
        if let Some(old_tail) = &model.previous_tails[stream] {
            let resumed = read_json_from(http, server.base_url(), path, old_tail)
                .await
                .unwrap_or_else(|e| panic!("after cycle {last_cycle}: reading {path}: {e}"));
            let added = messages
                .get(model.previous_logs[stream].len()..)
                .unwrap_or(&[]);
            if resumed.messages != added {
                violations.push(format!(
                    "{path}: reading from the tail offset {old_tail} of the previous restart \
                     gave {} messages, but {} were added since",
                    resumed.messages.len(),
                    added.len()
                ));
            }
            if log.next_offset < *old_tail {
                violations.push(format!(
                    "{path}: tail offset went back from {old_tail} to {}",
                    log.next_offset
                ));
            }
        }

        let previous = &model.previous_logs[stream];
        if messages.len() < previous.len() || messages[..previous.len()] != previous[..] {
            let first_difference = previous
                .iter()
                .zip(&messages)
                .position(|(before, now)| before != now)
                .unwrap_or(messages.len().min(previous.len()));
            violations.push(format!(
                "{path}: the log read after the previous restart ({} messages) is not a prefix \
                 of the log now ({} messages); first difference at index {first_difference}",
                previous.len(),
                messages.len()
            ));
        }

        let mut last_n: BTreeMap<usize, u64> = BTreeMap::new();
        for (index, message) in messages.iter().enumerate() {
            let key = match (message["client"].as_u64(), message["n"].as_u64()) {
                (Some(client), Some(n)) => (client as usize, n),
                _ => {
                    violations.push(format!("{path}[{index}]: unexpected message {message}"));
                    continue;
                }
            };
            match model.by_message.get(&key) {
                None => violations.push(format!(
                    "{path}[{index}]: {message} was never sent by the test"
                )),
                Some(&post) if model.posts[post].stream != stream => violations.push(format!(
                    "{path}[{index}]: {message} was sent to {}",
                    STREAMS[model.posts[post].stream]
                )),
                Some(_) => {}
            }
            if !found.insert(key) {
                violations.push(format!("{path}[{index}]: {message} appears twice"));
            }
            if let Some(&previous_n) = last_n.get(&key.0) {
                if key.1 <= previous_n {
                    violations.push(format!(
                        "{path}[{index}]: {message} comes after n={previous_n} of the same client"
                    ));
                }
            }
            last_n.insert(key.0, key.1);
        }
        logs.push(messages);
    }

    // Per cycle: acknowledged messages found, and the fate of the POSTs without an answer.
    for cycle in 1..=last_cycle {
        let (mut acked, mut acked_found) = (0, 0);
        let (mut unknown, mut unknown_present, mut unknown_partial) = (0, 0, 0);
        for post in model.posts.iter().filter(|post| post.cycle == cycle) {
            let present = post
                .ns
                .iter()
                .filter(|&&n| found.contains(&(post.client, n)))
                .count();
            match &post.outcome {
                Outcome::Acknowledged => {
                    acked += post.ns.len();
                    acked_found += present;
                    if present != post.ns.len() {
                        violations.push(format!(
                            "cycle {cycle}: acknowledged POST to {} of client {} n={:?} is \
                             missing {} of its {} messages",
                            STREAMS[post.stream],
                            post.client,
                            post.ns,
                            post.ns.len() - present,
                            post.ns.len()
                        ));
                    }
                }
                Outcome::Unknown(_) => {
                    unknown += 1;
                    if present == post.ns.len() {
                        unknown_present += 1;
                    } else if present > 0 {
                        unknown_partial += 1;
                        violations.push(format!(
                            "cycle {cycle}: unacknowledged POST to {} of client {} n={:?} is \
                             partly in the log ({present} of {} messages): an append must be \
                             all or nothing",
                            STREAMS[post.stream],
                            post.client,
                            post.ns,
                            post.ns.len()
                        ));
                    }
                }
                Outcome::Rejected(_) => {}
            }
        }
        if cycle == last_cycle {
            println!(
                "after restart {last_cycle:2}: cycle {cycle} acknowledged {acked_found}/{acked} \
                 found; {unknown_present} of {unknown} unanswered POSTs present \
                 ({unknown_partial} partial); log lengths {:?}",
                logs.iter().map(Vec::len).collect::<Vec<_>>()
            );
        } else if acked_found != acked {
            println!(
                "after restart {last_cycle:2}: cycle {cycle} acknowledged only {acked_found}/{acked} found"
            );
        }
    }

    if !violations.is_empty() {
        let shown = violations.len().min(25);
        panic!(
            "after SIGKILL number {last_cycle} and restart, {} violations (first {shown}):\n{}",
            violations.len(),
            violations[..shown].join("\n")
        );
    }
    model.previous_logs = logs;
    model.previous_tails = tails;
}
