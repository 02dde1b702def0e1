//! PUBLISH and its acknowledgements, both ways.
//!
//! **From a client.** A PUBLISH is checked, handed to the router at QoS 0,
//! and acknowledged at once: PUBACK for QoS 1, PUBREC for QoS 2 (whose
//! PUBREL we answer with PUBCOMP). The router is in this process and takes
//! every packet handed to it, so "acknowledged" means the broker has the
//! message [MQTT-4.3.2-2, MQTT-4.3.3-2]. What the router does not keep, we
//! put on the message as a *mark*, a user property of MQTT 5 that the router
//! carries along untouched: the QoS it was published at, and whether its
//! payload is empty. (A router that sees an empty payload deletes the
//! topic's retained message, which only a *retained* empty message may do
//! [MQTT-3.3.1-10, MQTT-3.3.1-12]; so a non-retained empty message travels
//! with one byte and the mark, and leaves empty.) The mark's name starts
//! with U+0000, which no client's string may hold [MQTT-1.5.3-2], so no
//! client can forge one, and no client ever sees one.
//!
//! **To a client.** Each message the router forwards is delivered at the
//! lower of its publish QoS and the subscription's [MQTT-3.8.4-6], with a
//! packet id of ours for QoS 1 and 2, and kept in the session until the
//! client acknowledges it.

use std::time::Duration;

use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish, PublishProperties};
use tokio::time::Instant;
use tracing::warn;

use super::relay::{Connection, End};
use super::session::Stage;
use crate::wire::{self, Frame, Reader, Violation, kind};

/// Payloads up to this many bytes are copied into the client's queue with
/// the packets around them (see `relay/buffers.rs`).
const COPY_UP_TO: usize = 2048;

/// The name of our mark (see the module documentation).
const MARK: &str = "\u{0}front-door";

