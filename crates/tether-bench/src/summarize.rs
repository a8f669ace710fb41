//! Folds the JSON reports of several rounds against several servers into one Markdown page:
//! one row per figure, the median per server, and the ratio of the first server to the second.
//!
//! This lives in Rust rather than in the comparison shell script so that the arithmetic
//! (medians, ratios, which figures exist) is tested, and the script needs no JSON tool.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

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

struct Figure {
    name: String,
    /// Whether a larger value is better (throughput) or worse (latency, errors).
    higher_is_better: bool,
    fold: Fold,
    format: fn(f64) -> String,
    extract: Extract,
}

fn figures(all: &[&Report]) -> Vec<Figure> {
    let connections: BTreeSet<usize> = all
        .iter()
        .flat_map(|r| r.appends.iter().map(|a| a.connections))
        .collect();
    let subscribers: BTreeSet<usize> = all
        .iter()
        .flat_map(|r| r.fanout.iter().map(|f| f.subscribers))
        .collect();
    let mut out = Vec::new();
    let mut add = |name: String, higher_is_better, fold, format: fn(f64) -> String, extract| {
        out.push(Figure {
            name,
            higher_is_better,
            fold,
            format,
            extract,
        })
    };
    for &c in &connections {
        let find = move |r: &Report| r.appends.iter().find(|a| a.connections == c).cloned();
        add(
            format!("durable appends/s, {c} connections"),
            true,
            Fold::Median,
            thousands,
            Box::new(move |r| find(r).map(|a| a.appends_per_s)),
        );
        add(
            format!("append latency p50 ms, {c} connections"),
            false,
            Fold::Median,
            ms,
            Box::new(move |r| find(r).map(|a| a.latency.p50_ms)),
        );
        add(
            format!("append latency p99 ms, {c} connections"),
            false,
            Fold::Median,
            ms,
            Box::new(move |r| find(r).map(|a| a.latency.p99_ms)),
        );
        add(
            format!("append non-2xx/errors, {c} connections (all rounds)"),
            false,
            Fold::Sum,
            thousands,
            Box::new(move |r| find(r).map(|a| a.errors as f64)),
        );
    }
    for &s in &subscribers {
        let find = move |r: &Report| r.fanout.iter().find(|f| f.subscribers == s).cloned();
        add(
            format!("SSE delivery p50 ms, {}", subscribers_text(s)),
            false,
            Fold::Median,
            ms,
            Box::new(move |r| find(r).map(|f| f.latency.p50_ms)),
        );
        add(
            format!("SSE delivery p99 ms, {}", subscribers_text(s)),
            false,
            Fold::Median,
            ms,
            Box::new(move |r| find(r).map(|f| f.latency.p99_ms)),
        );
        add(
            format!(
                "SSE missing deliveries, {} (all rounds)",
                subscribers_text(s)
            ),
            false,
            Fold::Sum,
            thousands,
            Box::new(move |r| find(r).map(|f| f.missing as f64)),
        );
    }
    add(
        "catch-up read, messages/s".into(),
        true,
        Fold::Median,
        thousands,
        Box::new(|r| r.catchup.as_ref().map(|c| c.messages_per_s)),
    );
    add(
        "catch-up read, MB/s".into(),
        true,
        Fold::Median,
        |v| format!("{v:.0}"),
        Box::new(|r| r.catchup.as_ref().map(|c| c.mb_per_s)),
    );
    add(
        "catch-up count mismatches (all rounds)".into(),
        false,
        Fold::Sum,
        thousands,
        Box::new(|r| r.catchup.as_ref().map(|c| f64::from(u8::from(!c.verified)))),
    );
    add(
        "task lifecycle, tasks/s (Tether only)".into(),
        true,
        Fold::Median,
        thousands,
        Box::new(|r| r.lifecycle.as_ref().map(|l| l.tasks_per_s)),
    );
    add(
        "task lifecycle p99 ms, submit to finish".into(),
        false,
        Fold::Median,
        |v| format!("{v:.1}"),
        Box::new(|r| r.lifecycle.as_ref().map(|l| l.latency.p99_ms)),
    );
    add(
        "server RSS when idle, MB (first round)".into(),
        false,
        Fold::First,
        |v| format!("{v:.1}"),
        Box::new(|r| r.server_rss_start_kb.map(|kb| kb as f64 / 1024.0)),
    );
    if let Some(&s) = subscribers.last() {
        add(
            format!("server RSS per 1000 SSE subscribers, MB (measured with {s})"),
            false,
            Fold::Median,
            |v| format!("{v:.1}"),
            Box::new(move |r| {
                let f = r.fanout.iter().find(|f| f.subscribers == s)?;
                let grown = f.rss_connected_kb? as f64 - f.rss_before_kb? as f64;
                Some(grown / 1024.0 / s as f64 * 1000.0)
            }),
        );
    }
    add(
        "workloads that failed (all rounds)".into(),
        false,
        Fold::Sum,
        thousands,
        Box::new(|r| Some(r.failures.len() as f64)),
    );
    out
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

/// The Markdown page. `context` lines (what was run, versions) are listed under the title.
pub fn markdown(series: &[Series], context: &[String]) -> String {
    let all: Vec<&Report> = series.iter().flat_map(|s| &s.reports).collect();
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
    if let [a, b, ..] = labels.as_slice() {
        out.push_str(&format!(
            "- {a}/{b} above 1 means {a}'s figure is larger: better in rows marked higher, worse \
             in rows marked lower\n"
        ));
    }
    for line in context {
        out.push_str(&format!("- {line}\n"));
    }
    out.push('\n');

    let ratio_header = match labels.as_slice() {
        [a, b, ..] => format!(" {a}/{b} |"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "| figure | better |{}{}\n",
        labels.iter().map(|l| format!(" {l} |")).collect::<String>(),
        ratio_header
    ));
    let columns = 2 + labels.len() + usize::from(!ratio_header.is_empty());
    out.push_str(&format!("|{}\n", "---|".repeat(columns)));
    for figure in figures(&all) {
        let cells: Vec<Option<(f64, String)>> =
            series.iter().map(|s| fold(&figure, &s.reports)).collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
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
        if !ratio_header.is_empty() {
            out.push_str(&format!(
                " {} |",
                ratio(figure.format, &cells[0], &cells[1])
            ));
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
    use crate::stats::LatencySummary;

    fn report(appends_per_s: f64, p99_ms: f64) -> Report {
        Report {
            appends: vec![AppendsResult {
                connections: 64,
                streams: 100,
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
            }],
            ..Default::default()
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
        let appends = row(&page, "durable appends/s, 64 connections");
        assert_eq!(
            appends,
            [
                "durable appends/s, 64 connections",
                "higher",
                "200 (100–300)",
                "100 (100–100)",
                "2.00"
            ]
        );
        let p99 = row(&page, "append latency p99 ms, 64 connections");
        assert_eq!(p99[4], "3.00");
        // Errors are summed over rounds: 3 rounds of 2 against 2 rounds of 2.
        let errors = row(&page, "append non-2xx/errors, 64 connections (all rounds)");
        assert_eq!(&errors[2..], ["6", "4", "1.50"]);
        assert!(
            !page.contains("SSE delivery"),
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
        let appends = row(&page, "durable appends/s, 64 connections");
        assert_eq!(&appends[2..], ["300", "n/a", "n/a"]);
    }
}
