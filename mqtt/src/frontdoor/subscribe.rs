//! SUBSCRIBE and UNSUBSCRIBE, and their acknowledgements (spec §3.8-3.11).
//!
//! A subscription goes into the broker's topic tree (`topics.rs`) and the
//! session's own list, with the QoS the client asked for; a repeated
//! SUBSCRIBE to a filter replaces its QoS [MQTT-3.8.4-3]. Either way the
//! filter's retained messages go to the client's mailbox, after the SUBACK
//! (`dispatch.rs`). We answer SUBACK and UNSUBACK ourselves, in order with
//! everything else we send the client; the router never hears of either.

use tracing::{info, warn};

use super::relay::{Connection, End};
use super::topics::shrink_if_sparse;
use crate::wire::{self, Frame, Reader, Violation, kind};

/// SUBACK's failure return code (spec §3.9.3).
const SUBACK_FAILURE: u8 = 0x80;

impl Connection<'_> {
    /// SUBSCRIBE: every filter checked; `$` filters other than `$share/...`
    /// (`$SYS/#`) answered with a failure code, since this broker has no
    /// such topics, and so is a new filter past `--max-subscriptions`; the
    /// rest subscribed.
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "SUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut filters = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            let requested = reader.u8().map_err(End::Violation)?;
            if requested > 2 {
                return Err(End::Violation(Violation(format!(
                    "SUBSCRIBE asks for QoS byte {requested:#04x} [MQTT-3.8.3-4]"
                ))));
            }
            filters.push((filter, requested));
        }
        if filters.is_empty() {
            return Err(End::Violation(Violation(
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]".into(),
            )));
        }
        // [MQTT-3.8.4-5]: one return code per filter, in order. The SUBACK
        // is queued before the table is touched, so that it goes out before
        // any retained message the subscriptions bring.
        let mut body = packet_id.to_be_bytes().to_vec();
        let mut refused = 0;
        let mut granted = Vec::new();
        for &(filter, requested) in &filters {
            if filter.starts_with('$') && !filter.starts_with("$share/") {
                info!(
                    client = self.name,
                    filter, "no such topics here: SUBACK failure"
                );
                body.push(SUBACK_FAILURE);
            } else if !self.session.subscriptions.contains_key(filter)
                && self.session.subscriptions.len() + granted.len() >= self.limits.max_subscriptions
            {
                refused += 1;
                body.push(SUBACK_FAILURE);
            } else {
                granted.push((filter, requested));
                body.push(requested);
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
        for (filter, qos) in granted {
            table.subscribe(self.session.key, filter, qos);
            self.session.subscriptions.insert(filter.to_string(), qos);
        }
        Ok(())
    }

    /// UNSUBSCRIBE: filters checked, those the client has are removed, and
    /// UNSUBACK is sent even if it had none of them [MQTT-3.10.4-5].
    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "UNSUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut filters = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            filters.push(filter);
        }
        if filters.is_empty() {
            return Err(End::Violation(Violation(
                "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]".into(),
            )));
        }
        let mut table = self.shared.table();
        for filter in filters {
            if self.session.subscriptions.remove(filter).is_some() {
                table.unsubscribe(self.session.key, filter);
            }
        }
        drop(table);
        shrink_if_sparse(&mut self.session.subscriptions);
        let ack = wire::ack(kind::UNSUBACK, packet_id);
        self.to_client.copy(&[&ack]);
        Ok(())
    }
}

/// A packet id that must not be 0 [MQTT-2.3.1-1].
fn nonzero_packet_id(reader: &mut Reader<'_>) -> Result<u16, End> {
    match reader.u16().map_err(End::Violation)? {
        0 => Err(End::Violation(Violation(
            "packet id 0 [MQTT-2.3.1-1]".into(),
        ))),
        id => Ok(id),
    }
}