impl Connection<'_> {
    /// A PUBLISH from the client (spec §3.3).
    pub(super) fn publish(&mut self, frame: Frame) -> Result<(), End> {
        let qos = frame.qos();
        let retain = frame.flags & 1 != 0;
        let (topic_length, id) = {
            let mut reader = Reader::new(frame.body(), "PUBLISH");
            let topic = reader.string("the topic name").map_err(End::Violation)?;
            wire::check_topic_name(topic).map_err(End::Violation)?;
            let id = if qos > 0 {
                match reader.u16().map_err(End::Violation)? {
                    0 => {
                        return Err(End::Violation(Violation(
                            "PUBLISH with packet id 0 [MQTT-2.3.1-1]".into(),
                        )));
                    }
                    id => id,
                }
            } else {
                0
            };
            (topic.len(), id)
        };
        // [MQTT-4.3.3-2]: a QoS 2 PUBLISH again with an id we have not seen
        // released is the same message: acknowledge it, pass it on once.
        if qos == 2 && !self.session.awaiting_pubrel.insert(id) {
            self.to_client.copy(&[&wire::ack(kind::PUBREC, id)]);
            return Ok(());
        }
        let size = frame.bytes.len();
        let topic_start = frame.body_start + 2;
        let payload_start = topic_start + topic_length + if qos > 0 { 2 } else { 0 };
        // The router keeps messages in its logs, and retained ones for as
        // long as nobody replaces them: a retained message gets bytes of its
        // own, so that it does not hold on to the whole buffer it was read
        // into.
        let bytes = if retain {
            Bytes::copy_from_slice(&frame.bytes)
        } else {
            frame.bytes.freeze()
        };
        let topic = bytes.slice(topic_start..topic_start + topic_length);
        let mut payload = bytes.slice(payload_start..);
        let empty = payload.is_empty() && !retain;
        if empty {
            payload = Bytes::from_static(b"\0");
        }
        let message = Publish::new(topic, payload, retain);
        self.queue_for_router(Packet::Publish(message, marks(qos, empty)), size);
        match qos {
            1 => self.to_client.copy(&[&wire::ack(kind::PUBACK, id)]),
            2 => self.to_client.copy(&[&wire::ack(kind::PUBREC, id)]),
            _ => {}
        }
        Ok(())
    }

    /// PUBACK, PUBREC and PUBCOMP for our deliveries, PUBREL for the
    /// client's QoS 2 PUBLISHes (spec §3.4-3.7).
    pub(super) fn acknowledgement(&mut self, frame: &Frame) -> Result<(), End> {
        let id = match frame.body() {
            &[high, low] => u16::from_be_bytes([high, low]),
            body => {
                return Err(End::Violation(Violation(format!(
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
        Ok(())
    }

    /// Moves the messages taken from the router into the client's queue.
    pub(super) fn deliver_forwards(&mut self) {
        let mut forwards = std::mem::take(&mut self.forwards);
        for forward in forwards.drain(..) {
            self.deliver(forward);
        }
        self.forwards = forwards;
    }

    /// A message the router forwarded: queued for the client at the lower
    /// of its publish QoS and the subscription's [MQTT-3.8.4-6], or dropped
    /// (and counted) if the client has stopped reading and its queue is
    /// full. Also used when a persistent session ends, to keep what was
    /// still on its way.
    pub(super) fn deliver(&mut self, forward: rumqttd::Forward) {
        let (published_qos, empty) = read_marks(forward.properties.as_ref());
        let qos = published_qos.min(self.subscribed_qos(&forward));
        let retain = forward.publish.retain;
        let topic = forward.publish.topic;
        let payload = if empty {
            Bytes::new()
        } else {
            forward.publish.payload
        };
        let size = topic.len() + payload.len() + 7;
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
        // The fixed header (at most 5 bytes), the topic's length and the
        // packet id are new bytes; topic and payload are the router's.
        let first = kind::PUBLISH << 4 | qos << 1 | u8::from(retain);
        let length = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
        let fixed = wire::fixed_header(first, length);
        let topic_length = u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes();
        let id_bytes = id.to_be_bytes();
        let id_part: &[u8] = if qos > 0 { &id_bytes } else { &[] };
        let parts = [fixed.as_slice(), &topic_length, &topic, id_part, &payload];
        if qos > 0 {
            let stage = if qos == 1 {
                Stage::AwaitingPuback
            } else {
                Stage::AwaitingPubrec
            };
            // A persistent session may have to send it again after a
            // reconnect; a clean one never does.
            let packet = (!self.clean_session).then(|| parts.concat().into());
            self.session.sent(id, stage, packet);
        }
        // A short message is copied in with the others; a long payload goes
        // out as the router holds it, without a copy.
        if payload.len() <= COPY_UP_TO {
            self.to_client.copy(&parts);
        } else {
            self.to_client.copy(&parts[..4]);
            self.to_client.push(payload);
        }
    }

    /// The QoS of the subscription a message came through, from the
    /// identifier the router put on it (see `subscriptions.rs`); and if the
    /// router's log skipped messages of that subscription before this one,
    /// says so in the log, naming the client, the filter and how many.
    fn subscribed_qos(&mut self, forward: &rumqttd::Forward) -> u8 {
        let subscriptions = &self.session.subscriptions;
        let tagged = forward
            .properties
            .as_ref()
            .and_then(|properties| properties.subscription_identifiers.first().copied())
            .filter(|&id| subscriptions.get(id).is_some());
        // Untagged: the first messages of a kept session, which the router
        // may forward before we have given its filters their identifiers
        // again, or a filter the client has just unsubscribed.
        let id = match tagged {
            Some(id) => id,
            None => {
                let topic = std::str::from_utf8(&forward.publish.topic).unwrap_or("");
                match subscriptions.only_match(topic) {
                    Some(id) => id,
                    None => return subscriptions.qos_for(topic),
                }
            }
        };
        if let Some((_, offset)) = forward.cursor {
            let skipped = self.session.subscriptions.arrived(id, offset);
            if let Some(subscription) = self.session.subscriptions.get(id)
                && skipped > 0
            {
                warn!(
                    client = self.name,
                    filter = subscription.filter,
                    skipped,
                    "the router's log for this filter dropped messages before the client read \
                     them (it keeps 32 MiB per filter; see mqtt/src/broker.rs)"
                );
            }
        }
        self.session.subscriptions.get(id).map_or(0, |s| s.qos)
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

/// The mark for a message published at `qos`, with an empty payload or not;
/// `None` for a QoS 0 message with a payload, which needs none.
pub(super) fn marks(qos: u8, empty: bool) -> Option<PublishProperties> {
    if qos == 0 && !empty {
        return None;
    }
    let mut value = String::with_capacity(2);
    value.push(char::from(b'0' + qos));
    if empty {
        value.push('e');
    }
    Some(PublishProperties {
        user_properties: vec![(MARK.to_string(), value)],
        ..PublishProperties::default()
    })
}

/// The QoS a message was published at and whether its payload is empty,
/// from its mark (no mark: QoS 0, not empty).
fn read_marks(properties: Option<&PublishProperties>) -> (u8, bool) {
    let mark = properties.and_then(|properties| {
        properties
            .user_properties
            .iter()
            .rev()
            .find(|(name, _)| name == MARK)
    });
    match mark {
        Some((_, value)) => {
            let bytes = value.as_bytes();
            let qos = bytes
                .first()
                .map_or(0, |digit| digit.saturating_sub(b'0').min(2));
            (qos, bytes.get(1) == Some(&b'e'))
        }
        None => (0, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark says what it was given, and no mark means QoS 0 with a payload.
    #[test]
    fn marks_round_trip() {
        for qos in 0..=2 {
            for empty in [false, true] {
                assert_eq!(read_marks(marks(qos, empty).as_ref()), (qos, empty));
            }
        }
        assert_eq!(read_marks(None), (0, false));
    }
}
