//! The router behind `mqtt_broker` under load and under abuse: what a broker
//! must survive besides well-behaved clients. Each test sends raw MQTT 3.1.1
//! packets to the real binary (as `tests/mqtt_conformance.rs` does), is
//! bounded in count and time, and counts exactly what arrives:
//!
//! - subscribers that leave (DISCONNECT, a close, a reset) while a publisher
//!   floods their subscription, round after round;
//! - a soak of random clients (takeovers, wildcards, floods at every QoS,
//!   readers that are slow or never read, abrupt ends) beside a bystander
//!   whose heartbeats must all arrive, in order;
//! - four fast QoS 0 publishers into one reading subscriber;
//! - 100,000 QoS 1 messages into a persistent session;
//! - the QoS a message is delivered at [MQTT-3.8.4-6], beside Mosquitto.
//!
//! The first two end each round of abuse with a fresh subscriber and
//! publisher exchanging a message ([`exchange`]): a broker whose process is
//! up but whose router is gone fails there.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::{Mosquitto, packet, string};
use common::{Server, WAIT, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::sync::CancellationToken;

/// A CONNECT with keep-alive 60 s; `clean` is the clean-session flag.
fn connect(client_id: &str, clean: bool) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.push(4);
    body.push(if clean { 0b10 } else { 0 });
    body.extend_from_slice(&60u16.to_be_bytes());
    body.extend(string(client_id.as_bytes()));
    packet(0x10, &body)
}

/// A PUBLISH at `qos`, with packet id `id` unless the QoS is 0.
fn publish(topic: &str, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | qos << 1, &body)
}

/// A SUBSCRIBE to one filter.
fn subscribe(id: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend(string(filter.as_bytes()));
    body.push(qos);
    packet(0x82, &body)
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (the first byte says which) for `id`.
fn ack(first: u8, id: u16) -> Vec<u8> {
    packet(first, &id.to_be_bytes())
}

const PUBACK: u8 = 0x40;
const PUBREC: u8 = 0x50;
const PUBREL: u8 = 0x62; // [MQTT-3.6.1-1] PUBREL's reserved flags are 0010
const PUBCOMP: u8 = 0x70;
const DISCONNECT: [u8; 2] = [0xe0, 0];

/// A packet as it arrived: its first byte and its body.
struct Packet {
    first: u8,
    body: Vec<u8>,
}

impl Packet {
    fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// A PUBLISH's QoS: bits 2 and 1 of its first byte.
    fn qos(&self) -> u8 {
        (self.first >> 1) & 3
    }

    /// The packet id of an ack, or of a SUBACK.
    fn id(&self) -> u16 {
        u16::from_be_bytes([self.body[0], self.body[1]])
    }

    /// A PUBLISH's topic, packet id (0 at QoS 0) and payload.
    fn publish(&self) -> (&[u8], u16, &[u8]) {
        let length = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        let (topic, rest) = self.body[2..].split_at(length);
        match self.qos() {
            0 => (topic, 0, rest),
            _ => (topic, u16::from_be_bytes([rest[0], rest[1]]), &rest[2..]),
        }
    }

    /// One word for what a client saw, as `mqtt_conformance.rs` writes it.
    fn describe(&self) -> String {
        match self.kind() {
            2 => format!("CONNACK {}", self.body.get(1).copied().unwrap_or(0xff)),
            3 => {
                let (topic, _, payload) = self.publish();
                let text = |bytes| String::from_utf8_lossy(bytes).into_owned();
                format!("PUBLISH {} {}", text(topic), text(payload))
            }
            4 => "PUBACK".to_string(),
            5 => "PUBREC".to_string(),
            6 => "PUBREL".to_string(),
            7 => "PUBCOMP".to_string(),
            9 => {
                let codes: Vec<String> =
                    self.body[2..].iter().map(|c| format!("{c:#04x}")).collect();
                format!("SUBACK [{}]", codes.join(" "))
            }
            13 => "PINGRESP".to_string(),
            other => format!("type {other}"),
        }
    }
}

/// A raw connection and the bytes read from it that no packet took yet.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
    at: usize,
}

