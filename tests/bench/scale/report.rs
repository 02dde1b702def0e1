//! The two tables on stdout, in Markdown, and the same figures as an SVG:
//! memory per idle connection by N, and fan-out deliveries per second.

use std::path::Path;

use plotters::prelude::*;

use crate::plot::{axes, plot_error, thousands};
use crate::{BURST, FAN_OUT, FanOut, Idle, LEVELS};

pub fn print(idle: &[Idle], fan_out: &[FanOut]) {
    println!(
        "| server | N idle | RSS per idle connection | set-ups per second | one more client's set-up |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for row in idle {
        match &row.outcome {
            Ok(f) => println!(
                "| {} | {} | {:.1} KB | {} | {:.1} ms |",
                row.server,
                thousands(row.n as f64),
                f.rss_per_connection / 1000.0,
                thousands(f.setups_per_second),
                f.new_client.as_secs_f64() * 1000.0,
            ),
            Err(why) => println!(
                "| {} | {} | not measured: {} | | |",
                row.server,
                thousands(row.n as f64),
                why.replace('|', "/")
            ),
        }
    }
    println!();
    println!(
        "| fan-out to {} receivers | one message, until the last has it | {BURST} at once: delivered per second | delivered |",
        thousands(FAN_OUT as f64)
    );
    println!("| --- | ---: | ---: | ---: |");
    for row in fan_out {
        match &row.outcome {
            Ok(f) => println!(
                "| {} | {:.1} ms | {} | {} / {} |",
                row.server,
                f.one.as_secs_f64() * 1000.0,
                thousands(f.delivered_per_second),
                thousands(f.delivered as f64),
                thousands(f.expected as f64),
            ),
            Err(why) => println!("| {} | failed: {} | | |", row.server, why.replace('|', "/")),
        }
    }
}

/// A colour per N.
const COLOURS: [RGBColor; 3] = [
    RGBColor(70, 130, 180),
    RGBColor(230, 145, 56),
    RGBColor(90, 160, 90),
];

/// Two panels: KB per idle connection (a bar per server and N), and fan-out
/// deliveries per second (a bar per row).
pub fn draw(idle: &[Idle], fan_out: &[FanOut], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root
        .titled(
            "How far one machine goes: cargo bench --bench scale (127.0.0.1)",
            ("sans-serif", 24),
        )
        .map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(500);

    let mut servers: Vec<&str> = Vec::new();
    for row in idle {
        if !servers.contains(&row.server) {
            servers.push(row.server);
        }
    }
    let bars: Vec<(usize, usize, f64)> = idle
        .iter()
        .filter_map(|row| {
            let x = servers.iter().position(|s| *s == row.server)?;
            let level = LEVELS.iter().position(|n| *n == row.n)?;
            let kb = row.outcome.as_ref().ok()?.rss_per_connection / 1000.0;
            Some((x, level, kb))
        })
        .collect();
    let names: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
    bar_panel(
        &top,
        "RSS per idle connection (KB), by number of connections",
        &names,
        &bars,
        &LEVELS.map(|n| format!("N = {n}")),
    )?;

    let names: Vec<String> = fan_out.iter().map(|row| row.server.clone()).collect();
    let bars: Vec<(usize, usize, f64)> = fan_out
        .iter()
        .enumerate()
        .filter_map(|(x, row)| Some((x, 0, row.outcome.as_ref().ok()?.delivered_per_second)))
        .collect();
    bar_panel(
        &bottom,
        "fan-out to 1000 receivers: messages delivered per second",
        &names,
        &bars,
        &["delivered/s".to_string()],
    )?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One bar chart: `bars` are (x, series, value).
fn bar_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    names: &[String],
    bars: &[(usize, usize, f64)],
    series: &[String],
) -> anyhow::Result<()> {
    let top = bars.iter().map(|bar| bar.2).fold(1.0_f64, f64::max) * 1.3;
    let width = 0.8 / series.len() as f64;
    let mut chart = axes(area, title, names, top)?;
    for (s, label) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let left = move |x: usize| x as f64 - 0.4 + s as f64 * width;
        let mine = bars.iter().filter(|bar| bar.1 == s);
        chart
            .draw_series(mine.clone().map(|&(x, _, value)| {
                Rectangle::new(
                    [(left(x), 0.0), (left(x) + width * 0.9, value)],
                    colour.filled(),
                )
            }))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        chart
            .draw_series(mine.map(|&(x, _, value)| {
                Text::new(
                    short(value),
                    (left(x), value + top * 0.03),
                    ("sans-serif", 11),
                )
            }))
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// `12345.6` as `12k`, `6.21` as `6.2`: short enough to sit above a bar.
fn short(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
