//! PUBLISH to a client: each message in its mailbox is delivered at the QoS
//! the dispatcher chose (the lower of its publish QoS and the
//! subscription's [MQTT-3.8.4-6]), with a packet id of ours for QoS 1 and 2,
//! and kept in the session until the client acknowledges it (`publish.rs`
//! reads the acknowledgements). For an MQTT 5 client the PUBLISH carries the
//! message's properties, the subscription identifiers that brought it, and
//! a topic alias where one is set up (`aliases.rs`). A client that has
//! stopped reading, with a full queue, loses messages, and the log counts
//! them.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::warn;

use super::acl::Want;
use super::expiry;
use super::mailbox::Delivery;
use super::publish::COPY_UP_TO;
use super::relay::Connection;
use super::session::Stage;
use super::sys::Stats;
use crate::wire::properties::{id, put_varint};
use crate::wire::{self, kind};

impl Connection<'_> {
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
        // A message the ACL does not let this client read is left out for
        // it alone (`acl.rs`).
        if !self.may(std::str::from_utf8(&topic).unwrap_or(""), Want::Read) {
            return;
        }
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
        Stats::add(&self.shared.stats.publish_sent, 1);
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
