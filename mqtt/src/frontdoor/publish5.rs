//! What MQTT 5 adds to a PUBLISH on its way through the broker (spec
//! §3.3.2.3): topic aliases on the way in, and the client's Receive
//! Maximum, the flow control of QoS 1 and 2 deliveries. How the router
//! carries a version 5 message is in `carry.rs`.
//!
//! **Topic aliases.** A client may give a topic a number (1 to our
//! [`TOPIC_ALIAS_MAXIMUM`]) the first time it publishes to it, and then send
//! the number with an empty topic name. The alias belongs to the connection:
//! the broker resolves it and passes the message on with its topic name.
//!
//! The broker sets up aliases towards a client too, if the client's
//! CONNECT allows some (its Topic Alias Maximum): the first topics it
//! delivers each get a number ([`OutgoingAliases`]), sent once with the
//! name, and then instead of it.
//!
//! **Message expiry** is in `expiry.rs`: the dispatcher needs it too.
//!
//! **Receive Maximum.** A client says how many QoS 1 and 2 PUBLISHes it
//! takes at once before it has acknowledged them (65,535 if it does not
//! say); the broker sends no more than that [MQTT-3.3.4-9]. Deliveries past
//! it wait, in order, until an acknowledgement opens the window; while any
//! wait, the connection takes nothing more from its mailbox.

use std::collections::HashMap;

use bytes::Bytes;

use super::mailbox::Delivery;
use super::relay::{Connection, End};
use crate::wire::properties::{Properties, id};
use crate::wire::{self, Violation};

/// How many topic aliases an MQTT 5 client may set up towards the broker
/// (Topic Alias Maximum in CONNACK, spec §3.2.2.3.8): each saves a long
/// topic name on every PUBLISH after the first.
pub const TOPIC_ALIAS_MAXIMUM: u16 = 10;

/// Topic aliases the broker gives at most to one client, whatever the
/// client allows, and the longest topic name it gives one to, in bytes: so
/// that what a connection keeps for them stays under 10 KiB.
const OUTGOING_ALIASES: u16 = 10;
const OUTGOING_ALIAS_TOPIC: usize = 1024;

/// The topic aliases the broker has set up towards one client, topic name
/// to alias (spec §3.3.2.3.4). They belong to the connection
/// [MQTT-3.3.2-7]: a new connection starts with none. The first topics
/// delivered get one each, up to the client's Topic Alias Maximum (and our
/// [`OUTGOING_ALIASES`]); an alias is never given to another topic, so the
/// rest go by name.
#[derive(Debug, Default)]
pub struct OutgoingAliases {
    maximum: u16,
    given: HashMap<Bytes, u16>,
}

/// The alias a delivery uses: its number, and whether the client knows it
/// already (then the topic name is left out [MQTT-3.3.2-12]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alias {
    pub number: u16,
    pub known: bool,
}

impl OutgoingAliases {
    /// Aliases for a client whose Topic Alias Maximum is `client_maximum`
    /// (0, and for 3.1.1: none).
    pub fn new(client_maximum: u16) -> Self {
        OutgoingAliases {
            maximum: client_maximum.min(OUTGOING_ALIASES),
            given: HashMap::new(),
        }
    }

    /// The alias to send `topic` with, if any. Nothing changes until
    /// [`OutgoingAliases::sent`]: a delivery that is dropped sets nothing up.
    pub fn lookup(&self, topic: &[u8]) -> Option<Alias> {
        if let Some(&number) = self.given.get(topic) {
            return Some(Alias {
                number,
                known: true,
            });
        }
        let room = self.given.len() < usize::from(self.maximum);
        (room && topic.len() <= OUTGOING_ALIAS_TOPIC).then(|| Alias {
            // Aliases are 1 to the maximum [MQTT-3.3.2-8]; `room` keeps
            // this within it.
            number: u16::try_from(self.given.len() + 1).unwrap_or(u16::MAX),
            known: false,
        })
    }

