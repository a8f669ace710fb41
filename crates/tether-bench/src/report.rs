//! The results of one bench run: printed as tables, and written as JSON for the comparison
//! script to fold rounds and servers together.
//!
//! The JSON layout is read back by `--summarize`, possibly from files written by an older
//! build, so fields are only ever added (with `#[serde(default)]`), never renamed.

use serde::{Deserialize, Serialize};

use crate::appends::AppendsResult;
use crate::catchup::CatchupResult;
use crate::fanout::FanoutResult;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub label: Option<String>,
    pub url: String,
    pub stream_prefix: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    #[serde(default)]
    pub server_rss_start_kb: Option<u64>,
    #[serde(default)]
    pub appends: Vec<AppendsResult>,
    #[serde(default)]
    pub fanout: Vec<FanoutResult>,
    #[serde(default)]
    pub catchup: Option<CatchupResult>,
    #[serde(default)]
    pub lifecycle: Option<crate::lifecycle::LifecycleResult>,
    #[serde(default)]
    pub idle: Option<crate::idle::IdleResult>,
    /// What was measured: `ds` (Durable Streams over HTTP), `redis` or `nats`.
    #[serde(default)]
    pub system: Option<String>,
    /// Workloads that could not finish, with the reason.
    #[serde(default)]
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub workload: String,
    pub error: String,
}

/// A plain-text table with right-aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let line: Vec<String> = width
                .iter()
                .zip(row)
                .map(|(w, cell)| format!("{cell:>w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A count or rate with thousands separators: 41234.6 -> "41,235".
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" {
        out.insert(0, '-');
    }
    out
}

pub fn appends_table(results: &[AppendsResult]) -> String {
    let mut t = Table::new(&[
        "connections",
        "streams",
        "appends/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "non-2xx/errors",
    ]);
    for r in results {
        let errors = if r.error_kinds.is_empty() {
            "0".to_string()
        } else {
            let kinds: Vec<String> = r
                .error_kinds
                .iter()
                .map(|(k, n)| format!("{n}x {k}"))
                .collect();
            format!("{} ({})", r.errors, kinds.join(", "))
        };
        t.row(vec![
            r.connections.to_string(),
            r.streams.to_string(),
            thousands(r.appends_per_s),
            ms(r.latency.p50_ms),
            ms(r.latency.p99_ms),
            ms(r.latency.max_ms),
            errors,
        ]);
    }
    t.render()
}

pub fn fanout_table(results: &[FanoutResult]) -> String {
    let mut t = Table::new(&[
        "subscribers",
        "messages",
        "delivered",
        "missing",
        "dup",
        "p50 ms",
        "p99 ms",
        "max ms",
        "append p50 ms",
        "connect s",
        "server RSS MB before/after",
    ]);
    for r in results {
        let rss = match (r.rss_before_kb, r.rss_connected_kb) {
            (Some(a), Some(b)) => format!("{:.1}/{:.1}", a as f64 / 1024.0, b as f64 / 1024.0),
            _ => "-".to_string(),
        };
        t.row(vec![
            r.subscribers.to_string(),
            r.messages.to_string(),
            format!("{}/{}", r.delivered, r.expected_deliveries),
            r.missing.to_string(),
            r.duplicates.to_string(),
            ms(r.latency.p50_ms),
            ms(r.latency.p99_ms),
            ms(r.latency.max_ms),
            ms(r.append_latency.p50_ms),
            format!("{:.2}", r.connect_s),
            rss,
        ]);
    }
    let mut out = t.render();
    for r in results {
        for (e, n) in &r.subscriber_errors {
            out.push_str(&format!(
                "  {} subscribers: {n} failed: {e}\n",
                r.subscribers
            ));
        }
        for note in &r.notes {
            out.push_str(&format!("  {} subscribers: {note}\n", r.subscribers));
        }
        if r.malformed > 0 {
            out.push_str(&format!(
                "  {} subscribers: {} malformed messages\n",
                r.subscribers, r.malformed
            ));
        }
    }
    out
}

pub fn lifecycle_table(r: &crate::lifecycle::LifecycleResult) -> String {
    let mut t = Table::new(&[
        "workers",
        "tasks",
        "tasks/s",
        "requests/task",
        "p50 ms",
        "p99 ms",
        "errors",
    ]);
    t.row(vec![
        r.workers.to_string(),
        r.tasks.to_string(),
        thousands(r.tasks_per_s),
        r.requests_per_task.to_string(),
        format!("{:.2}", r.latency.p50_ms),
        format!("{:.2}", r.latency.p99_ms),
        r.errors.to_string(),
    ]);
    let mut out = t.render();
    for (kind, n) in &r.error_kinds {
        out.push_str(&format!("  {n} x {kind}\n"));
    }
    out
}

pub fn catchup_table(r: &CatchupResult) -> String {
    let mut t = Table::new(&[
        "messages read",
        "MB read",
        "requests",
        "read s",
        "messages/s",
        "MB/s",
        "count",
        "preload s",
    ]);
    t.row(vec![
        format!("{}/{}", r.messages_read, r.messages_expected),
        format!("{:.1}", r.bytes_read as f64 / 1e6),
        r.requests.to_string(),
        format!("{:.2}", r.read_s),
        thousands(r.messages_per_s),
        format!("{:.0}", r.mb_per_s),
        if r.verified { "ok" } else { "MISMATCH" }.to_string(),
        r.preload_s
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "reused".to_string()),
    ]);
    t.render()
}

pub fn idle_table(r: &crate::idle::IdleResult) -> String {
    let mut t = Table::new(&[
        "subscribers",
        "streams",
        "connected",
        "server RSS MB before/after",
        "KB per subscriber",
    ]);
    let (rss, per) = match (r.rss_before_kb, r.rss_with_subscribers_kb) {
        (Some(a), Some(b)) => (
            format!("{:.1}/{:.1}", a as f64 / 1024.0, b as f64 / 1024.0),
            match r.connected {
                0 => "-".to_string(),
                n => format!("{:.1}", b.saturating_sub(a) as f64 / n as f64),
            },
        ),
        _ => ("-".to_string(), "-".to_string()),
    };
    t.row(vec![
        r.subscribers.to_string(),
        r.streams.to_string(),
        r.connected.to_string(),
        rss,
        per,
    ]);
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(41234.6), "41,235");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(thousands(-1234.0), "-1,234");
    }

    #[test]
    fn tables_right_align_columns() {
        let mut t = Table::new(&["a", "bbb"]);
        t.row(vec!["10".into(), "2".into()]);
        assert_eq!(t.render(), " a  bbb\n10    2\n");
    }
}