impl Conn {
    /// Connects to `addr` and sends `first` (a CONNECT, maybe more after it).
    async fn open(addr: SocketAddr, first: &[u8]) -> Conn {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        let mut conn = Conn::new(stream);
        conn.send(first).await;
        conn
    }

    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buffer: Vec::new(),
            at: 0,
        }
    }

    /// A client with CONNACK 0 in hand and, with `subscription`, its SUBACK
    /// granting the QoS asked for.
    async fn client(
        addr: SocketAddr,
        id: &str,
        clean: bool,
        subscription: Option<(&str, u8)>,
    ) -> Conn {
        let mut wire = connect(id, clean);
        if let Some((filter, qos)) = subscription {
            wire.extend(subscribe(1, filter, qos));
        }
        let mut conn = Conn::open(addr, &wire).await;
        assert_eq!(conn.word().await, "CONNACK 0", "{id}'s CONNECT");
        if let Some((filter, qos)) = subscription {
            let granted = format!("SUBACK [{qos:#04x}]");
            assert_eq!(conn.word().await, granted, "{id}'s SUBSCRIBE {filter}");
        }
        conn
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("a write", self.stream.write_all(bytes))
            .await
            .unwrap();
    }

    /// The next packet, or `None` once the broker has closed the connection.
    async fn next(&mut self, what: &str) -> Option<Packet> {
        within(what, self.read_packet()).await
    }

    /// What the next packet is, in one word; `closed`, or `silent` if
    /// nothing comes within [`WAIT`].
    async fn word(&mut self) -> String {
        match timeout(WAIT, self.read_packet()).await {
            Ok(Some(packet)) => packet.describe(),
            Ok(None) => "closed".to_string(),
            Err(_) => "silent".to_string(),
        }
    }

    /// The next packet, with no time limit: each caller bounds the wait.
    /// Cancel-safe: bytes read are kept until a packet takes them.
    async fn read_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.take() {
                return Some(packet);
            }
            self.buffer.drain(..self.at);
            self.at = 0;
            self.buffer.reserve(1 << 16);
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next packet if all of it has already been read.
    fn take(&mut self) -> Option<Packet> {
        let rest = &self.buffer[self.at..];
        let (mut length, mut header) = (0usize, 1);
        loop {
            let byte = *rest.get(header)?;
            length |= usize::from(byte & 0x7f) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let body = rest.get(header..header + length)?.to_vec();
        let first = rest[0];
        self.at += header + length;
        Some(Packet { first, body })
    }
}

/// A fresh subscriber and publisher exchange one message on `health/<name>`:
/// what the subscriber saw (see [`healthy`]).
async fn exchange(addr: SocketAddr, name: &str) -> String {
    let topic = format!("health/{name}");
    let mut wire = connect(&format!("{name}-sub"), true);
    wire.extend(subscribe(1, &topic, 0));
    let mut sub = Conn::open(addr, &wire).await;
    let mut seen = vec![sub.word().await, sub.word().await];
    if seen[1].starts_with("SUBACK") {
        let mut wire = connect(&format!("{name}-pub"), true);
        wire.extend(publish(&topic, 0, 0, b"ping"));
        // Kept open until the message is in: a publisher that closes at
        // once may take its last message with it.
        let _publisher = Conn::open(addr, &wire).await;
        seen.push(sub.word().await);
    }
    seen.join(", ")
}

/// What [`exchange`] sees from a broker that routes.
fn healthy(name: &str) -> String {
    format!("CONNACK 0, SUBACK [0x00], PUBLISH health/{name} ping")
}

/// The broker's panics and warnings so far (the first 20), for a failure's
/// message.
fn complaints(broker: &Server) -> String {
    let stderr = broker.process.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("panicked") || line.contains("WARN"))
        .take(20)
        .collect();
    format!("the broker said:\n{}", lines.join("\n"))
}

/// How long each round of [`the_router_survives_disconnects_mid_flood`]
/// floods; its subscriber leaves half-way through.
const FLOOD: Duration = Duration::from_millis(200);