    /// `topic` went out with `alias`: a new one is now set up.
    pub fn sent(&mut self, topic: &[u8], alias: Alias) {
        if !alias.known {
            self.given
                .insert(Bytes::copy_from_slice(topic), alias.number);
        }
    }
}

impl Connection<'_> {
    /// The topic name of an MQTT 5 PUBLISH, through its Topic Alias if it
    /// has one (spec §3.3.2.3.4): an alias with a topic name sets the alias
    /// up; one with an empty topic name uses it. An alias of 0 or over our
    /// [`TOPIC_ALIAS_MAXIMUM`] is DISCONNECT 0x94 [MQTT-3.3.2-9]; an empty
    /// name with an alias the client never set up is 0x82 (§3.3.2.3.4).
    pub(super) fn resolve_alias(
        &mut self,
        topic: &str,
        properties: &Properties<'_>,
    ) -> Result<String, End> {
        let Some(alias) = properties.u16(id::TOPIC_ALIAS) else {
            wire::check_topic_name(topic).map_err(End::Violation)?;
            return Ok(topic.to_string());
        };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(End::Violation(Violation::with_code(
                0x94,
                format!("Topic Alias {alias}, not 1 to {TOPIC_ALIAS_MAXIMUM} [MQTT-3.3.2-9]"),
            )));
        }
        if topic.is_empty() {
            return match self.aliases.get(&alias) {
                Some(known) => Ok(known.to_string()),
                None => Err(End::Violation(Violation::protocol(format!(
                    "Topic Alias {alias} used before it was set up (spec §3.3.2.3.4)"
                )))),
            };
        }
        wire::check_topic_name(topic).map_err(End::Violation)?;
        self.aliases.insert(alias, topic.into());
        Ok(topic.to_string())
    }

    /// A delivery from the mailbox: sent now, or, if the client's Receive
    /// Maximum is reached (or others wait already), kept in order until the
    /// client acknowledges enough.
    pub(super) fn deliver_or_wait(&mut self, delivery: Delivery) {
        if !self.waiting.is_empty() || !self.window_open(&delivery) {
            self.waiting.push_back(delivery);
        } else {
            self.deliver(delivery);
        }
    }

    /// After an acknowledgement: the deliveries that now fit the window go.
    pub(super) fn release_waiting(&mut self) {
        while let Some(front) = self.waiting.front() {
            if !self.window_open(front) {
                return;
            }
            if let Some(delivery) = self.waiting.pop_front() {
                self.deliver(delivery);
            }
        }
    }

    /// Whether `delivery` may go now: QoS 0 always; QoS 1 and 2 while the
    /// client has fewer unacknowledged than its Receive Maximum.
    fn window_open(&self, delivery: &Delivery) -> bool {
        delivery.qos == 0 || self.session.in_flight() < usize::from(self.receive_maximum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However many aliases a client allows, it gets at most ten, only for
    /// topics up to 1 KiB, and nothing is set up until a delivery goes.
    #[test]
    fn outgoing_aliases_are_bounded() {
        let mut aliases = OutgoingAliases::new(u16::MAX);
        let long = vec![b'x'; OUTGOING_ALIAS_TOPIC + 1];
        assert_eq!(aliases.lookup(&long), None);
        let first = aliases.lookup(b"t/0");
        assert_eq!(first, aliases.lookup(b"t/0"), "nothing set up by a lookup");
        for n in 0..20 {
            let topic = format!("t/{n}");
            if let Some(alias) = aliases.lookup(topic.as_bytes()) {
                aliases.sent(topic.as_bytes(), alias);
            }
        }
        assert_eq!(aliases.given.len(), usize::from(OUTGOING_ALIASES));
        let known = Alias {
            number: 1,
            known: true,
        };
        assert_eq!(aliases.lookup(b"t/0"), Some(known));
        assert_eq!(aliases.lookup(b"t/15"), None);
        assert_eq!(OutgoingAliases::new(0).lookup(b"t/0"), None);
    }
}
