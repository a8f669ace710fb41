//! Folds the JSON reports of several rounds against several servers into one Markdown page:
//! one row per figure, the median per server, and the ratio of the first server (the one under
//! study, Tether) to each of the others. The same folded figures feed the plot.
//!
//! This lives in Rust rather than in the comparison shell script so that the arithmetic
//! (medians, ratios, which figures exist) is tested, and the script needs no JSON tool.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

use crate::idle::IdleResult;
use crate::plot::{Panel, Spot};
use crate::report::{ms, thousands, Report};
use crate::stats::median;

/// All the rounds run against one server.
pub struct Series {
    pub label: String,
    pub reports: Vec<Report>,
}

impl Series {
    /// Parses `LABEL=DIR` and reads every `*.json` report in `DIR`, in file-name order.
    pub fn load(spec: &str) -> anyhow::Result<Self> {
        let (label, dir) = spec
            .split_once('=')
            .with_context(|| format!("--summarize wants LABEL=DIR, got {spec:?}"))?;
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {dir}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        let reports = paths
            .iter()
            .map(|p| read_report(p))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            label: label.to_string(),
            reports,
        })
    }
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path:?}"))
}

/// How the rounds' values of a figure become one number.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Fold {
    Median,
    /// Counts of bad events: every round's count matters.
    Sum,
    /// Only the first round's value (e.g. memory of a freshly started server).
    First,
}

type Extract = Box<dyn Fn(&Report) -> Option<f64>>;

/// One figure of the comparison: how to read it from a report, fold it over rounds and show it.
pub struct Figure {
    pub name: String,
    /// Whether a larger value is better (throughput) or worse (latency, errors).
    pub higher_is_better: bool,
    fold: Fold,
    format: fn(f64) -> String,
    extract: Extract,
    /// Where the figure goes in the plot, if it is plotted.
    pub spot: Option<Spot>,
}

impl Figure {
    fn new(name: String, higher_is_better: bool, fold: Fold, format: fn(f64) -> String) -> Self {
        Self {
            name,
            higher_is_better,
            fold,
            format,
            extract: Box::new(|_| None),
            spot: None,
        }
    }

    fn of(mut self, extract: impl Fn(&Report) -> Option<f64> + 'static) -> Self {
        self.extract = Box::new(extract);
        self
    }

    fn plot(mut self, panel: Panel, group: String) -> Self {
        self.spot = Some(Spot { panel, group });
        self
    }
}

