//! What speaking MQTT 5 costs `mqtt_broker`, beside MQTT 3.1.1, in one run.
//!
//! ```sh
//! cargo bench --bench mqtt5
//! ```
//!
//! In about a minute it starts `target/release/mqtt_broker` and measures,
//! for each version, with clients that differ only in the version's bytes
//! (packets written by hand here, so that no client library's cost is in
//! the figures):
//!
//! 1. **Throughput**: one publisher sends 20,000 messages of 64 bytes to one
//!    subscriber through the broker, at QoS 0, 1 and 2 (QoS 1 and 2 with at
//!    most 20 unacknowledged, as `loadgen mqtt` does; loadgen is the
//!    separate load-testing tool that the README's "How far one machine
//!    goes" describes); messages per second from the first PUBLISH to the
//!    last delivery. The versions alternate, 3.1.1 then 5, five times on one
//!    broker; the table gives medians.
//! 2. **Memory per idle connection**: 2,000 clients connect and stay idle on
//!    a fresh broker; the growth of its resident memory (RSS, from `/proc`)
//!    per client. Three fresh brokers per version, alternating; medians.
//!
//! The last column is MQTT 5's figure over 3.1.1's.
//!
//! Why not drive the broker with `loadgen mqtt` itself: it speaks 3.1.1 only
//! (rumqttc's 3.1.1 client), and a second client library for MQTT 5 would
//! put the two libraries' difference into the ratio.

// The scale bench's way of starting servers; this bench starts only one.
#[allow(dead_code)]
#[path = "scale/servers.rs"]
mod servers;
// Cargo without the bench's own variables, for `servers.rs`.
#[path = "../common/cargo.rs"]
mod cargo;
mod pair;

use pair::{row, string, within};

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use servers::{Program, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

const MESSAGES: u32 = 20_000;
const PAYLOAD: usize = 64;
/// Unacknowledged QoS 1 and 2 messages the publisher allows itself.
const WINDOW: u32 = 20;
const ROUNDS: usize = 5;
const IDLE_CLIENTS: usize = 2000;
const MEMORY_ROUNDS: usize = 3;

/// The two versions, by CONNECT's Protocol Level byte.
const V311: u8 = 4;
const V5: u8 = 5;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let files = networking_protocols::raise_open_file_limit().unwrap_or(0);
    let mut rows = Vec::new();

    let broker = Running::start(&Program::Ours("mqtt_broker", &[]), 5000).await?;
    for qos in 0..=2 {
        eprintln!("throughput at QoS {qos}");
        let mut figures = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            for (slot, version) in [V311, V5].into_iter().enumerate() {
                let topic = format!("bench/{qos}/{round}/{version}");
                let rate = within(throughput(broker.addr, version, qos, &topic)).await?;
                figures[slot].push(rate);
            }
        }
        rows.push(row(
            format!("QoS {qos} messages/s (median of {ROUNDS})"),
            &mut figures,
            |rate| format!("{rate:.0}"),
        ));
    }
    broker.stop().await;

    eprintln!("memory per idle connection");
    let mut figures = [Vec::new(), Vec::new()];
    for _ in 0..MEMORY_ROUNDS {
        for (slot, version) in [V311, V5].into_iter().enumerate() {
            figures[slot].push(within(idle_memory(version)).await?);
        }
    }
    rows.push(row(
        format!("RSS per idle connection, {IDLE_CLIENTS} clients (median of {MEMORY_ROUNDS})"),
        &mut figures,
        |bytes| format!("{bytes:.0} B"),
    ));

    println!("| measurement | MQTT 3.1.1 | MQTT 5 | 5 / 3.1.1 |");
    println!("|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    println!(
        "in {:.0} s on {} CPU(s), open-file limit {files}",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    Ok(())
}

/// Measurement 1: messages per second from one publisher to one subscriber.
async fn throughput(addr: SocketAddr, version: u8, qos: u8, topic: &str) -> anyhow::Result<f64> {
    let mut subscriber = Client::connect(addr, version, &format!("{topic}/sub")).await?;
    subscriber.subscribe(topic, qos).await?;
    let publisher = Client::connect(addr, version, &format!("{topic}/pub")).await?;
    let start = Instant::now();
    let receiving = tokio::spawn(async move { subscriber.receive(MESSAGES).await });
    let topic = topic.to_string();
    let sending = tokio::spawn(async move { publisher.send(&topic, qos, MESSAGES).await });
    receiving.await??;
    let elapsed = start.elapsed();
    sending.await??;
    Ok(f64::from(MESSAGES) / elapsed.as_secs_f64())
}

