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
//! **To a client.** Each message in its mailbox is delivered at the QoS the
//! dispatcher chose (the lower of its publish QoS and the subscription's
//! [MQTT-3.8.4-6]), with a packet id of ours for QoS 1 and 2, and kept in
//! the session until the client acknowledges it.

use std::time::Duration;

use bytes::Bytes;
use rumqttd::protocol::Packet;
use tokio::time::Instant;
use tracing::warn;

use super::mailbox::Delivery;
use super::relay::{Connection, End};
use super::router;
use super::session::Stage;
use super::{carry, expiry};
use crate::wire::properties::{allowed, id, put_varint};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// Payloads up to this many bytes are copied: into the client's queue with
/// the packets around them (see `relay/buffers.rs`), and when a PUBLISH is
/// handed to the router, into bytes of its own (see [`own_bytes`]).
const COPY_UP_TO: usize = 2048;

/// MQTT 5's PUBACK and PUBREC 0x10: the message was accepted, and no
/// session subscribed to its topic (spec §3.4.2.1).
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;

impl Connection<'_> {
    /// A PUBLISH from the client (spec §3.3).
    pub(super) fn publish(&mut self, frame: Frame) -> Result<(), End> {
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
            if qos > 0 && !self.shared.table().any_subscriber(&topic) {
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
            own_bytes(frame, retain)
        };
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

    /// A message from the mailbox: queued for the client at the QoS its
    /// delivery says, or dropped (and counted) if the client has stopped
    /// reading and its queue is full.
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let Delivery {
            message,
            qos,
            retain,
            subscription_ids,
        } = delivery;
        let (topic, payload) = (message.topic, message.payload);
        // A message past its Message Expiry Interval is not sent; one that
        // is carries the seconds it has left (`publish5.rs`).
        let mut properties = message.properties;
        if let Some(expires) = message.expires {
            match expiry::remaining(&properties, expires, std::time::Instant::now()) {
                Some(left) => properties = left,
                None => return,
            }
        }
        // MQTT 5 subscribers get the message's properties, after their
        // length, and the identifiers of the subscriptions that brought it
        // [MQTT-3.3.4-4]; 3.1.1 ones get neither (spec §3.3.2.3).
        let v5 = self.version == wire::V5;
        let mut alias = None;
        if v5 {
            if !subscription_ids.is_empty() {
                properties = with_subscription_ids(properties, &subscription_ids);
            }
            alias = self.outgoing_aliases.lookup(&topic);
        } else {
            properties = Bytes::new();
        }
        // With a topic alias the client knows, the topic name is left out;
        // with a new one, the name goes with the alias that stands for it
        // from now on (spec §3.3.2.3.4, `publish5.rs`).
        let (wire_topic, wire_properties) = match alias {
            Some(alias) => (
                if alias.known {
                    Bytes::new()
                } else {
                    topic.clone()
                },
                with_topic_alias(&properties, alias.number),
            ),
            None => (topic.clone(), properties.clone()),
        };
        let mut properties_length = Vec::new();
        if v5 {
            put_varint(&mut properties_length, wire_properties.len());
        }
        let length = 2
            + wire_topic.len()
            + if qos > 0 { 2 } else { 0 }
            + properties_length.len()
            + wire_properties.len()
            + payload.len();
        let first = kind::PUBLISH << 4 | qos << 1 | u8::from(retain);
        let fixed = wire::fixed_header(first, length);
        // [MQTT-3.1.2-25]: never a packet larger than the client takes; the
        // message is discarded for this client, as if delivered.
        if self
            .max_packet_size
            .is_some_and(|most| fixed.as_slice().len() + length > most as usize)
        {
            return;
        }
        let size = length + fixed.as_slice().len();
        if self.must_drop(size) {
            self.drop_message();
            return;
        }
        let id = if qos > 0 {
            match self.session.next_id() {
                Some(id) => id,
                None => {
                    self.drop_message();
                    return;
                }
            }
        } else {
            0
        };
        if let Some(alias) = alias {
            self.outgoing_aliases.sent(&topic, alias);
        }
        // The fixed header, the topic's length, the packet id and the
        // properties' length are new bytes; topic, properties and payload
        // are the publisher's.
        let topic_length = u16::try_from(wire_topic.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes();
        let id_bytes = id.to_be_bytes();
        let id_part: &[u8] = if qos > 0 { &id_bytes } else { &[] };
        let parts = [
            fixed.as_slice(),
            &topic_length,
            &wire_topic,
            id_part,
            &properties_length,
            &wire_properties,
            &payload,
        ];
        if qos > 0 {
            let stage = if qos == 1 {
                Stage::AwaitingPuback
            } else {
                Stage::AwaitingPubrec
            };
            // A persistent session may have to send it again after a
            // reconnect; a clean one never does. A new connection knows
            // none of this one's aliases [MQTT-3.3.2-7]: what is kept for
            // then has the topic name, and no alias.
            let packet = (!self.clean_session).then(|| match alias {
                None => parts.concat().into(),
                Some(_) => full_publish(first, &topic, id, &properties, &payload),
            });
            self.session.sent(id, stage, packet);
        }
        // A short message is copied in with the others; a long payload goes
        // out as the publisher's bytes, without a copy.
        if payload.len() <= COPY_UP_TO {
            self.to_client.copy(&parts);
        } else {
            self.to_client.copy(&parts[..6]);
            self.to_client.push(payload);
        }
    }
}

