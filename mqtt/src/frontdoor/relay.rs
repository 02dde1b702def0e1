//! One client after its CONNACK: the loop that carries its packets to the
//! router and the messages routed to it back.
//!
//! Each turn waits for whichever comes first: bytes from the client,
//! messages in its mailbox (`mailbox.rs`), room in the client's socket, a
//! change in the broker's congestion, or the timer (keep-alive). Then it
//! works: whole packets are cut from what the client sent and handled
//! (`publish.rs`, `subscribe.rs`), the messages they carry are handed to the
//! router (`Router::hand_over`, which waits only while the broker has no
//! room for them), and what is queued for the client is written as far as
//! its socket takes it.
//! Messages wait in the mailbox and then, encoded, in the client's queue,
//! both bounded by `--max-queued-bytes` (`super::congestion` says what
//! happens when they fill).
//!
//! Reading and writing the socket is in `relay/socket.rs`; with TLS,
//! `relay/tls.rs` decrypts and encrypts on the way, and over WebSocket
//! `relay/websocket.rs` unwraps and wraps messages, and the packets are the
//! same.

pub(crate) mod buffers;
mod parts;
mod socket;
pub mod tls;
pub mod websocket;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::Packet;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::acl::{Acl, Want};
use super::aliases::OutgoingAliases;
use super::congestion::Pressure;
use super::dispatch::Shared;
use super::mailbox::{Delivery, Mailbox};
use super::router::Router;
use super::session::Session;
use crate::wire::{self, Frame, Violation, kind};
use buffers::Outbox;
pub use parts::Parts;
pub use socket::Layer;

/// At most this many bytes read from one socket per turn, so one busy
/// client cannot hold its connection's loop.
const READ_PER_TURN: usize = 64 * 1024;

/// At most this many messages taken from the mailbox per turn.
const TAKE_PER_TURN: usize = 256;

/// How a client's connection ended.
#[derive(Debug)]
pub enum End {
    /// The client sent DISCONNECT: its will is discarded [MQTT-3.1.2-10].
    Disconnect,
    /// An MQTT 5 client sent DISCONNECT with a reason code other than
    /// 0x00, such as 0x04, Disconnect with Will Message: the will is
    /// published all the same [MQTT-3.1.2-8, MQTT-3.1.2-10].
    DisconnectWithWill(u8),
    /// The client closed the connection, or it failed.
    ClientGone(Option<io::Error>),
    /// The client broke the protocol: we closed [MQTT-4.8.0-1].
    Violation(Violation),
    /// Nothing from the client for 1.5 x its keep-alive [MQTT-3.1.2-24].
    KeepAliveExpired(Duration),
    /// Another connection with the same client id [MQTT-3.1.4-2], or the
    /// broker is stopping.
    Kicked,
    /// The router has stopped.
    RouterGone,
}

impl End {
    /// Whether the client's will is published (spec §3.1.2.5: on every
    /// close but one that follows DISCONNECT).
    pub fn publishes_will(&self) -> bool {
        !matches!(self, End::Disconnect)
    }
}

/// The limits every connection keeps to.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest packet accepted from the client, in bytes of remaining length.
    pub max_packet_bytes: usize,
    /// Bytes queued for one client at most; see [`super::congestion`].
    pub max_queued_bytes: usize,
    /// Subscriptions one client may hold; a SUBSCRIBE past it gets the
    /// failure code 0x80 for each new filter (`subscribe.rs`).
    pub max_subscriptions: usize,
    /// `--max-keep-alive`: the longest keep-alive an MQTT 5 client may
    /// use, in seconds (see `connack.rs`); `None` for no limit.
    pub max_keep_alive: Option<u16>,
}

