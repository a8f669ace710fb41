//! The comparison as a picture: one panel per kind of figure (appends/s, append p99, fan-out
//! p50 and p99, catch-up, memory), grouped bars with one colour per server and the value
//! written above each bar, saved as a PNG.
//!
//! The text is drawn with DejaVu Sans embedded in the binary (the `dejavu` crate) through
//! plotters' `ab_glyph` renderer, and the PNG is encoded with the pure-Rust `png` crate: the
//! plot looks the same on every machine and needs no fontconfig, freetype or system fonts.

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;

use crate::summarize::Row;

/// The panels, in the order they are laid out (left to right, then down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Panel {
    Appends,
    AppendP99,
    FanoutP50,
    FanoutP99,
    Catchup,
    Memory,
}

impl Panel {
    const ALL: [Panel; 6] = [
        Panel::Appends,
        Panel::AppendP99,
        Panel::FanoutP50,
        Panel::FanoutP99,
        Panel::Catchup,
        Panel::Memory,
    ];

    fn title(self) -> &'static str {
        match self {
            Panel::Appends => "Durable appends/s (higher is better)",
            Panel::AppendP99 => "Append latency p99, ms (lower is better)",
            Panel::FanoutP50 => "Append-to-subscriber latency p50, ms (lower is better)",
            Panel::FanoutP99 => "Append-to-subscriber latency p99, ms (lower is better)",
            Panel::Catchup => "Catch-up read, messages/s (higher is better)",
            Panel::Memory => "Server resident memory, MB (lower is better)",
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Panel::AppendP99 | Panel::FanoutP50 | Panel::FanoutP99)
    }
}

/// Where a figure is drawn: its panel, and the group of bars (one per server) it forms there.
/// A `\n` in the group's label breaks it into two lines.
#[derive(Debug, Clone)]
pub struct Spot {
    pub panel: Panel,
    pub group: String,
}

/// Tableau's ten colours: distinct, and readable on white.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

const WIDTH: u32 = 1800;
const HEADER: u32 = 120;
const PANEL_HEIGHT: u32 = 480;
const FONT: &str = "sans-serif";

/// Draws the plotted rows for the servers `labels` (in the rows' cell order) to a PNG at `path`.
pub fn draw(rows: &[Row], labels: &[String], subtitle: &str, path: &Path) -> anyhow::Result<()> {
    register_fonts();
    let panels: Vec<(Panel, Vec<&Row>)> = Panel::ALL
        .iter()
        .map(|&panel| {
            let rows: Vec<&Row> = rows
                .iter()
                .filter(|r| r.figure.spot.as_ref().is_some_and(|s| s.panel == panel))
                .collect();
            (panel, rows)
        })
        .filter(|(_, rows)| !rows.is_empty())
        .collect();
    let height = HEADER + PANEL_HEIGHT * (panels.len().div_ceil(2).max(1) as u32);
    let mut pixels = vec![0u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (header, body) = root.split_vertically(HEADER);
        draw_header(&header, labels, subtitle)?;
        let rows_of_panels = panels.len().div_ceil(2).max(1);
        let areas = body.split_evenly((rows_of_panels, 2));
        for ((panel, rows), area) in panels.iter().zip(&areas) {
            draw_panel(&root, area, *panel, rows, labels.len())?;
        }
        root.present()?;
    }
    write_png(path, &pixels, WIDTH, height)
}

/// plotters' `ab_glyph` renderer knows only the fonts registered with it.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded fonts are valid TrueType; a failure here would be a broken crate.
        let regular =
            plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let bold = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
        if regular.is_err() || bold.is_err() {
            eprintln!("warning: the embedded DejaVu Sans font could not be loaded");
        }
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_header(area: &Area<'_>, labels: &[String], subtitle: &str) -> anyhow::Result<()> {
    let title = format!("Durable Streams benchmark: {}", labels.join(" vs "));
    area.draw(&Text::new(
        title,
        (30, 16),
        (FONT, 30).into_font().style(FontStyle::Bold),
    ))?;
    area.draw(&Text::new(
        subtitle.to_string(),
        (30, 54),
        (FONT, 17).into_font().color(&RGBColor(90, 90, 90)),
    ))?;
    let mut x = 30;
    let font = TextStyle::from((FONT, 20).into_font());
    for (i, label) in labels.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        area.draw(&Rectangle::new([(x, 86), (x + 22, 106)], colour.filled()))?;
        area.draw(&Text::new(label.clone(), (x + 30, 86), font.clone()))?;
        let (width, _) = area.estimate_text_size(label, &font)?;
        x += 30 + width as i32 + 36;
    }
    Ok(())
}

/// A latency panel whose values span more than this factor is drawn on a log scale, so that one
/// slow server does not flatten the bars of the others.
const LOG_SCALE_SPREAD: f64 = 30.0;