/// Measurement 2: a fresh broker's RSS growth per idle client, in bytes.
async fn idle_memory(version: u8) -> anyhow::Result<f64> {
    let broker = Running::start(&Program::Ours("mqtt_broker", &[]), 5000).await?;
    // One client first, so that what any first client sets up is not counted.
    let _first = Client::connect(broker.addr, version, "first").await?;
    settle().await;
    let before = broker.rss()?;
    let mut clients = Vec::with_capacity(IDLE_CLIENTS);
    for n in 0..IDLE_CLIENTS {
        clients.push(Client::connect(broker.addr, version, &format!("idle-{n}")).await?);
    }
    settle().await;
    let after = broker.rss()?;
    drop(clients);
    broker.stop().await;
    Ok((after as f64 - before as f64) / IDLE_CLIENTS as f64)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// One connection, speaking `version`: its socket and what it has read.
struct Client {
    stream: BufWriter<TcpStream>,
    buffer: Vec<u8>,
    version: u8,
}

impl Client {
    /// Connects, sends CONNECT (clean, keep-alive 600 s) and waits for
    /// CONNACK 0.
    async fn connect(addr: SocketAddr, version: u8, id: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut client = Client {
            stream: BufWriter::new(stream),
            buffer: Vec::new(),
            version,
        };
        let mut body = string(b"MQTT");
        body.extend_from_slice(&[version, 0b10, 0x02, 0x58]);
        client.properties(&mut body);
        body.extend(string(id.as_bytes()));
        client.write(0x10, &body).await?;
        client.stream.flush().await?;
        let (first, connack) = client.packet().await?;
        if first != 0x20 || connack.get(1) != Some(&0) {
            bail!("{id}: no CONNACK 0 but {first:#04x} {connack:?}");
        }
        Ok(client)
    }

    /// An empty property list, for MQTT 5 (spec §2.2.2).
    fn properties(&self, body: &mut Vec<u8>) {
        if self.version == V5 {
            body.push(0);
        }
    }

    async fn subscribe(&mut self, topic: &str, qos: u8) -> anyhow::Result<()> {
        let mut body = 1u16.to_be_bytes().to_vec();
        self.properties(&mut body);
        body.extend(string(topic.as_bytes()));
        body.push(qos);
        self.write(0x82, &body).await?;
        self.stream.flush().await?;
        let (first, suback) = self.packet().await?;
        if first != 0x90 || suback.last() != Some(&qos) {
            bail!("no SUBACK granting QoS {qos}: {first:#04x} {suback:?}");
        }
        Ok(())
    }

    /// Publishes `count` messages at `qos`, keeping at most [`WINDOW`]
    /// unacknowledged, and answers PUBREC with PUBREL; returns once all
    /// are acknowledged.
    async fn send(mut self, topic: &str, qos: u8, count: u32) -> anyhow::Result<()> {
        let payload = [b'x'; PAYLOAD];
        let (mut sent, mut unacknowledged) = (0u32, 0u32);
        loop {
            while sent < count && (qos == 0 || unacknowledged < WINDOW) {
                let mut body = string(topic.as_bytes());
                if qos > 0 {
                    body.extend_from_slice(&packet_id(sent).to_be_bytes());
                    unacknowledged += 1;
                }
                self.properties(&mut body);
                body.extend_from_slice(&payload);
                self.write(0x30 | qos << 1, &body).await?;
                sent += 1;
            }
            self.stream.flush().await?;
            if sent == count && unacknowledged == 0 {
                return Ok(());
            }
            let (first, body) = self.packet().await?;
            match first >> 4 {
                // PUBACK, PUBCOMP: one exchange over.
                4 | 7 => unacknowledged -= 1,
                // PUBREC: release it.
                5 => self.write(0x62, &body[..2]).await?,
                other => bail!("the publisher got packet type {other}"),
            }
        }
    }

    /// Reads `count` messages, acknowledging each as its QoS asks.
    async fn receive(mut self, count: u32) -> anyhow::Result<()> {
        let mut received = 0;
        while received < count {
            let (first, body) = self.packet().await?;
            match first >> 4 {
                3 => {
                    received += 1;
                    let qos = (first >> 1) & 3;
                    if qos > 0 {
                        let at = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
                        let kind = if qos == 1 { 0x40 } else { 0x50 };
                        self.write(kind, &body[at..at + 2]).await?;
                    }
                }
                // PUBREL: complete it.
                6 => self.write(0x70, &body[..2]).await?,
                other => bail!("the subscriber got packet type {other}"),
            }
            // Acknowledgements go out once nothing more is buffered to read.
            if self.buffered().is_none() {
                self.stream.flush().await?;
            }
        }
        self.stream.flush().await?;
        Ok(())
    }

    async fn write(&mut self, first: u8, body: &[u8]) -> anyhow::Result<()> {
        let mut header = vec![first];
        let mut length = body.len();
        loop {
            let byte = (length % 128) as u8;
            length /= 128;
            header.push(if length > 0 { byte | 0x80 } else { byte });
            if length == 0 {
                break;
            }
        }
        self.stream.write_all(&header).await?;
        self.stream.write_all(body).await?;
        Ok(())
    }

    /// The first whole packet in the buffer (see [`pair::whole_packet`]).
    fn buffered(&self) -> Option<(u8, usize, usize)> {
        pair::whole_packet(&self.buffer)
    }

    /// The next packet: its first byte and its body.
    async fn packet(&mut self) -> anyhow::Result<(u8, Vec<u8>)> {
        loop {
            if let Some((first, start, end)) = self.buffered() {
                let body = self.buffer[start..end].to_vec();
                self.buffer.drain(..end);
                return Ok((first, body));
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = self.stream.get_mut().read(&mut chunk).await?;
            if read == 0 {
                bail!("the broker closed the connection");
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// Packet ids 1 to 65,535, in turn.
fn packet_id(n: u32) -> u16 {
    (n % 65_535 + 1) as u16
}
