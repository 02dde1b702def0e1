//! How a connection ends: keep-alive [MQTT-3.1.2-24], the reasons and
//! their log lines, the last will (spec §3.1.2.5), and what a persistent
//! session keeps.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::Packet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Door;
use super::connect::{Connect, Will};
use super::relay::{Connection, End};
use super::router;
use super::session::{DelayedWill, Session};
use super::topics::ClientKey;
use crate::wire::properties::{allowed, id, put_varint};
use crate::wire::{self, Frame, Reader, Violation, kind};

impl End {
    /// The reason code of the DISCONNECT an MQTT 5 client gets when we
    /// close (spec §3.14.2.1), or `None` where the client left or the
    /// router is gone. `stopping`: the broker is shutting down.
    pub fn reason_code(&self, stopping: bool) -> Option<u8> {
        match self {
            End::Violation(violation) => Some(violation.reason_code),
            // 0x8D Keep Alive timeout.
            End::KeepAliveExpired(_) => Some(0x8D),
            // 0x8B Server shutting down; 0x8E Session taken over.
            End::Kicked if stopping => Some(0x8B),
            End::Kicked => Some(0x8E),
            _ => None,
        }
    }
}

impl Connection<'_> {
    /// An MQTT 5 DISCONNECT (spec §3.14): a reason code (none is 0x00,
    /// Normal disconnection) and properties. Only 0x00 discards the will;
    /// any other code, 0x04 (Disconnect with Will Message) or an error the
    /// client reports, leaves it to be published [MQTT-3.1.2-8,
    /// MQTT-3.1.2-10]. A Session Expiry Interval replaces CONNECT's, but
    /// may not make a session out of one that ended with the connection:
    /// that is DISCONNECT 0x82 [MQTT-3.14.2-2] (and the will goes, as on
    /// any violation).
    pub(super) fn disconnect_v5(&mut self, frame: &Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "DISCONNECT");
        let reason = if reader.is_empty() {
            0
        } else {
            reader.u8().map_err(End::Violation)?
        };
        if !reader.is_empty() {
            let properties = reader
                .properties(allowed::DISCONNECT)
                .map_err(End::Violation)?;
            if let Some(expiry) = properties.u32(id::SESSION_EXPIRY_INTERVAL) {
                if self.session_expiry == 0 && expiry > 0 {
                    return Err(End::Violation(Violation::protocol(
                        "DISCONNECT with a Session Expiry Interval, after CONNECT had none \
                         [MQTT-3.14.2-2]",
                    )));
                }
                self.session_expiry = expiry;
            }
        }
        match reason {
            0x00 => Err(End::Disconnect),
            reason => Err(End::DisconnectWithWill(reason)),
        }
    }

    /// Whether we are not reading the client for now: another client is
    /// congested. Time held is not the client's silence.
    pub(super) fn held(&self) -> bool {
        self.pressure.paused()
    }

    /// When the timer must next look: the client's keep-alive deadline, or
    /// when a congested client that stopped reading must stop holding
    /// publishers.
    pub(super) fn deadline(&self) -> Instant {
        // Nothing to check: look again in a day.
        let mut deadline = Instant::now() + Duration::from_secs(24 * 3600);
        if let Some(grace) = self.grace
            && !self.held()
        {
            deadline = deadline.min(self.last_heard + grace);
        }
        if let Some(check) = self.pressure.next_check() {
            deadline = deadline.min(check);
        }
        deadline
    }

    /// The timer fired: the client's keep-alive may have run out, and a
    /// congested client's standing is looked at again.
    pub(super) fn on_timer(&mut self) -> Result<(), End> {
        if let Some(grace) = self.grace
            && !self.held()
            && Instant::now() >= self.last_heard + grace
        {
            return Err(End::KeepAliveExpired(grace));
        }
        self.update_pressure(false);
        Ok(())
    }

    /// Tells the congestion tracker how much waits for the client, counting
    /// its mailbox, which is on its way here, and whether the client took
    /// any bytes in this turn; and tells the mailbox whether the client is
    /// reading (see `mailbox.rs`).
    pub(super) fn update_pressure(&mut self, progressed: bool) {
        let queued = self.to_client.bytes + self.session.mailbox.bytes();
        self.pressure
            .update(queued, self.limits.max_queued_bytes, progressed);
        self.session
            .mailbox
            .set_reading(!self.pressure.stalled(Instant::now()));
    }
}

