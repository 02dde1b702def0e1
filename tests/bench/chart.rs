//! The table as a picture: four bar charts in one SVG file, one bar per
//! protocol and message size. A failed measurement has no bar and says
//! "failed" instead.
//!
//! We use [plotters](https://docs.rs/plotters) with only its SVG backend:
//! an SVG is text, needs no font or image library, and opens in a browser.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{axes, plot_error};
use crate::{Measured, Row, SIZES};

/// One panel: a title and the figure it shows from a measurement.
struct Panel {
    title: &'static str,
    /// The figure, from a measurement and its message size.
    value: fn(&Measured, usize) -> Option<f64>,
}

const PANELS: [Panel; 4] = [
    Panel {
        title: "connection set-up (µs, median)",
        value: |m, _| m.setup.map(|setup| setup.as_secs_f64() * 1e6),
    },
    Panel {
        title: "latency, one message in flight (µs, p50; line to p99)",
        value: |m, _| Some(m.p50.as_secs_f64() * 1e6),
    },
    Panel {
        title: "throughput, many in flight (messages/s)",
        value: |m, _| Some(m.throughput),
    },
    Panel {
        title: "bytes per message beyond the payload (both directions)",
        value: |m, size| Some(m.overhead(size)),
    },
];

/// A colour per message size.
const COLOURS: [RGBColor; 2] = [RGBColor(70, 130, 180), RGBColor(230, 145, 56)];

/// Draws the four panels for `rows` into an SVG file at `path`.
pub fn draw(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Protocols in the order they were measured, each once.
    let mut protocols: Vec<&str> = Vec::new();
    for row in rows {
        if !protocols.contains(&row.protocol.as_str()) {
            protocols.push(&row.protocol);
        }
    }

    let root = SVGBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(
            "Choosing a protocol: cargo bench --bench comparison (127.0.0.1)",
            ("sans-serif", 24),
        )
        .map_err(plot_error)?;
    for (area, panel) in root.split_evenly((2, 2)).iter().zip(&PANELS) {
        draw_panel(area, panel, rows, &protocols)?;
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    panel: &Panel,
    rows: &[Row],
    protocols: &[&str],
) -> anyhow::Result<()> {
    // The value of each bar: (protocol index, size index, value or None).
    let bars: Vec<(usize, usize, Option<f64>, Option<f64>)> = rows
        .iter()
        .filter_map(|row| {
            let x = protocols.iter().position(|p| *p == row.protocol)?;
            let s = SIZES.iter().position(|size| *size == row.size)?;
            let (value, p99) = match &row.outcome {
                Ok(m) => ((panel.value)(m, row.size), Some(m.p99.as_secs_f64() * 1e6)),
                Err(_) => (None, None),
            };
            Some((x, s, value, p99))
        })
        .collect();
    let latency = panel.title.starts_with("latency");
    // Room above the tallest bar for the legend and the numbers. A p99
    // line may go higher than that: it stops at the top, with its value.
    let top = bars
        .iter()
        .filter_map(|bar| bar.2)
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * if latency { 3.0 } else { 1.35 };

    let names: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
    let mut chart = axes(area, panel.title, &names, top)?;

    for (s, size) in SIZES.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let left = |x: usize| x as f64 - 0.4 + s as f64 * 0.4;
        let mine = bars.iter().filter(|bar| bar.1 == s);
        let series = chart
            .draw_series(mine.clone().filter_map(|&(x, _, value, _)| {
                let value = value?;
                Some(Rectangle::new(
                    [(left(x), 0.0), (left(x) + 0.36, value)],
                    colour.filled(),
                ))
            }))
            .map_err(plot_error)?;
        let label = if *size >= 1024 {
            format!("{} KiB", size / 1024)
        } else {
            format!("{size} B")
        };
        series
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        // The number above each bar, so small bars can be read too.
        chart
            .draw_series(mine.clone().filter_map(|&(x, _, value, _)| {
                let value = value?;
                Some(Text::new(
                    short(value),
                    (left(x), value + top * 0.05),
                    ("sans-serif", 11),
                ))
            }))
            .map_err(plot_error)?;
        if latency {
            chart
                .draw_series(mine.clone().filter_map(|&(x, _, value, p99)| {
                    Some(PathElement::new(
                        [(left(x) + 0.18, value?), (left(x) + 0.18, p99?.min(top))],
                        BLACK.stroke_width(2),
                    ))
                }))
                .map_err(plot_error)?;
            chart
                .draw_series(mine.clone().filter_map(|&(x, _, _, p99)| {
                    let p99 = p99.filter(|p99| *p99 > top)?;
                    Some(Text::new(
                        format!("p99 {}", short(p99)),
                        (left(x) - 0.1, top * (0.93 - 0.07 * s as f64)),
                        ("sans-serif", 11),
                    ))
                }))
                .map_err(plot_error)?;
        }
        // A protocol that failed, or has no such figure, says so.
        chart
            .draw_series(mine.filter(|bar| bar.2.is_none()).map(|&(x, _, _, _)| {
                let what = if panel.title.starts_with("connection") && bars_ok(rows, x, protocols) {
                    "none"
                } else {
                    "failed"
                };
                Text::new(what, (left(x), top * 0.02), ("sans-serif", 12))
            }))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(if latency {
            // The p99 lines reach the top right.
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::UpperRight
        })
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// `12345.6` as `12k`, `61.2` as `61`: short enough to sit above a bar.
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else {
        format!("{value:.0}")
    }
}

/// Whether every row of protocol number `x` was measured (so a missing
/// set-up bar means "none", as for UDP, not "failed").
fn bars_ok(rows: &[Row], x: usize, protocols: &[&str]) -> bool {
    rows.iter()
        .filter(|row| protocols.get(x) == Some(&row.protocol.as_str()))
        .all(|row| row.outcome.is_ok())
}
