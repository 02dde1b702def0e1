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
//! The broker sets up aliases towards a client too (`aliases.rs`).
//!
//! **Message expiry** is in `expiry.rs`: the dispatcher needs it too.
//!
//! **Receive Maximum.** A client says how many QoS 1 and 2 PUBLISHes it
//! takes at once before it has acknowledged them (65,535 if it does not
//! say); the broker sends no more than that [MQTT-3.3.4-9]. Deliveries past
//! it wait, in order, until an acknowledgement opens the window; while any
//! wait, the connection takes nothing more from its mailbox.

use super::aliases::TOPIC_ALIAS_MAXIMUM;
use super::mailbox::Delivery;
use super::relay::{Connection, End};
use crate::wire::properties::{Properties, id};
use crate::wire::{self, Violation};

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