fn figures(all: &[&Report]) -> Vec<Figure> {
    // Old reports have one streams count per run; the pair keys both old and new ones.
    let appends: BTreeSet<(usize, usize)> = all
        .iter()
        .flat_map(|r| r.appends.iter().map(|a| (a.streams, a.connections)))
        .collect();
    let subscribers: BTreeSet<usize> = all
        .iter()
        .flat_map(|r| r.fanout.iter().map(|f| f.subscribers))
        .collect();
    let idle: BTreeSet<usize> = all
        .iter()
        .filter_map(|r| r.idle.as_ref().map(|i| i.subscribers))
        .collect();
    let mut out = Vec::new();
    for &(s, c) in &appends {
        let find = move |r: &Report| {
            r.appends
                .iter()
                .find(|a| a.streams == s && a.connections == c)
                .cloned()
        };
        let load = format!("{s} streams, {c} connections");
        let group = format!("{s} streams\n{c} conns");
        out.push(
            Figure::new(
                format!("durable appends/s, {load}"),
                true,
                Fold::Median,
                thousands,
            )
            .of(move |r| find(r).map(|a| a.appends_per_s))
            .plot(Panel::Appends, group.clone()),
        );
        out.push(
            Figure::new(
                format!("append latency p50 ms, {load}"),
                false,
                Fold::Median,
                ms,
            )
            .of(move |r| find(r).map(|a| a.latency.p50_ms)),
        );
        out.push(
            Figure::new(
                format!("append latency p99 ms, {load}"),
                false,
                Fold::Median,
                ms,
            )
            .of(move |r| find(r).map(|a| a.latency.p99_ms))
            .plot(Panel::AppendP99, group),
        );
        out.push(
            Figure::new(
                format!("append non-2xx/errors, {load} (all rounds)"),
                false,
                Fold::Sum,
                thousands,
            )
            .of(move |r| find(r).map(|a| a.errors as f64)),
        );
    }
    for &s in &subscribers {
        let find = move |r: &Report| r.fanout.iter().find(|f| f.subscribers == s).cloned();
        let who = subscribers_text(s);
        out.push(
            Figure::new(
                format!("live delivery p50 ms, {who}"),
                false,
                Fold::Median,
                ms,
            )
            .of(move |r| find(r).map(|f| f.latency.p50_ms))
            .plot(Panel::FanoutP50, who.clone()),
        );
        out.push(
            Figure::new(
                format!("live delivery p99 ms, {who}"),
                false,
                Fold::Median,
                ms,
            )
            .of(move |r| find(r).map(|f| f.latency.p99_ms))
            .plot(Panel::FanoutP99, who.clone()),
        );
        out.push(
            Figure::new(
                format!("live missing deliveries, {who} (all rounds)"),
                false,
                Fold::Sum,
                thousands,
            )
            .of(move |r| find(r).map(|f| f.missing as f64)),
        );
    }
    let messages = all
        .iter()
        .find_map(|r| r.catchup.as_ref().map(|c| c.messages_expected))
        .unwrap_or(0);
    out.push(
        Figure::new(
            "catch-up read, messages/s".into(),
            true,
            Fold::Median,
            thousands,
        )
        .of(|r| r.catchup.as_ref().map(|c| c.messages_per_s))
        .plot(
            Panel::Catchup,
            format!("{} messages\nfrom the start", thousands(messages as f64)),
        ),
    );
    out.push(
        Figure::new("catch-up read, MB/s".into(), true, Fold::Median, |v| {
            format!("{v:.0}")
        })
        .of(|r| r.catchup.as_ref().map(|c| c.mb_per_s)),
    );
    out.push(
        Figure::new(
            "catch-up count mismatches (all rounds)".into(),
            false,
            Fold::Sum,
            thousands,
        )
        .of(|r| r.catchup.as_ref().map(|c| f64::from(u8::from(!c.verified)))),
    );
    out.push(
        Figure::new(
            "task lifecycle, tasks/s (Tether only)".into(),
            true,
            Fold::Median,
            thousands,
        )
        .of(|r| r.lifecycle.as_ref().map(|l| l.tasks_per_s)),
    );
    out.push(
        Figure::new(
            "task lifecycle p99 ms, submit to finish".into(),
            false,
            Fold::Median,
            one_decimal,
        )
        .of(|r| r.lifecycle.as_ref().map(|l| l.latency.p99_ms)),
    );
    out.push(
        Figure::new(
            "server RSS when idle, MB (first round)".into(),
            false,
            Fold::First,
            one_decimal,
        )
        .of(|r| r.server_rss_start_kb.map(mib))
        .plot(Panel::Memory, "fresh server\nno clients".into()),
    );
    if let Some(&s) = subscribers.last() {
        out.push(
            Figure::new(
                format!("server RSS per 1000 live subscribers, MB (measured with {s})"),
                false,
                Fold::Median,
                one_decimal,
            )
            .of(move |r| {
                let f = r.fanout.iter().find(|f| f.subscribers == s)?;
                let grown = f.rss_connected_kb? as f64 - f.rss_before_kb? as f64;
                Some(grown / 1024.0 / s as f64 * 1000.0)
            }),
        );
    }
    for &n in &idle {
        let find = move |r: &Report| r.idle.clone().filter(|i| i.subscribers == n);
        // A memory figure of the idle run, in MB, drawn in the memory panel as `label`.
        let memory = |title: String, label: String, kb: fn(&IdleResult) -> Option<u64>| {
            Figure::new(title, false, Fold::Median, one_decimal)
                .of(move |r| find(r).as_ref().and_then(kb).map(mib))
                .plot(Panel::Memory, label)
        };
        let with = thousands(n as f64);
        out.push(memory(
            format!("server RSS before {n} idle subscribers, MB"),
            "before the idle\nsubscribers".into(),
            |i| i.rss_before_kb,
        ));
        out.push(memory(
            format!("server RSS with {n} idle subscribers, MB"),
            format!("with {with} idle\nsubscribers"),
            |i| i.rss_with_subscribers_kb,
        ));
        out.push(memory(
            format!("server anonymous RSS with {n} idle subscribers, MB (no file-backed pages)"),
            format!("with {with} idle\nsubscribers, anon"),
            |i| i.anon_with_subscribers_kb,
        ));
        out.push(
            Figure::new(
                format!("server RSS per 1000 idle subscribers, MB (measured with {n})"),
                false,
                Fold::Median,
                one_decimal,
            )
            .of(move |r| find(r)?.mb_per_1000()),
        );
        out.push(
            Figure::new(
                format!("idle subscribers not waiting when sampled, of {n} (all rounds)"),
                false,
                Fold::Sum,
                thousands,
            )
            .of(move |r| find(r).map(|i| i.subscribers.saturating_sub(i.connected) as f64)),
        );
    }
    out.push(
        Figure::new(
            "workloads that failed (all rounds)".into(),
            false,
            Fold::Sum,
            thousands,
        )
        .of(|r| Some(r.failures.len() as f64)),
    );
    out
}

