//! PUBLISH and its acknowledgements, both ways.
//!
//! **From a client.** A PUBLISH is checked, handed to the router as it
//! came, and acknowledged at once: PUBACK for QoS 1, PUBREC for QoS 2 (whose
//! PUBREL we answer with PUBCOMP). The router is in this process and takes
//! every packet handed to it, so "acknowledged" means the broker has the
//! message [MQTT-4.3.2-2, MQTT-4.3.3-2]. The router carries the client's
//! PUBLISH, bytes and all, as the payload of a QoS 0 message of its own on
//! one topic, to the dispatcher (`dispatch.rs`), which routes it: so the
//! router never waits for an acknowledgement, and keeps nothing per topic.
//!
//! **To a client.** `deliver.rs` writes each message from the client's
//! mailbox; its acknowledgements come back here.

use bytes::Bytes;
use rumqttd::protocol::Packet;
use tracing::info;

use super::acl;
use super::carry;
use super::relay::{Connection, End};
use super::router;
use super::session::Stage;
use super::sys::Stats;
use crate::wire::properties::{allowed, id};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// Payloads up to this many bytes are copied: into the client's queue with
/// the packets around them (see `relay/buffers.rs`), and when a PUBLISH is
/// handed to the router, into bytes of its own (see [`own_bytes`]).
pub(super) const COPY_UP_TO: usize = 2048;

/// MQTT 5's PUBACK and PUBREC 0x10: the message was accepted, and no
/// session subscribed to its topic (spec §3.4.2.1).
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;

/// MQTT 5's PUBACK and PUBREC 0x87, Not authorized (spec §3.4.2.1).
const NOT_AUTHORIZED: u8 = 0x87;

