//! One client over rumqttc's two: MQTT 3.1.1 and MQTT 5.
//!
//! rumqttc has a client for each version, [`rumqttc::AsyncClient`] and
//! [`rumqttc::v5::AsyncClient`], each with its own packet types. The
//! publisher and the subscriber only care about a few things that both
//! versions share (a CONNACK, a message, an acknowledgement, a SUBACK, a
//! packet we sent), so [`EventLoop::poll`] turns either version's event into
//! one [`Event`], and the loops in `publisher.rs` and `subscriber.rs` are
//! written once. What MQTT 5 adds (properties, reason codes) rides along:
//! a message's properties as text, a refusal's reason code in words.

use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{
    Packet as Packet5, PubAckReason, PubCompReason, PubRecReason,
    PublishProperties as WireProperties, SubscribeReasonCode as Sub5,
};
use rumqttc::{Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode, v5};

use crate::v5::{PublishProperties, SubscribeOptions, SubscribeProperties, qos5, qos311};
use crate::{ClientConfig, Version, packets};

/// The handle that queues requests (publish, subscribe, disconnect) for the
/// [`EventLoop`], which does the network work.
#[derive(Debug, Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The event loop of either version, and what it needs to print packets.
#[derive(Debug)]
pub struct EventLoop {
    inner: Inner,
    /// Whether the network connection is up: the next `poll()` connects if not.
    up: bool,
    /// With `--show-packets`, the QoS we publish with (rumqttc reports an
    /// outgoing PUBLISH by its packet id only).
    show_packets: Option<QoS>,
    connect_line: String,
}

// Boxed: the two event loops differ in size by hundreds of bytes, and an
// enum is as large as its largest variant.
enum Inner {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

// rumqttc's event loops do not implement Debug: we name the version only.
impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::V311(_) => f.write_str("EventLoop(MQTT 3.1.1)"),
            Inner::V5(_) => f.write_str("EventLoop(MQTT 5)"),
        }
    }
}

/// A failed `poll()`, of either version.
#[derive(Debug)]
pub enum ConnectionError {
    V311(rumqttc::ConnectionError),
    V5(v5::ConnectionError),
}

impl ConnectionError {
    /// The error explained, as [`crate::explain()`] does.
    pub fn explain(&self, addr: &str, connected: bool) -> anyhow::Error {
        match self {
            ConnectionError::V311(error) => crate::explain(error, addr, connected),
            ConnectionError::V5(error) => crate::explain_v5(error, addr, connected),
        }
    }
}

/// What the publisher and the subscriber react to, from either version.
#[derive(Debug)]
pub enum Event {
    /// The broker accepted our CONNECT; `session_present`: it kept our session.
    ConnAck { session_present: bool },
    /// A message for one of our subscriptions.
    Publish(Message),
    /// The end of one of our QoS 1 or 2 publishes: PUBACK, PUBCOMP, or (MQTT 5)
    /// a PUBREC whose reason code ends the exchange. `refused` holds the MQTT
    /// 5 reason code in words when the broker did not take the message.
    Acked { refused: Option<String> },
    /// The SUBACK; `refused`: at least one filter was not granted.
    SubAck { refused: bool },
    /// The UNSUBACK.
    UnsubAck,
    /// A packet we sent.
    Sent(Outgoing),
    /// Anything else (PINGRESP, PUBREC, PUBREL...).
    Other,
}

/// One message received, from either version.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: Bytes,
    pub payload: Bytes,
    pub qos: QoS,
    pub pkid: u16,
    pub retain: bool,
    /// MQTT 5: its properties, if it has any (print them with
    /// [`crate::v5::describe_properties`]); `None` for MQTT 3.1.1.
    pub properties: Option<WireProperties>,
}

