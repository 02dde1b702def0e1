//! One accepted client, relayed to rumqttd and back, packet by packet.
//!
//! Both directions go through one loop: we read what a socket has, cut it
//! into packets (the fixed header says where each ends), check the ones
//! from the client, and queue the bytes for the other side. Packets that
//! pass unchanged are not copied: each is a slice of the buffer it was read
//! into, and a batch of them goes out in one vectored write.
//!
//! What the relay does besides passing bytes along:
//! - it closes a client that breaks a rule of the spec, naming the rule;
//! - it drops a client it has not heard from in 1.5 times its keep-alive
//!   [MQTT-3.1.2-24], and keeps its own connection to rumqttd alive with
//!   PINGREQs of its own, whose answers it keeps to itself;
//! - it answers SUBSCRIBE to `$` filters (`$SYS/#`) with a failure code,
//!   because rumqttd would close the connection for them;
//! - for clean sessions, it acknowledges rumqttd's QoS 1 and 2 deliveries
//!   itself and runs the client's side of those exchanges with its own packet
//!   ids, so a client is never limited by rumqttd's window of 100
//!   unacknowledged messages (see [`super::congestion`] for why that matters).

use std::collections::{HashSet, VecDeque};
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::congestion::{Congestion, Pressure};
use super::subscriptions::{self, Subscriptions};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// How long rumqttd may hear nothing from us before we send it a PINGREQ:
/// well inside the keep-alive we gave it
/// ([`super::connect::UPSTREAM_KEEP_ALIVE_SECS`]).
const UPSTREAM_PING: Duration = Duration::from_secs(3600);

/// At most this many bytes read from one socket per turn, so one busy
/// client cannot hold its connection's loop.
const READ_PER_TURN: usize = 64 * 1024;

/// Bytes queued for rumqttd above which we stop reading from the client
/// until rumqttd has taken them.
const UPSTREAM_QUEUE_BYTES: usize = 256 * 1024;

/// How a relayed connection ended.
#[derive(Debug)]
pub enum End {
    /// The client sent DISCONNECT: its will is discarded [MQTT-3.1.2-10].
    Disconnect,
    /// The client closed the connection, or it failed.
    ClientGone(Option<io::Error>),
    /// The client broke the protocol: we closed [MQTT-4.8.0-1].
    Violation(Violation),
    /// Nothing from the client for 1.5 x its keep-alive [MQTT-3.1.2-24].
    KeepAliveExpired(Duration),
    /// Another connection with the same client id [MQTT-3.1.4-2], or the
    /// broker is stopping.
    Kicked,
    /// rumqttd closed its side.
    UpstreamGone,
}

impl End {
    /// Whether the client's will is published (spec §3.1.2.5: on every
    /// close but one that follows DISCONNECT).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, End::Disconnect)
    }
}

/// Bytes waiting to be written to one socket, as a queue of slices.
#[derive(Debug, Default)]
struct Outbox {
    chunks: VecDeque<Bytes>,
    bytes: usize,
}

impl Outbox {
    fn push(&mut self, chunk: Bytes) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Writes as much as the socket takes now, in vectored writes of up to
    /// 64 slices. Returns the bytes written; stops at `WouldBlock`.
    fn write_to(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while !self.chunks.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|chunk| IoSlice::new(chunk))
                .collect();
            let written = match stream.try_write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            };
            total += written;
            self.bytes -= written;
            let mut left = written;
            while left > 0 {
                let Some(front) = self.chunks.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    let _ = front.split_to(left);
                    left = 0;
                }
            }
        }
        if self.chunks.is_empty() {
            // Give the queue's memory back while the connection is idle.
            self.chunks = VecDeque::new();
        }
        Ok(total)
    }
}

/// Packet ids of our QoS 1 and 2 deliveries that the client has not yet
/// acknowledged (clean sessions only; see the module comment).
#[derive(Debug, Default)]
struct PacketIds {
    in_flight: HashSet<u16>,
    next: u16,
}

