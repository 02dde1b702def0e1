//! What an MQTT broker's resources cost, and whether its memory comes back
//! when the work is done: `mqtt_broker` beside Mosquitto, in one run.
//!
//! ```sh
//! cargo bench --bench resources
//! ```
//!
//! In about three minutes it starts each broker as a process of its own
//! (`target/release/mqtt_broker`, and Mosquitto where it is installed),
//! talks to it over loopback in MQTT 3.1.1 packets written by hand, reads
//! its resident memory (RSS) from `/proc`, and prints one Markdown table
//! with a column per broker.
//!
//! 1. **Filter churn**: 6 rounds in which a fresh client subscribes to 10,000
//!    new filters, unsubscribes from them all and disconnects; RSS before and
//!    after each round. Memory that grows round after round is kept for
//!    filters nobody holds.
//! 2. **Overlap**: one client subscribes to all 3071 filters that match
//!    `a/b/c/d/e/f/g/h/i/j`, and one message is published to that topic. How
//!    many copies arrive? [MQTT-3.3.5-1] asks for one; §3.3.5 allows one per
//!    matching filter.
//! 3. **Per-message cost vs filters**: 100,000 QoS 0 messages to `hot/t`,
//!    whose subscriber also holds F filters that never match (F = 0, 1000,
//!    10,000): messages per second (the median of 5), and how much the
//!    10,000 filters slow it.
//! 4. **Devices coming and going**: 8000 devices (`DEVICES=<n>` for more),
//!    50 at once, each with a client id and topics of its own: connect,
//!    subscribe to `devices/<id>/cmd`, publish to `devices/<id>/state`,
//!    disconnect. RSS before, after, and after 10 s idle.
//! 5. **Takeovers**: for 20 s, 4 connectors connect with one client id, each
//!    new connection taking over the last ([MQTT-3.1.4-2]): RSS per takeover.
//! 6. **Cost per resource**: RSS growth per idle connection, subscription,
//!    retained message, and message queued for an absent persistent session,
//!    each on a fresh broker.
//!
//! Rows 1 and 3 run both brokers at once and alternate between them, so that
//! whatever else the machine does falls on both; the other rows give each
//! broker a fresh process in turn. Every network wait has a timeout, every
//! loop a bound, and every process is killed when its measurement ends.
//!
//! Read `resources/broker.rs` next (starting the brokers, reading RSS), then
//! `resources/client.rs` (the packets), then the rows: `resources/churn.rs`
//! (1, 4, 5), `resources/routing.rs` (2, 3) and `resources/cost.rs` (6).

#[path = "resources/broker.rs"]
mod broker;
#[path = "resources/churn.rs"]
mod churn;
#[path = "resources/client.rs"]
mod client;
#[path = "resources/cost.rs"]
mod cost;
#[path = "resources/routing.rs"]
mod routing;
// The scale bench's way of starting servers; this bench starts only brokers.
#[allow(dead_code)]
#[path = "scale/servers.rs"]
mod servers;
// Cargo without the bench's own variables, for `servers.rs`.
#[path = "../common/cargo.rs"]
mod cargo;

use std::future::Future;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use broker::{Broker, Server};

/// How long a broker gets to finish what the last clients started before we
/// read its memory.
const SETTLE: Duration = Duration::from_millis(500);

/// One line of the table: what it shows, and each broker's figure there.
#[derive(Debug)]
pub struct Line {
    pub label: String,
    pub cells: Vec<String>,
}

/// A measurement's result, or why there is none (kept as text, so that one
/// failure can fill several cells).
pub type Outcome<T> = Result<T, String>;

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    // 2050 connections at once (row 6) need as many descriptors here as in
    // the broker, which inherits the raised limit.
    let files = networking_protocols::raise_open_file_limit().unwrap_or(0);

    let mut servers = Vec::new();
    for server in [Server::MqttBroker, Server::Mosquitto] {
        match Broker::start(server).await {
            Ok(broker) => {
                broker.stop().await;
                servers.push(server);
            }
            Err(error) if server == Server::Mosquitto => {
                eprintln!("note: Mosquitto is not measured: {error:#}");
            }
            Err(error) => {
                eprintln!("error: cannot start mqtt_broker: {error:#}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut lines = Vec::new();
    eprintln!("1. filter churn");
    lines.push(churn::filters(&servers).await);
    eprintln!("2. overlapping filters");
    lines.push(routing::overlap(&servers).await);
    eprintln!("3. per-message cost vs filter count");
    lines.extend(routing::per_message(&servers).await);
    eprintln!("4. connection churn");
    lines.extend(churn::connections(&servers).await);
    eprintln!("5. takeovers");
    lines.extend(churn::takeovers(&servers).await);
    eprintln!("6. cost per resource");
    lines.extend(cost::per_resource(&servers).await);

    print_table(&servers, &lines);
    println!();
    println!(
        "in {:.0} s on {} CPU(s), open-file limit {files}",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    ExitCode::SUCCESS
}

/// A Markdown table, its columns padded so that it reads in a terminal too.
fn print_table(servers: &[Server], lines: &[Line]) {
    let mut rows = vec![
        std::iter::once("measurement")
            .chain(servers.iter().map(|server| server.name()))
            .map(String::from)
            .collect::<Vec<_>>(),
    ];
    for line in lines {
        rows.push(
            std::iter::once(line.label.clone())
                .chain(line.cells.clone())
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..=servers.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let print = |row: &[String]| {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    print(&rows[0]);
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    println!("|-{}-|", rule.join("-|-"));
    for row in &rows[1..] {
        print(row);
    }
}

/// Runs `measurement` for at most `limit`, keeping its error as text.
pub async fn limited<T>(
    limit: Duration,
    measurement: impl Future<Output = anyhow::Result<T>>,
) -> Outcome<T> {
    match tokio::time::timeout(limit, measurement).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            eprintln!("  failed: {error:#}");
            Err(format!("failed: {error:#}"))
        }
        Err(_) => {
            eprintln!("  took longer than {limit:?}");
            Err(format!("took longer than {limit:?}"))
        }
    }
}

/// The text of one cell: the figure, or why there is none.
pub fn cell<T>(outcome: &Outcome<T>, show: impl Fn(&T) -> String) -> String {
    match outcome {
        Ok(value) => show(value),
        Err(why) => why.clone(),
    }
}

/// Waits [`SETTLE`] before a memory reading.
pub async fn settle() {
    tokio::time::sleep(SETTLE).await;
}

/// Bytes as megabytes with one decimal: `6.4`.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

/// The growth from `before` to `after` per one of `count`: `52 B each`.
pub fn each(before: u64, after: u64, count: u64) -> String {
    let grown = after as f64 - before as f64;
    format!("{:.0} B each", grown / count as f64)
}

/// The growth from `before` to `after` as a percentage of `before`: `+6.6 %`.
pub fn percent(before: u64, after: u64) -> String {
    format!(
        "{:+.1} %",
        (after as f64 - before as f64) / before as f64 * 100.0
    )
}

/// A count as people write it: `10,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
