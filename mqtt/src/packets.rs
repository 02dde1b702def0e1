//! `--show-packets`: the MQTT packets as they cross the wire, one per line.
//!
//! `->` is a packet we send, `<-` one we receive. A QoS 2 publish reads:
//!
//! ```text
//! -> PUBLISH id=1 qos=2
//! <- PUBREC id=1
//! -> PUBREL id=1
//! <- PUBCOMP id=1
//! ```
//!
//! The packet id (`id`) is how both sides match an acknowledgement to its
//! publish; QoS 0 publishes have none, because nothing acknowledges them.
//!
//! With `-V 5`, the packets the broker sends carry a reason code, which we
//! print in words, and their properties in brackets:
//!
//! ```text
//! -> CONNECT v5 client_id=me clean_start=true session_expiry=0
//! <- CONNACK Success session_present=false [receive-maximum 20, topic-alias-maximum 10]
//! -> SUBSCRIBE id=1
//! <- SUBACK id=1 [GrantedQoS1]
//! <- PUBLISH id=1 qos=1 topic=t (2 bytes) [user-property sensor kitchen]
//! ```

use rumqttc::v5::mqttbytes::v5::{
    ConnAckProperties, Packet as Packet5, SubscribeReasonCode as Sub5,
};
use rumqttc::{Event, Outgoing, Packet, QoS, SubscribeReasonCode, v5};

use crate::qos_number;
use crate::v5::{describe_properties, qos311};

/// Describes one rumqttc event as a packet line, or `None` for events that
/// are not a packet (rumqttc's `AwaitAck`, for example).
///
/// rumqttc reports an outgoing PUBLISH by packet id only, so the caller
/// passes the QoS it publishes with.
pub fn describe(event: &Event, publish_qos: QoS) -> Option<String> {
    let line = match event {
        Event::Outgoing(outgoing) => match outgoing {
            Outgoing::Publish(0) => format!("-> PUBLISH qos={}", qos_number(publish_qos)),
            Outgoing::Publish(id) => format!("-> PUBLISH id={id} qos={}", qos_number(publish_qos)),
            Outgoing::PubAck(id) => format!("-> PUBACK id={id}"),
            Outgoing::PubRec(id) => format!("-> PUBREC id={id}"),
            Outgoing::PubRel(id) => format!("-> PUBREL id={id}"),
            Outgoing::PubComp(id) => format!("-> PUBCOMP id={id}"),
            Outgoing::Subscribe(id) => format!("-> SUBSCRIBE id={id}"),
            Outgoing::Unsubscribe(id) => format!("-> UNSUBSCRIBE id={id}"),
            Outgoing::PingReq => "-> PINGREQ".to_string(),
            Outgoing::PingResp => "-> PINGRESP".to_string(),
            Outgoing::Disconnect => "-> DISCONNECT".to_string(),
            Outgoing::AwaitAck(_) => return None,
        },
        Event::Incoming(incoming) => match incoming {
            Packet::ConnAck(ack) => format!(
                "<- CONNACK session_present={} code={:?}",
                ack.session_present, ack.code
            ),
            Packet::Publish(publish) => {
                let id = match publish.qos {
                    QoS::AtMostOnce => String::new(),
                    _ => format!("id={} ", publish.pkid),
                };
                let retained = if publish.retain { " retain" } else { "" };
                let bytes = match publish.payload.len() {
                    1 => "1 byte".to_string(),
                    n => format!("{n} bytes"),
                };
                format!(
                    "<- PUBLISH {id}qos={} topic={}{retained} ({bytes})",
                    qos_number(publish.qos),
                    publish.topic,
                )
            }
            Packet::PubAck(ack) => format!("<- PUBACK id={}", ack.pkid),
            Packet::PubRec(rec) => format!("<- PUBREC id={}", rec.pkid),
            Packet::PubRel(rel) => format!("<- PUBREL id={}", rel.pkid),
            Packet::PubComp(comp) => format!("<- PUBCOMP id={}", comp.pkid),
            Packet::SubAck(ack) => {
                let granted: Vec<String> = ack
                    .return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReasonCode::Success(qos) => format!("qos={}", qos_number(*qos)),
                        SubscribeReasonCode::Failure => "failure".to_string(),
                    })
                    .collect();
                format!("<- SUBACK id={} [{}]", ack.pkid, granted.join(", "))
            }
            Packet::UnsubAck(ack) => format!("<- UNSUBACK id={}", ack.pkid),
            Packet::PingResp => "<- PINGRESP".to_string(),
            other => format!("<- {other:?}"),
        },
    };
    Some(line)
}

/// The line for the CONNECT packet, which rumqttc sends inside `poll()`
/// without reporting it as an event: we print it just before that `poll()`.
pub fn connect_line(client_id: &str, clean_session: bool) -> String {
    format!("-> CONNECT client_id={client_id} clean_session={clean_session}")
}