impl PacketIds {
    /// A free id, 1 to 65535 [MQTT-2.3.1-1], or `None` if all are in use.
    fn take(&mut self) -> Option<u16> {
        if self.in_flight.len() >= usize::from(u16::MAX) {
            return None;
        }
        loop {
            self.next = self.next % u16::MAX + 1;
            if self.in_flight.insert(self.next) {
                return Some(self.next);
            }
        }
    }

    fn release(&mut self, id: u16) {
        self.in_flight.remove(&id);
        if self.in_flight.is_empty() {
            self.in_flight = HashSet::new();
        }
    }
}

/// A SUBSCRIBE we passed on changed (without its `$` filters, or at QoS 0
/// for a clean session): how to answer the client when rumqttd's SUBACK
/// comes back.
#[derive(Debug)]
struct PendingSuback {
    packet_id: u16,
    /// One entry per filter the client sent.
    answers: Vec<Answer>,
}

/// The SUBACK return code for one filter.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Ours: rumqttd never saw this filter.
    Ours(u8),
    /// rumqttd's code; if it granted the filter, report this QoS instead
    /// (the one the client asked for, which we deliver at).
    Theirs(Option<u8>),
}

/// SUBACK's failure return code (spec §3.9.3).
const SUBACK_FAILURE: u8 = 0x80;

/// The relay's settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest packet accepted from the client, in bytes of remaining length.
    pub max_packet_bytes: usize,
    /// Bytes queued for one client at most; see [`super::congestion`].
    pub max_queued_bytes: usize,
}

/// One client's relay.
#[derive(Debug)]
pub struct Relay<'a> {
    pub client: &'a TcpStream,
    /// rumqttd, and the client id it knows this client by.
    pub rumqttd: &'a super::Rumqttd,
    pub upstream_id: &'a str,
    /// The client id, for log lines.
    pub name: &'a str,
    pub limits: &'a Limits,
    /// 1.5 x the client's keep-alive, or `None` for keep-alive 0.
    pub grace: Option<Duration>,
    /// Acknowledge rumqttd's deliveries ourselves (clean sessions).
    pub own_acks: bool,
    pub congestion: &'a Congestion,
}

struct State {
    /// The connection to rumqttd, once the client has sent something for it.
    upstream: Option<TcpStream>,
    from_client: BytesMut,
    from_upstream: BytesMut,
    to_client: Outbox,
    to_upstream: Outbox,
    ids: PacketIds,
    subacks: Vec<PendingSuback>,
    /// What a clean session subscribed to, at which QoS.
    subs: Subscriptions,
    last_heard: Instant,
    last_to_upstream: Instant,
    pressure: Pressure,
    /// Our own PINGREQs to rumqttd not yet answered.
    own_pings: u32,
    /// Messages dropped for this client since the last log line about it.
    dropped: u64,
    dropped_logged: Option<Instant>,
}

