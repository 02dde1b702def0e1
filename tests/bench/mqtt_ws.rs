//! `cargo bench --bench mqtt_ws`: what MQTT over WebSocket costs
//! `mqtt_broker` beside MQTT over TCP, measured in one run on one broker
//! (`--ws-port 0`), the transports alternating.
//!
//! 1. **Throughput**: one publisher sends 20,000 messages of 64 bytes to
//!    one subscriber, at QoS 0 and QoS 1 (at most 20 unacknowledged);
//!    messages per second from the first PUBLISH to the last delivery. Five
//!    rounds per transport; medians.
//! 2. **Round trip**: one client, subscribed to its own topic, publishes a
//!    QoS 0 message and waits for it to come back, 2,000 times; the median
//!    and the 99th percentile, in microseconds.
//! 3. **Memory per idle connection**: 2,000 clients connect and stay idle
//!    on a fresh broker; its RSS growth per client. Three fresh brokers per
//!    transport, alternating; medians.
//!
//! The clients are written here: packets by hand, over a TCP socket or a
//! tokio-tungstenite WebSocket (each batch of packets one binary message,
//! as MQTT.js sends them). Mosquitto is no anchor for this bench: Debian's
//! 2.0.11 logs "Opening websockets listen socket" and then "Unable to start
//! any listening sockets" for `protocol websockets` here.

// The scale bench's way of building the binaries.
#[allow(dead_code)]
#[path = "scale/servers.rs"]
mod servers;
// Cargo without the bench's own variables, for `servers.rs`.
#[path = "../common/cargo.rs"]
mod cargo;
mod pair;

use pair::{row, string, within};

use std::net::SocketAddr;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const MESSAGES: u32 = 20_000;
const PAYLOAD: usize = 64;
const WINDOW: u32 = 20;
const ROUNDS: usize = 5;
const ROUND_TRIPS: usize = 2_000;
const IDLE_CLIENTS: usize = 2000;
const MEMORY_ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    WebSocket,
}

const BOTH: [Transport; 2] = [Transport::Tcp, Transport::WebSocket];

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

    let broker = Broker::start().await?;
    for qos in 0..=1 {
        eprintln!("throughput at QoS {qos}");
        let mut figures = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            for (slot, transport) in BOTH.into_iter().enumerate() {
                let topic = format!("bench/{qos}/{round}/{slot}");
                let rate = within(throughput(&broker, transport, qos, &topic)).await?;
                figures[slot].push(rate);
            }
        }
        rows.push(row(
            format!("QoS {qos} messages/s (median of {ROUNDS})"),
            &mut figures,
            |rate| format!("{rate:.0}"),
        ));
    }
    eprintln!("round trips");
    let mut medians = [Vec::new(), Vec::new()];
    let mut tails = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for (slot, transport) in BOTH.into_iter().enumerate() {
            let topic = format!("echo/{round}/{slot}");
            let (median, p99) = within(round_trip(&broker, transport, &topic)).await?;
            medians[slot].push(median);
            tails[slot].push(p99);
        }
    }
    rows.push(row(
        format!("round trip, median, µs (median of {ROUNDS})"),
        &mut medians,
        |micros| format!("{micros:.0}"),
    ));
    rows.push(row(
        format!("round trip, 99th percentile, µs (median of {ROUNDS})"),
        &mut tails,
        |micros| format!("{micros:.0}"),
    ));
    broker.stop().await;

    eprintln!("memory per idle connection");
    let mut figures = [Vec::new(), Vec::new()];
    for _ in 0..MEMORY_ROUNDS {
        for (slot, transport) in BOTH.into_iter().enumerate() {
            figures[slot].push(within(idle_memory(transport)).await?);
        }
    }
    rows.push(row(
        format!("RSS per idle connection, {IDLE_CLIENTS} clients (median of {MEMORY_ROUNDS})"),
        &mut figures,
        |bytes| format!("{bytes:.0} B"),
    ));

    println!("| measurement | MQTT over TCP | MQTT over WebSocket | WebSocket / TCP |");
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