/// One panel: a group of bars per figure, a bar per server.
fn draw_panel(
    root: &Area<'_>,
    area: &Area<'_>,
    panel: Panel,
    rows: &[&Row],
    servers: usize,
) -> anyhow::Result<()> {
    let values: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.cells.iter().flatten().map(|(v, _)| *v))
        .collect();
    let top = values.iter().copied().fold(0.0f64, f64::max);
    let x = 0.0..rows.len() as f64;
    if let Some(floor) = log_floor(panel, &values) {
        let title = format!("{}, log scale", panel.title());
        let mut chart =
            chart_builder(area, &title).build_cartesian_2d(x, (floor..top * 2.0).log_scale())?;
        configure_axes(&mut chart)?;
        draw_bars(root, &mut chart, rows, servers, floor)
    } else {
        let top = if top > 0.0 { top * 1.18 } else { 1.0 };
        let mut chart = chart_builder(area, panel.title()).build_cartesian_2d(x, 0.0..top)?;
        configure_axes(&mut chart)?;
        draw_bars(root, &mut chart, rows, servers, 0.0)
    }
}

/// A panel's frame: its title, and room for the axes' labels.
fn chart_builder<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, (FONT, 21).into_font().style(FontStyle::Bold))
        .margin(18)
        .x_label_area_size(48)
        .y_label_area_size(78);
    builder
}

/// Where the axis of a log-scaled panel starts, or `None` for a linear one: the power of ten
/// below half the smallest value, so that its bar still shows.
fn log_floor(panel: Panel, values: &[f64]) -> Option<f64> {
    let top = values.iter().copied().fold(0.0f64, f64::max);
    let bottom = values
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !panel.is_latency() || !bottom.is_finite() || top / bottom <= LOG_SCALE_SPREAD {
        return None;
    }
    Some(10f64.powf((bottom / 2.0).log10().floor()))
}

type Chart<'a, Y> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>;

fn configure_axes<'a, Y>(chart: &mut Chart<'a, Y>) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(6)
        .y_label_formatter(&|v| compact(*v))
        .label_style((FONT, 15))
        .y_max_light_lines(1)
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    Ok(())
}

/// The bars of one panel, the value above each (or "n/a"), and each group's label under the
/// axis. `base` is where bars start: 0, or the bottom of a log axis.
fn draw_bars<'a, Y>(
    root: &Area<'_>,
    chart: &mut Chart<'a, Y>,
    rows: &[&Row],
    servers: usize,
    base: f64,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let slot = 0.8 / servers.max(1) as f64;
    // How wide one bar is in pixels decides how large its value may be written.
    let width = chart.plotting_area().dim_in_pixel().0;
    let bar_px = f64::from(width) * 0.8 / (rows.len() * servers.max(1)) as f64;
    let value_font = if bar_px < 34.0 { 12 } else { 15 };
    let above =
        TextStyle::from((FONT, value_font).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (g, row) in rows.iter().enumerate() {
        for (s, cell) in row.cells.iter().enumerate() {
            let x0 = g as f64 + 0.1 + s as f64 * slot;
            let x1 = x0 + slot * 0.9;
            let middle = (x0 + x1) / 2.0;
            let colour = COLOURS[s % COLOURS.len()];
            let (text, at, style) = match cell {
                Some((value, _)) => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x0, base), (x1, value.max(base))],
                        colour.filled(),
                    )))?;
                    (compact(*value), value.max(base), above.clone())
                }
                None => (
                    "n/a".to_string(),
                    base,
                    above.clone().color(&RGBColor(120, 120, 120)),
                ),
            };
            // A few pixels above the bar, whatever the scale.
            let (px, py) = chart.backend_coord(&(middle, at));
            root.draw(&Text::new(text, (px, py - 4), style))?;
        }
        // The group's label, under the axis (drawn on the whole image, in pixels).
        if let Some(spot) = &row.figure.spot {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, base));
            for (line, text) in spot.group.lines().enumerate() {
                root.draw(&Text::new(
                    text.to_string(),
                    (x, y + 8 + 19 * line as i32),
                    TextStyle::from((FONT, 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
                ))?;
            }
        }
    }
    Ok(())
}

/// 3 significant digits with a k or M suffix: 41234 -> "41.2k", 0.734 -> "0.73".
pub fn compact(v: f64) -> String {
    let a = v.abs();
    let (scaled, suffix) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if scaled.abs() >= 100.0 {
        0
    } else if scaled.abs() >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{scaled:.digits$}");
    // "2.00" says no more than "2"; drop the zeros after the point.
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{suffix}")
}

fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .with_context(|| format!("writing {path:?}"))?;
    writer
        .write_image_data(rgb)
        .with_context(|| format!("writing {path:?}"))?;
    writer
        .finish()
        .with_context(|| format!("writing {path:?}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_panels_spread_over_decades_use_a_log_scale() {
        // 1.14 ms against 1263 ms: the axis starts at the power of ten below half of 1.14.
        assert_eq!(
            log_floor(Panel::FanoutP50, &[1.14, 21.9, 1263.0]),
            Some(0.1)
        );
        assert_eq!(log_floor(Panel::AppendP99, &[8.0, 722.0]), Some(1.0));
        // Within a factor of 30, or for throughput and memory, the scale stays linear.
        assert_eq!(log_floor(Panel::AppendP99, &[10.0, 290.0]), None);
        assert_eq!(log_floor(Panel::Catchup, &[290e3, 4e6, 1.0]), None);
        assert_eq!(log_floor(Panel::FanoutP99, &[0.0]), None);
    }

    #[test]
    fn compact_numbers_keep_three_significant_digits() {
        assert_eq!(compact(41234.0), "41.2k");
        assert_eq!(compact(3_608_691.0), "3.61M");
        assert_eq!(compact(999.0), "999");
        assert_eq!(compact(0.734), "0.73");
        assert_eq!(compact(2.0), "2");
        assert_eq!(compact(12.26), "12.3");
        assert_eq!(compact(0.0), "0");
    }

    fn report(scale: f64) -> crate::report::Report {
        let latency = serde_json::json!({"count": 1, "p50_ms": scale, "p99_ms": 3.0 * scale,
            "max_ms": 9.0, "mean_ms": 1.0});
        let appends: Vec<_> = [100, 10_000]
            .iter()
            .flat_map(|s| {
                [16, 256].map(|c| {
                    serde_json::json!({"connections": c, "streams": s, "message_size": 256,
                        "duration_s": 1.0, "ok": 1, "errors": 0, "error_kinds": {},
                        "appends_per_s": 40_000.0 * scale, "latency": latency})
                })
            })
            .collect();
        let fanout = [1, 100, 1000].map(|s| {
            serde_json::json!({
                "subscribers": s, "messages": 1, "interval_ms": 10.0, "connected": s,
                "connect_s": 0.1, "published": 1, "expected_deliveries": s, "delivered": s,
                "missing": 0, "duplicates": 0, "malformed": 0, "subscriber_errors": {},
                "latency": latency, "append_latency": latency, "rss_before_kb": null,
                "rss_connected_kb": null, "notes": []})
        });
        serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:1", "stream_prefix": "", "started_at": "",
            "server_rss_start_kb": 10_000,
            "appends": appends,
            "fanout": fanout,
            "catchup": {"stream": "c", "message_size": 256, "messages_expected": 1_000_000,
                "preloaded": true, "preload_s": 1.0, "messages_read": 1_000_000,
                "bytes_read": 256_000_000, "requests": 1, "read_s": 1.0,
                "messages_per_s": 3e6 * scale, "mb_per_s": 900.0, "verified": true},
            "idle": {"subscribers": 10_000, "streams": 100, "connected": 10_000,
                "rss_before_kb": 20_000, "rss_with_subscribers_kb": 20_000 + (200_000.0 * scale) as u64},
        }))
        .unwrap()
    }

    #[test]
    fn the_plot_is_a_png_with_every_panel_and_a_colour_per_server() {
        let series = [("Tether", 1.0), ("Electric", 1.2), ("Node", 0.3)].map(|(label, scale)| {
            crate::summarize::Series {
                label: label.into(),
                reports: vec![report(scale)],
            }
        });
        // A server with no figures at all (say, one whose every workload failed).
        let empty = crate::summarize::Series {
            label: "Redis".into(),
            reports: vec![crate::report::Report::default()],
        };
        let series: Vec<_> = series.into_iter().chain([empty]).collect();
        let labels: Vec<String> = series.iter().map(|s| s.label.clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        draw(&crate::summarize::rows(&series), &labels, "a test", &path).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut rgb).unwrap();
        // Six panels in two columns under the header.
        assert_eq!(
            (info.width, info.height),
            (WIDTH, HEADER + 3 * PANEL_HEIGHT)
        );
        let count = |c: RGBColor| {
            rgb.chunks(3)
                .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
                .count()
        };
        for (i, label) in labels.iter().enumerate().take(3) {
            assert!(count(COLOURS[i]) > 10_000, "{label}'s bars are drawn");
        }
        // The fourth server has only its legend swatch.
        assert!(count(COLOURS[3]) < 1_000);
        let dark = rgb.chunks(3).filter(|p| p.iter().all(|&v| v < 60)).count();
        assert!(dark > 5_000, "there is text: {dark} dark pixels");
    }
}
