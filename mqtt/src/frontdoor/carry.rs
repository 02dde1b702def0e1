//! How a client's PUBLISH crosses rumqttd's router, both ways: the front
//! door hands the router the PUBLISH as the payload of a message of its own
//! (`router.rs`), and the dispatcher reads it back (`dispatch.rs`). A 3.1.1
//! PUBLISH crosses as it came; an MQTT 5 one in a layout of its own
//! ([`V5_LAYOUT`]), which carries its properties and its publisher.

use bytes::{BufMut, Bytes, BytesMut};

use super::expiry;
use super::mailbox::Message;
use super::router::V5_LAYOUT;
use super::topics::ClientKey;
use crate::wire::properties::{Properties, id, put_varint};
use crate::wire::{self, Frame, kind};

/// An MQTT 5 PUBLISH as the router carries it ([`V5_LAYOUT`]): the
/// fixed header's flags, the `publisher`'s session key (8 bytes, for No
/// Local), the topic name (resolved from its alias), the
/// packet id for QoS 1 and 2, the properties but the Topic Alias, which
/// only meant something on the publisher's connection [MQTT-3.3.2-10], and
/// the payload. Always a copy: the layout changes.
pub fn v5_layout(
    publisher: ClientKey,
    frame: &Frame,
    topic: &str,
    id: u16,
    properties: &Properties<'_>,
    payload: &[u8],
) -> Bytes {
    let kept = properties.raw_except(&[id::TOPIC_ALIAS]);
    let mut body = BytesMut::with_capacity(topic.len() + kept.len() + payload.len() + 16);
    body.put_u64(publisher);
    wire::put_string(&mut body, topic.as_bytes());
    if frame.qos() > 0 {
        body.put_u16(id);
    }
    let mut length = Vec::new();
    put_varint(&mut length, kept.len());
    body.put_slice(&length);
    body.put_slice(&kept);
    body.put_slice(payload);
    wire::packet(V5_LAYOUT << 4 | frame.flags, &body)
}

/// The message in a client's PUBLISH packet, as `router::for_router` carried it;
/// `None` if it is not one (the front door checked it before, so this does
/// not happen).
pub fn parse(packet: &Bytes) -> Option<Message> {
    let first = *packet.first()?;
    // A 3.1.1 PUBLISH as it came, or an MQTT 5 one with its properties
    // after the packet id (`router::V5_LAYOUT`).
    let v5 = match first >> 4 {
        kind::PUBLISH => false,
        V5_LAYOUT => true,
        _ => return None,
    };
    let qos = (first >> 1) & 0b11;
    // The remaining length: 1 to 4 bytes, the last without bit 7.
    let mut at = 1;
    while packet.get(at)? & 0x80 != 0 {
        at += 1;
        if at > 4 {
            return None;
        }
    }
    // An MQTT 5 message starts with its publisher's session key.
    let mut publisher = None;
    if v5 {
        let key = packet.get(at + 1..at + 9)?;
        publisher = Some(ClientKey::from_be_bytes(key.try_into().ok()?));
        at += 8;
    }
    let topic_length = usize::from(u16::from_be_bytes([
        *packet.get(at + 1)?,
        *packet.get(at + 2)?,
    ]));
    let topic_start = at + 3;
    let topic_end = topic_start + topic_length;
    let mut payload_start = topic_end + if qos > 0 { 2 } else { 0 };
    let mut properties = Bytes::new();
    if v5 {
        // The properties' length: a variable byte integer.
        let mut length = 0usize;
        for shift in 0..4 {
            let byte = *packet.get(payload_start)?;
            payload_start += 1;
            length |= usize::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                break;
            }
        }
        properties =
            packet.slice(payload_start..payload_start.checked_add(length)?.min(packet.len()));
        payload_start += length;
    }
    if payload_start > packet.len() {
        return None;
    }
    Some(Message {
        topic: packet.slice(topic_start..topic_end),
        payload: packet.slice(payload_start..),
        qos,
        retain: first & 1 != 0,
        expires: expiry::expires_at(&properties, std::time::Instant::now()),
        properties,
        publisher,
    })
}