impl Relay<'_> {
    /// Relays until either side ends, or `kick` is cancelled. Returns how it
    /// ended, and the client's packets not yet written to rumqttd (a
    /// PUBLISH followed at once by DISCONNECT, say), which the caller sends
    /// before it closes.
    ///
    /// `early` holds bytes the client sent right after its CONNECT;
    /// `upstream` is the connection to rumqttd if there is one already (a
    /// persistent session). Otherwise the relay opens it when the client
    /// first sends something for rumqttd, and returns it at the end.
    pub async fn run(
        &self,
        early: BytesMut,
        kick: &CancellationToken,
        upstream: Option<TcpStream>,
    ) -> (End, Vec<Bytes>, Option<TcpStream>) {
        let now = Instant::now();
        let mut state = State {
            upstream,
            from_client: early,
            from_upstream: BytesMut::new(),
            to_client: Outbox::default(),
            to_upstream: Outbox::default(),
            ids: PacketIds::default(),
            subacks: Vec::new(),
            subs: Subscriptions::default(),
            last_heard: now,
            last_to_upstream: now,
            pressure: self.congestion.pressure(),
            own_pings: 0,
            dropped: 0,
            dropped_logged: None,
        };
        let early = self.client_packets(&mut state);
        if let Err(end) = self.settle(early, &mut state).await {
            return (end, state.to_upstream.chunks.into(), state.upstream);
        }
        let timer = tokio::time::sleep_until(self.deadline(&state));
        tokio::pin!(timer);
        loop {
            // Read from the client unless rumqttd is behind, or another
            // subscriber that is still reading needs publishers to wait.
            let paused = state.pressure.paused();
            let read_client = state.to_upstream.bytes < UPSTREAM_QUEUE_BYTES && !paused;
            // A full queue to the client holds rumqttd back, except for a
            // client that is not reading at all: then we keep reading, and
            // what does not fit is dropped (see `super::congestion`).
            let read_upstream = state.to_client.bytes < self.limits.max_queued_bytes
                || (self.own_acks && state.pressure.stalled(Instant::now()));
            let result = tokio::select! {
                () = kick.cancelled() => Err(End::Kicked),
                ready = self.client.readable(), if read_client => match ready {
                    Ok(()) => self.read_client(&mut state),
                    Err(error) => Err(End::ClientGone(Some(error))),
                },
                ready = readable(state.upstream.as_ref()), if read_upstream => match ready {
                    Ok(()) => self.read_upstream_side(&mut state),
                    Err(_) => Err(End::UpstreamGone),
                },
                ready = self.client.writable(), if !state.to_client.is_empty() => match ready {
                    Ok(()) => Ok(()),
                    Err(error) => Err(End::ClientGone(Some(error))),
                },
                ready = writable(state.upstream.as_ref()), if !state.to_upstream.is_empty() => match ready {
                    Ok(()) => Ok(()),
                    Err(_) => Err(End::UpstreamGone),
                },
                () = state.pressure.changed(), if paused => {
                    // Time spent paused is not the client's silence.
                    state.last_heard = Instant::now();
                    Ok(())
                }
                () = &mut timer => self.on_timer(&mut state),
            };
            if let Err(end) = self.settle(result, &mut state).await {
                return (end, state.to_upstream.chunks.into(), state.upstream);
            }
            timer.as_mut().reset(self.deadline(&state));
        }
    }

    /// After a turn: opens the connection to rumqttd if the client has sent
    /// the first packets for it, then writes what is queued both ways.
    async fn settle(&self, turn: Result<(), End>, state: &mut State) -> Result<(), End> {
        turn?;
        if state.upstream.is_none() && !state.to_upstream.is_empty() {
            // rumqttd sets up one connection at a time; while we wait for
            // our turn, a client that leaves need not cost it one (what it
            // sent that carries messages, and its will, still go; see
            // `Door::session`).
            let open = self.rumqttd.open(self.upstream_id, self.own_acks);
            tokio::pin!(open);
            let opened = tokio::select! {
                opened = &mut open => opened,
                _ = self.client.readable() => {
                    // Look without waiting: readiness can be left over from
                    // a read that stopped at READ_PER_TURN.
                    let mut probe = [0u8; 1];
                    let peeked = self.client.peek(&mut probe).now_or_never();
                    if matches!(peeked, Some(Ok(0) | Err(_))) {
                        return Err(End::ClientGone(None));
                    }
                    open.await
                }
            };
            match opened {
                Ok((upstream, _connack)) => {
                    state.upstream = Some(upstream);
                    state.last_to_upstream = Instant::now();
                }
                Err(error) => {
                    warn!(client = self.name, %error, "cannot connect the client to rumqttd");
                    return Err(End::UpstreamGone);
                }
            }
        }
        self.flush(state)
    }

    /// When the timer must next look: the client's keep-alive deadline, or
    /// our next ping to rumqttd, whichever is first.
    fn deadline(&self, state: &State) -> Instant {
        let mut deadline = match state.upstream {
            Some(_) => state.last_to_upstream + UPSTREAM_PING,
            // Nothing to ping: look again in a day.
            None => Instant::now() + Duration::from_secs(24 * 3600),
        };
        if let Some(grace) = self.grace
            && !state.pressure.paused()
        {
            deadline = deadline.min(state.last_heard + grace);
        }
        if let Some(check) = state.pressure.next_check() {
            deadline = deadline.min(check);
        }
        deadline
    }

    fn on_timer(&self, state: &mut State) -> Result<(), End> {
        let now = Instant::now();
        if let Some(grace) = self.grace
            && !state.pressure.paused()
            && now >= state.last_heard + grace
        {
            return Err(End::KeepAliveExpired(grace));
        }
        if state.upstream.is_some() && now >= state.last_to_upstream + UPSTREAM_PING {
            state.to_upstream.push(Bytes::from_static(&wire::PINGREQ));
            state.own_pings += 1;
        }
        if self.own_acks {
            let (queued, max) = (state.to_client.bytes, self.limits.max_queued_bytes);
            state.pressure.update(queued, max, false);
        }
        Ok(())
    }

    /// Writes both queues as far as the sockets take them, and tells the
    /// congestion tracker how full this client's queue is.
    fn flush(&self, state: &mut State) -> Result<(), End> {
        if let Some(upstream) = &state.upstream
            && !state.to_upstream.is_empty()
        {
            match state.to_upstream.write_to(upstream) {
                Ok(n) if n > 0 => state.last_to_upstream = Instant::now(),
                Ok(_) => {}
                Err(_) => return Err(End::UpstreamGone),
            }
        }
        let mut progressed = false;
        if !state.to_client.is_empty() {
            match state.to_client.write_to(self.client) {
                Ok(n) => progressed = n > 0,
                Err(error) => return Err(End::ClientGone(Some(error))),
            }
        }
        if self.own_acks {
            state.pressure.update(
                state.to_client.bytes,
                self.limits.max_queued_bytes,
                progressed,
            );
        }
        Ok(())
    }

    /// Reads what the client sent and handles each whole packet.
    fn read_client(&self, state: &mut State) -> Result<(), End> {
        match read_some(self.client, &mut state.from_client) {
            Ok(0) => return Err(End::ClientGone(None)),
            Ok(_) => state.last_heard = Instant::now(),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(End::ClientGone(Some(error))),
        }
        self.client_packets(state)
    }

    /// Handles each whole packet the client has sent so far.
    fn client_packets(&self, state: &mut State) -> Result<(), End> {
        loop {
            let frame = match wire::next_frame(&mut state.from_client, self.limits.max_packet_bytes)
            {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(violation) => return Err(End::Violation(violation)),
            };
            self.client_packet(state, frame)?;
        }
        release_if_empty(&mut state.from_client);
        Ok(())
    }

    /// One packet from the client: check it, then pass it on, answer it, or
    /// end the connection.
    fn client_packet(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        wire::check_flags(&frame).map_err(End::Violation)?;
        let body = frame.body();
        match frame.kind {
            kind::PUBLISH => {
                let mut reader = Reader::new(body, "PUBLISH");
                let topic = reader.string("the topic name").map_err(End::Violation)?;
                wire::check_topic_name(topic).map_err(End::Violation)?;
                if frame.qos() > 0 && reader.u16().map_err(End::Violation)? == 0 {
                    return Err(End::Violation(Violation(
                        "PUBLISH with packet id 0 [MQTT-2.3.1-1]".into(),
                    )));
                }
                state.to_upstream.push(frame.bytes.freeze());
            }
            kind::PUBACK | kind::PUBREC | kind::PUBCOMP | kind::PUBREL => {
                let id = only_packet_id(&frame)?;
                match (self.own_acks, frame.kind) {
                    // The client's side of our own deliveries (see the
                    // module comment): rumqttd was acknowledged already.
                    (true, kind::PUBACK | kind::PUBCOMP) => state.ids.release(id),
                    (true, kind::PUBREC) => state
                        .to_client
                        .push(Bytes::copy_from_slice(&wire::ack(kind::PUBREL, id))),
                    _ => state.to_upstream.push(frame.bytes.freeze()),
                }
            }
            kind::SUBSCRIBE => self.subscribe(state, frame)?,
            kind::UNSUBSCRIBE => self.unsubscribe(state, frame)?,
            kind::PINGREQ => {
                empty_body(&frame)?;
                if state.upstream.is_none() && state.to_upstream.is_empty() {
                    // Nothing is on its way to rumqttd: we answer.
                    state.to_client.push(Bytes::from_static(&wire::PINGRESP));
                } else {
                    // Through rumqttd, so the PINGRESP comes after the
                    // answers to what the client sent before it.
                    state.to_upstream.push(frame.bytes.freeze());
                }
            }
            kind::DISCONNECT => {
                empty_body(&frame)?;
                return Err(End::Disconnect);
            }
            kind::CONNECT => {
                return Err(End::Violation(Violation(
                    "a second CONNECT [MQTT-3.1.0-2]".into(),
                )));
            }
            other => {
                return Err(End::Violation(Violation(format!(
                    "packet type {other} is not one a client sends"
                ))));
            }
        }
        Ok(())
    }

    /// SUBSCRIBE (spec §3.8): every filter checked; `$` filters other than
    /// `$share/...` answered with a failure code by us; for a clean session,
    /// the rest subscribed at QoS 0 (see `super::subscriptions`).
    fn subscribe(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "SUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut answers = Vec::new();
        let mut passed = BytesMut::new();
        passed.extend_from_slice(&packet_id.to_be_bytes());
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            let requested = reader.u8().map_err(End::Violation)?;
            if requested > 2 {
                return Err(End::Violation(Violation(format!(
                    "SUBSCRIBE asks for QoS byte {requested:#04x} [MQTT-3.8.3-4]"
                ))));
            }
            if filter.starts_with('$') && !filter.starts_with("$share/") {
                info!(
                    client = self.name,
                    filter, "no such topics here: SUBACK failure"
                );
                answers.push(Answer::Ours(SUBACK_FAILURE));
                continue;
            }
            wire::put_string(&mut passed, filter.as_bytes());
            if self.own_acks {
                state.subs.set(filter, requested);
                passed.extend_from_slice(&[0]);
                answers.push(Answer::Theirs(Some(requested)));
            } else {
                passed.extend_from_slice(&[requested]);
                answers.push(Answer::Theirs(None));
            }
        }
        if answers.is_empty() {
            return Err(End::Violation(Violation(
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]".into(),
            )));
        }
        let unchanged = answers.iter().all(|a| matches!(a, Answer::Theirs(None)));
        let all_ours = answers.iter().all(|a| matches!(a, Answer::Ours(_)));
        if unchanged {
            state.to_upstream.push(frame.bytes.freeze());
        } else if all_ours {
            let mut body = packet_id.to_be_bytes().to_vec();
            body.extend(answers.iter().map(|_| SUBACK_FAILURE));
            state.to_client.push(wire::packet(kind::SUBACK << 4, &body));
        } else {
            state
                .to_upstream
                .push(wire::packet(kind::SUBSCRIBE << 4 | 0b0010, &passed));
            state.subacks.push(PendingSuback { packet_id, answers });
        }
        Ok(())
    }

    /// UNSUBSCRIBE (spec §3.10): filters checked; `$` filters, which no
    /// subscription can hold here, are left out of what rumqttd sees.
    fn unsubscribe(&self, state: &mut State, frame: Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "UNSUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut count = 0;
        let mut passed = BytesMut::new();
        passed.extend_from_slice(&packet_id.to_be_bytes());
        let mut kept = 0;
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            count += 1;
            state.subs.remove(filter);
            if !filter.starts_with('$') || filter.starts_with("$share/") {
                wire::put_string(&mut passed, filter.as_bytes());
                kept += 1;
            }
        }
        if count == 0 {
            return Err(End::Violation(Violation(
                "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]".into(),
            )));
        }
        if kept == count {
            state.to_upstream.push(frame.bytes.freeze());
        } else if kept == 0 {
            let ack = wire::ack(kind::UNSUBACK, packet_id);
            state.to_client.push(Bytes::copy_from_slice(&ack));
        } else {
            state
                .to_upstream
                .push(wire::packet(kind::UNSUBSCRIBE << 4 | 0b0010, &passed));
        }
        Ok(())
    }

    /// Reads what rumqttd sent and handles each whole packet.
    fn read_upstream_side(&self, state: &mut State) -> Result<(), End> {
        if state.to_client.is_empty() {
            // Nothing was waiting for the client: it is not behind.
            state.pressure.caught_up();
        }
        let Some(upstream) = &state.upstream else {
            return Ok(());
        };
        match read_some(upstream, &mut state.from_upstream) {
            Ok(0) => return Err(End::UpstreamGone),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(End::UpstreamGone),
        }
        loop {
            // rumqttd's packets are bounded by the same limit as ours.
            let frame = match wire::next_frame(&mut state.from_upstream, usize::MAX) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return Err(End::UpstreamGone),
            };
            self.upstream_packet(state, frame);
        }
        release_if_empty(&mut state.from_upstream);
        Ok(())
    }

    /// One packet from rumqttd, on its way to the client.
    fn upstream_packet(&self, state: &mut State, mut frame: Frame) {
        match frame.kind {
            // rumqttd answers pings in order: ours first, as we sent them.
            kind::PINGRESP if state.own_pings > 0 => state.own_pings -= 1,
            kind::SUBACK => {
                let packet_id = packet_id_of(&frame);
                match state.subacks.iter().position(|p| p.packet_id == packet_id) {
                    Some(index) => {
                        let pending = state.subacks.swap_remove(index);
                        let mut granted = frame.body().iter().skip(2).copied();
                        let mut body = packet_id.to_be_bytes().to_vec();
                        for answer in pending.answers {
                            body.push(match answer {
                                Answer::Ours(code) => code,
                                Answer::Theirs(grant) => match granted.next() {
                                    Some(code) if code & SUBACK_FAILURE == 0 => {
                                        grant.unwrap_or(code)
                                    }
                                    _ => SUBACK_FAILURE,
                                },
                            });
                        }
                        state.to_client.push(wire::packet(kind::SUBACK << 4, &body));
                    }
                    None => state.to_client.push(frame.bytes.freeze()),
                }
            }
            kind::PUBLISH if self.own_acks && frame.qos() > 0 => {
                // Acknowledge rumqttd now: the message is ours to deliver.
                let Some(offset) = publish_id_offset(&frame) else {
                    return;
                };
                let upstream_id =
                    u16::from_be_bytes([frame.bytes[offset], frame.bytes[offset + 1]]);
                let answer = if frame.qos() == 1 {
                    kind::PUBACK
                } else {
                    kind::PUBREC
                };
                state
                    .to_upstream
                    .push(Bytes::copy_from_slice(&wire::ack(answer, upstream_id)));
                if self.must_drop(state, frame.bytes.len()) {
                    self.drop_message(state);
                    return;
                }
                let Some(id) = state.ids.take() else {
                    self.drop_message(state);
                    return;
                };
                frame.bytes[offset..offset + 2].copy_from_slice(&id.to_be_bytes());
                state.to_client.push(frame.bytes.freeze());
            }
            // A clean session's delivery, at QoS 0 from rumqttd: we deliver
            // it at the QoS the client subscribed with.
            kind::PUBLISH if self.own_acks => {
                if self.must_drop(state, frame.bytes.len()) {
                    self.drop_message(state);
                    return;
                }
                match subscriptions::topic_of(&frame) {
                    topic if state.subs.qos_for(topic) > 0 => {
                        let qos = state.subs.qos_for(topic);
                        let Some(id) = state.ids.take() else {
                            self.drop_message(state);
                            return;
                        };
                        state.to_client.push(subscriptions::at_qos(&frame, qos, id));
                    }
                    _ => state.to_client.push(frame.bytes.freeze()),
                }
            }
            kind::PUBLISH => state.to_client.push(frame.bytes.freeze()),
            // The second half of rumqttd's QoS 2 delivery, acknowledged by
            // us: the client's half runs with our packet ids.
            kind::PUBREL if self.own_acks => {
                let ack = wire::ack(kind::PUBCOMP, packet_id_of(&frame));
                state.to_upstream.push(Bytes::copy_from_slice(&ack));
            }
            _ => state.to_client.push(frame.bytes.freeze()),
        }
    }

    /// Whether a message of `bytes` must be dropped: the client's queue is
    /// full and the client has stopped reading. A client that is reading
    /// takes it even over the limit (by at most one read from rumqttd, since
    /// a full queue stops those reads), and publishers wait for it.
    fn must_drop(&self, state: &State, bytes: usize) -> bool {
        state.to_client.bytes + bytes > self.limits.max_queued_bytes
            && state.pressure.stalled(Instant::now())
    }

    /// Counts a message the client's full queue had no room for, and says so
    /// in the log at most once a second per client.
    fn drop_message(&self, state: &mut State) {
        state.dropped += 1;
        let now = Instant::now();
        if state
            .dropped_logged
            .is_none_or(|at| now >= at + Duration::from_secs(1))
        {
            warn!(
                client = self.name,
                dropped = state.dropped,
                queued_bytes = state.to_client.bytes,
                "client is not reading: its queue is full (--max-queued-bytes), messages dropped"
            );
            state.dropped = 0;
            state.dropped_logged = Some(now);
        }
    }
}

