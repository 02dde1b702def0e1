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
//! - it holds a QoS 0 publisher to rumqttd's pace with more such PINGREQs
//!   (see `SYNC_BYTES`);
//! - it answers SUBSCRIBE to `$` filters (`$SYS/#`) with a failure code,
//!   because rumqttd would close the connection for them;
//! - for clean sessions, it subscribes at QoS 0 for the client and delivers
//!   each message at the client's QoS itself, with its own packet ids, so a
//!   client is never limited by rumqttd's window of 100 unacknowledged
//!   messages (see [`super::subscriptions`] and [`super::congestion`] for why
//!   that matters).
//!
//! This file is the loop and rumqttd's side; `relay/client.rs` checks the
//! client's packets, `relay/buffers.rs` holds the queues, and `relay/tls.rs`
//! decrypts and encrypts a TLS client's bytes on their way.

mod buffers;
mod client;
pub mod tls;

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::congestion::{Congestion, Pressure};
use super::subscriptions::{self, Subscriptions};
use crate::wire::{self, Frame, Violation, kind};
use buffers::{Outbox, PacketIds, read_some, readable, release_if_empty, writable};
use client::{Answer, PendingSuback, SUBACK_FAILURE};
use tls::TlsSession;

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

/// QoS 0 PUBLISH bytes after which we send rumqttd a PINGREQ of our own, and
/// how many of those may be unanswered before we stop reading the client.
///
/// rumqttd's router reads every connection as fast as it can and appends
/// each message to its topic filters' logs; it forwards to subscribers in
/// between. A QoS 1 or 2 publisher waits for acknowledgements, which the
/// router sends once it has taken a message, so it cannot get far ahead of
/// the router. A QoS 0 publisher waits for nothing: it could fill a log
/// faster than the router forwards it, and a subscriber that falls 32 MiB
/// behind loses messages (see `broker.rs`). The router answers a PINGREQ
/// in order with the packets before it, so an answered PINGREQ says that
/// rumqttd has taken everything we sent before it: a QoS 0 publisher gets
/// at most about `SYNC_BYTES * SYNCS_IN_FLIGHT` ahead of the router.
const SYNC_BYTES: usize = 256 * 1024;
const SYNCS_IN_FLIGHT: u32 = 2;

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
    /// The client's socket; with TLS, what crosses it is encrypted, and
    /// `run`'s `tls` session decrypts and encrypts it.
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
    /// The client's TLS session, if it came with TLS.
    tls: Option<TlsSession>,
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
    /// QoS 0 PUBLISH bytes sent towards rumqttd since our last PINGREQ.
    unsynced: usize,
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
    /// `tls` is the client's TLS session if it has one; at the end we try
    /// to send it a `close_notify` (see `TlsSession::close`).
    pub async fn run(
        &self,
        early: BytesMut,
        kick: &CancellationToken,
        upstream: Option<TcpStream>,
        tls: Option<TlsSession>,
    ) -> (End, Vec<Bytes>, Option<TcpStream>) {
        let now = Instant::now();
        let mut state = State {
            tls,
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
            unsynced: 0,
            dropped: 0,
            dropped_logged: None,
        };
        let end = self.relay(&mut state, kick).await;
        if let Some(tls) = &mut state.tls {
            tls.close(self.client);
        }
        (end, state.to_upstream.chunks.into(), state.upstream)
    }

    /// The loop of [`Relay::run`].
    async fn relay(&self, state: &mut State, kick: &CancellationToken) -> End {
        let mut early = self.client_packets(state);
        // rustls may hold more that it decrypted while the CONNECT was read,
        // which the socket will not announce again.
        if early.is_ok() && state.tls.is_some() {
            early = self.read_client(state);
        }
        if let Err(end) = self.settle(early, state).await {
            return end;
        }
        let timer = tokio::time::sleep_until(self.deadline(state));
        tokio::pin!(timer);
        loop {
            // Read from the client unless rumqttd is behind, or another
            // subscriber that is still reading needs publishers to wait.
            let paused = state.pressure.paused();
            let read_client = state.to_upstream.bytes < UPSTREAM_QUEUE_BYTES && !held(state);
            // A full queue to the client holds rumqttd back, except for a
            // client that is not reading at all: then we keep reading, and
            // what does not fit is dropped (see `super::congestion`).
            let read_upstream = state.to_client.bytes < self.limits.max_queued_bytes
                || (self.own_acks && state.pressure.stalled(Instant::now()));
            let write_client = !state.to_client.is_empty()
                || state.tls.as_ref().is_some_and(TlsSession::wants_write);
            let result = tokio::select! {
                () = kick.cancelled() => Err(End::Kicked),
                ready = self.client.readable(), if read_client => match ready {
                    Ok(()) => self.read_client(state),
                    Err(error) => Err(End::ClientGone(Some(error))),
                },
                ready = readable(state.upstream.as_ref()), if read_upstream => match ready {
                    Ok(()) => self.read_upstream_side(state),
                    Err(_) => Err(End::UpstreamGone),
                },
                ready = self.client.writable(), if write_client => match ready {
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
                () = &mut timer => self.on_timer(state),
            };
            if let Err(end) = self.settle(result, state).await {
                return end;
            }
            timer.as_mut().reset(self.deadline(state));
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
            && !held(state)
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
            && !held(state)
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
        let tls_waiting = state.tls.as_ref().is_some_and(TlsSession::wants_write);
        if !state.to_client.is_empty() || tls_waiting {
            let written = match &mut state.tls {
                Some(tls) => tls.write(self.client, &mut state.to_client),
                None => state.to_client.write_to(self.client),
            };
            match written {
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
        let read = match &mut state.tls {
            Some(tls) => tls.read(self.client, &mut state.from_client),
            None => read_some(self.client, &mut state.from_client),
        };
        match read {
            Ok(0) => return Err(End::ClientGone(None)),
            Ok(_) => state.last_heard = Instant::now(),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) => return Err(End::ClientGone(Some(error))),
        }
        self.client_packets(state)
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
            kind::PINGRESP if state.own_pings > 0 => {
                if state.own_pings >= SYNCS_IN_FLIGHT {
                    // We stopped reading the client meanwhile: that time is
                    // not its silence.
                    state.last_heard = Instant::now();
                }
                state.own_pings -= 1;
            }
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

    /// Counts a QoS 0 PUBLISH of `bytes` sent towards rumqttd, and asks
    /// rumqttd for a PINGRESP every [`SYNC_BYTES`] (see there).
    fn count_unacknowledged(&self, state: &mut State, bytes: usize) {
        state.unsynced += bytes;
        if state.unsynced >= SYNC_BYTES {
            state.to_upstream.push(Bytes::from_static(&wire::PINGREQ));
            state.own_pings += 1;
            state.unsynced = 0;
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

/// Whether we are not reading the client for now: another client is
/// congested, or rumqttd has not yet answered our last PINGREQs.
fn held(state: &State) -> bool {
    state.pressure.paused() || state.own_pings >= SYNCS_IN_FLIGHT
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
