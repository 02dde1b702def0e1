//! A bare MQTT 3.1.1 client, written packet by packet over a tokio
//! `TcpStream`. Every packet is a few bytes (§2.2: a first byte holding the
//! type and flags, the remaining length, then the body), and writing them by
//! hand keeps a client library's own queues and costs out of what we measure.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest we wait for any one answer of the broker.
pub const WAIT: Duration = Duration::from_secs(5);
/// Filters per SUBSCRIBE or UNSUBSCRIBE packet.
const FILTERS_PER_PACKET: usize = 100;
/// QoS 1 messages sent before we wait for their PUBACKs.
const WINDOW: usize = 100;

// Packet types: the high four bits of the first byte (§2.2.1).
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;

/// One connection to a broker.
#[derive(Debug)]
pub struct Client {
    tcp: TcpStream,
    /// Bytes read but not yet taken as packets: TCP is a byte stream, so one
    /// read can end in the middle of a packet or hold hundreds of them.
    buffer: BytesMut,
    next_id: u16,
}

/// One packet from the broker: its first byte and its body.
#[derive(Debug)]
struct Packet {
    first: u8,
    body: BytesMut,
}

/// The messages [`Client::receive`] counted, and when the last arrived.
#[derive(Debug)]
pub struct Received {
    pub count: u64,
    pub last: Option<Instant>,
}

impl Client {
    /// Connects and sends CONNECT; returns once CONNACK accepts us. `clean`
    /// is the Clean Session flag: without it the broker keeps our session
    /// (subscriptions, and messages queued for us) after we go (§3.1.2.4).
    pub async fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> anyhow::Result<Client> {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .context("connect: no answer")?
            .context("connect")?;
        tcp.set_nodelay(true)?;
        let mut client = Client {
            tcp,
            buffer: BytesMut::with_capacity(64 * 1024),
            next_id: 0,
        };
        // Protocol name "MQTT", level 4 (3.1.1), flags, keep-alive 600 s:
        // long enough that no wait of the bench needs a PINGREQ.
        let flags = if clean { 0b0000_0010 } else { 0 };
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0x02, 0x58];
        push_string(&mut body, client_id);
        client.send(&packet(0x10, &body)).await?;
        let connack = client.expect(CONNACK).await?;
        // §3.2.2.3: return code 0 accepts; any other refuses.
        ensure!(
            connack.body.len() == 2 && connack.body[1] == 0,
            "CONNACK refused us: {:?}",
            &connack.body[..]
        );
        Ok(client)
    }

    /// Subscribes to `filters` at `qos`, one SUBSCRIBE at a time, and fails
    /// if the broker refuses any of them (return code 0x80, §3.9.3).
    pub async fn subscribe(&mut self, filters: &[String], qos: u8) -> anyhow::Result<()> {
        for chunk in filters.chunks(FILTERS_PER_PACKET) {
            let id = self.next_id();
            let mut body = id.to_be_bytes().to_vec();
            for filter in chunk {
                push_string(&mut body, filter);
                body.push(qos);
            }
            // [MQTT-3.8.1-1] SUBSCRIBE's flags are 0010.
            self.send(&packet(0x82, &body)).await?;
            let suback = self.expect(SUBACK).await?;
            ensure!(
                suback.body.len() == 2 + chunk.len() && suback.body[..2] == id.to_be_bytes(),
                "the SUBACK does not answer our SUBSCRIBE"
            );
            let refused = suback.body[2..]
                .iter()
                .filter(|code| **code == 0x80)
                .count();
            ensure!(refused == 0, "refused {refused} of {} filters", chunk.len());
        }
        Ok(())
    }

    /// Unsubscribes from `filters`, one UNSUBSCRIBE at a time.
    pub async fn unsubscribe(&mut self, filters: &[String]) -> anyhow::Result<()> {
        for chunk in filters.chunks(FILTERS_PER_PACKET) {
            let id = self.next_id();
            let mut body = id.to_be_bytes().to_vec();
            for filter in chunk {
                push_string(&mut body, filter);
            }
            // [MQTT-3.10.1-1] UNSUBSCRIBE's flags are 0010 too.
            self.send(&packet(0xA2, &body)).await?;
            let unsuback = self.expect(UNSUBACK).await?;
            ensure!(
                unsuback.body[..] == id.to_be_bytes(),
                "the UNSUBACK does not answer our UNSUBSCRIBE"
            );
        }
        Ok(())
    }

    /// Publishes at QoS 0: nothing comes back, so this only writes.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        self.send(&publish_packet(topic, payload, None, false))
            .await
    }

    /// Publishes every (topic, payload) at QoS 1, [`WINDOW`] at a time, and
    /// returns when all are acknowledged: a PUBACK means the broker has taken
    /// the message over (§4.3.2), so its memory now holds it.
    pub async fn publish_acked(
        &mut self,
        messages: impl IntoIterator<Item = (String, Vec<u8>)>,
        retain: bool,
    ) -> anyhow::Result<()> {
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut window = Vec::new();
            let mut sent = 0;
            for (topic, payload) in messages.by_ref().take(WINDOW) {
                let id = self.next_id();
                window.extend(publish_packet(&topic, &payload, Some(id), retain));
                sent += 1;
            }
            self.send(&window).await?;
            for _ in 0..sent {
                self.expect(PUBACK).await?;
            }
        }
        Ok(())
    }

    /// Writes bytes that are already packets.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.tcp.write_all(bytes).await.context("write")
    }

    /// Reads PUBLISH packets, acknowledging those at QoS 1, and counts the
    /// ones whose payload starts with `mark`; returns when `enough` have
    /// arrived, when nothing has come for `quiet`, or after `limit`.
    pub async fn receive(
        &mut self,
        mark: u8,
        enough: u64,
        quiet: Duration,
        limit: Duration,
    ) -> anyhow::Result<Received> {
        let end = Instant::now() + limit;
        let mut received = Received {
            count: 0,
            last: None,
        };
        while received.count < enough {
            let wait = quiet.min(end.saturating_duration_since(Instant::now()));
            let Some(publish) = self.read_packet(wait).await? else {
                break;
            };
            ensure!(
                publish.first >> 4 == PUBLISH,
                "expected PUBLISH, got type {}",
                publish.first >> 4
            );
            let (id, payload) = split_publish(&publish)?;
            if let Some(id) = id {
                // §4.3.2: we answer a QoS 1 PUBLISH with PUBACK and its id.
                let [high, low] = id.to_be_bytes();
                self.send(&[0x40, 2, high, low]).await?;
            }
            if payload.first() == Some(&mark) {
                received.count += 1;
                received.last = Some(Instant::now());
            }
        }
        Ok(received)
    }

    /// Sends DISCONNECT, closes our side as [MQTT-3.14.4-1] asks, and waits
    /// for the broker to close its side: then it has read everything we sent.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&[0xE0, 0]).await?;
        self.tcp.shutdown().await?;
        ensure!(
            self.until_closed(WAIT).await,
            "the broker kept the connection open after DISCONNECT"
        );
        Ok(())
    }

    /// Reads (and drops) whatever comes until the broker closes the
    /// connection, for at most `wait`; tells whether it closed.
    pub async fn until_closed(&mut self, wait: Duration) -> bool {
        let end = tokio::time::Instant::now() + wait;
        loop {
            self.buffer.clear();
            match tokio::time::timeout_at(end, self.tcp.read_buf(&mut self.buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// The next packet, which must be of type `kind`, within [`WAIT`].
    async fn expect(&mut self, kind: u8) -> anyhow::Result<Packet> {
        let packet = self
            .read_packet(WAIT)
            .await?
            .with_context(|| format!("no answer (packet type {kind}) within {WAIT:?}"))?;
        ensure!(
            packet.first >> 4 == kind,
            "expected packet type {kind}, got {}",
            packet.first >> 4
        );
        Ok(packet)
    }

    /// The next packet, or `None` if none is complete within `wait`.
    async fn read_packet(&mut self, wait: Duration) -> anyhow::Result<Option<Packet>> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            if let Some(packet) = split_packet(&mut self.buffer)? {
                return Ok(Some(packet));
            }
            match tokio::time::timeout_at(end, self.tcp.read_buf(&mut self.buffer)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => bail!("the broker closed the connection"),
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error).context("read"),
            }
        }
    }

    /// Packet ids run 1..=65535; 0 is not allowed ([MQTT-2.3.1-1]).
    fn next_id(&mut self) -> u16 {
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.next_id
    }
}