/// A subscriber that leaves while a publisher floods its subscription ends
/// only its own session: over 20 rounds, each a QoS 0 subscriber to
/// `flood/#` leaving mid-flood (by DISCONNECT, by a close without it, or by
/// a reset), a fresh subscriber and publisher still exchange a message after
/// every round. (rumqttd 0.20's router thread can panic here, at
/// `scheduler.rs:63`, and from then on every client is closed at its first
/// SUBSCRIBE or PUBLISH.)
#[tokio::test]
async fn the_router_survives_disconnects_mid_flood() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let addr = broker.addr;
    assert_eq!(exchange(addr, "first").await, healthy("first"));
    for round in 1..=20 {
        let id = format!("flood-sub-{round}");
        let mut sub = Conn::client(addr, &id, true, Some(("flood/#", 0))).await;
        let flooder = tokio::spawn(flood(addr, round, Instant::now() + FLOOD));
        // The subscriber reads for half the flood, then leaves while it goes on.
        let leave = Instant::now() + FLOOD / 2;
        while let Ok(Some(_)) = timeout_at(leave, sub.read_packet()).await {}
        let how = match round % 4 {
            0 => "closed without DISCONNECT",
            1 => {
                // Linger 0: the close sends RST, and unread data is dropped.
                sub.stream.set_zero_linger().unwrap();
                "reset"
            }
            _ => {
                sub.send(&DISCONNECT).await;
                "sent DISCONNECT"
            }
        };
        drop(sub);
        within("the flood to end", flooder).await.unwrap();
        let name = format!("round-{round}");
        assert_eq!(
            exchange(addr, &name).await,
            healthy(&name),
            "after round {round}, whose subscriber {how} mid-flood; {}",
            complaints(&broker)
        );
    }
}

/// Publishes 512-byte QoS 0 messages to `flood/x`, 64 to a write, until
/// `end` (or until the broker closes the connection).
async fn flood(addr: SocketAddr, round: u32, end: Instant) {
    let id = format!("flood-pub-{round}");
    let mut publisher = Conn::client(addr, &id, true, None).await;
    let burst = publish("flood/x", 0, 0, &[b'y'; 512]).repeat(64);
    while let Ok(Ok(())) = timeout_at(end, publisher.stream.write_all(&burst)).await {}
}

/// How long the soak of [`a_bystander_keeps_receiving_through_a_soak`] runs.
const SOAK: Duration = Duration::from_secs(15);

/// How many tasks make random clients during the soak.
const CHAOS_TASKS: u64 = 8;

