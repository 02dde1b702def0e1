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

use rumqttc::{Event, Outgoing, Packet, QoS, SubscribeReasonCode};

use crate::qos_number;

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
                format!(
                    "<- PUBLISH {id}qos={} topic={}{retained} ({} bytes)",
                    qos_number(publish.qos),
                    publish.topic,
                    publish.payload.len()
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