/// One client's connection, from its CONNACK to its end: its socket, its
/// session, and the queues between it and the router.
#[derive(Debug)]
pub struct Connection<'a> {
    /// The client's socket; with TLS, what crosses it is encrypted, and
    /// over WebSocket wrapped in messages: `layer` undoes either.
    socket: &'a TcpStream,
    layer: Layer,
    pub(super) router: &'a Router,
    /// The broker's table of subscriptions and mailboxes (`dispatch.rs`).
    pub(super) shared: &'a Shared,
    pub(super) limits: &'a Limits,
    /// The client id, for log lines.
    pub name: &'a str,
    /// The user name it logged in with, and the ACL that says what it may
    /// read and write (`acl.rs`); without one, everything.
    pub(super) username: Option<&'a str>,
    pub(super) acl: Option<&'a Acl>,
    /// Whether a denied PUBLISH was logged already (once per connection).
    pub(super) denial_logged: bool,
    /// Clean session: nothing outlives the connection.
    pub clean_session: bool,
    /// How long the session outlives the connection, in seconds (MQTT 5's
    /// Session Expiry Interval; for 3.1.1, 0 or for ever): from CONNECT, or
    /// from an MQTT 5 DISCONNECT that changes it (spec §3.14.2.2.2).
    pub session_expiry: u32,
    /// The client's protocol level: 3, 4 or 5 ([`wire::V5`]).
    pub version: u8,
    /// MQTT 5: the largest packet the client takes, in bytes; a message
    /// that would make a larger PUBLISH is not sent to it [MQTT-3.1.2-25].
    pub(super) max_packet_size: Option<u32>,
    /// MQTT 5: the topic aliases the client set up, alias to topic name
    /// (spec §3.3.2.3.4), at most [`super::aliases::TOPIC_ALIAS_MAXIMUM`].
    pub(super) aliases: HashMap<u16, Box<str>>,
    /// MQTT 5: the topic aliases we set up towards the client.
    pub(super) outgoing_aliases: OutgoingAliases,
    /// MQTT 5: how many QoS 1 and 2 deliveries the client takes before it
    /// acknowledges them (Receive Maximum; 65,535 for 3.1.1).
    pub(super) receive_maximum: u16,
    /// Deliveries waiting for room under `receive_maximum`, in order
    /// (`publish5.rs`).
    pub(super) waiting: VecDeque<Delivery>,
    /// 1.5 x the client's keep-alive, or `None` for keep-alive 0.
    pub(super) grace: Option<Duration>,
    /// Messages for the router from this turn (see
    /// [`Connection::hand_over`]).
    pub(super) for_router: Vec<Packet>,
    pub session: Session,
    from_client: BytesMut,
    pub(super) to_client: Outbox,
    /// Messages taken from the mailbox, on their way into `to_client`.
    deliveries: Vec<Delivery>,
    pub(super) last_heard: Instant,
    pub(super) pressure: Pressure,
    /// Messages dropped for this client since the last log line about it.
    pub(super) dropped: u64,
    pub(super) dropped_logged: Option<Instant>,
}

impl<'a> Connection<'a> {
    /// Whether the ACL lets this client have `want` on `topic` (always,
    /// without an ACL).
    pub(super) fn may(&self, topic: &str, want: Want) -> bool {
        self.acl
            .is_none_or(|acl| acl.allows(self.username, self.name, topic, want))
    }

    /// Queues bytes for the client (CONNACK, or what a kept session sends
    /// again); they go out on the first turn.
    pub fn queue(&mut self, bytes: Bytes) {
        self.to_client.push(bytes);
    }

    /// Serves the client until either side ends or `kick` is cancelled, and
    /// returns how it ended. `early` holds bytes the client sent right after
    /// its CONNECT; `stop` is cancelled when the broker stops. At the end,
    /// an MQTT 5 client that we close on is told why, in a DISCONNECT
    /// (spec §3.14), a TLS client is sent `close_notify`, and a WebSocket
    /// client a Close frame, whose answer we wait for (at most
    /// `networking_protocols::LINGER`).
    pub async fn run(
        &mut self,
        early: BytesMut,
        kick: &CancellationToken,
        stop: &CancellationToken,
    ) -> End {
        self.from_client = early;
        let end = self.serve(kick).await;
        if self.version == wire::V5
            && let Some(code) = end.reason_code(stop.is_cancelled())
        {
            // As much as the socket takes now: the connection closes anyway.
            self.to_client.copy(&[&wire::disconnect_v5(code)]);
            let _ = self.write_client();
        }
        match &mut self.layer {
            Layer::Plain => {}
            Layer::Tls(tls) => tls.close(self.socket),
            // A connection taken over, or closed as the broker stops, does
            // not wait for an answer: its successor (or the stop) would.
            Layer::WebSocket(ws) => {
                let wait = match end {
                    End::Kicked => std::time::Duration::ZERO,
                    _ => networking_protocols::LINGER,
                };
                ws.close(self.socket, wait).await;
            }
        }
        end
    }