/// A bystander goes through a soak untouched: for 15 s, eight tasks make
/// random clients (seeded; `MQTT_SOAK_SEED=<n>` replays another run's
/// choices) that share client ids (so they take each other over), subscribe
/// to wildcard filters, publish bursts at QoS 0, 1 and 2, read politely,
/// read without acknowledging, or never read, and leave by DISCONNECT, a
/// close or a reset. Meanwhile a bystander publisher sends a numbered QoS 1
/// heartbeat every 50 ms, and the bystander subscriber (QoS 1) gets every
/// one, in order, none missing and none twice; then a fresh client is still
/// served.
#[tokio::test]
async fn a_bystander_keeps_receiving_through_a_soak() {
    let seed = std::env::var("MQTT_SOAK_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_0001_u64);
    let broker = Server::start("mqtt_broker", &[]).await;
    let addr = broker.addr;
    let end = Instant::now() + SOAK;
    let stop = CancellationToken::new();
    let sub = Conn::client(addr, "bystander-sub", true, Some(("bystander/beat", 1))).await;
    let (beats, mut received) = mpsc::unbounded_channel();
    let listener = tokio::spawn(listen(sub, beats));
    let chaos: Vec<_> = (0..CHAOS_TASKS)
        .map(|task| tokio::spawn(chaos(addr, task, Rng::new(seed, task), stop.clone())))
        .collect();
    let (sent, stopped) = heartbeats(addr, end).await;
    // The chaos ends with the heartbeats, even if they end early.
    stop.cancel();
    let mut tally = Tally::default();
    for task in chaos {
        tally += within("a chaos task to end", task).await.unwrap();
    }
    assert_eq!(
        stopped,
        None,
        "the bystander publisher lasts the soak (seed {seed}); the soak: {tally:?}; {}",
        complaints(&broker)
    );
    let mut got = Vec::new();
    while got.len() < sent as usize {
        match timeout(WAIT, received.recv()).await {
            Ok(Some(beat)) => got.push(beat),
            Ok(None) | Err(_) => break,
        }
    }
    listener.abort();
    let misplaced: Vec<(usize, u32)> = got
        .iter()
        .copied()
        .enumerate()
        .filter(|&(at, beat)| beat as usize != at)
        .take(5)
        .collect();
    assert_eq!(
        got.len(),
        sent as usize,
        "heartbeats received of those sent (seed {seed}); the first misplaced \
         (position, number): {misplaced:?}; the soak: {tally:?}; {}",
        complaints(&broker)
    );
    assert_eq!(
        misplaced,
        [],
        "in order, none twice (seed {seed}); the soak: {tally:?}; {}",
        complaints(&broker)
    );
    eprintln!("{sent} heartbeats, all received; the soak (seed {seed}): {tally:?}");
    assert_eq!(exchange(addr, "after-soak").await, healthy("after-soak"));
}

/// Publishes heartbeat 0, 1, 2, ... to `bystander/beat` at QoS 1 every
/// 50 ms until `end`, each PUBACKed before the next. Returns how many were
/// PUBACKed, and what stopped the publisher if it did not last until `end`.
async fn heartbeats(addr: SocketAddr, end: Instant) -> (u32, Option<String>) {
    let mut publisher = Conn::client(addr, "bystander-pub", true, None).await;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    let mut sent = 0u32;
    while Instant::now() < end {
        every.tick().await;
        let id = (sent % 65_535) as u16 + 1;
        let beat = publish("bystander/beat", 1, id, sent.to_string().as_bytes());
        let write = timeout(WAIT, publisher.stream.write_all(&beat)).await;
        if !matches!(write, Ok(Ok(()))) {
            return (sent, Some(format!("heartbeat {sent} could not be written")));
        }
        let why = loop {
            match timeout(WAIT, publisher.read_packet()).await {
                Ok(Some(answer)) if answer.kind() == 4 && answer.id() == id => break None,
                Ok(Some(_)) => {}
                Ok(None) => break Some("the broker closed the connection"),
                Err(_) => break Some("no PUBACK came"),
            }
        };
        if let Some(why) = why {
            return (sent, Some(format!("at heartbeat {sent}, {why}")));
        }
        sent += 1;
    }
    publisher.send(&DISCONNECT).await;
    (sent, None)
}

/// The bystander subscriber: PUBACKs each heartbeat and passes its number
/// on, until the connection closes (or the test aborts it).
async fn listen(mut sub: Conn, beats: mpsc::UnboundedSender<u32>) {
    while let Some(packet) = sub.read_packet().await {
        if packet.kind() != 3 {
            continue;
        }
        let (_, id, payload) = packet.publish();
        let beat = std::str::from_utf8(payload).unwrap().parse().unwrap();
        if packet.qos() == 1 {
            sub.send(&ack(PUBACK, id)).await;
        }
        if beats.send(beat).is_err() {
            return;
        }
    }
}

/// The filters chaos clients subscribe to: several match `bystander/beat`.
const FILTERS: [&str; 8] = [
    "chaos/#",
    "chaos/+/b",
    "chaos/a/+",
    "+/a/b",
    "#",
    "+/+",
    "bystander/+",
    "other/#",
];

/// The topics chaos clients publish to (never `bystander/beat`).
const TOPICS: [&str; 5] = ["chaos/a/b", "chaos/b/a", "chaos/a", "other/a/b", "other"];

/// A chaos client's write: given up (and the client ended) after this long.
const CHAOS_WRITE: Duration = Duration::from_millis(500);

/// What the chaos tasks did, for a failure's message.
#[derive(Debug, Default)]
struct Tally {
    /// Connections made.
    clients: u32,
    /// PUBLISH packets written.
    published: u32,
    /// Packets read.
    received: u32,
    /// Clients ended by the broker (closed, or not taking our writes).
    cut_off: u32,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.clients += other.clients;
        self.published += other.published;
        self.received += other.received;
        self.cut_off += other.cut_off;
    }
}

