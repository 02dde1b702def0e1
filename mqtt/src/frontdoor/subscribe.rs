//! SUBSCRIBE and UNSUBSCRIBE, and their acknowledgements (spec §3.8-3.11).
//!
//! A subscription goes into the broker's topic tree (`topics.rs`) and the
//! session's own list, with the QoS the client asked for; a repeated
//! SUBSCRIBE to a filter replaces its QoS [MQTT-3.8.4-3]. Either way the
//! filter's retained messages go to the client's mailbox, after the SUBACK
//! (`dispatch.rs`). We answer SUBACK and UNSUBACK ourselves, in order with
//! everything else we send the client; the router never hears of either.

use tracing::{info, warn};

use super::dispatch::Retain;
use super::relay::{Connection, End};
use super::sys;
use super::topics::{Subscription, shrink_if_sparse};
use crate::wire::properties::{Properties, Value, allowed, id};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// SUBACK's failure return code (spec §3.9.3); in MQTT 5, 0x80 is
/// Unspecified error.
const SUBACK_FAILURE: u8 = 0x80;

/// MQTT 5's SUBACK 0x97, Quota exceeded (spec §3.9.3).
const QUOTA_EXCEEDED: u8 = 0x97;

impl Connection<'_> {
    /// SUBSCRIBE: every filter checked; `$` filters other than `$share/...`
    /// and `$SYS/...` (`sys.rs`) answered with a failure code, since this
    /// broker has no such topics, and so is a new filter past
    /// `--max-subscriptions`; the rest subscribed.
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let v5 = self.version == wire::V5;
        let mut reader = Reader::new(frame.body(), "SUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut identifier = 0;
        if v5 {
            let properties = reader
                .properties(allowed::SUBSCRIBE)
                .map_err(End::Violation)?;
            identifier = subscription_identifier(&properties)?;
        }
        let mut filters = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            let options = reader.u8().map_err(End::Violation)?;
            filters.push((filter, options_of(options, filter, v5)?));
        }
        if filters.is_empty() {
            return Err(End::Violation(Violation::protocol(
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]",
            )));
        }
        // [MQTT-3.8.4-5]: one return code per filter, in order. The SUBACK
        // is queued before the table is touched, so that it goes out before
        // any retained message the subscriptions bring. MQTT 5's SUBACK has
        // properties (none here) before them (spec §3.9.2).
        let mut body = packet_id.to_be_bytes().to_vec();
        if v5 {
            body.push(0);
        }
        let mut refused = 0;
        let mut granted = Vec::new();
        for &(filter, options) in &filters {
            if filter.starts_with('$')
                && !filter.starts_with("$share/")
                && !filter.starts_with(sys::PREFIX)
            {
                info!(
                    client = self.name,
                    filter, "no such topics here: SUBACK failure"
                );
                body.push(SUBACK_FAILURE);
            } else if !self.session.subscriptions.contains_key(filter)
                && self.session.subscriptions.len() + granted.len() >= self.limits.max_subscriptions
            {
                refused += 1;
                // MQTT 5 names the case: 0x97, Quota exceeded.
                body.push(if v5 { QUOTA_EXCEEDED } else { SUBACK_FAILURE });
            } else {
                granted.push((filter, options));
                body.push(options.qos);
            }
        }
        if refused > 0 {
            warn!(
                client = self.name,
                subscriptions = self.session.subscriptions.len() + granted.len(),
                refused,
                "the client holds as many subscriptions as it may (--max-subscriptions): \
                 SUBACK failure for each new filter past it"
            );
        }
        self.to_client.push(wire::packet(kind::SUBACK << 4, &body));
        let mut table = self.shared.table();
        for (filter, options) in granted {
            let subscription = Subscription {
                options: options.kept,
                id: identifier,
            };
            table.subscribe(self.session.key, filter, subscription, options.retain);
            self.session
                .subscriptions
                .insert(filter.to_string(), options.qos);
        }
        Ok(())
    }

    /// UNSUBSCRIBE: filters checked, those the client has are removed, and
    /// UNSUBACK is sent even if it had none of them [MQTT-3.10.4-5].
    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let v5 = self.version == wire::V5;
        let mut reader = Reader::new(frame.body(), "UNSUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        if v5 {
            reader
                .properties(allowed::UNSUBSCRIBE)
                .map_err(End::Violation)?;
        }
        let mut filters = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(End::Violation(Violation::protocol(
                "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]",
            )));
        }
        // MQTT 5's UNSUBACK says, per filter, whether there was a
        // subscription to end (spec §3.11.3): 0x00 Success, 0x11 No
        // subscription existed.
        let mut body = packet_id.to_be_bytes().to_vec();
        if v5 {
            body.push(0);
        }
        let mut table = self.shared.table();
        for filter in filters {
            if self.session.subscriptions.remove(filter).is_some() {
                table.unsubscribe(self.session.key, filter);
                body.push(0x00);
            } else {
                body.push(0x11);
            }
        }
        drop(table);
        shrink_if_sparse(&mut self.session.subscriptions);
        if v5 {
            self.to_client
                .push(wire::packet(kind::UNSUBACK << 4, &body));
        } else {
            self.to_client
                .copy(&[&wire::ack(kind::UNSUBACK, packet_id)]);
        }
        Ok(())
    }
}