/// Describes one rumqttc MQTT 5 event as a packet line, as [`describe`] does
/// for 3.1.1: reason codes in words (`CONNACK Success`, `PUBACK
/// NoMatchingSubscribers`, `SUBACK id=1 [GrantedQoS1]`) and the properties
/// that are present, in brackets.
pub fn describe_v5(event: &v5::Event, publish_qos: QoS) -> Option<String> {
    let incoming = match event {
        // What we send is the same in both versions, as rumqttc reports it.
        v5::Event::Outgoing(outgoing) => {
            return describe(&Event::Outgoing(outgoing.clone()), publish_qos);
        }
        v5::Event::Incoming(incoming) => incoming,
    };
    let bracket = |text: String| match text.is_empty() {
        true => text,
        false => format!(" [{text}]"),
    };
    let reason_text = |reason: Option<&String>| {
        bracket(
            reason
                .map(|text| format!("reason-string {text}"))
                .unwrap_or_default(),
        )
    };
    let line = match incoming {
        Packet5::ConnAck(ack) => format!(
            "<- CONNACK {:?} session_present={}{}",
            ack.code,
            ack.session_present,
            bracket(connack_properties(ack.properties.as_ref()))
        ),
        Packet5::Publish(publish) => {
            let id = match publish.qos {
                v5::mqttbytes::QoS::AtMostOnce => String::new(),
                _ => format!("id={} ", publish.pkid),
            };
            let retained = if publish.retain { " retain" } else { "" };
            format!(
                "<- PUBLISH {id}qos={} topic={}{retained} ({} bytes){}",
                qos_number(qos311(publish.qos)),
                String::from_utf8_lossy(&publish.topic),
                publish.payload.len(),
                bracket(describe_properties(publish.properties.as_ref()))
            )
        }
        Packet5::PubAck(ack) => format!(
            "<- PUBACK id={} {:?}{}",
            ack.pkid,
            ack.reason,
            reason_text(
                ack.properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_ref())
            )
        ),
        Packet5::PubRec(rec) => format!(
            "<- PUBREC id={} {:?}{}",
            rec.pkid,
            rec.reason,
            reason_text(
                rec.properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_ref())
            )
        ),
        Packet5::PubRel(rel) => format!("<- PUBREL id={} {:?}", rel.pkid, rel.reason),
        Packet5::PubComp(comp) => format!("<- PUBCOMP id={} {:?}", comp.pkid, comp.reason),
        Packet5::SubAck(ack) => {
            let codes: Vec<String> = (ack.return_codes.iter())
                .map(|code| match code {
                    Sub5::Success(qos) => format!("GrantedQoS{}", qos_number(qos311(*qos))),
                    other => format!("{other:?}"),
                })
                .collect();
            format!("<- SUBACK id={} [{}]", ack.pkid, codes.join(", "))
        }
        Packet5::UnsubAck(ack) => format!("<- UNSUBACK id={}", ack.pkid),
        Packet5::PingResp(_) => "<- PINGRESP".to_string(),
        Packet5::Disconnect(disconnect) => format!(
            "<- DISCONNECT {:?}{}",
            disconnect.reason_code,
            reason_text(
                disconnect
                    .properties
                    .as_ref()
                    .and_then(|p| p.reason_string.as_ref())
            )
        ),
        other => format!("<- {other:?}"),
    };
    Some(line)
}

/// The CONNACK properties that are present: the broker's limits and what it
/// decided for us (MQTT 5 §3.2.2.3), as `name value` pairs.
fn connack_properties(properties: Option<&ConnAckProperties>) -> String {
    let Some(p) = properties else {
        return String::new();
    };
    let numbers = [
        ("session-expiry-interval", p.session_expiry_interval),
        ("receive-maximum", p.receive_max.map(u32::from)),
        ("maximum-qos", p.max_qos.map(u32::from)),
        ("retain-available", p.retain_available.map(u32::from)),
        ("maximum-packet-size", p.max_packet_size),
        ("topic-alias-maximum", p.topic_alias_max.map(u32::from)),
        (
            "wildcard-subscription-available",
            p.wildcard_subscription_available.map(u32::from),
        ),
        (
            "subscription-identifier-available",
            p.subscription_identifiers_available.map(u32::from),
        ),
        (
            "shared-subscription-available",
            p.shared_subscription_available.map(u32::from),
        ),
        ("server-keep-alive", p.server_keep_alive.map(u32::from)),
    ];
    let texts = [
        ("assigned-client-identifier", &p.assigned_client_identifier),
        ("reason-string", &p.reason_string),
        ("response-information", &p.response_information),
        ("server-reference", &p.server_reference),
    ];
    let numbers = numbers
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name} {value}")));
    let texts = texts
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|value| format!("{name} {value}")));
    let pairs = p
        .user_properties
        .iter()
        .map(|(key, value)| format!("user-property {key} {value}"));
    numbers
        .chain(texts)
        .chain(pairs)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{Incoming, Publish};

    /// One byte is `1 byte`, not `1 bytes`.
    #[test]
    fn a_publish_counts_its_bytes_in_words() {
        let line = |payload: &'static [u8]| {
            let publish = Publish::new("t", QoS::AtMostOnce, payload);
            describe(
                &Event::Incoming(Incoming::Publish(publish)),
                QoS::AtMostOnce,
            )
        };
        assert_eq!(
            line(b"x").as_deref(),
            Some("<- PUBLISH qos=0 topic=t (1 byte)")
        );
        assert_eq!(
            line(b"xy").as_deref(),
            Some("<- PUBLISH qos=0 topic=t (2 bytes)")
        );
    }
}