    async fn serve(&mut self, kick: &CancellationToken) -> End {
        let mut first = self.client_packets();
        // rustls may hold more that it decrypted while the CONNECT was read,
        // and tungstenite more that it read ahead, which the socket will not
        // announce again.
        if first.is_ok() && !matches!(self.layer, Layer::Plain) {
            first = self.read_client();
        }
        if let Err(end) = self.settle(first).await {
            return end;
        }
        let timer = tokio::time::sleep_until(self.deadline());
        tokio::pin!(timer);
        loop {
            let paused = self.pressure.paused();
            let read_client = !self.held();
            // A full queue to the client leaves messages in the mailbox,
            // except for a client that is not reading at all: then we keep
            // taking, and what does not fit is dropped (see
            // `super::congestion`).
            let take = self.waiting.is_empty()
                && (self.to_client.bytes < self.limits.max_queued_bytes
                    || self.pressure.stalled(Instant::now()));
            let mailbox = self.session.mailbox.clone();
            let write_client = !self.to_client.is_empty() || self.layer.wants_write();
            let turn = tokio::select! {
                () = kick.cancelled() => Err(End::Kicked),
                ready = self.socket.readable(), if read_client => match ready {
                    Ok(()) => self.read_client(),
                    Err(error) => Err(End::ClientGone(Some(error))),
                },
                () = mailbox.arrived(), if take => {
                    self.deliver_from(&mailbox);
                    Ok(())
                }
                ready = self.socket.writable(), if write_client => match ready {
                    Ok(()) => Ok(()),
                    Err(error) => Err(End::ClientGone(Some(error))),
                },
                () = self.pressure.changed(), if paused => {
                    // Time spent paused is not the client's silence.
                    self.last_heard = Instant::now();
                    Ok(())
                }
                () = &mut timer => self.on_timer(),
            };
            if let Err(end) = self.settle(turn).await {
                return end;
            }
            timer.as_mut().reset(self.deadline());
        }
    }

    /// After a turn: hands the router what the client sent, and writes
    /// what is queued for the client.
    async fn settle(&mut self, turn: Result<(), End>) -> Result<(), End> {
        turn?;
        self.hand_over().await?;
        self.write_client()
    }

    /// One packet from the client: check it, then act on it, or end the
    /// connection. Each exchange has its own file.
    fn client_packet(&mut self, frame: Frame) -> Result<(), End> {
        wire::check_flags(&frame).map_err(End::Violation)?;
        match frame.kind {
            kind::PUBLISH => self.publish(frame),
            kind::PUBACK | kind::PUBREC | kind::PUBREL | kind::PUBCOMP => {
                self.acknowledgement(&frame)
            }
            kind::SUBSCRIBE => self.subscribe(&frame),
            kind::UNSUBSCRIBE => self.unsubscribe(&frame),
            kind::PINGREQ => {
                // [MQTT-3.12.4-1]: the server answers PINGREQ with PINGRESP.
                empty_body(&frame)?;
                self.to_client.push(Bytes::from_static(&wire::PINGRESP));
                Ok(())
            }
            kind::DISCONNECT if self.version == wire::V5 => self.disconnect_v5(&frame),
            kind::DISCONNECT => {
                empty_body(&frame)?;
                Err(End::Disconnect)
            }
            kind::CONNECT => Err(End::Violation(Violation::protocol(
                "a second CONNECT [MQTT-3.1.0-2]",
            ))),
            other => Err(End::Violation(Violation::protocol(format!(
                "packet type {other} is not one a client sends"
            )))),
        }
    }
}

impl Connection<'_> {
    /// Moves a batch of messages from the mailbox into the client's queue.
    fn deliver_from(&mut self, mailbox: &Mailbox) {
        let mut deliveries = std::mem::take(&mut self.deliveries);
        mailbox.take(TAKE_PER_TURN, &mut deliveries);
        for delivery in deliveries.drain(..) {
            self.deliver_or_wait(delivery);
        }
        self.deliveries = deliveries;
    }
}

/// A packet whose body must be empty (PINGREQ, DISCONNECT).
fn empty_body(frame: &Frame) -> Result<(), End> {
    if frame.body().is_empty() {
        Ok(())
    } else {
        Err(End::Violation(Violation::malformed(format!(
            "packet type {} must have no body",
            frame.kind
        ))))
    }
}
