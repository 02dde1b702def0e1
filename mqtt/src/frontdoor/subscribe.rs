//! SUBSCRIBE and UNSUBSCRIBE, and their acknowledgements (spec §3.8-3.11).
//!
//! The session keeps each filter with the QoS the client asked for; the
//! router gets the filter at QoS 0, because the front door delivers at the
//! client's QoS itself (`publish.rs`). So a repeated SUBSCRIBE to a filter
//! replaces its QoS at once [MQTT-3.8.4-3], for clean and persistent
//! sessions alike, and the router is asked only for filters that are new.
//! We answer SUBACK and UNSUBACK ourselves, in order with everything else
//! we send the client.

use rumqttd::protocol::{
    Filter, Packet, QoS, RetainForwardRule, Subscribe, SubscribeProperties, Unsubscribe,
};
use tracing::{info, warn};

use super::relay::{Connection, End};
use crate::wire::{self, Frame, Reader, Violation, kind};

/// SUBACK's failure return code (spec §3.9.3).
const SUBACK_FAILURE: u8 = 0x80;

impl Connection<'_> {
    /// SUBSCRIBE: every filter checked; `$` filters other than `$share/...`
    /// (`$SYS/#`) answered with a failure code, since this broker has no
    /// such topics; the rest subscribed.
    pub(super) fn subscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "SUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut codes = Vec::new();
        let mut new = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            let requested = reader.u8().map_err(End::Violation)?;
            if requested > 2 {
                return Err(End::Violation(Violation(format!(
                    "SUBSCRIBE asks for QoS byte {requested:#04x} [MQTT-3.8.3-4]"
                ))));
            }
            if filter.starts_with('$') && !filter.starts_with("$share/") {
                info!(
                    client = self.name,
                    filter, "no such topics here: SUBACK failure"
                );
                codes.push(SUBACK_FAILURE);
                continue;
            }
            // The router reads `a/b` and `$share/g/a/b` from one log, and
            // cannot serve one client both (it would end its own thread).
            if let Some(other) = self.session.subscriptions.shares_log_with(filter) {
                warn!(
                    client = self.name,
                    filter,
                    other,
                    "refused: the client has a subscription to the same topics: SUBACK failure"
                );
                codes.push(SUBACK_FAILURE);
                continue;
            }
            if let Some(id) = self.session.subscriptions.set(filter, requested) {
                new.push((filter.to_string(), id));
            }
            codes.push(requested);
        }
        if codes.is_empty() {
            return Err(End::Violation(Violation(
                "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]".into(),
            )));
        }
        for (filter, id) in new {
            self.queue_for_router(router_subscribe(filter, id), 0);
        }
        // [MQTT-3.8.4-5]: one return code per filter, in order.
        let mut body = packet_id.to_be_bytes().to_vec();
        body.extend(codes);
        self.to_client.push(wire::packet(kind::SUBACK << 4, &body));
        Ok(())
    }

    /// UNSUBSCRIBE: filters checked, those the client has are removed, and
    /// UNSUBACK is sent even if it had none of them [MQTT-3.10.4-5].
    pub(super) fn unsubscribe(&mut self, frame: &Frame) -> Result<(), End> {
        let mut reader = Reader::new(frame.body(), "UNSUBSCRIBE");
        let packet_id = nonzero_packet_id(&mut reader)?;
        let mut count = 0;
        let mut removed = Vec::new();
        while !reader.is_empty() {
            let filter = reader.string("a topic filter").map_err(End::Violation)?;
            wire::check_topic_filter(filter).map_err(End::Violation)?;
            count += 1;
            if self.session.subscriptions.remove(filter) {
                removed.push(filter.to_string());
            }
        }
        if count == 0 {
            return Err(End::Violation(Violation(
                "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]".into(),
            )));
        }
        if !removed.is_empty() {
            let unsubscribe = Unsubscribe {
                pkid: packet_id,
                filters: removed,
            };
            self.for_router
                .push((Packet::Unsubscribe(unsubscribe, None), 0));
        }
        let ack = wire::ack(kind::UNSUBACK, packet_id);
        self.to_client.copy(&[&ack]);
        Ok(())
    }
}

impl Connection<'_> {
    /// For a persistent session that comes back: the router kept its
    /// filters, but not their identifiers, so we subscribe each again with
    /// its own (the router adds no second reader for a filter it has).
    pub(super) fn resubscribe(&mut self) {
        let again: Vec<_> = self
            .session
            .subscriptions
            .all()
            .map(|(id, s)| router_subscribe(s.filter.clone(), id))
            .collect();
        for packet in again {
            self.queue_for_router(packet, 0);
        }
    }
}

/// The router's SUBSCRIBE for one filter, at QoS 0 (see the module
/// documentation), with the subscription's identifier. One filter a packet,
/// since an identifier belongs to the whole packet.
pub(super) fn router_subscribe(path: String, id: usize) -> Packet {
    let filter = Filter {
        path,
        qos: QoS::AtMostOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnNewSubscribe,
    };
    let subscribe = Subscribe {
        // The router's SUBACK is not passed on; any id will do.
        pkid: 1,
        filters: vec![filter],
    };
    let properties = SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    };
    Packet::Subscribe(subscribe, Some(properties))
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