impl Connection<'_> {
    /// A PUBLISH from the client (spec §3.3).
    pub(super) fn publish(&mut self, frame: Frame) -> Result<(), End> {
        Stats::add(&self.shared.stats.publish_received, 1);
        let qos = frame.qos();
        let retain = frame.flags & 1 != 0;
        let mut reader = Reader::new(frame.body(), "PUBLISH");
        let topic = reader.string("the topic name").map_err(End::Violation)?;
        let id = match qos {
            0 => 0,
            _ => match reader.u16().map_err(End::Violation)? {
                0 => {
                    return Err(End::Violation(Violation::protocol(
                        "PUBLISH with packet id 0 [MQTT-2.3.1-1]",
                    )));
                }
                id => id,
            },
        };
        // [MQTT-4.3.3-2]: a QoS 2 PUBLISH again with an id we have not seen
        // released is the same message: acknowledge it, pass it on once.
        if qos == 2 && self.session.awaiting_pubrel.contains(&id) {
            self.to_client.copy(&[&wire::ack(kind::PUBREC, id)]);
            return Ok(());
        }
        // MQTT 5's acknowledgement can say that nobody subscribed (0x10,
        // spec §3.4.2.1); 0x00 is Success.
        let mut reason = 0x00;
        // Whether the ACL lets the client write this topic (`acl.rs`).
        let allowed;
        let packet = if self.version == wire::V5 {
            let properties = reader
                .properties(allowed::PUBLISH)
                .map_err(End::Violation)?;
            if properties.get(id::SUBSCRIPTION_IDENTIFIER).is_some() {
                return Err(End::Violation(Violation::protocol(
                    "a PUBLISH from the client with a Subscription Identifier [MQTT-3.3.4-6]",
                )));
            }
            let topic = self.resolve_alias(topic, &properties)?;
            allowed = self.may_publish(&topic);
            if !allowed {
                self.log_denial(&topic);
                reason = NOT_AUTHORIZED;
            } else if qos > 0 && !self.shared.table().any_subscriber(&topic) {
                reason = NO_MATCHING_SUBSCRIBERS;
            }
            carry::v5_layout(
                self.session.key,
                &frame,
                &topic,
                id,
                &properties,
                reader.rest(),
            )
        } else {
            wire::check_topic_name(topic).map_err(End::Violation)?;
            allowed = self.may_publish(topic);
            if !allowed {
                self.log_denial(topic);
            }
            own_bytes(frame, retain)
        };
        // Denied: the message goes nowhere. MQTT 5 says so in the
        // acknowledgement (0x87, Not authorized); 3.1.1 cannot, and its
        // client gets the usual one, as Mosquitto's does.
        if !allowed {
            match qos {
                1 => self.acknowledge(kind::PUBACK, id, reason),
                2 => self.acknowledge(kind::PUBREC, id, reason),
                _ => {}
            }
            return Ok(());
        }
        if qos == 2 {
            self.session.awaiting_pubrel.insert(id);
        }
        self.queue_for_router(router::for_router(packet));
        match qos {
            1 => self.acknowledge(kind::PUBACK, id, reason),
            2 => self.acknowledge(kind::PUBREC, id, reason),
            _ => {}
        }
        Ok(())
    }

    /// Whether the client may publish to `topic` ([`acl::may_publish`]).
    fn may_publish(&self, topic: &str) -> bool {
        acl::may_publish(self.acl, self.username, self.name, topic)
    }

    /// Logs the first PUBLISH the ACL denies this client; later ones are
    /// not logged, so that a client cannot flood the log.
    fn log_denial(&mut self, topic: &str) {
        if !self.denial_logged {
            self.denial_logged = true;
            info!(
                client = self.name,
                topic,
                "the client may not publish to this topic ($SYS/, or the ACL): dropped \
                 (further denials are not logged)"
            );
        }
    }

    /// Queues PUBACK or PUBREC for packet `id`: with MQTT 5, a reason code
    /// other than 0x00 goes in a third byte (spec §3.4.2); otherwise the
    /// two-byte form that both versions share.
    fn acknowledge(&mut self, kind: u8, id: u16, reason: u8) {
        let [high, low] = id.to_be_bytes();
        if reason == 0 {
            self.to_client.copy(&[&wire::ack(kind, id)]);
        } else {
            self.to_client.copy(&[&[kind << 4, 3, high, low, reason]]);
        }
    }

    /// Queues a message for the router (see [`super::router::for_router`]);
    /// [`Connection::hand_over`] hands it over.
    pub(super) fn queue_for_router(&mut self, packet: Packet) {
        self.for_router.push(packet);
    }

    /// Hands the messages of this turn to the router
    /// ([`super::router::Router::hand_over`]): while the broker has no room
    /// for them, we wait, and the client is not read meanwhile, so a
    /// publisher faster than the broker routes is slowed by TCP's flow
    /// control.
    pub(super) async fn hand_over(&mut self) -> Result<(), End> {
        self.router
            .hand_over(&mut self.for_router)
            .await
            .map_err(|_| End::RouterGone)
    }

    /// PUBACK, PUBREC and PUBCOMP for our deliveries, PUBREL for the
    /// client's QoS 2 PUBLISHes (spec §3.4-3.7).
    pub(super) fn acknowledgement(&mut self, frame: &Frame) -> Result<(), End> {
        let (id, reason) = match frame.body() {
            &[high, low] => (u16::from_be_bytes([high, low]), 0),
            // MQTT 5 adds a reason code and properties, both optional
            // (spec §3.4.2): read to check them.
            &[high, low, ref rest @ ..] if self.version == wire::V5 => {
                let mut reader = Reader::new(rest, "acknowledgement");
                let reason = reader.u8().map_err(End::Violation)?;
                if !reader.is_empty() {
                    reader.properties(allowed::ACK).map_err(End::Violation)?;
                }
                (u16::from_be_bytes([high, low]), reason)
            }
            body => {
                return Err(End::Violation(Violation::malformed(format!(
                    "packet type {} with a body of {} bytes, not 2",
                    frame.kind,
                    body.len()
                ))));
            }
        };
        match frame.kind {
            kind::PUBACK => {
                self.session.done(id, Stage::AwaitingPuback);
            }
            kind::PUBREC if reason >= 0x80 => {
                // MQTT 5: a PUBREC with a failure code ends the exchange;
                // no PUBREL follows (spec §4.3.3).
                self.session.done(id, Stage::AwaitingPubrec);
            }
            kind::PUBREC => {
                // [MQTT-4.3.3-1]: the sender answers PUBREC with PUBREL.
                self.session.received(id);
                self.to_client.copy(&[&wire::ack(kind::PUBREL, id)]);
            }
            kind::PUBCOMP => {
                self.session.done(id, Stage::AwaitingPubcomp);
            }
            _ => {
                // PUBREL: the message was passed on with its PUBLISH; the
                // id is free again [MQTT-4.3.3-2], and PUBREL always gets
                // PUBCOMP, also for an id we do not know (after a restart).
                self.session.awaiting_pubrel.remove(&id);
                self.to_client.copy(&[&wire::ack(kind::PUBCOMP, id)]);
            }
        }
        // An acknowledgement may make room under the client's Receive
        // Maximum (`publish5.rs`).
        self.release_waiting();
        Ok(())
    }
}

/// The PUBLISH in `frame` as bytes of its own, to hand to the router: the
/// mailboxes and the retained messages keep what it hands on, and a slice of
/// the buffer the packet was read into would keep all of that buffer alive
/// with it. So a short message, or a retained one (kept until it is
/// replaced), is copied; a long one, which fills most of its buffer anyway,
/// is not.
fn own_bytes(frame: Frame, retain: bool) -> Bytes {
    if retain || frame.bytes.len() <= COPY_UP_TO {
        Bytes::copy_from_slice(&frame.bytes)
    } else {
        frame.bytes.freeze()
    }
}