/// A PUBLISH: QoS 1 with `id`, else QoS 0 (which carries no id, §3.3.2.2).
pub fn publish_packet(topic: &str, payload: &[u8], id: Option<u16>, retain: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    push_string(&mut body, topic);
    let mut first = 0x30 | u8::from(retain);
    if let Some(id) = id {
        first |= 1 << 1;
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(first, &body)
}

/// A packet: its first byte, the remaining length (§2.2.3: seven bits a
/// byte, lowest first, the high bit saying "more follows"), the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut length = body.len();
    loop {
        let digit = (length % 128) as u8;
        length /= 128;
        if length == 0 {
            out.push(digit);
            break;
        }
        out.push(digit | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string as MQTT writes it: two bytes of length, then the bytes.
fn push_string(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Takes the first packet off `buffer`, if all of it is there.
fn split_packet(buffer: &mut BytesMut) -> anyhow::Result<Option<Packet>> {
    let mut length = 0;
    for i in 1..=4 {
        let Some(&digit) = buffer.get(i) else {
            return Ok(None);
        };
        length |= usize::from(digit & 0x7f) << (7 * (i - 1));
        if digit & 0x80 != 0 {
            continue;
        }
        if buffer.len() < 1 + i + length {
            return Ok(None);
        }
        let first = buffer[0];
        buffer.advance(1 + i);
        let body = buffer.split_to(length);
        return Ok(Some(Packet { first, body }));
    }
    bail!("a remaining length longer than four bytes (§2.2.3 allows four)")
}

/// A PUBLISH's packet id (QoS 1 and 2 only) and payload (§3.3.2).
fn split_publish(publish: &Packet) -> anyhow::Result<(Option<u16>, &[u8])> {
    let body = &publish.body[..];
    let topic_end = 2 + usize::from(u16::from_be_bytes([
        *body.first().context("empty PUBLISH")?,
        *body.get(1).context("short PUBLISH")?,
    ]));
    let rest = body
        .get(topic_end..)
        .context("PUBLISH shorter than its topic")?;
    if (publish.first >> 1) & 3 == 0 {
        return Ok((None, rest));
    }
    ensure!(rest.len() >= 2, "PUBLISH without its packet id");
    Ok((Some(u16::from_be_bytes([rest[0], rest[1]])), &rest[2..]))
}
