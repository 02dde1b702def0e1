//! Topic aliases (MQTT 5, spec §3.3.2.3.4), both ways. A topic alias is a
//! number that stands for a topic name on one connection, so that a long
//! name crosses the wire once and a two-byte number after.
//!
//! - Towards the broker: a client may set up [`TOPIC_ALIAS_MAXIMUM`]
//!   aliases, which CONNACK announces; `publish5.rs` resolves them.
//! - Towards a client: if its CONNECT allows some (its own Topic Alias
//!   Maximum), the first topics the broker delivers to it each get one
//!   ([`OutgoingAliases`]), sent once with the name and then instead of it
//!   (`deliver.rs`).

use std::collections::HashMap;

use bytes::Bytes;

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
