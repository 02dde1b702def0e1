//! The bench's clients: thousands of connections in this one process, each
//! kept to the bare protocol (a socket, tokio-tungstenite, raw MQTT packets)
//! so that the servers, not the clients, are what we measure.
//!
//! A connection first completes its protocol's hello, which proves that the
//! server has taken it in: a TCP echo server answers a line; a WebSocket
//! server answers the upgrade with 101; a broker answers CONNECT with
//! CONNACK (and SUBSCRIBE with SUBACK). For the fan-out, each receiver then
//! reads in a task of its own and counts the bench's messages in a shared
//! [`Tally`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, ensure};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Which protocol a server speaks, and so how the bench talks to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TCP line server: echo, or chat.
    Tcp,
    /// A WebSocket server: echo, or chat.
    WebSocket,
    /// An MQTT 3.1.1 broker.
    Mqtt,
}

/// The topic of the MQTT fan-out.
const TOPIC: &str = "bench/scale";

/// Every bench message carries this, then a phase letter (see [`Phase`]).
pub const MARK: &str = "scale#";

/// One connection that has finished its hello, held open (and idle) until
/// dropped.
#[derive(Debug)]
pub enum Conn {
    Tcp(TcpStream),
    WebSocket(Box<WebSocketStream<TcpStream>>),
}

/// Connects to `addr` and completes the hello of `kind`. `echo` says whether
/// a TCP server echoes (so a line proves it took the connection in).
pub async fn connect(kind: Kind, addr: SocketAddr, id: usize, echo: bool) -> anyhow::Result<Conn> {
    let mut tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    match kind {
        Kind::Tcp => {
            if echo {
                tcp.write_all(b"hello\n").await?;
                let mut answer = [0u8; 6];
                tcp.read_exact(&mut answer).await.context("the echo")?;
                ensure!(&answer == b"hello\n", "unexpected echo {answer:?}");
            }
            Ok(Conn::Tcp(tcp))
        }
        Kind::WebSocket => {
            // Our own side small too: tungstenite's default read buffer
            // (128 KiB per connection) would make the bench the memory hog.
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let url = format!("ws://{addr}/");
            let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
                .await
                .context("the upgrade")?;
            Ok(Conn::WebSocket(Box::new(ws)))
        }
        Kind::Mqtt => {
            tcp.write_all(&connect_packet(&format!("scale-{id}")))
                .await?;
            let mut connack = [0u8; 4];
            tcp.read_exact(&mut connack).await.context("CONNACK")?;
            ensure!(connack == [0x20, 2, 0, 0], "refused: CONNACK {connack:?}");
            Ok(Conn::Tcp(tcp))
        }
    }
}

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 600 s, the client id.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b0000_0010, 0x02, 0x58];
    push_string(&mut body, client_id);
    packet(0x10, &body)
}

/// A packet: its first byte, the remaining length, the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let digit = (length % 128) as u8;
        length /= 128;
        out.push(if length > 0 { digit | 0x80 } else { digit });
        if length == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn push_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// The phases of a fan-out, each with its own count: a warm-up message (sent
/// until every receiver has one, which proves all of them are in the chat or
/// subscribed), one timed message, then a sustained stream.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Warm = 0,
    One = 1,
    Many = 2,
}

impl Phase {
    fn letter(self) -> char {
        ['w', '1', 'm'][self as usize]
    }
}

/// What every receiver adds to: deliveries per phase. Whoever makes a
/// phase's count reach its target wakes the bench.
#[derive(Debug, Default)]
pub struct Tally {
    counts: [AtomicU64; 3],
    targets: [AtomicU64; 3],
    reached: [Notify; 3],
}

impl Tally {
    pub fn count(&self, phase: Phase) -> u64 {
        self.counts[phase as usize].load(Ordering::SeqCst)
    }

    /// Wakes [`Tally::reached`] once `phase` has counted `target`.
    pub fn expect(&self, phase: Phase, target: u64) {
        self.targets[phase as usize].store(target, Ordering::SeqCst);
        if self.count(phase) >= target {
            self.reached[phase as usize].notify_one();
        }
    }

    /// Resolves when the target set by [`Tally::expect`] is reached.
    pub async fn reached(&self, phase: Phase) {
        self.reached[phase as usize].notified().await;
    }

    fn add(&self, phase: Phase) {
        let i = phase as usize;
        let count = self.counts[i].fetch_add(1, Ordering::SeqCst) + 1;
        if count == self.targets[i].load(Ordering::SeqCst) {
            self.reached[i].notify_one();
        }
    }
}

/// The phase of a received message, if it is one of the bench's.
fn phase_of(message: &[u8]) -> Option<Phase> {
    let at = message
        .windows(MARK.len())
        .position(|w| w == MARK.as_bytes())?;
    match message.get(at + MARK.len())? {
        b'w' => Some(Phase::Warm),
        b'1' => Some(Phase::One),
        b'm' => Some(Phase::Many),
        _ => None,
    }
}