/// One chaos task: random clients, one after another, until `stop`. Each
/// does a few random things, then leaves, or stays connected without ever
/// reading again (up to four such per task, the oldest closed first).
async fn chaos(addr: SocketAddr, task: u64, mut rng: Rng, stop: CancellationToken) -> Tally {
    let mut tally = Tally::default();
    let mut kept = Vec::new();
    while !stop.is_cancelled() {
        let life = tally.clients;
        // Mostly shared ids: a CONNECT then takes over another task's client.
        let id = match rng.below(3) {
            0 => format!("chaos-{task}-{life}"),
            _ => format!("chaos-shared-{}", rng.below(4)),
        };
        let Ok(Ok(stream)) = timeout(CHAOS_WRITE, TcpStream::connect(addr)).await else {
            continue;
        };
        tally.clients += 1;
        let mut conn = Conn::new(stream);
        // One in four keeps its session (clean session 0) for the next
        // client with its id.
        let clean = rng.below(4) != 0;
        let mut alive = write(&mut conn, &connect(&id, clean)).await;
        for _ in 0..1 + rng.below(6) {
            if !alive {
                break;
            }
            let step = Instant::now() + Duration::from_millis(rng.below(300));
            alive = match rng.below(5) {
                0 => {
                    let filter = rng.pick(&FILTERS);
                    let id = rng.below(65_535) as u16 + 1;
                    write(&mut conn, &subscribe(id, filter, rng.below(3) as u8)).await
                }
                1 => {
                    let (mut burst, count) = (Vec::new(), 1 + rng.below(300));
                    for _ in 0..count {
                        let payload = vec![b'.'; rng.below(1024) as usize];
                        let id = rng.below(65_535) as u16 + 1;
                        let qos = rng.below(3) as u8;
                        burst.extend(publish(rng.pick(&TOPICS), qos, id, &payload));
                    }
                    let written = write(&mut conn, &burst).await;
                    tally.published += u32::from(written) * count as u32;
                    written
                }
                2 => read_until(&mut conn, step, true, &mut tally).await,
                3 => read_until(&mut conn, step, false, &mut tally).await,
                // Holds the connection without reading for a while.
                _ => {
                    tokio::time::sleep_until(step).await;
                    true
                }
            };
        }
        if !alive {
            tally.cut_off += 1;
            continue;
        }
        match rng.below(4) {
            0 => {
                write(&mut conn, &DISCONNECT).await;
            }
            1 => {} // Closed without DISCONNECT when dropped.
            2 => {
                let _ = conn.stream.set_zero_linger(); // Reset when dropped.
            }
            _ => {
                kept.push(conn);
                if kept.len() > 4 {
                    kept.remove(0);
                }
                continue;
            }
        }
        drop(conn);
    }
    tally
}