/// What one filter of a SUBSCRIBE asks for.
#[derive(Debug, Clone, Copy)]
struct Options {
    qos: u8,
    /// The byte the topic tree keeps (see `topics::options`): the QoS, and
    /// MQTT 5's No Local and Retain As Published bits.
    kept: u8,
    retain: Retain,
}

/// A filter's options byte (spec §3.8.3.1): in 3.1.1 only the QoS, with
/// the other bits reserved [MQTT-3.8.3-4]; MQTT 5 adds No Local (bit 2),
/// Retain As Published (bit 3) and Retain Handling (bits 4-5), and keeps
/// bits 6-7 reserved [MQTT-3.8.3-5].
fn options_of(byte: u8, filter: &str, v5: bool) -> Result<Options, End> {
    let qos = byte & 0b11;
    let reserved = if v5 {
        byte & 0b1100_0000
    } else {
        byte & 0b1111_1100
    };
    if qos == 3 || reserved != 0 {
        return Err(End::Violation(Violation::malformed(format!(
            "SUBSCRIBE options byte {byte:#04x} (3.1.1: [MQTT-3.8.3-4]; 5: [MQTT-3.8.3-5])"
        ))));
    }
    let retain = match (byte >> 4) & 0b11 {
        0 => Retain::Send,
        1 => Retain::SendIfNew,
        2 => Retain::DontSend,
        _ => {
            return Err(End::Violation(Violation::protocol(
                "SUBSCRIBE with Retain Handling 3 (spec §3.8.3.1)",
            )));
        }
    };
    if byte & 0b100 != 0 && filter.starts_with("$share/") {
        return Err(End::Violation(Violation::protocol(
            "No Local on a shared subscription [MQTT-3.8.3-4]",
        )));
    }
    Ok(Options {
        qos,
        kept: byte & 0b1111,
        retain,
    })
}

/// MQTT 5: a SUBSCRIBE's Subscription Identifier, which every message its
/// subscriptions bring carries back (spec §3.8.2.1.2); 0 for none. At most
/// one, and not 0: a Protocol Error otherwise.
fn subscription_identifier(properties: &Properties<'_>) -> Result<u32, End> {
    let mut identifiers = properties
        .list
        .iter()
        .filter(|property| property.id == id::SUBSCRIPTION_IDENTIFIER);
    let identifier = match identifiers.next().map(|property| property.value) {
        None => return Ok(0),
        Some(Value::Varint(0)) => "a Subscription Identifier of 0 (spec §3.8.2.1.2)",
        Some(_) if identifiers.next().is_some() => {
            "two Subscription Identifiers in one SUBSCRIBE (spec §3.8.2.1.2)"
        }
        Some(Value::Varint(id)) => return Ok(id),
        Some(_) => "a Subscription Identifier that is not a number",
    };
    Err(End::Violation(Violation::protocol(identifier)))
}

/// A packet id that must not be 0 [MQTT-2.3.1-1].
fn nonzero_packet_id(reader: &mut Reader<'_>) -> Result<u16, End> {
    match reader.u16().map_err(End::Violation)? {
        0 => Err(End::Violation(Violation::protocol(
            "packet id 0 [MQTT-2.3.1-1]",
        ))),
        id => Ok(id),
    }
}
