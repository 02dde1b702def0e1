//! Choosing a protocol: TCP, UDP, WebSocket and MQTT measured side by side,
//! on your machine, with one command.
//!
//! ```sh
//! cargo bench --bench comparison
//! ```
//!
//! In about half a minute it starts every server of this workspace in this
//! process on 127.0.0.1 (a free port each), drives the same workload through
//! each (64-byte messages, then 1 KiB messages), prints a Markdown table and
//! draws the same figures in `target/comparison.svg`. The README's "Choosing
//! a protocol" section shows one run and says what each column teaches.
//!
//! For each protocol and message size it measures:
//!
//! - **set-up**: how long before the first message can go (the median of
//!   50 tries): a TCP connect (SYN, SYN-ACK, ACK); for WebSocket that plus
//!   the HTTP upgrade; for MQTT that plus CONNECT and CONNACK. UDP has none.
//! - **set-up bytes**: what that set-up puts on the wire, above TCP.
//! - **latency p50 and p99**: with one message in flight, the time until its
//!   echo comes back (TCP, UDP, WebSocket) or the subscriber has it (MQTT,
//!   publisher to broker to subscriber). MQTT waits for the publisher's
//!   acknowledgement too before sending the next message.
//! - **throughput**: messages per second with many in flight: the sender
//!   sends 50,000 as fast as it can while the receiver counts them (the
//!   median of three runs).
//! - **lost**: messages that never came back, of all those sent to time
//!   latency and throughput.
//! - **bytes per message**: what crosses the wire for one message and its
//!   echo or delivery, both directions, counted by a relay (`relay.rs`): the
//!   bytes the protocol hands to TCP or UDP, without IP, TCP or UDP headers.
//!
//! Every phase has a timeout. A protocol that fails or times out is shown
//! as failed, with the reason, in its row.
//!
//! To compare brokers, start another one (say `mosquitto -p 1884`) and run
//! `MQTT_BROKER=127.0.0.1:1884 cargo bench --bench comparison`: the MQTT
//! rows then measure that broker instead of our embedded rumqttd.
//!
//! Read `protocols.rs` next (each protocol's client and server), then
//! `relay.rs` (counting bytes) and `chart.rs` (the SVG).

mod chart;
mod protocols;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use rumqttc::QoS;

use protocols::{Mqtt, Protocol, Rx, Servers, Tcp, Tx, Udp, WebSocket};
use relay::Relay;

/// The message sizes, in order.
const SIZES: [usize; 2] = [64, 1024];
/// How many connection set-ups we time (we report the median).
const SETUP_TRIES: usize = 50;
/// How many messages we send before timing any: the first ones pay for
/// warming caches and growing buffers.
const WARM_UP: u64 = 50;
/// Round trips timed one at a time: at most this many...
const LATENCY_MESSAGES: u64 = 2_000;
/// ...and for at most this long.
const LATENCY_TIME: Duration = Duration::from_millis(1_500);
/// Messages sent back to back for the throughput figure.
const THROUGHPUT_MESSAGES: u64 = 50_000;
/// How many times we measure throughput (we report the median).
const THROUGHPUT_RUNS: usize = 3;
/// Messages sent one at a time through the byte-counting relay.
const COUNTED_MESSAGES: u64 = 20;
/// How long one message may take to come back before it counts as lost.
const REPLY_WAIT: Duration = Duration::from_millis(500);
/// In the throughput run, how long the receiver waits for one more message
/// before it counts the rest as lost.
const SILENCE: Duration = Duration::from_millis(500);
/// The most one protocol may take for one message size, all phases.
const ROW_LIMIT: Duration = Duration::from_secs(20);

/// One row of the table: what we measured, or why we could not.
#[derive(Debug, Clone)]
pub struct Row {
    pub protocol: String,
    pub size: usize,
    pub outcome: Result<Measured, String>,
}

#[derive(Debug, Clone)]
pub struct Measured {
    /// Median set-up time; `None` for UDP.
    pub setup: Option<Duration>,
    pub setup_bytes: u64,
    pub p50: Duration,
    pub p99: Duration,
    /// Messages per second with many in flight.
    pub throughput: f64,
    pub sent: u64,
    pub lost: u64,
    /// Bytes on the wire per message, both directions.
    pub wire_bytes: f64,
}

impl Measured {
    /// Bytes per message beyond the payload, which crosses twice (there and
    /// back, or publisher to broker to subscriber).
    pub fn overhead(&self, size: usize) -> f64 {
        self.wire_bytes - 2.0 * size as f64
    }
}

