//! The table on stdout.

use std::time::Duration;

use crate::Row;
use crate::plot::thousands;

/// The table, in Markdown, so it can go straight into a README.
pub fn print(rows: &[Row]) {
    println!(
        "| protocol | message | set-up | set-up bytes | latency p50 | latency p99 | \
         throughput | lost | bytes per message (over payload) |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let size = if row.size >= 1024 {
            format!("{} KiB", row.size / 1024)
        } else {
            format!("{} B", row.size)
        };
        match &row.outcome {
            Ok(m) => println!(
                "| {} | {size} | {} | {} | {} | {} | {} msg/s | {} / {} | {:.0} (+{:.0}) |",
                row.protocol,
                m.setup.map_or("none".to_string(), micros),
                m.setup_bytes,
                micros(m.p50),
                micros(m.p99),
                thousands(m.throughput),
                m.lost,
                m.sent,
                m.wire_bytes,
                m.overhead(row.size),
            ),
            Err(why) => println!(
                "| {} | {size} | failed: {} | | | | | | |",
                row.protocol,
                why.replace('|', "/")
            ),
        }
    }
}

fn micros(duration: Duration) -> String {
    format!("{} µs", duration.as_micros())
}
