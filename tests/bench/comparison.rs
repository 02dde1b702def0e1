//! Choosing a protocol: TCP, UDP, WebSocket and MQTT measured side by side,
//! on your machine, with one command.
//!
//! ```sh
//! cargo bench --bench comparison
//! ```
//!
//! In under a minute it starts every server of this workspace in this
//! process on 127.0.0.1 (a free port each; the servers on a thread of their
//! own, the clients on this one), and the TCP and WebSocket servers and the
//! broker once more with TLS (`+TLS` rows, trusting a local CA made for the
//! run), drives the same workload through each (64-byte messages, then 1 KiB
//! messages), prints a Markdown table and
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
//! This file runs the rows. Read `measure.rs` next (the phases), then
//! `protocols.rs` (the servers, and the interface each protocol's client
//! implements in `protocols/`), `relay.rs` (counting bytes), `table.rs` and
//! `chart.rs` (the SVG).

mod chart;
mod measure;
mod plot;
mod protocols;
mod relay;
mod table;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use protocols::{Mqtt, Protocol, Servers, Tcp, Udp, WebSocket};

/// The message sizes, in order.
const SIZES: [usize; 2] = [64, 1024];
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

    let client_tls = match servers.tls_client.config() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: cannot trust the local CA: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut rows = Vec::new();
    for size in SIZES {
        rows.push(row(Tcp::default(), servers.tcp, size).await);
        rows.push(row(Udp, servers.udp, size).await);
        rows.push(row(WebSocket::default(), servers.websocket, size).await);
        for qos in mqtt {
            rows.push(row(Mqtt::new(qos), mqtt_broker, size).await);
        }
        // The same over TLS, beside the plaintext rows.
        let tcp_tls = Tcp {
            tls: Some(client_tls.clone()),
        };
        rows.push(row(tcp_tls, servers.tcp_tls, size).await);
        let websocket_tls = WebSocket {
            tls: Some(servers.tls_client.clone()),
        };
        rows.push(row(websocket_tls, servers.websocket_tls, size).await);
        let mut mqtt_tls = Mqtt::new(QoS::AtLeastOnce);
        mqtt_tls.tls = Some(client_tls.clone());
        rows.push(row(mqtt_tls, servers.mqtt_tls, size).await);
    }
    servers.stop().await;

    table::print(&rows);
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
        tokio::time::timeout(ROW_LIMIT, measure::measure(&protocol, server, size)).await
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