fn one_decimal(v: f64) -> String {
    format!("{v:.1}")
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn subscribers_text(s: usize) -> String {
    if s == 1 {
        "1 subscriber".to_string()
    } else {
        format!("{s} subscribers")
    }
}

/// One server's cell: the folded value and, for medians of several rounds, the range.
fn fold(figure: &Figure, reports: &[Report]) -> Option<(f64, String)> {
    let values: Vec<f64> = reports.iter().filter_map(|r| (figure.extract)(r)).collect();
    let value = match figure.fold {
        Fold::Median => median(&values)?,
        Fold::Sum if values.is_empty() => return None,
        Fold::Sum => values.iter().sum(),
        Fold::First => *values.first()?,
    };
    let mut cell = (figure.format)(value);
    if figure.fold == Fold::Median && values.len() > 1 {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        cell.push_str(&format!(
            " ({}–{})",
            (figure.format)(lo),
            (figure.format)(hi)
        ));
    }
    if values.len() < reports.len() && figure.fold != Fold::First {
        cell.push_str(&format!(" [{} of {} rounds]", values.len(), reports.len()));
    }
    Some((value, cell))
}

/// One figure with a cell per server (`None` where that server has no value).
pub struct Row {
    pub figure: Figure,
    pub cells: Vec<Option<(f64, String)>>,
}

/// Every figure that at least one server has, folded over each server's rounds.
pub fn rows(series: &[Series]) -> Vec<Row> {
    let all: Vec<&Report> = series.iter().flat_map(|s| &s.reports).collect();
    figures(&all)
        .into_iter()
        .map(|figure| {
            let cells = series.iter().map(|s| fold(&figure, &s.reports)).collect();
            Row { figure, cells }
        })
        .filter(|row| row.cells.iter().any(Option::is_some))
        .collect()
}

/// The Markdown page. `context` lines (what was run, versions) are listed under the title.
pub fn markdown(series: &[Series], context: &[String]) -> String {
    let rounds: Vec<String> = series
        .iter()
        .map(|s| format!("{} {}", s.reports.len(), s.label))
        .collect();
    let mut out = String::new();
    let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    out.push_str(&format!(
        "# Durable Streams benchmark: {}\n\n",
        labels.join(" vs ")
    ));
    out.push_str(&format!(
        "- date: {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    out.push_str(&format!("- machine: {}\n", machine()));
    out.push_str(&format!(
        "- rounds: {} (alternating); each cell is the median, with the range over rounds in \
         brackets\n",
        rounds.join(", ")
    ));
    if let [first, _, ..] = labels.as_slice() {
        out.push_str(&format!(
            "- {first}/peer is {first}'s figure over the peer's, measured in the same run: above 1 \
             means {first}'s is larger, better in rows marked higher, worse in rows marked lower\n"
        ));
    }
    for line in context {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');

    // The first server is the reference: one ratio column for each of the others.
    let (first, peers) = labels.split_first().map_or(("", &[][..]), |(f, p)| (*f, p));
    out.push_str(&format!(
        "| figure | better |{}{}\n",
        labels.iter().map(|l| format!(" {l} |")).collect::<String>(),
        peers
            .iter()
            .map(|p| format!(" {first}/{p} |"))
            .collect::<String>()
    ));
    let columns = 2 + labels.len() + peers.len();
    out.push_str(&format!("|{}\n", "---|".repeat(columns)));
    for Row { figure, cells } in rows(series) {
        out.push_str(&format!(
            "| {} | {} |",
            figure.name,
            if figure.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        ));
        for cell in &cells {
            let text = cell.as_ref().map_or("n/a", |(_, text)| text.as_str());
            out.push_str(&format!(" {text} |"));
        }
        for peer in &cells[1..] {
            out.push_str(&format!(" {} |", ratio(figure.format, &cells[0], peer)));
        }
        out.push('\n');
    }

    let failures: Vec<String> = series
        .iter()
        .flat_map(|s| {
            s.reports.iter().enumerate().flat_map(move |(round, r)| {
                r.failures.iter().map(move |f| {
                    format!(
                        "- {} round {}: {}: {}",
                        s.label,
                        round + 1,
                        f.workload,
                        f.error
                    )
                })
            })
        })
        .collect();
    if !failures.is_empty() {
        out.push_str("\n## Failures\n\n");
        for f in failures {
            out.push_str(&f);
            out.push('\n');
        }
    }
    out
}

/// The line under the plot's title: what each bar is, when and where it was measured.
pub fn plot_subtitle(series: &[Series]) -> String {
    let rounds = series.iter().map(|s| s.reports.len()).max().unwrap_or(0);
    format!(
        "median of {rounds} round{} per server, alternating; {}; {}",
        if rounds == 1 { "" } else { "s" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    )
}

/// `a / b`, unless `b` shows as zero at the figure's precision: a ratio to a rounding error
/// (say 20 MB against 0.01 MB) would look like a measurement and mean nothing.
fn ratio(
    format: fn(f64) -> String,
    a: &Option<(f64, String)>,
    b: &Option<(f64, String)>,
) -> String {
    let shows_zero = |v: f64| {
        format(v)
            .replace(',', "")
            .parse::<f64>()
            .is_ok_and(|shown| shown == 0.0)
    };
    match (a, b) {
        (Some((a, _)), Some((b, _))) if !shows_zero(*b) => format!("{:.2}", a / b),
        (Some((a, _)), Some(_)) if shows_zero(*a) => "=".to_string(),
        _ => "n/a".to_string(),
    }
}

/// `2 CPUs, AMD EPYC, 23.5 GiB memory`, from the OS (Linux `/proc` for model and memory).
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: f64 = line["MemTotal:".len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(format!("{:.1} GiB memory", kb / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown memory".to_string());
    format!("{cpus} CPUs, {model}, {memory}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appends::AppendsResult;
    use crate::idle::IdleResult;
    use crate::stats::LatencySummary;

    fn report(appends_per_s: f64, p99_ms: f64) -> Report {
        Report {
            appends: vec![appends(100, 64, appends_per_s, p99_ms)],
            ..Default::default()
        }
    }

    fn appends(
        streams: usize,
        connections: usize,
        appends_per_s: f64,
        p99_ms: f64,
    ) -> AppendsResult {
        AppendsResult {
            connections,
            streams,
            message_size: 256,
            duration_s: 10.0,
            ok: 1,
            errors: 2,
            error_kinds: Default::default(),
            appends_per_s,
            latency: LatencySummary {
                p99_ms,
                ..Default::default()
            },
        }
    }

    fn idle(before_mb: u64, with_mb: u64, connected: usize) -> Report {
        Report {
            server_rss_start_kb: Some(before_mb * 1024),
            idle: Some(IdleResult {
                subscribers: 10_000,
                streams: 100,
                connected,
                rss_before_kb: Some(before_mb * 1024),
                rss_with_subscribers_kb: Some(with_mb * 1024),
                anon_before_kb: Some(before_mb * 512),
                anon_with_subscribers_kb: Some(with_mb * 512),
            }),
            ..Default::default()
        }
    }

    fn series(label: &str, reports: Vec<Report>) -> Series {
        Series {
            label: label.into(),
            reports,
        }
    }

    fn row<'a>(page: &'a str, figure: &str) -> Vec<&'a str> {
        page.lines()
            .find(|l| l.starts_with(&format!("| {figure} |")))
            .unwrap_or_else(|| panic!("no row {figure:?} in\n{page}"))
            .split('|')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    #[test]
    fn cells_are_medians_over_rounds_and_ratio_is_first_over_second() {
        let a = Series {
            label: "A".into(),
            reports: vec![report(300.0, 4.0), report(100.0, 8.0), report(200.0, 6.0)],
        };
        let b = Series {
            label: "B".into(),
            reports: vec![report(100.0, 2.0), report(100.0, 2.0)],
        };
        let page = markdown(&[a, b], &["context line".into()]);
        assert!(page.contains("| figure | better | A | B | A/B |"), "{page}");
        assert!(page.contains("- context line"));
        let appends = row(&page, "durable appends/s, 100 streams, 64 connections");
        assert_eq!(
            appends,
            [
                "durable appends/s, 100 streams, 64 connections",
                "higher",
                "200 (100–300)",
                "100 (100–100)",
                "2.00"
            ]
        );
        let p99 = row(&page, "append latency p99 ms, 100 streams, 64 connections");
        assert_eq!(p99[4], "3.00");
        // Errors are summed over rounds: 3 rounds of 2 against 2 rounds of 2.
        let errors = row(
            &page,
            "append non-2xx/errors, 100 streams, 64 connections (all rounds)",
        );
        assert_eq!(&errors[2..], ["6", "4", "1.50"]);
        assert!(
            !page.contains("live delivery"),
            "no fan-out rows without fan-out results"
        );
    }

    #[test]
    fn a_ratio_to_a_figure_that_shows_as_zero_is_not_given() {
        let cell = |v: f64| Some((v, String::new()));
        let one_decimal: fn(f64) -> String = |v| format!("{v:.1}");
        assert_eq!(ratio(one_decimal, &cell(20.0), &cell(0.01)), "n/a");
        assert_eq!(ratio(one_decimal, &cell(0.0), &cell(0.01)), "=");
        assert_eq!(ratio(one_decimal, &cell(20.0), &cell(0.1)), "200.00");
        assert_eq!(ratio(thousands, &cell(3000.0), &cell(1500.0)), "2.00");
        assert_eq!(ratio(thousands, &cell(3000.0), &None), "n/a");
    }

    #[test]
    fn a_figure_missing_on_one_side_has_no_ratio() {
        let a = Series {
            label: "A".into(),
            reports: vec![report(300.0, 4.0)],
        };
        let b = Series {
            label: "B".into(),
            reports: vec![Report::default()],
        };
        let page = markdown(&[a, b], &[]);
        let appends = row(&page, "durable appends/s, 100 streams, 64 connections");
        assert_eq!(&appends[2..], ["300", "n/a", "n/a"]);
    }

    #[test]
    fn every_peer_gets_a_ratio_column_against_the_first_server() {
        let page = markdown(
            &[
                series("T", vec![report(300.0, 4.0)]),
                series("E", vec![report(100.0, 2.0)]),
                series("N", vec![report(600.0, 8.0)]),
                series("R", vec![Report::default()]),
            ],
            &[],
        );
        assert!(
            page.contains("| figure | better | T | E | N | R | T/E | T/N | T/R |"),
            "{page}"
        );
        assert!(
            page.contains("|---|---|---|---|---|---|---|---|---|\n"),
            "{page}"
        );
        let appends = row(&page, "durable appends/s, 100 streams, 64 connections");
        assert_eq!(
            &appends[2..],
            ["300", "100", "600", "n/a", "3.00", "0.50", "n/a"]
        );
        let p99 = row(&page, "append latency p99 ms, 100 streams, 64 connections");
        assert_eq!(&p99[6..], ["2.00", "0.50", "n/a"]);
    }

    #[test]
    fn appends_rows_are_keyed_by_streams_and_connections() {
        let both = Report {
            appends: vec![
                appends(100, 16, 1000.0, 1.0),
                appends(100, 256, 2000.0, 2.0),
                appends(10_000, 16, 500.0, 3.0),
                appends(10_000, 256, 800.0, 4.0),
            ],
            ..Default::default()
        };
        let page = markdown(&[series("T", vec![both])], &[]);
        for (name, value) in [
            ("durable appends/s, 100 streams, 16 connections", "1,000"),
            ("durable appends/s, 100 streams, 256 connections", "2,000"),
            ("durable appends/s, 10000 streams, 16 connections", "500"),
            ("durable appends/s, 10000 streams, 256 connections", "800"),
            (
                "append latency p99 ms, 10000 streams, 256 connections",
                "4.00",
            ),
        ] {
            assert_eq!(row(&page, name)[2], value, "{name}");
        }
        assert!(
            page.contains("| figure | better | T |\n"),
            "no ratio column alone: {page}"
        );
    }

    #[test]
    fn idle_memory_rows_give_the_growth_per_thousand_waiting_subscribers() {
        // 10 MB before, 110 MB with 10,000 waiting: 10 MB per 1000. With 5,000 waiting of
        // 10,000: 60 MB grown is 12 MB per 1000 (the median of 10 and 12 is 11).
        let t = series("T", vec![idle(10, 110, 10_000), idle(10, 70, 5_000)]);
        let e = series("E", vec![idle(4, 24, 10_000)]);
        let page = markdown(&[t, e], &[]);
        assert_eq!(
            &row(&page, "server RSS with 10000 idle subscribers, MB")[2..],
            ["90.0 (70.0–110.0)", "24.0", "3.75"]
        );
        assert_eq!(
            &row(
                &page,
                "server anonymous RSS with 10000 idle subscribers, MB (no file-backed pages)"
            )[2..],
            ["45.0 (35.0–55.0)", "12.0", "3.75"]
        );
        assert_eq!(
            &row(
                &page,
                "server RSS per 1000 idle subscribers, MB (measured with 10000)"
            )[2..],
            ["11.0 (10.0–12.0)", "2.0", "5.50"]
        );
        assert_eq!(
            &row(
                &page,
                "idle subscribers not waiting when sampled, of 10000 (all rounds)"
            )[2..],
            ["5,000", "0", "n/a"]
        );
        assert_eq!(
            &row(&page, "server RSS when idle, MB (first round)")[2..],
            ["10.0", "4.0", "2.50"]
        );
    }

    #[test]
    fn a_report_from_an_older_build_is_still_summarised() {
        // No idle, no system, and one streams count per run, as the first reports were.
        let old = r#"{"label":"Tether","url":"http://127.0.0.1:1","stream_prefix":"/v1/stream",
            "started_at":"2026-11-21T16:29:00Z","server_rss_start_kb":12500,
            "appends":[{"connections":64,"streams":100,"message_size":256,"duration_s":10.0,
              "ok":400000,"errors":0,"error_kinds":{},"appends_per_s":40000.0,
              "latency":{"count":400000,"p50_ms":1.5,"p99_ms":5.0,"max_ms":9.0,"mean_ms":1.6}}],
            "failures":[]}"#;
        let report: Report = serde_json::from_str(old).unwrap();
        let page = markdown(&[series("Tether", vec![report])], &[]);
        assert_eq!(
            row(&page, "durable appends/s, 100 streams, 64 connections")[2],
            "40,000"
        );
    }

    #[test]
    fn plotted_figures_say_where_they_go() {
        let t = Report {
            appends: vec![appends(100, 64, 1.0, 1.0)],
            ..idle(10, 20, 10_000)
        };
        let rows = rows(&[series("T", vec![t])]);
        let spot = |name: &str| {
            let row = rows.iter().find(|r| r.figure.name == name).unwrap();
            row.figure.spot.as_ref().map(|s| (s.panel, s.group.clone()))
        };
        assert_eq!(
            spot("durable appends/s, 100 streams, 64 connections"),
            Some((Panel::Appends, "100 streams\n64 conns".into()))
        );
        assert_eq!(
            spot("server RSS with 10000 idle subscribers, MB"),
            Some((Panel::Memory, "with 10,000 idle\nsubscribers".into()))
        );
        assert_eq!(
            spot("append latency p50 ms, 100 streams, 64 connections"),
            None
        );
    }
}