/// Resolves when `stream` can be read; never, without a stream.
async fn readable(stream: Option<&TcpStream>) -> io::Result<()> {
    match stream {
        Some(stream) => stream.readable().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `stream` can be written; never, without a stream.
async fn writable(stream: Option<&TcpStream>) -> io::Result<()> {
    match stream {
        Some(stream) => stream.writable().await,
        None => std::future::pending().await,
    }
}

/// Reads what the socket has now (up to [`READ_PER_TURN`] bytes) into
/// `buffer`. `Ok(0)` is the end of the stream.
fn read_some(stream: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
    let mut total = 0;
    while total < READ_PER_TURN {
        buffer.reserve(8 * 1024);
        match stream.try_read_buf(buffer) {
            Ok(0) if total == 0 => return Ok(0),
            Ok(0) => break,
            Ok(n) => total += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(total)
}

/// An idle buffer holds no memory.
fn release_if_empty(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

/// The packet id of a PUBACK, PUBREC, PUBREL or PUBCOMP, whose body must be
/// exactly that id (spec §3.4-3.7).
fn only_packet_id(frame: &Frame) -> Result<u16, End> {
    match frame.body() {
        &[high, low] => Ok(u16::from_be_bytes([high, low])),
        _ => Err(End::Violation(Violation(format!(
            "packet type {} with a body of {} bytes, not 2",
            frame.kind,
            frame.body().len()
        )))),
    }
}

fn nonzero_packet_id(reader: &mut Reader<'_>) -> Result<u16, End> {
    match reader.u16().map_err(End::Violation)? {
        0 => Err(End::Violation(Violation(
            "packet id 0 [MQTT-2.3.1-1]".into(),
        ))),
        id => Ok(id),
    }
}

fn empty_body(frame: &Frame) -> Result<(), End> {
    if frame.body().is_empty() {
        Ok(())
    } else {
        Err(End::Violation(Violation(format!(
            "packet type {} must have no body",
            frame.kind
        ))))
    }
}

/// The first two body bytes (rumqttd's packets are well formed).
fn packet_id_of(frame: &Frame) -> u16 {
    match frame.body() {
        [high, low, ..] => u16::from_be_bytes([*high, *low]),
        _ => 0,
    }
}

/// Where a QoS 1 or 2 PUBLISH keeps its packet id: right after the topic.
fn publish_id_offset(frame: &Frame) -> Option<usize> {
    let body = frame.body();
    let topic_length = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    let offset = frame.body_start + 2 + topic_length;
    (offset + 2 <= frame.bytes.len()).then_some(offset)
}
