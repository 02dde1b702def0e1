//! A clean-session client's subscriptions, as the front door keeps them.
//!
//! rumqttd sends a QoS 1 or 2 subscriber at most 100 unacknowledged
//! messages at a time, and waits for acknowledgements before it sends more.
//! Under load that window made rumqttd fall behind a faster publisher by
//! more than the 32 MiB it keeps per filter, and it dropped the oldest
//! messages, acknowledged ones among them. So for a clean session the front
//! door subscribes at QoS 0 on the client's behalf (between two parts of one
//! broker, over loopback, nothing is lost), remembers the QoS the client
//! asked for, and delivers each message at that QoS itself, with its own
//! packet ids. (A persistent session keeps rumqttd's QoS, since rumqttd must
//! hold its messages while it is away.)

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{self, Frame, kind};

/// Filters and the QoS the client asked for each.
#[derive(Debug, Default)]
pub struct Subscriptions {
    filters: Vec<(String, u8)>,
}

impl Subscriptions {
    /// Adds a filter, or replaces its QoS [MQTT-3.8.4-3].
    pub fn set(&mut self, filter: &str, qos: u8) {
        match self.filters.iter_mut().find(|(f, _)| f == filter) {
            Some(entry) => entry.1 = qos,
            None => self.filters.push((filter.to_string(), qos)),
        }
    }

    pub fn remove(&mut self, filter: &str) {
        self.filters.retain(|(f, _)| f != filter);
    }

    /// The QoS to deliver a message on `topic` at: the highest of the
    /// client's matching filters (rumqttd sends one copy per filter, and we
    /// cannot tell which copy is for which), or 0 if none matches any more.
    pub fn qos_for(&self, topic: &str) -> u8 {
        self.filters
            .iter()
            .filter(|(filter, _)| matches(filter, topic))
            .map(|(_, qos)| *qos)
            .max()
            .unwrap_or(0)
    }
}

/// Whether `topic` matches `filter` (spec §4.7): `+` is one whole level,
/// `#` the rest, and wildcards at the start do not match `$` topics
/// [MQTT-4.7.2-1]. A shared subscription `$share/group/filter` matches as
/// its filter.
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, filter)| filter),
        None => filter,
    };
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => return true,
            "+" => {
                if topic_levels.next().is_none() {
                    return false;
                }
            }
            level => {
                if topic_levels.next() != Some(level) {
                    return false;
                }
            }
        }
    }
    topic_levels.next().is_none()
}

/// The topic of a PUBLISH (rumqttd's are well formed), or `""`.
pub fn topic_of(frame: &Frame) -> &str {
    let mut reader = wire::Reader::new(frame.body(), "PUBLISH");
    reader.string("the topic name").unwrap_or("")
}

/// A QoS 0 PUBLISH from rumqttd, rewritten to `qos` with packet id `id`:
/// the QoS bits set, and the id inserted after the topic.
pub fn at_qos(frame: &Frame, qos: u8, id: u16) -> Bytes {
    let body = frame.body();
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    let mut out = BytesMut::with_capacity(frame.bytes.len() + 3);
    let first = (kind::PUBLISH << 4) | (frame.flags & 0b1001) | (qos << 1);
    wire::put_fixed_header(&mut out, first, body.len() + 2);
    out.put_slice(&body[..topic_end]);
    out.put_u16(id);
    out.put_slice(&body[topic_end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of spec §4.7.1 and §4.7.2.
    #[test]
    fn matches_as_the_spec_says() {
        for (filter, topic) in [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            ("sport/#", "sport"),
            ("#", "a/b"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("$SYS/#", "$SYS/x"),
            ("$share/g/a/+", "a/b"),
        ] {
            assert!(matches(filter, topic), "{filter} {topic}");
        }
        for (filter, topic) in [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("#", "$SYS/x"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("a/b", "a/b/c"),
        ] {
            assert!(!matches(filter, topic), "{filter} {topic}");
        }
    }
}