/// A client and its event loop for `config`, in the version it asks for,
/// with `will` as last will and, with `show_packets` (the QoS we publish
/// with), every packet printed on stderr.
///
/// Errors: options rumqttc would refuse (see [`ClientConfig::mqtt_options`]
/// and [`crate::v5::mqtt_options`]).
pub fn new(
    config: &ClientConfig,
    will: Option<rumqttc::LastWill>,
    show_packets: Option<QoS>,
) -> anyhow::Result<(Client, EventLoop)> {
    let id = &config.client_id;
    // The request queue between client and event loop holds 10 requests;
    // when it is full, an `.await` on the client waits for the event loop.
    let (client, inner, connect_line) = match config.version {
        Version::V311 => {
            let mut options = config.mqtt_options()?;
            if let Some(will) = will {
                options.set_last_will(will);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 10);
            eventloop.set_network_options(config.network_options());
            let line = packets::connect_line(id, config.clean_session);
            (Client::V311(client), Inner::V311(Box::new(eventloop)), line)
        }
        Version::V5 => {
            let options = crate::v5::mqtt_options(config, will.as_ref().map(crate::v5::last_will))?;
            let expiry = options.session_expiry_interval().unwrap_or(0);
            let (client, eventloop) = v5::AsyncClient::new(options, 10);
            let line = format!(
                "-> CONNECT v5 client_id={id} clean_start={} session_expiry={expiry}",
                config.clean_session
            );
            (Client::V5(client), Inner::V5(Box::new(eventloop)), line)
        }
    };
    let eventloop = EventLoop {
        inner,
        up: false,
        show_packets,
        connect_line,
    };
    Ok((client, eventloop))
}

impl Client {
    /// Queues one PUBLISH, waiting while the request queue is full. The
    /// properties go out with MQTT 5 only (3.1.1 has none).
    ///
    /// Errors: the event loop is gone (the connection ended).
    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        properties: &PublishProperties,
    ) -> anyhow::Result<()> {
        let queued = match self {
            Client::V311(client) => client.publish_bytes(topic, qos, retain, payload).await,
            Client::V5(client) => {
                let wire = properties.to_wire();
                let queued =
                    client.publish_bytes_with_properties(topic, qos5(qos), retain, payload, wire);
                return queued
                    .await
                    .map_err(|_| anyhow!("the connection ended while publishing"));
            }
        };
        queued.map_err(|_| anyhow!("the connection ended while publishing"))
    }

    /// Queues SUBSCRIBE for every filter at `qos`; MQTT 5 adds `options` to
    /// each. Never waits (see the rumqttc trap in `subscriber.rs`).
    ///
    /// Errors: the request queue is full or the event loop is gone.
    pub fn try_subscribe(
        &self,
        filters: &[String],
        qos: QoS,
        options: SubscribeOptions,
        properties: &SubscribeProperties,
    ) -> anyhow::Result<()> {
        let queued = match self {
            Client::V311(client) => {
                let filters = filters.iter().map(|f| SubscribeFilter::new(f.clone(), qos));
                client.try_subscribe_many(filters).map_err(|e| anyhow!(e))
            }
            Client::V5(client) => {
                let filters = filters.iter().map(|f| options.filter(f, qos));
                match properties.to_wire() {
                    Some(wire) => client.try_subscribe_many_with_properties(filters, wire),
                    None => client.try_subscribe_many(filters),
                }
                .map_err(|e| anyhow!(e))
            }
        };
        queued.context("cannot queue SUBSCRIBE")
    }

    /// Queues UNSUBSCRIBE for `filters` without waiting (see
    /// [`Client::try_subscribe`]).
    ///
    /// Errors: the request queue is full or the event loop is gone.
    pub fn try_unsubscribe(&self, filters: &[String]) -> anyhow::Result<()> {
        for filter in filters {
            let queued = match self {
                Client::V311(client) => client.try_unsubscribe(filter).map_err(|e| anyhow!(e)),
                Client::V5(client) => client.try_unsubscribe(filter).map_err(|e| anyhow!(e)),
            };
            queued.context("cannot queue UNSUBSCRIBE")?;
        }
        Ok(())
    }

    /// Queues DISCONNECT without waiting.
    ///
    /// Errors: the request queue is full or the event loop is gone.
    pub fn try_disconnect(&self) -> anyhow::Result<()> {
        let queued = match self {
            Client::V311(client) => client.try_disconnect().map_err(|e| anyhow!(e)),
            Client::V5(client) => client.try_disconnect().map_err(|e| anyhow!(e)),
        };
        queued.context("cannot queue DISCONNECT")
    }
}

