//! Prometheus metrics at `GET /metrics`, kept in atomics: recording costs a few
//! uncontended increments, and only a scrape does any formatting.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use tether_types::TaskState;

use crate::AppState;

/// Upper bounds of the HTTP latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts are computed at scrape; these are per bucket, plus one for +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    /// Microseconds, so it can be an integer.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        let i = BUCKETS.partition_point(|b| *b < seconds);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// The route label of every Durable Streams request.
pub const STREAM_ROUTE: &str = "/v1/stream/{*path}";

/// Per route pattern: one histogram per (method, status).
type Routes = HashMap<String, Vec<(Method, u16, Arc<Histogram>)>>;

#[derive(Default)]
pub struct Metrics {
    appends: AtomicU64,
    append_bytes: AtomicU64,
    task_events: AtomicU64,
    fenced: AtomicU64,
    live: Arc<AtomicI64>,
    parked: AtomicI64,
    transitions: [AtomicU64; TaskState::ALL.len()],
    /// Whether this node runs the reconciler (of several nodes, one does).
    reconciler_leader: std::sync::atomic::AtomicBool,
    http: RwLock<Routes>,
}

/// Counts one live reader for as long as it is held.
pub struct LiveReader(Arc<AtomicI64>);

impl Drop for LiveReader {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn appended(&self, bytes: usize) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        self.append_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn task_events(&self, n: usize) {
        self.task_events.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a worker write refused by fencing (G6), passing the error on.
    pub fn fenced(&self, e: tether_store::WorkError) -> tether_store::WorkError {
        if matches!(e, tether_store::WorkError::Fenced(_)) {
            self.fenced.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    /// A task entered `state`.
    pub fn transition(&self, state: TaskState) {
        if let Some(i) = TaskState::ALL.iter().position(|s| *s == state) {
            self.transitions[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records whether this node leads the reconciler.
    pub fn lead_reconciler(&self, leading: bool) {
        self.reconciler_leader.store(leading, Ordering::Relaxed);
    }

    /// SSE subscribers parked without a task: `delta` more (or fewer).
    pub fn parked(&self, delta: i64) {
        self.parked.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn live_reader(&self) -> LiveReader {
        self.live.fetch_add(1, Ordering::Relaxed);
        LiveReader(self.live.clone())
    }

    /// Records one request; allocates only the first time a series is seen.
    pub fn observe(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let find = |routes: &Routes| {
            routes.get(route).and_then(|series| {
                series
                    .iter()
                    .find(|(m, s, _)| m == method && *s == status)
                    .map(|(_, _, h)| h.clone())
            })
        };
        let found = find(&self.http.read());
        let histogram = match found {
            Some(h) => h,
            None => {
                let mut routes = self.http.write();
                match find(&routes) {
                    Some(h) => h,
                    None => {
                        let h = Arc::new(Histogram::default());
                        routes.entry(route.to_string()).or_default().push((
                            method.clone(),
                            status,
                            h.clone(),
                        ));
                        h
                    }
                }
            }
        };
        histogram.observe(seconds);
    }

    fn render(&self, tasks: &[(TaskState, u64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            &mut out,
            "tether_appends_total",
            "Appends to streams through the Durable Streams API.",
            self.appends.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tether_append_bytes_total",
            "Bytes appended to streams through the Durable Streams API.",
            self.append_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tether_task_events_total",
            "Events producers appended to tasks.",
            self.task_events.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "tether_fenced_writes_total",
            "Worker calls refused because their lease or step attempt was superseded.",
            self.fenced.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP tether_live_subscribers Readers waiting on a stream (SSE and long-poll).\n\
             # TYPE tether_live_subscribers gauge\ntether_live_subscribers {}",
            self.live.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tether_sse_parked_subscribers Idle SSE subscribers waiting without a task of their own.\n\
             # TYPE tether_sse_parked_subscribers gauge\ntether_sse_parked_subscribers {}",
            self.parked.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tether_reconciler_leader 1 on the node that runs the reconciler.\n\
             # TYPE tether_reconciler_leader gauge\ntether_reconciler_leader {}",
            u8::from(self.reconciler_leader.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP tether_tasks Tasks by state.\n# TYPE tether_tasks gauge"
        );
        for state in TaskState::ALL {
            let n = tasks
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "tether_tasks{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tether_task_transitions_total Task state changes, by the state entered.\n\
             # TYPE tether_task_transitions_total counter"
        );
        for (state, n) in TaskState::ALL.iter().zip(&self.transitions) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(out, "tether_task_transitions_total{{to=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP tether_http_request_duration_seconds Time to the response head.\n\
             # TYPE tether_http_request_duration_seconds histogram"
        );
        let mut routes: Vec<_> = self
            .http
            .read()
            .iter()
            .flat_map(|(route, series)| {
                series
                    .iter()
                    .map(|(m, s, h)| ((route.clone(), m.to_string(), *s), h.clone()))
            })
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        for ((route, method, status), h) in routes {
            let labels = format!("method=\"{method}\",route=\"{route}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (i, bound) in BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".into()])
                .enumerate()
            {
                cumulative += h.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "tether_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "tether_http_request_duration_seconds_sum{{{labels}}} {sum}"
            );
            let _ = writeln!(
                out,
                "tether_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        out
    }
}

/// Times every routed request by its route pattern (not its path, which would make one
/// series per stream).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    state.metrics.observe(&method, route, status, seconds);
    response
}

pub async fn scrape(State(state): State<AppState>) -> Response {
    let tasks = match state.control.count_tasks().await {
        Ok(tasks) => tasks,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot count tasks");
            Vec::new()
        }
    };
    let mut body = state.metrics.render(&tasks);
    disk_gauges(&mut body, &state.config);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Free space where the data dir is, and on the embedded store the WAL's size: the two
/// numbers to watch before a disk fills (the WAL grows under load and shrinks when quiet).
/// Read at scrape time: a `statvfs` and a `stat`.
fn disk_gauges(out: &mut String, config: &crate::ServerConfig) {
    use tether_store::sqlite::disk;
    match disk::free_bytes(&config.data_dir) {
        Ok(free) => {
            let _ = writeln!(
                out,
                "# HELP tether_disk_free_bytes Free space on the file system of the data dir.\n\
                 # TYPE tether_disk_free_bytes gauge\ntether_disk_free_bytes {free}"
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the data dir's free space"),
    }
    if config.database.is_none() {
        let wal = disk::wal_bytes(&config.data_dir);
        let _ = writeln!(
            out,
            "# HELP tether_sqlite_wal_bytes Size of the embedded database's write-ahead log.\n\
             # TYPE tether_sqlite_wal_bytes gauge\ntether_sqlite_wal_bytes {wal}"
        );
    }
}

/// Records a Durable Streams request's latency under the one stream route.
pub fn observe_stream(
    state: &AppState,
    method: &axum::http::Method,
    response: &axum::response::Response,
    started: std::time::Instant,
) {
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state.metrics.observe(method, STREAM_ROUTE, status, seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_and_live_readers_count_while_held() {
        let m = Metrics::default();
        m.observe(&Method::GET, "/v1/tasks", 200, 0.0007);
        m.observe(&Method::GET, "/v1/tasks", 200, 2.0);
        let reader = m.live_reader();
        m.transition(TaskState::Cancelled);
        let text = m.render(&[(TaskState::Submitted, 3)]);
        assert!(text.contains(
            "tether_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/tasks\",status=\"200\",le=\"0.001\"} 1"
        ));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("tether_live_subscribers 1"));
        assert!(text.contains("tether_tasks{state=\"SUBMITTED\"} 3"));
        assert!(text.contains("tether_tasks{state=\"RUNNING\"} 0"));
        assert!(text.contains("tether_task_transitions_total{to=\"CANCELLED\"} 1"));
        drop(reader);
        assert!(m.render(&[]).contains("tether_live_subscribers 0"));
    }
}