impl Connection<'_> {
    /// Whether a message of `bytes` must be dropped: the client's queue is
    /// full and the client has stopped reading. A client that is reading
    /// takes it even over the limit (by at most one batch from the router,
    /// since a full queue stops those), and publishers wait for it.
    pub(super) fn must_drop(&self, bytes: usize) -> bool {
        self.to_client.bytes + bytes > self.limits.max_queued_bytes
            && self.pressure.stalled(Instant::now())
    }

    /// Counts a message the client's full queue had no room for, and says so
    /// in the log at most once a second per client.
    pub(super) fn drop_message(&mut self) {
        self.dropped += 1;
        let now = Instant::now();
        if self
            .dropped_logged
            .is_none_or(|at| now >= at + Duration::from_secs(1))
        {
            warn!(
                client = self.name,
                dropped = self.dropped,
                queued_bytes = self.to_client.bytes,
                "client is not reading: its queue is full (--max-queued-bytes), messages dropped"
            );
            self.dropped = 0;
            self.dropped_logged = Some(now);
        }
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

/// `properties` followed by a Topic Alias (0x23, two bytes).
fn with_topic_alias(properties: &[u8], alias: u16) -> Bytes {
    let mut out = Vec::with_capacity(properties.len() + 3);
    out.extend_from_slice(properties);
    out.push(id::TOPIC_ALIAS);
    out.extend_from_slice(&alias.to_be_bytes());
    Bytes::from(out)
}

/// An MQTT 5 PUBLISH with its topic name, for QoS 1 or 2: what a persistent
/// session keeps to send again on the client's next connection.
fn full_publish(first: u8, topic: &[u8], id: u16, properties: &[u8], payload: &[u8]) -> Bytes {
    let mut properties_length = Vec::new();
    put_varint(&mut properties_length, properties.len());
    let length = 2 + topic.len() + 2 + properties_length.len() + properties.len() + payload.len();
    let topic_length = u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes();
    [
        wire::fixed_header(first, length).as_slice(),
        &topic_length,
        topic,
        &id.to_be_bytes(),
        &properties_length,
        properties,
        payload,
    ]
    .concat()
    .into()
}

/// `properties` followed by one Subscription Identifier (0x0B, a variable
/// byte integer) for each of `ids` (spec §3.3.2.3.8).
fn with_subscription_ids(properties: Bytes, ids: &[u32]) -> Bytes {
    let mut out = Vec::with_capacity(properties.len() + 5 * ids.len());
    out.extend_from_slice(&properties);
    for &id in ids {
        out.push(id::SUBSCRIPTION_IDENTIFIER);
        put_varint(&mut out, id as usize);
    }
    Bytes::from(out)
}