/// A receiver for the fan-out: for MQTT it subscribes (QoS 1, so a QoS 1
/// publish arrives as QoS 1 and is acknowledged). Then it reads in a task of
/// its own until the connection ends, counting into `tally`; a warm-up
/// message counts once per receiver.
pub async fn receiver(
    kind: Kind,
    addr: SocketAddr,
    id: usize,
    tally: Arc<Tally>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let conn = connect(kind, addr, id, false).await?;
    let mut warm = false;
    let mut seen = move |message: &[u8]| match phase_of(message) {
        Some(Phase::Warm) if warm => {}
        Some(Phase::Warm) => {
            warm = true;
            tally.add(Phase::Warm);
        }
        Some(phase) => tally.add(phase),
        None => {}
    };
    Ok(match (kind, conn) {
        (Kind::Mqtt, Conn::Tcp(mut tcp)) => {
            let mut body = vec![0, 1];
            push_string(&mut body, TOPIC);
            body.push(1);
            tcp.write_all(&packet(0x82, &body)).await?;
            let mut suback = [0u8; 5];
            tcp.read_exact(&mut suback).await.context("SUBACK")?;
            ensure!(suback == [0x90, 3, 0, 1, 1], "SUBACK {suback:?}");
            tokio::spawn(async move {
                let _ = read_publishes(tcp, &mut seen).await;
            })
        }
        (_, Conn::Tcp(tcp)) => tokio::spawn(async move {
            let mut lines = BufReader::new(tcp);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line).await, Ok(1..)) {
                seen(&line);
                line.clear();
            }
        }),
        (_, Conn::WebSocket(mut ws)) => tokio::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    seen(text.as_bytes());
                }
            }
        }),
    })
}

/// Reads MQTT packets, hands each PUBLISH payload to `seen`, and answers a
/// QoS 1 PUBLISH with PUBACK (one write for all the packets of a read).
async fn read_publishes(mut tcp: TcpStream, seen: &mut impl FnMut(&[u8])) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut acks = Vec::new();
        let mut at = 0;
        while let Some((first, body, next)) = split_packet(&buffer[at..]) {
            if first >> 4 == 3 {
                let qos = (first >> 1) & 3;
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut payload = &body[2 + topic_len..];
                if qos > 0 {
                    acks.extend_from_slice(&[0x40, 2, payload[0], payload[1]]);
                    payload = &payload[2..];
                }
                seen(payload);
            }
            at += next;
        }
        buffer.drain(..at);
        if !acks.is_empty() {
            tcp.write_all(&acks).await?;
        }
    }
}

/// The first packet in `bytes`, if it is all there: (first byte, body, its
/// whole length).
fn split_packet(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let (mut length, mut shift, mut i) = (0usize, 0, 1);
    loop {
        let digit = *bytes.get(i)?;
        length |= usize::from(digit & 0x7f) << shift;
        i += 1;
        if digit & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let body = bytes.get(i..i + length)?;
    Some((bytes[0], body, i + length))
}

/// The one connection that speaks to all the receivers: a chat client, or
/// an MQTT publisher.
pub struct Sender {
    kind: Kind,
    out: Out,
    next_id: u16,
}

/// The sending half of the sender's connection. What comes back (chat
/// announcements, the broker's PUBACKs) is read and dropped by a task of its
/// own: unread, it would fill the TCP window, and the server would stop to
/// wait for us.
enum Out {
    Tcp(OwnedWriteHalf),
    WebSocket(SplitSink<WebSocketStream<TcpStream>, Message>),
}

impl Sender {
    pub async fn connect(kind: Kind, addr: SocketAddr) -> anyhow::Result<Sender> {
        let out = match connect(kind, addr, usize::MAX, false).await? {
            Conn::Tcp(tcp) => {
                let (mut read, write) = tcp.into_split();
                tokio::spawn(async move {
                    let mut sink = vec![0u8; 16 * 1024];
                    while matches!(read.read(&mut sink).await, Ok(1..)) {}
                });
                Out::Tcp(write)
            }
            Conn::WebSocket(ws) => {
                let (write, mut read) = (*ws).split();
                tokio::spawn(async move { while let Some(Ok(_)) = read.next().await {} });
                Out::WebSocket(write)
            }
        };
        Ok(Sender {
            kind,
            out,
            next_id: 0,
        })
    }

    /// Sends `count` messages of `phase` at once (MQTT: at `qos`).
    pub async fn send(&mut self, phase: Phase, count: usize, qos: u8) -> anyhow::Result<()> {
        let text = |i: usize| format!("{MARK}{}{i:06}", phase.letter());
        match &mut self.out {
            Out::Tcp(tcp) if self.kind == Kind::Tcp => {
                let lines: String = (0..count).map(|i| text(i) + "\n").collect();
                tcp.write_all(lines.as_bytes()).await?;
            }
            Out::Tcp(tcp) => {
                let mut packets = Vec::new();
                for i in 0..count {
                    let mut body = Vec::new();
                    push_string(&mut body, TOPIC);
                    if qos > 0 {
                        // Packet ids run 1..=65535; 0 is not allowed.
                        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
                        body.extend_from_slice(&self.next_id.to_be_bytes());
                    }
                    body.extend_from_slice(text(i).as_bytes());
                    packets.extend(packet(0x30 | (qos << 1), &body));
                }
                tcp.write_all(&packets).await?;
            }
            Out::WebSocket(ws) => {
                for i in 0..count {
                    ws.feed(Message::text(text(i))).await?;
                }
                ws.flush().await?;
            }
        }
        Ok(())
    }
}