/// A chaos client's write; false if it failed or took too long (the
/// connection may then end in half a packet, so it is not used again).
async fn write(conn: &mut Conn, bytes: &[u8]) -> bool {
    matches!(
        timeout(CHAOS_WRITE, conn.stream.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// Reads until `until`, answering what asks for an answer if `polite`
/// (PUBLISH at QoS 1 and 2, PUBREC, PUBREL); false once the connection
/// closed.
async fn read_until(conn: &mut Conn, until: Instant, polite: bool, tally: &mut Tally) -> bool {
    loop {
        let packet = match timeout_at(until, conn.read_packet()).await {
            Ok(Some(packet)) => packet,
            Ok(None) => return false,
            Err(_) => return true,
        };
        tally.received += 1;
        if !polite {
            continue;
        }
        let answer = match (packet.kind(), packet.qos()) {
            (3, 1) => ack(PUBACK, packet.publish().1),
            (3, 2) => ack(PUBREC, packet.publish().1),
            (5, _) => ack(PUBREL, packet.id()),
            (6, _) => ack(PUBCOMP, packet.id()),
            _ => continue,
        };
        if !write(conn, &answer).await {
            return false;
        }
    }
}

/// xorshift64: a small seeded generator, enough to pick what clients do.
struct Rng(u64);

impl Rng {
    /// Generator number `stream` of the run seeded with `seed`.
    fn new(seed: u64, stream: u64) -> Rng {
        Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    /// A number below `n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Messages each publisher sends in [`four_fast_qos_0_publishers_reach_one_reading_subscriber`].
const FAN_IN: u32 = 20_000;

/// QoS 0 is "at most once", but a broker with room loses nothing: four
/// publishers each send 20,000 numbered QoS 0 messages of 100 bytes to one
/// topic as fast as TCP takes them, and one subscriber that reads as fast as
/// it can gets all 80,000, each publisher's in the order sent (a topic is
/// an Ordered Topic [MQTT-4.6.0-6]). Five times over, so a race shows.
#[tokio::test]
async fn four_fast_qos_0_publishers_reach_one_reading_subscriber() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let addr = broker.addr;
    for round in 1..=5 {
        let topic = format!("fan-in/{round}");
        let id = format!("fan-in-sub-{round}");
        let sub = Conn::client(addr, &id, true, Some((&topic, 0))).await;
        let reader = tokio::spawn(count_fan_in(sub));
        let publishers: Vec<_> = (0..4u8)
            .map(|from| tokio::spawn(send_fan_in(addr, round, from, topic.clone())))
            .collect();
        let mut connections = Vec::new();
        for publisher in publishers {
            connections.push(within("a publisher's writes", publisher).await.unwrap());
        }
        let (counts, disorder) = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the subscriber to finish")
            .unwrap();
        assert_eq!(
            counts,
            [FAN_IN; 4],
            "round {round}: messages from each publisher; {}",
            complaints(&broker)
        );
        assert_eq!(disorder, None, "round {round}: each publisher's in order");
        drop(connections);
    }
}

/// Publisher `from` of a round: sends [`FAN_IN`] QoS 0 messages, 100 to a
/// write. Its payload: `from` as a digit, the message's number in 8 digits,
/// dots up to 100 bytes. Returns the connection, still open: closing it at
/// once could lose the last messages.
async fn send_fan_in(addr: SocketAddr, round: u32, from: u8, topic: String) -> Conn {
    let id = format!("fan-in-pub-{round}-{from}");
    let mut publisher = Conn::client(addr, &id, true, None).await;
    for batch in 0..FAN_IN / 100 {
        let mut wire = Vec::new();
        for number in batch * 100..(batch + 1) * 100 {
            let mut payload = format!("{from}{number:08}").into_bytes();
            payload.resize(100, b'.');
            wire.extend(publish(&topic, 0, 0, &payload));
        }
        publisher.send(&wire).await;
    }
    publisher
}

/// Reads a round's messages until all have come or none comes for
/// [`WAIT`]: how many came from each publisher, and the first that came
/// after a later one of the same publisher.
async fn count_fan_in(mut sub: Conn) -> ([u32; 4], Option<String>) {
    let (mut counts, mut next, mut disorder) = ([0u32; 4], [0u32; 4], None);
    while counts.iter().sum::<u32>() < 4 * FAN_IN {
        let Ok(Some(packet)) = timeout(WAIT, sub.read_packet()).await else {
            break;
        };
        if packet.kind() != 3 {
            continue;
        }
        let (_, _, payload) = packet.publish();
        let from = usize::from(payload[0] - b'0');
        let number: u32 = std::str::from_utf8(&payload[1..9])
            .unwrap()
            .parse()
            .unwrap();
        if number < next[from] && disorder.is_none() {
            disorder = Some(format!(
                "publisher {from}'s {number} after its {}",
                next[from] - 1
            ));
        }
        next[from] = next[from].max(number + 1);
        counts[from] += 1;
    }
    (counts, disorder)
}

/// How many messages [`a_persistent_subscriber_gets_100000_qos_1_messages`]
/// sends.
const PERSISTENT: u32 = 100_000;

/// A persistent session (clean session 0) loses nothing either: its
/// subscriber, at QoS 1, reads and PUBACKs while a publisher sends 100,000
/// numbered QoS 1 messages of 8 bytes (100 in flight), and every message
/// the broker PUBACKed reaches it [MQTT-4.3.2-2].
#[tokio::test]
async fn a_persistent_subscriber_gets_100000_qos_1_messages() {
    const WINDOW: u32 = 100;
    let broker = Server::start("mqtt_broker", &[]).await;
    let addr = broker.addr;
    let sub = Conn::client(addr, "persistent-reader", false, Some(("persist/t", 1))).await;
    let reader = tokio::spawn(count_persistent(sub));
    let mut publisher = Conn::client(addr, "persistent-writer", true, None).await;
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < PERSISTENT {
        let mut wire = Vec::new();
        while sent < PERSISTENT && sent - acked < WINDOW {
            let id = (sent % 65_535) as u16 + 1;
            wire.extend(publish("persist/t", 1, id, format!("{sent:08}").as_bytes()));
            sent += 1;
        }
        publisher.send(&wire).await;
        let first = publisher.next("PUBACKs").await;
        let mut answer = first.expect("the broker closed the publisher");
        loop {
            acked += u32::from(answer.kind() == 4);
            match publisher.take() {
                Some(more) => answer = more,
                None => break,
            }
        }
    }
    let delivered = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("the subscriber to finish")
        .unwrap();
    assert_eq!(
        delivered,
        acked,
        "distinct messages delivered of those PUBACKed; {}",
        complaints(&broker)
    );
}

/// Reads and PUBACKs until every message has come or none comes for
/// [`WAIT`]: how many distinct numbers came.
async fn count_persistent(mut sub: Conn) -> u32 {
    let mut seen = vec![false; PERSISTENT as usize];
    let mut distinct = 0;
    while distinct < PERSISTENT {
        let Ok(Some(mut packet)) = timeout(WAIT, sub.read_packet()).await else {
            break;
        };
        // One write for every packet already read.
        let mut acks = Vec::new();
        loop {
            if packet.kind() == 3 {
                let (_, id, payload) = packet.publish();
                let number: usize = std::str::from_utf8(payload).unwrap().parse().unwrap();
                if !std::mem::replace(&mut seen[number], true) {
                    distinct += 1;
                }
                acks.extend(ack(PUBACK, id));
            }
            match sub.take() {
                Some(more) => packet = more,
                None => break,
            }
        }
        sub.send(&acks).await;
    }
    distinct
}

/// [MQTT-3.8.4-6]: a message goes out at the minimum of the QoS it was
/// published with and the QoS its subscription was granted, so a QoS 0
/// PUBLISH reaches a subscription granted QoS 2 at QoS 0: first byte 0x30,
/// no packet id.
async fn delivered_at_the_minimum_qos(addr: SocketAddr) {
    let mut wire = connect("qos2-sub", true);
    wire.extend(subscribe(1, "min/qos", 2));
    let mut sub = Conn::open(addr, &wire).await;
    assert_eq!(sub.word().await, "CONNACK 0");
    assert_eq!(sub.word().await, "SUBACK [0x02]");
    let mut wire = connect("qos0-pub", true);
    wire.extend(publish("min/qos", 0, 0, b"q0"));
    let _publisher = Conn::open(addr, &wire).await;
    let delivered = sub
        .next("the PUBLISH")
        .await
        .expect("the subscriber is open");
    assert_eq!(delivered.describe(), "PUBLISH min/qos q0");
    assert_eq!(
        delivered.qos(),
        0,
        "the QoS bits of {:#04x}",
        delivered.first
    );
    assert_eq!(
        [&[delivered.first][..], &delivered.body].concat(),
        [&[0x30][..], &string(b"min/qos"), b"q0"].concat()
    );
}

#[tokio::test]
async fn a_qos_0_publish_reaches_a_qos_2_subscription_at_qos_0() {
    let broker = Server::start("mqtt_broker", &[]).await;
    delivered_at_the_minimum_qos(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_delivers_a_qos_0_publish_to_a_qos_2_subscription_at_qos_0() {
    let mosquitto = Mosquitto::start(None).await;
    delivered_at_the_minimum_qos(mosquitto.addr).await;
}