/// `mqtt_broker --port 0 --ws-port 0`, release build, no `$SYS`, quiet log.
struct Broker {
    child: Child,
    tcp: SocketAddr,
    ws: SocketAddr,
}

impl Broker {
    async fn start() -> anyhow::Result<Broker> {
        let mut child = Command::new(servers::binary("mqtt_broker")?)
            .args(["--port", "0", "--ws-port", "0", "--sys-interval", "0"])
            .args(["--max-connections", "5000"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let line = lines.next_line().await?.context("no listening line")?;
            let addr: SocketAddr = line
                .strip_prefix("listening on ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|addr| addr.parse().ok())
                .with_context(|| format!("not a listening line: {line}"))?;
            addrs.push(addr);
        }
        let (tcp, ws) = (addrs[0], addrs[1]);
        Ok(Broker { child, tcp, ws })
    }

    fn rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the broker has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Measurement 1: messages per second from one publisher to one subscriber.
async fn throughput(
    broker: &Broker,
    transport: Transport,
    qos: u8,
    topic: &str,
) -> anyhow::Result<f64> {
    let mut subscriber = Client::connect(broker, transport, &format!("{topic}/sub")).await?;
    subscriber.subscribe(topic, qos).await?;
    let publisher = Client::connect(broker, transport, &format!("{topic}/pub")).await?;
    let start = Instant::now();
    let receiving = tokio::spawn(async move { subscriber.receive(MESSAGES).await });
    let topic = topic.to_string();
    let sending = tokio::spawn(async move { publisher.send(&topic, qos, MESSAGES).await });
    receiving.await??;
    let elapsed = start.elapsed();
    sending.await??;
    Ok(f64::from(MESSAGES) / elapsed.as_secs_f64())
}

/// Measurement 2: one message out and back, [`ROUND_TRIPS`] times; the
/// median and 99th percentile in microseconds.
async fn round_trip(
    broker: &Broker,
    transport: Transport,
    topic: &str,
) -> anyhow::Result<(f64, f64)> {
    let mut client = Client::connect(broker, transport, topic).await?;
    client.subscribe(topic, 0).await?;
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    let mut body = string(topic.as_bytes());
    body.extend_from_slice(&[b'x'; PAYLOAD]);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        client.write(0x30, &body);
        client.flush().await?;
        let (first, _) = client.packet().await?;
        if first >> 4 != 3 {
            bail!("the echo client got packet type {}", first >> 4);
        }
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

/// Measurement 3: a fresh broker's RSS growth per idle client, in bytes.
async fn idle_memory(transport: Transport) -> anyhow::Result<f64> {
    let broker = Broker::start().await?;
    let _first = Client::connect(&broker, transport, "first").await?;
    settle().await;
    let before = broker.rss()?;
    let mut clients = Vec::with_capacity(IDLE_CLIENTS);
    for n in 0..IDLE_CLIENTS {
        clients.push(Client::connect(&broker, transport, &format!("idle-{n}")).await?);
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

/// The connection under a client.
enum Link {
    Tcp(TcpStream),
    WebSocket(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

/// One MQTT 3.1.1 client: its connection, the packets it has queued, and
/// what it has read.
struct Client {
    link: Link,
    out: Vec<u8>,
    buffer: Vec<u8>,
}

impl Client {
    /// Connects over `transport`, sends CONNECT (clean, keep-alive 600 s)
    /// and waits for CONNACK 0.
    async fn connect(broker: &Broker, transport: Transport, id: &str) -> anyhow::Result<Client> {
        let link = match transport {
            Transport::Tcp => {
                let stream = TcpStream::connect(broker.tcp).await?;
                stream.set_nodelay(true)?;
                Link::Tcp(stream)
            }
            Transport::WebSocket => {
                let mut request = format!("ws://{}/mqtt", broker.ws).into_client_request()?;
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", "mqtt".parse()?);
                let (ws, _) = tokio_tungstenite::connect_async(request).await?;
                Link::WebSocket(Box::new(ws))
            }
        };
        let mut client = Client {
            link,
            out: Vec::new(),
            buffer: Vec::new(),
        };
        let mut body = string(b"MQTT");
        body.extend_from_slice(&[4, 0b10, 0x02, 0x58]);
        body.extend(string(id.as_bytes()));
        client.write(0x10, &body);
        client.flush().await?;
        let (first, connack) = client.packet().await?;
        if first != 0x20 || connack.get(1) != Some(&0) {
            bail!("{id}: no CONNACK 0 but {first:#04x} {connack:?}");
        }
        Ok(client)
    }

    async fn subscribe(&mut self, topic: &str, qos: u8) -> anyhow::Result<()> {
        let mut body = 1u16.to_be_bytes().to_vec();
        body.extend(string(topic.as_bytes()));
        body.push(qos);
        self.write(0x82, &body);
        self.flush().await?;
        let (first, suback) = self.packet().await?;
        if first != 0x90 || suback.last() != Some(&qos) {
            bail!("no SUBACK granting QoS {qos}: {first:#04x} {suback:?}");
        }
        Ok(())
    }

    /// Publishes `count` messages at `qos`, at most [`WINDOW`]
    /// unacknowledged; returns once all are acknowledged.
    async fn send(mut self, topic: &str, qos: u8, count: u32) -> anyhow::Result<()> {
        let payload = [b'x'; PAYLOAD];
        let (mut sent, mut unacknowledged) = (0u32, 0u32);
        loop {
            while sent < count
                && (qos == 0 || unacknowledged < WINDOW)
                && self.out.len() < 16 * 1024
            {
                let mut body = string(topic.as_bytes());
                if qos > 0 {
                    body.extend_from_slice(&((sent % 65_535 + 1) as u16).to_be_bytes());
                    unacknowledged += 1;
                }
                body.extend_from_slice(&payload);
                self.write(0x30 | qos << 1, &body);
                sent += 1;
            }
            self.flush().await?;
            if sent == count && unacknowledged == 0 {
                return Ok(());
            }
            if qos == 0 {
                continue;
            }
            let (first, _) = self.packet().await?;
            match first >> 4 {
                4 => unacknowledged -= 1,
                other => bail!("the publisher got packet type {other}"),
            }
        }
    }

    /// Reads `count` messages, acknowledging each as its QoS asks.
    async fn receive(mut self, count: u32) -> anyhow::Result<()> {
        let mut received = 0;
        while received < count {
            let (first, body) = self.packet().await?;
            if first >> 4 != 3 {
                bail!("the subscriber got packet type {}", first >> 4);
            }
            received += 1;
            if (first >> 1) & 3 == 1 {
                let at = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
                self.write(0x40, &body[at..at + 2]);
            }
            if self.buffered().is_none() {
                self.flush().await?;
            }
        }
        self.flush().await
    }

    /// Queues one packet.
    fn write(&mut self, first: u8, body: &[u8]) {
        self.out.push(first);
        let mut length = body.len();
        loop {
            let byte = (length % 128) as u8;
            length /= 128;
            self.out.push(if length > 0 { byte | 0x80 } else { byte });
            if length == 0 {
                break;
            }
        }
        self.out.extend_from_slice(body);
    }

    /// Sends what is queued: over TCP as bytes, over WebSocket as one
    /// binary message.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        match &mut self.link {
            Link::Tcp(stream) => stream.write_all(&out).await?,
            Link::WebSocket(ws) => ws.send(Message::binary(out)).await?,
        }
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
            match &mut self.link {
                Link::Tcp(stream) => {
                    let mut chunk = [0u8; 16 * 1024];
                    let read = stream.read(&mut chunk).await?;
                    if read == 0 {
                        bail!("the broker closed the connection");
                    }
                    self.buffer.extend_from_slice(&chunk[..read]);
                }
                Link::WebSocket(ws) => match ws.next().await {
                    Some(Ok(Message::Binary(payload))) => self.buffer.extend_from_slice(&payload),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => bail!("not a binary message: {other:?}"),
                },
            }
        }
    }
}