impl EventLoop {
    /// Does the network work until the next event, connecting first if the
    /// connection is down (after a failure, the next call reconnects).
    /// With `--show-packets`, prints the packet on stderr.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        if self.show_packets.is_some() && !self.up {
            // rumqttc sends CONNECT inside `poll()` without reporting it as
            // an event: we print it just before that `poll()`.
            eprintln!("{}", self.connect_line);
        }
        let show = self.show_packets;
        let event = match &mut self.inner {
            Inner::V311(eventloop) => match eventloop.poll().await {
                Ok(event) => {
                    print_packet(show.and_then(|qos| packets::describe(&event, qos)));
                    Ok(from_v311(event))
                }
                Err(error) => Err(ConnectionError::V311(error)),
            },
            Inner::V5(eventloop) => match eventloop.poll().await {
                Ok(event) => {
                    print_packet(show.and_then(|qos| packets::describe_v5(&event, qos)));
                    Ok(from_v5(event))
                }
                Err(error) => Err(ConnectionError::V5(error)),
            },
        };
        self.up = event.is_ok();
        event
    }

    /// After our DISCONNECT has gone out, waits (at most a second) for the
    /// broker to close the connection, rather than closing it first: see
    /// [`crate::await_close`], which explains why.
    pub async fn await_close(&mut self) {
        match &mut self.inner {
            Inner::V311(eventloop) => crate::await_close(eventloop).await,
            Inner::V5(eventloop) => {
                let closed = async { while eventloop.poll().await.is_ok() {} };
                let _ = tokio::time::timeout(Duration::from_secs(1), closed).await;
            }
        }
    }
}

/// Prints a `--show-packets` line on stderr, if there is one.
fn print_packet(line: Option<String>) {
    if let Some(line) = line {
        eprintln!("{line}");
    }
}

/// The shared event for an MQTT 3.1.1 event.
fn from_v311(event: rumqttc::Event) -> Event {
    match event {
        rumqttc::Event::Outgoing(outgoing) => Event::Sent(outgoing),
        rumqttc::Event::Incoming(packet) => match packet {
            Packet::ConnAck(ack) => Event::ConnAck {
                session_present: ack.session_present,
            },
            Packet::Publish(publish) => Event::Publish(Message {
                topic: publish.topic.into(),
                payload: publish.payload,
                qos: publish.qos,
                pkid: publish.pkid,
                retain: publish.retain,
                properties: None,
            }),
            Packet::PubAck(_) | Packet::PubComp(_) => Event::Acked { refused: None },
            Packet::SubAck(ack) => Event::SubAck {
                refused: ack.return_codes.contains(&SubscribeReasonCode::Failure),
            },
            Packet::UnsubAck(_) => Event::UnsubAck,
            _ => Event::Other,
        },
    }
}

/// The shared event for an MQTT 5 event.
fn from_v5(event: v5::Event) -> Event {
    match event {
        v5::Event::Outgoing(outgoing) => Event::Sent(outgoing),
        v5::Event::Incoming(packet) => match packet {
            Packet5::ConnAck(ack) => Event::ConnAck {
                session_present: ack.session_present,
            },
            Packet5::Publish(publish) => Event::Publish(Message {
                properties: publish.properties,
                topic: publish.topic,
                payload: publish.payload,
                qos: qos311(publish.qos),
                pkid: publish.pkid,
                retain: publish.retain,
            }),
            // Reason codes below 0x80 are successes; 0x10, "no matching
            // subscribers", too: the broker took the message (MQTT 5 §3.4.2.1).
            Packet5::PubAck(ack) => Event::Acked {
                refused: match ack.reason {
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                    reason => Some(format!("PUBACK {reason:?}")),
                },
            },
            // A PUBREC of 0x80 or more ends a QoS 2 exchange: no PUBREL
            // follows (MQTT 5 §4.3.3).
            Packet5::PubRec(rec) => match rec.reason {
                PubRecReason::Success | PubRecReason::NoMatchingSubscribers => Event::Other,
                reason => Event::Acked {
                    refused: Some(format!("PUBREC {reason:?}")),
                },
            },
            Packet5::PubComp(comp) => Event::Acked {
                refused: match comp.reason {
                    PubCompReason::Success => None,
                    reason => Some(format!("PUBCOMP {reason:?}")),
                },
            },
            Packet5::SubAck(ack) => Event::SubAck {
                refused: ack
                    .return_codes
                    .iter()
                    .any(|code| !matches!(code, Sub5::Success(_))),
            },
            Packet5::UnsubAck(_) => Event::UnsubAck,
            _ => Event::Other,
        },
    }
}