// The clients run on this one thread; the servers have one of their own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let started = Instant::now();
    let servers = match Servers::start().await {
        Ok(servers) => servers,
        Err(error) => {
            eprintln!("error: cannot start the servers: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mqtt = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
    // To compare brokers: `MQTT_BROKER=127.0.0.1:1884` measures the broker
    // listening there (say, `mosquitto -p 1884`) instead of ours.
    let mqtt_broker = match std::env::var("MQTT_BROKER") {
        Ok(addr) => match addr.parse() {
            Ok(addr) => {
                eprintln!("MQTT rows: the broker at {addr}, not the embedded one");
                addr
            }
            Err(error) => {
                eprintln!("error: MQTT_BROKER={addr:?} is not an IP:PORT: {error}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => servers.mqtt,
    };

    let mut rows = Vec::new();
    for size in SIZES {
        rows.push(row(Tcp, servers.tcp, size).await);
        rows.push(row(Udp, servers.udp, size).await);
        rows.push(row(WebSocket, servers.websocket, size).await);
        for qos in mqtt {
            rows.push(row(Mqtt::new(qos), mqtt_broker, size).await);
        }
    }
    servers.stop().await;

    print_table(&rows);
    let took = started.elapsed();
    println!();
    println!(
        "{} protocols x {} message sizes in {:.1} s on {} CPU(s)",
        rows.len() / SIZES.len(),
        SIZES.len(),
        took.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/comparison.svg");
    if let Err(error) = chart::draw(&rows, &path) {
        eprintln!("error: cannot draw {}: {error:#}", path.display());
        return ExitCode::FAILURE;
    }
    println!("chart: {}", path.display());
    // Every row is in the table and the chart; a failed one also makes the
    // exit status say so, for scripts.
    let failed = rows.iter().filter(|row| row.outcome.is_err()).count();
    if failed > 0 {
        eprintln!("error: {failed} of {} measurements failed", rows.len());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Measures one protocol at one message size, within [`ROW_LIMIT`]. The
/// work runs in a task of its own, so even a panic becomes a failed row.
async fn row<P>(protocol: P, server: SocketAddr, size: usize) -> Row
where
    P: Protocol + Send + Sync + 'static,
{
    let name = protocol.name();
    eprintln!("measuring {name}, {size}-byte messages");
    let task = tokio::spawn(async move {
        tokio::time::timeout(ROW_LIMIT, measure(&protocol, server, size)).await
    });
    let outcome = match task.await {
        Ok(Ok(Ok(measured))) => Ok(measured),
        Ok(Ok(Err(error))) => Err(format!("{error:#}")),
        Ok(Err(_)) => Err(format!("took longer than {ROW_LIMIT:?}")),
        Err(error) => Err(format!("panicked: {error}")),
    };
    if let Err(why) = &outcome {
        eprintln!("  {name} failed: {why}");
    }
    Row {
        protocol: name,
        size,
        outcome,
    }
}

async fn measure<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<Measured> {
    let setup = setup_time(protocol, server)
        .await
        .context("timing the set-up")?;
    let (setup_bytes, wire_bytes) = count_bytes(protocol, server, size)
        .await
        .context("counting bytes")?;
    let (mut latencies, mut sent, mut lost) = latency(protocol, server, size)
        .await
        .context("timing round trips")?;
    // Throughput varies most from run to run on a busy machine: we take
    // the median of three runs (and count every message of all three).
    let mut rates = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        let (rate, more_sent, more_lost) = throughput(protocol, server, size)
            .await
            .context("measuring throughput")?;
        rates.push(rate);
        sent += more_sent;
        lost += more_lost;
    }
    rates.sort_by(f64::total_cmp);
    let throughput = rates[rates.len() / 2];
    latencies.sort_unstable();
    Ok(Measured {
        setup,
        setup_bytes,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        throughput,
        sent,
        lost,
        wire_bytes,
    })
}

/// Awaits `future` for at most `limit`, failing with `what` if it takes longer.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {limit:?}"))?
}

/// The median of [`SETUP_TRIES`] set-ups, or `None` for a protocol without.
async fn setup_time<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
) -> anyhow::Result<Option<Duration>> {
    let mut times = Vec::new();
    for _ in 0..SETUP_TRIES {
        match within(Duration::from_secs(5), "set-up", protocol.handshake(server)).await? {
            Some(took) => times.push(took),
            None => return Ok(None),
        }
    }
    times.sort_unstable();
    Ok(Some(percentile(&times, 0.50)))
}

/// Through a byte-counting relay: the bytes of one set-up, and the bytes
/// per message of [`COUNTED_MESSAGES`] sent one at a time.
async fn count_bytes<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(u64, f64)> {
    let settle = Duration::from_secs(2);
    let relay = Relay::start(protocol.transport(), server).await?;
    within(
        Duration::from_secs(5),
        "set-up",
        protocol.handshake(relay.addr),
    )
    .await?;
    let setup_bytes = relay.settled_bytes(settle).await;

    let relay = Relay::start(protocol.transport(), server).await?;
    let (mut tx, mut rx) = within(
        Duration::from_secs(5),
        "connecting",
        protocol.open(relay.addr),
    )
    .await?;
    let before = relay.settled_bytes(settle).await;
    for number in 0..COUNTED_MESSAGES {
        tx.send(payload(number, size)).await?;
        within(REPLY_WAIT, "a message", receive(&mut rx, number)).await?;
        within(REPLY_WAIT, "acknowledgements", tx.settle()).await?;
    }
    let after = relay.settled_bytes(settle).await;
    Ok((
        setup_bytes,
        (after - before) as f64 / COUNTED_MESSAGES as f64,
    ))
}

/// Round trips with one message in flight: returns the times (after the
/// warm-up), how many were sent and how many never came back.
async fn latency<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    let (mut tx, mut rx) =
        within(Duration::from_secs(5), "connecting", protocol.open(server)).await?;
    let mut times = Vec::new();
    let mut lost = 0;
    let mut sent = 0;
    let deadline = Instant::now() + LATENCY_TIME;
    for number in 0..WARM_UP + LATENCY_MESSAGES {
        if number >= WARM_UP + 100 && Instant::now() > deadline {
            break;
        }
        let start = Instant::now();
        tx.send(payload(number, size)).await?;
        sent += 1;
        match tokio::time::timeout(REPLY_WAIT, receive(&mut rx, number)).await {
            Ok(received) => {
                received?;
                if number >= WARM_UP {
                    times.push(start.elapsed());
                }
            }
            // Only UDP may lose a message; the others would say why.
            Err(_) => lost += 1,
        }
        within(REPLY_WAIT, "acknowledgements", tx.settle()).await?;
    }
    Ok((times, sent, lost))
}

/// [`THROUGHPUT_MESSAGES`] sent as fast as the sender can while the
/// receiver counts them: returns messages per second, how many were sent
/// and how many never arrived.
async fn throughput<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(f64, u64, u64)> {
    let (mut tx, mut rx) =
        within(Duration::from_secs(5), "connecting", protocol.open(server)).await?;
    let total = THROUGHPUT_MESSAGES;
    let messages: Vec<Bytes> = (0..total).map(|number| payload(number, size)).collect();
    let start = Instant::now();
    let send = async {
        for message in messages {
            tx.send(message).await?;
        }
        within(Duration::from_secs(10), "acknowledgements", tx.settle()).await
    };
    let count = async {
        let mut seen = vec![false; total as usize];
        let mut received = 0;
        let mut last = start;
        while received < total {
            let Ok(message) = tokio::time::timeout(SILENCE, rx.recv()).await else {
                break; // Nothing more is coming: the rest is lost.
            };
            if let Some(number) = number_of(&message?)
                && let Some(seen) = seen.get_mut(number as usize)
                && !*seen
            {
                *seen = true;
                received += 1;
                last = Instant::now();
            }
        }
        Ok::<_, anyhow::Error>((received, last))
    };
    let ((), (received, last)) = tokio::try_join!(send, count)?;
    let elapsed = last.duration_since(start).as_secs_f64();
    let rate = if elapsed > 0.0 {
        received as f64 / elapsed
    } else {
        0.0
    };
    Ok((rate, total, total - received))
}

/// Waits for message `number`, skipping late copies of earlier ones.
async fn receive(rx: &mut impl Rx, number: u64) -> anyhow::Result<()> {
    loop {
        if number_of(&rx.recv().await?) == Some(number) {
            return Ok(());
        }
    }
}

/// A message of `size` bytes: its number in 16 hexadecimal digits, then
/// `x`s. Plain ASCII and no newline, so every protocol carries it as it is.
fn payload(number: u64, size: usize) -> Bytes {
    let mut message = format!("{number:016x}").into_bytes();
    message.resize(size.max(16), b'x');
    Bytes::from(message)
}

/// The number a message carries, if it is one of ours.
fn number_of(message: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(message.get(..16)?).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

/// The value below which `p` (0 to 1) of the sorted `values` lie (nearest
/// rank); zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.max(1) - 1)
        .copied()
        .unwrap_or(Duration::ZERO)
}

/// The table, in Markdown, so it can go straight into a README.
fn print_table(rows: &[Row]) {
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

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