impl Door {
    /// After the client's connection has ended with `end`: its will goes
    /// to the router unless it sent DISCONNECT, with what it sent before it
    /// left (a PUBLISH followed at once by DISCONNECT, say); and a clean
    /// session ends, while a persistent one is returned, to keep, with the
    /// seconds it is kept for.
    pub(super) async fn finish(
        &self,
        mut connection: Connection<'_>,
        connect: &Connect,
        end: End,
    ) -> Option<(Session, u32)> {
        let expiry = connection.session_expiry;
        let name = connection.name;
        log_end(name, &end);
        // From now on the session's mailbox keeps what comes for the
        // client's return, within its limit.
        connection.session.mailbox.set_reading(false);
        let will = connect.will.as_ref().filter(|_| end.publishes_will());
        if let Some(will) = will {
            let packet =
                router::for_router(will_packet(will, connect.version, connection.session.key));
            // MQTT 5: a will with a delay waits in the session, if the
            // session outlives the connection; it goes when the delay or
            // the session runs out, whichever comes first.
            if will.delay > 0 && expiry > 0 {
                let wait = will.delay.min(expiry);
                info!(
                    client = name,
                    topic = will.topic,
                    "the client's will goes in {wait} s unless it comes back [MQTT-3.1.3-9]"
                );
                connection.session.will = Some(DelayedWill {
                    packet,
                    due: std::time::Instant::now() + Duration::from_secs(u64::from(wait)),
                });
            } else {
                info!(
                    client = name,
                    topic = will.topic,
                    "publishing the client's will"
                );
                connection.queue_for_router(packet);
            }
        }
        if !matches!(end, End::RouterGone) {
            let _ = connection.hand_over().await;
        }
        if expiry == 0 {
            self.end_session(connection.session);
            None
        } else {
            Some((connection.session, expiry))
        }
    }
}

impl Door {
    /// Hands a will whose delay ran out (or whose session ended) to the
    /// router, on a task of its own: the caller need not wait for room in
    /// the pipe.
    pub(super) fn publish_will(&self, packet: Packet) {
        let router = self.router.clone();
        tokio::spawn(async move {
            let _ = router.hand_over(&mut vec![packet]).await;
        });
    }
}

/// Says in the log how a client's connection ended.
fn log_end(name: &str, end: &End) {
    match end {
        End::Disconnect => info!(client = name, "client disconnected"),
        End::DisconnectWithWill(reason) => info!(
            client = name,
            "client disconnected with reason code {reason:#04x}, not 0x00: its will goes \
             [MQTT-3.1.2-10]"
        ),
        End::ClientGone(None) => info!(client = name, "client closed the connection"),
        End::ClientGone(Some(error)) => info!(client = name, %error, "client connection failed"),
        End::Violation(violation) => warn!(client = name, "closing the connection: {violation}"),
        End::KeepAliveExpired(grace) => warn!(
            client = name,
            "closing the connection: nothing from the client for {grace:?}, 1.5 x its keep-alive [MQTT-3.1.2-24]"
        ),
        End::Kicked => info!(
            client = name,
            "closing the connection: taken over, or the broker stops"
        ),
        End::RouterGone => warn!(client = name, "the router dropped the client"),
    }
}

/// The will as the PUBLISH packet its client could have sent (spec
/// §3.1.2.5), to go the way every PUBLISH goes (see `publish.rs`).
fn will_packet(will: &Will, version: u8, publisher: ClientKey) -> Bytes {
    let flags = will.qos << 1 | u8::from(will.retain);
    let mut body = BytesMut::with_capacity(will.topic.len() + will.payload.len() + 16);
    if version == wire::V5 {
        body.put_u64(publisher);
    }
    wire::put_string(&mut body, will.topic.as_bytes());
    if will.qos > 0 {
        // Any packet id will do: the dispatcher does not read it.
        body.put_u16(1);
    }
    if version == wire::V5 {
        // An MQTT 5 will carries the properties its CONNECT gave it, in the
        // layout the dispatcher reads for MQTT 5 messages (`router.rs`).
        let mut length = Vec::new();
        put_varint(&mut length, will.properties.len());
        body.put_slice(&length);
        body.put_slice(&will.properties);
        body.put_slice(&will.payload);
        return wire::packet(router::V5_LAYOUT << 4 | flags, &body);
    }
    body.put_slice(&will.payload);
    wire::packet(kind::PUBLISH << 4 | flags, &body)
}
