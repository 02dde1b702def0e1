//! MQTT 5 cases, run against `mqtt_broker` (in plain `cargo test`) and
//! against Mosquitto, the reference (ignored unless installed; CI runs it),
//! as `mqtt_conformance.rs` does for 3.1.1. Each case sends raw MQTT 5
//! packets and records what a client can observe: the packets that come
//! back, with their reason codes and properties, and whether the connection
//! closed. Both brokers must give the outcome the spec names; where ours
//! keeps a departure, the case says so and why, and pins both outcomes.
//!
//! Every case ends with a PINGREQ, so that "still open" is observed (a
//! PINGRESP), not assumed from silence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;

use common::mqtt::{Mosquitto, packet, read_more, split, string};
use common::{Server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Property identifiers used here (spec §2.2.2.2).
const TOPIC_ALIAS: u8 = 0x23;
const USER_PROPERTY: u8 = 0x26;
const CONTENT_TYPE: u8 = 0x03;
const AUTHENTICATION_METHOD: u8 = 0x15;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;

/// A property list with its length in front (all short here).
fn properties(list: &[u8]) -> Vec<u8> {
    assert!(list.len() < 128);
    let mut out = vec![list.len() as u8];
    out.extend_from_slice(list);
    out
}

/// A user property `key` = `value`.
fn user_property(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![USER_PROPERTY];
    out.extend(string(key));
    out.extend(string(value));
    out
}

/// An MQTT 5 CONNECT: clean start, keep-alive 60 s, the given properties.
fn connect_with(client_id: &[u8], props: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0b10, 0, 60]);
    body.extend(properties(props));
    body.extend(string(client_id));
    packet(0x10, &body)
}

fn connect(client_id: &[u8]) -> Vec<u8> {
    connect_with(client_id, &[])
}

/// An MQTT 5 PUBLISH of `payload` at QoS 0 (or 1, with packet id 1).
fn publish(topic: &[u8], qos: u8, retain: bool, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&1u16.to_be_bytes());
    }
    body.extend(properties(props));
    body.extend_from_slice(payload);
    packet(0x30 | qos << 1 | u8::from(retain), &body)
}

/// An MQTT 5 SUBSCRIBE, packet id 1, one filter with its options byte.
fn subscribe_with(props: &[u8], filter: &[u8], options: u8) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(properties(props));
    body.extend(string(filter));
    body.push(options);
    packet(0x82, &body)
}

fn subscribe(filter: &[u8], options: u8) -> Vec<u8> {
    subscribe_with(&[], filter, options)
}

fn unsubscribe(filter: &[u8]) -> Vec<u8> {
    let mut body = 2u16.to_be_bytes().to_vec();
    body.extend(properties(&[]));
    body.extend(string(filter));
    packet(0xa2, &body)
}

const PINGREQ: [u8; 2] = [0xc0, 0];

/// The packet id of the fence's SUBSCRIBE, and the fence's topic.
const FENCE_ID: u16 = 0x7777;
const FENCE: &[u8] = b"fence/t";

/// What a client saw: one word per packet received, then `closed` if the
/// broker closed the connection.
///
/// A broker may route a message after it has answered the packets sent
/// after it (ours routes on a thread of its own), so a case whose client
/// receives messages ends with a fence: a subscription of its own and a
/// message to it, which comes after every message the case published
/// (one publisher's messages reach a subscriber in order, spec §4.6).
/// Only then is the PINGREQ sent. The fence's packets are not shown.
async fn observe(addr: SocketAddr, sends: &[Vec<u8>]) -> String {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut wire = sends.concat();
    let fenced = sends.iter().skip(1).any(|packet| packet[0] >> 4 == 8);
    if fenced {
        let mut body = FENCE_ID.to_be_bytes().to_vec();
        body.extend(properties(&[]));
        body.extend(string(FENCE));
        body.push(0);
        wire.extend(packet(0x82, &body));
        wire.extend(publish(FENCE, 0, false, &[], b"end"));
    } else {
        wire.extend_from_slice(&PINGREQ);
    }
    // A broker may close before reading it all; that is an outcome too.
    let _ = stream.write_all(&wire).await;
    let mut seen = Vec::new();
    let mut buffer = Vec::new();
    loop {
        while let Some((first, body, used)) = split(&buffer) {
            buffer.drain(..used);
            if first >> 4 == 9 && body[..2] == FENCE_ID.to_be_bytes() {
                continue;
            }
            let word = describe(first, &body);
            if word.starts_with("PUBLISH fence/t") {
                let _ = stream.write_all(&PINGREQ).await;
                continue;
            }
            let done = word == "PINGRESP";
            seen.push(word);
            if done {
                return seen.join(", ");
            }
        }
        if !read_more(&mut stream, &mut buffer).await {
            seen.push("closed".to_string());
            return seen.join(", ");
        }
    }
}

/// A variable byte integer at `body[at..]`: its value and its length.
fn varint(body: &[u8], at: usize) -> (usize, usize) {
    let (mut value, mut used) = (0usize, 0);
    loop {
        let byte = body[at + used];
        value |= usize::from(byte & 0x7f) << (7 * used);
        used += 1;
        if byte & 0x80 == 0 {
            return (value, used);
        }
    }
}

/// The identifiers of the properties in `list`, for the few types that
/// appear in these cases, with a user property's pair and a string's text.
fn property_words(list: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    // Subscription identifiers, sorted: their order is not significant
    // [MQTT-3.3.4-4].
    let mut identifiers = Vec::new();
    let mut at = 0;
    let text = |at: usize| {
        let length = usize::from(u16::from_be_bytes([list[at], list[at + 1]]));
        (
            String::from_utf8_lossy(&list[at + 2..at + 2 + length]).to_string(),
            at + 2 + length,
        )
    };
    while at < list.len() {
        let id = list[at];
        at += 1;
        match id {
            USER_PROPERTY => {
                let (key, next) = text(at);
                let (value, next) = text(next);
                words.push(format!("{key}={value}"));
                at = next;
            }
            CONTENT_TYPE | ASSIGNED_CLIENT_IDENTIFIER => {
                let (value, next) = text(at);
                words.push(format!(
                    "{id:#04x}={}",
                    if id == CONTENT_TYPE {
                        value
                    } else {
                        "*".into()
                    }
                ));
                at = next;
            }
            SUBSCRIPTION_IDENTIFIER => {
                let (value, used) = varint(list, at);
                identifiers.push(format!("id={value}"));
                at += used;
            }
            // Byte-sized properties.
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => {
                words.push(format!("{id:#04x}"));
                at += 1;
            }
            // Server Keep Alive, with its value.
            0x13 => {
                let seconds = u16::from_be_bytes([list[at], list[at + 1]]);
                words.push(format!("0x13={seconds}"));
                at += 2;
            }
            // Two-byte ones.
            // Topic Alias, with its value.
            TOPIC_ALIAS => {
                let alias = u16::from_be_bytes([list[at], list[at + 1]]);
                words.push(format!("alias={alias}"));
                at += 2;
            }
            0x21 | 0x22 => {
                words.push(format!("{id:#04x}"));
                at += 2;
            }
            // Four-byte ones.
            0x02 | 0x11 | 0x18 | 0x27 => {
                words.push(format!("{id:#04x}"));
                at += 4;
            }
            other => {
                words.push(format!("{other:#04x}?"));
                break;
            }
        }
    }
    identifiers.sort();
    words.extend(identifiers);
    words
}

fn describe(first: u8, body: &[u8]) -> String {
    match first >> 4 {
        // CONNACK: reason code, and whether a client id was assigned (the
        // other properties differ between brokers by design).
        2 => {
            let code = body.get(1).copied().unwrap_or(0xff);
            let (length, used) = varint(body, 2);
            let list = &body[2 + used..2 + used + length];
            let assigned = property_words(list)
                .iter()
                .any(|word| word.starts_with("0x12"));
            let assigned = if assigned { " assigned" } else { "" };
            let present = if body[0] & 1 == 1 { " present" } else { "" };
            let keep_alive = property_words(list)
                .iter()
                .find_map(|word| word.strip_prefix("0x13="))
                .map(|seconds| format!(" keep-alive {seconds}"))
                .unwrap_or_default();
            format!("CONNACK {code:#04x}{present}{assigned}{keep_alive}")
        }
        3 => {
            let length = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = String::from_utf8_lossy(&body[2..2 + length]);
            let mut at = 2 + length + if (first >> 1) & 3 > 0 { 2 } else { 0 };
            let (props_length, used) = varint(body, at);
            at += used;
            let props = property_words(&body[at..at + props_length]);
            let payload = String::from_utf8_lossy(&body[at + props_length..]);
            let retain = if first & 1 == 1 { " retained" } else { "" };
            format!("PUBLISH {topic} {payload}{retain} [{}]", props.join(" "))
        }
        4 => match body.get(2) {
            None => "PUBACK".to_string(),
            Some(code) => format!("PUBACK {code:#04x}"),
        },
        9 | 11 => {
            let (length, used) = varint(body, 2);
            let codes: Vec<String> = body[2 + used + length..]
                .iter()
                .map(|c| format!("{c:#04x}"))
                .collect();
            let name = if first >> 4 == 9 {
                "SUBACK"
            } else {
                "UNSUBACK"
            };
            format!("{name} [{}]", codes.join(" "))
        }
        13 => "PINGRESP".to_string(),
        14 => format!("DISCONNECT {:#04x}", body.first().copied().unwrap_or(0)),
        other => format!("type {other}"),
    }
}

/// One case: the spec's rule, what it sends, what the spec says a client
/// sees, and for a departure we keep, what our broker does and why; and
/// where Mosquitto departs from the spec, what it does, so that a change in
/// either shows.
struct Case {
    rule: &'static str,
    sends: Vec<Vec<u8>>,
    spec: &'static str,
    ours: Option<(&'static str, &'static str)>,
    mosquitto: Option<(&'static str, &'static str)>,
}

fn case(rule: &'static str, sends: Vec<Vec<u8>>, spec: &'static str) -> Case {
    Case {
        rule,
        sends,
        spec,
        ours: None,
        mosquitto: None,
    }
}

impl Case {
    /// Mosquitto 2.0 departs from the spec here: what it does, and how.
    fn but_mosquitto(mut self, outcome: &'static str, why: &'static str) -> Case {
        self.mosquitto = Some((outcome, why));
        self
    }
}

/// Every case, with the outcome the spec names.
fn cases() -> Vec<Case> {
    let alias = |n: u16| {
        let mut out = vec![TOPIC_ALIAS];
        out.extend_from_slice(&n.to_be_bytes());
        out
    };
    vec![
        case(
            "3.1.2.2 protocol level 5 is accepted",
            vec![connect(b"v5")],
            "CONNACK 0x00, PINGRESP",
        ),
        case(
            "MQTT-3.2.2-16 an empty client id is assigned one, in CONNACK",
            vec![connect(b"")],
            "CONNACK 0x00 assigned, PINGRESP",
        ),
        case(
            "3.1.2.11.9 an authentication method the broker does not know: CONNACK 0x8C",
            vec![connect_with(b"auth", &{
                let mut p = vec![AUTHENTICATION_METHOD];
                p.extend(string(b"SCRAM-SHA-1"));
                p
            })],
            "CONNACK 0x8c, closed",
        ),
        case(
            "MQTT-3.3.2-17 user properties and content type reach the subscriber unchanged",
            vec![
                connect(b"props"),
                subscribe(b"p/t", 0),
                publish(
                    b"p/t",
                    0,
                    false,
                    &[
                        user_property(b"a", b"1"),
                        user_property(b"b", b"2"),
                        user_property(b"a", b"3"),
                        {
                            let mut p = vec![CONTENT_TYPE];
                            p.extend(string(b"text/plain"));
                            p
                        },
                    ]
                    .concat(),
                    b"hi",
                ),
            ],
            "CONNACK 0x00, SUBACK [0x00], PUBLISH p/t hi [a=1 b=2 a=3 0x03=text/plain], PINGRESP",
        ),
        case(
            "3.3.2.3.4 a topic alias set up, then used with an empty topic name",
            vec![
                connect(b"alias"),
                subscribe(b"al/t", 0),
                publish(b"al/t", 0, false, &alias(1), b"one"),
                publish(b"", 0, false, &alias(1), b"two"),
            ],
            "CONNACK 0x00, SUBACK [0x00], PUBLISH al/t one [], PUBLISH al/t two [], PINGRESP",
        ),
        case(
            "MQTT-3.3.2-8 topic alias 0: DISCONNECT 0x94",
            vec![
                connect(b"alias0"),
                publish(b"a/b", 0, false, &alias(0), b"x"),
            ],
            "CONNACK 0x00, DISCONNECT 0x94, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, DISCONNECT 0x81, closed",
            "it calls alias 0 a Malformed Packet; §3.3.2.3.4 names 0x94, Topic Alias invalid",
        ),
        case(
            "MQTT-3.3.2-9 a topic alias over Topic Alias Maximum: DISCONNECT 0x94",
            vec![
                connect(b"alias99"),
                publish(b"a/b", 0, false, &alias(9999), b"x"),
            ],
            "CONNACK 0x00, DISCONNECT 0x94, closed",
        ),
        case(
            "3.11.3 UNSUBACK says which subscriptions existed",
            vec![
                connect(b"unsub"),
                subscribe(b"u/t", 1),
                unsubscribe(b"u/t"),
                unsubscribe(b"never/t"),
            ],
            "CONNACK 0x00, SUBACK [0x01], UNSUBACK [0x00], UNSUBACK [0x11], PINGRESP",
        ),
        case(
            "MQTT-3.8.3-3 No Local: a client's own messages do not come back to it",
            vec![
                connect(b"nl"),
                subscribe(b"nl/t", 0b100),
                publish(b"nl/t", 0, false, &[], b"mine"),
            ],
            "CONNACK 0x00, SUBACK [0x00], PINGRESP",
        ),
        case(
            "MQTT-3.3.1-12/13 Retain As Published keeps RETAIN on a live message; without, it is cleared",
            vec![
                connect(b"rap"),
                subscribe(b"rap/t", 0b1000),
                subscribe(b"rap2/t", 0),
                publish(b"rap/t", 0, true, &[], b"r"),
                publish(b"rap2/t", 0, true, &[], b"r"),
                // Clean up, for the next run against the same broker.
                publish(b"rap/t", 0, true, &[], b""),
                publish(b"rap2/t", 0, true, &[], b""),
            ],
            "CONNACK 0x00, SUBACK [0x00], SUBACK [0x00], PUBLISH rap/t r retained [], \
             PUBLISH rap2/t r [], PUBLISH rap/t  retained [], PUBLISH rap2/t  [], PINGRESP",
        ),
        case(
            "MQTT-3.8.3-5 reserved bits of a subscription's options: malformed",
            vec![connect(b"rsvd"), subscribe(b"a/b", 0b0100_0000)],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        ),
        case(
            "3.8.3.1 Retain Handling 3 is a protocol error",
            vec![connect(b"rh3"), subscribe(b"a/b", 0b11_0000)],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, DISCONNECT 0x81, closed",
            "it calls it a Malformed Packet; §3.8.3.1 names it a Protocol Error",
        ),
        case(
            "MQTT-3.8.3-4 No Local on a shared subscription is a protocol error",
            vec![connect(b"nlshare"), subscribe(b"$share/g/a", 0b100)],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, SUBACK [0x00], PINGRESP",
            "it grants the subscription",
        ),
        case(
            "MQTT-3.1.0-2 a second CONNECT is a protocol error",
            vec![connect(b"twice"), connect(b"twice")],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, closed",
            "it closes without a DISCONNECT, which §4.13.1 allows (a server MAY send one)",
        ),
        case(
            "3.8.2.1.2 a Subscription Identifier comes back with each message",
            vec![
                connect(b"subid"),
                subscribe_with(&[SUBSCRIPTION_IDENTIFIER, 0x81, 0x01], b"si/t", 0),
                publish(b"si/t", 0, false, &[], b"x"),
            ],
            "CONNACK 0x00, SUBACK [0x00], PUBLISH si/t x [id=129], PINGRESP",
        ),
        case(
            "MQTT-3.3.4-4 one copy for overlapping subscriptions, with both identifiers",
            vec![
                connect(b"subids"),
                subscribe_with(&[SUBSCRIPTION_IDENTIFIER, 1], b"so/#", 0),
                subscribe_with(&[SUBSCRIPTION_IDENTIFIER, 2], b"so/+", 0),
                subscribe(b"so/t", 0),
                publish(b"so/t", 0, false, &[], b"x"),
            ],
            "CONNACK 0x00, SUBACK [0x00], SUBACK [0x00], SUBACK [0x00], \
             PUBLISH so/t x [id=1 id=2], PINGRESP",
        )
        .but_mosquitto(
            "CONNACK 0x00, SUBACK [0x00], SUBACK [0x00], SUBACK [0x00], \
             PUBLISH so/t x [], PUBLISH so/t x [id=2], PUBLISH so/t x [id=1], PINGRESP",
            "it sends a copy per matching subscription, each with that one's \
             identifier, which §3.3.4 allows too [MQTT-3.3.4-5]",
        ),
        case(
            "3.8.2.1.2 a Subscription Identifier of 0 is a protocol error",
            vec![
                connect(b"subid0"),
                subscribe_with(&[SUBSCRIPTION_IDENTIFIER, 0], b"s/t", 0),
            ],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, DISCONNECT 0x81, closed",
            "it calls the packet malformed (0x81), where §3.8.2.1.2 names a protocol error",
        ),
        case(
            "3.8.2.1.2 two Subscription Identifiers are a protocol error",
            vec![
                connect(b"subid2"),
                subscribe_with(
                    &[SUBSCRIPTION_IDENTIFIER, 1, SUBSCRIPTION_IDENTIFIER, 2],
                    b"s/t",
                    0,
                ),
            ],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, closed",
            "it closes without a DISCONNECT, which §4.13.1 allows (a server MAY send one)",
        ),
        case(
            "3.4.2.1 a QoS 1 PUBLISH nobody subscribed to: PUBACK 0x10",
            vec![
                connect(b"nosub"),
                publish(b"nobody/here", 1, false, &[], b"x"),
            ],
            "CONNACK 0x00, PUBACK 0x10, PINGRESP",
        ),
        case(
            "3.1.2.9 a password without a user name is allowed in MQTT 5",
            vec![connect_password_only(b"pwonly", b"secret")],
            "CONNACK 0x00, PINGRESP",
        ),
        case(
            "3.1.2.11.10 Authentication Data without an Authentication Method",
            vec![connect_with(b"authdata", &[0x16, 0, 3, b'x', b'y', b'z'])],
            "closed",
        )
        .but_mosquitto("CONNACK 0x00, PINGRESP", "it accepts the CONNECT"),
        case(
            "MQTT-3.14.2-2 DISCONNECT may not give a session to a connection that had none",
            vec![
                connect(b"disc-sei"),
                packet(0xe0, &[0x00, 5, 0x11, 0, 0, 0, 60]),
            ],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        ),
        case(
            "MQTT-1.5.5-1 a property length in more bytes than it needs",
            vec![
                connect(b"long-varint"),
                packet(0x32, &[0, 3, b'v', b'/', b't', 0, 1, 0x80, 0x00, b'x']),
            ],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        ),
        case(
            "MQTT-1.5.5-1 a Subscription Identifier in more bytes than it needs",
            vec![
                connect(b"long-subid"),
                subscribe_with(&[SUBSCRIPTION_IDENTIFIER, 0x85, 0x00], b"s/t", 0),
            ],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        ),
        case(
            "MQTT-1.5.5-1 a remaining length in more bytes than it needs",
            vec![connect(b"long-length"), vec![0xc0, 0x80, 0x00]],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, PINGRESP",
            "it reads on and stays open (one PINGRESP, for the case's last PINGREQ)",
        ),
        case(
            "3.3.2.1 an empty topic name without a Topic Alias is a protocol error",
            vec![connect(b"empty-topic"), publish(b"", 0, false, &[], b"x")],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        ),
        case(
            "MQTT-3.3.2-2 a topic name with a wildcard is a protocol error",
            vec![connect(b"wild-topic"), publish(b"a/+", 0, false, &[], b"x")],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        ),
        case(
            "MQTT-3.3.4-6 a client's PUBLISH with a Subscription Identifier",
            vec![
                connect(b"pub-subid"),
                publish(b"p/t", 1, false, &[SUBSCRIPTION_IDENTIFIER, 1], b"x"),
            ],
            "CONNACK 0x00, DISCONNECT 0x82, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, PUBACK 0x10, PINGRESP",
            "it takes the PUBLISH",
        ),
        case(
            "3.12 a PINGREQ with a body is malformed",
            vec![connect(b"ping-body"), vec![0xc0, 0x01, 0x00]],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, PINGRESP",
            "it reads on and stays open (one PINGRESP, for the case's last PINGREQ)",
        ),
        case(
            "3.6 a PUBREL one byte long is malformed",
            vec![connect(b"short-pubrel"), vec![0x62, 0x01, 0x00]],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, closed",
            "it closes without a DISCONNECT, which §4.13.1 allows (a server MAY send one)",
        ),
        case(
            "MQTT-4.8.2-1 a shared subscription needs a group name and a filter",
            vec![connect(b"bad-share"), subscribe(b"$share/g", 0)],
            "CONNACK 0x00, DISCONNECT 0x81, closed",
        )
        .but_mosquitto(
            "CONNACK 0x00, SUBACK [0x00], PINGRESP",
            "it grants a share group with no filter, which no message can match",
        ),
    ]
}

/// An MQTT 5 CONNECT with a password and no user name (clean start).
fn connect_password_only(client_id: &[u8], password: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0b0100_0010, 0, 60]);
    body.extend(properties(&[]));
    body.extend(string(client_id));
    body.extend(string(password));
    packet(0x10, &body)
}

async fn run_all(addr: SocketAddr, ours: bool) {
    let mut failures = Vec::new();
    for case in cases() {
        let expected = match (case.ours, case.mosquitto) {
            (Some((departure, _why)), _) if ours => departure,
            (_, Some((departure, _why))) if !ours => departure,
            _ => case.spec,
        };
        let seen = observe(addr, &case.sends).await;
        if seen != expected {
            failures.push(format!(
                "{}: expected {expected:?}, saw {seen:?}",
                case.rule
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every case against `mqtt_broker`.
#[tokio::test]
async fn mqtt_broker_gives_the_mqtt5_outcomes() {
    let broker = Server::start("mqtt_broker", &[]).await;
    run_all(broker.addr, true).await;
}

/// Every case against Mosquitto, the reference.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_gives_the_mqtt5_outcomes() {
    let mosquitto = Mosquitto::start(None).await;
    run_all(mosquitto.addr, false).await;
}

/// [MQTT-3.3.1-9..11] Retain Handling 0, 1 and 2, on a message retained
/// before the case starts: a first client publishes it and waits until it
/// comes back to its own subscription, so that the broker has it; then a
/// second subscribes with each option. Returns what the second saw.
async fn retain_handling(addr: SocketAddr) -> String {
    let kept = observe(
        addr,
        &[
            connect(b"rh-pub"),
            subscribe(b"rh/t", 0b10_0000),
            publish(b"rh/t", 0, true, &[], b"kept"),
        ],
    )
    .await;
    assert_eq!(
        kept,
        "CONNACK 0x00, SUBACK [0x00], PUBLISH rh/t kept [], PINGRESP"
    );
    let seen = observe(
        addr,
        &[
            connect(b"rh-sub"),
            // 2: none at subscribe; 1: only for a new subscription (this
            // one is not: the filter is held already); 0: always.
            subscribe(b"rh/t", 0b10_0000),
            subscribe(b"rh/t", 0b01_0000),
            subscribe(b"rh/t", 0),
            unsubscribe(b"rh/t"),
            subscribe(b"rh/t", 0b01_0000),
        ],
    )
    .await;
    // Clean up, for the next run against the same broker.
    observe(
        addr,
        &[connect(b"rh-pub"), publish(b"rh/t", 0, true, &[], b"")],
    )
    .await;
    // Which SUBSCRIBE brought a retained message shows in how many come;
    // when each comes relative to the acknowledgements after its SUBACK is
    // the broker's choice (Mosquitto writes it at once, ours from the
    // session's mailbox on its next turn): so the acknowledgements are
    // compared in order, then the messages.
    let (messages, acks): (Vec<&str>, Vec<&str>) = seen
        .split(", ")
        .partition(|word| word.starts_with("PUBLISH"));
    format!("{}; {}", acks.join(", "), messages.join(", "))
}

const RETAIN_HANDLING: &str = "CONNACK 0x00, SUBACK [0x00], SUBACK [0x00], SUBACK [0x00], \
    UNSUBACK [0x00], SUBACK [0x00], PINGRESP; \
    PUBLISH rh/t kept retained [], PUBLISH rh/t kept retained []";

#[tokio::test]
async fn mqtt_broker_keeps_to_retain_handling() {
    let broker = Server::start("mqtt_broker", &[]).await;
    assert_eq!(retain_handling(broker.addr).await, RETAIN_HANDLING);
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_keeps_to_retain_handling() {
    let mosquitto = Mosquitto::start(None).await;
    assert_eq!(retain_handling(mosquitto.addr).await, RETAIN_HANDLING);
}

/// One client's connection, packet by packet: for cases with more than one
/// client. `v5` says how to read its PUBLISHes (3.1.1 ones have no
/// properties).
struct Client {
    stream: TcpStream,
    buffer: Vec<u8>,
    v5: bool,
    /// The packet id of the last QoS 1 or 2 PUBLISH read.
    last_id: u16,
}

impl Client {
    /// Connects, sends `connect`, and returns the client with what came
    /// back first (its CONNACK).
    async fn open(addr: SocketAddr, connect: Vec<u8>) -> (Client, String) {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        let v5 = connect[2 + 2 + 4] == 5;
        let mut client = Client {
            stream,
            buffer: Vec::new(),
            v5,
            last_id: 0,
        };
        client.send(&connect).await;
        let connack = client.next().await;
        (client, connack)
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("a write", self.stream.write_all(bytes))
            .await
            .unwrap();
    }

    /// The next packet, described, or `closed`.
    async fn next(&mut self) -> String {
        loop {
            if let Some((first, body, used)) = split(&self.buffer) {
                self.buffer.drain(..used);
                if first >> 4 == 3 && (first >> 1) & 3 > 0 {
                    let at = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
                    self.last_id = u16::from_be_bytes([body[at], body[at + 1]]);
                }
                if !self.v5 && first >> 4 == 3 {
                    let length = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let topic = String::from_utf8_lossy(&body[2..2 + length]);
                    let skip = if (first >> 1) & 3 > 0 { 4 } else { 2 };
                    let payload = String::from_utf8_lossy(&body[skip + length..]);
                    return format!("PUBLISH {topic} {payload}");
                }
                if !self.v5 && first >> 4 == 9 {
                    return format!("SUBACK {:?}", &body[2..]);
                }
                if !self.v5 && first >> 4 == 2 {
                    return format!("CONNACK {}", body[1]);
                }
                return describe(first, &body);
            }
            if !read_more(&mut self.stream, &mut self.buffer).await {
                return "closed".to_string();
            }
        }
    }
}

/// A 3.1.1 CONNECT, clean session, keep-alive 60 s.
fn connect_v4(client_id: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[4, 0b10, 0, 60]);
    body.extend(string(client_id));
    packet(0x10, &body)
}

/// A 3.1.1 SUBSCRIBE at QoS 0 and a 3.1.1 QoS 0 PUBLISH.
fn subscribe_v4(filter: &[u8]) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(string(filter));
    body.push(0);
    packet(0x82, &body)
}

fn publish_v4(topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// 3.1.1 and 5 clients share topics: a 3.1.1 subscriber gets an MQTT 5
/// message without its properties, and an MQTT 5 subscriber gets a 3.1.1
/// message with none.
async fn versions_share_topics(addr: SocketAddr) {
    let (mut sub5, _) = Client::open(addr, connect(b"x-sub5")).await;
    sub5.send(&subscribe(b"x/t", 0)).await;
    assert_eq!(sub5.next().await, "SUBACK [0x00]");
    let (mut sub4, _) = Client::open(addr, connect_v4(b"x-sub4")).await;
    sub4.send(&subscribe_v4(b"x/t")).await;
    assert_eq!(sub4.next().await, "SUBACK [0]");

    let (mut pub5, _) = Client::open(addr, connect(b"x-pub5")).await;
    pub5.send(&publish(
        b"x/t",
        1,
        false,
        &user_property(b"k", b"v"),
        b"from5",
    ))
    .await;
    assert_eq!(pub5.next().await, "PUBACK");
    assert_eq!(sub5.next().await, "PUBLISH x/t from5 [k=v]");
    assert_eq!(sub4.next().await, "PUBLISH x/t from5");

    let (mut pub4, _) = Client::open(addr, connect_v4(b"x-pub4")).await;
    pub4.send(&publish_v4(b"x/t", b"from4")).await;
    assert_eq!(sub5.next().await, "PUBLISH x/t from4 []");
    assert_eq!(sub4.next().await, "PUBLISH x/t from4");
}

#[tokio::test]
async fn mqtt_broker_lets_versions_share_topics() {
    let broker = Server::start("mqtt_broker", &[]).await;
    versions_share_topics(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_lets_versions_share_topics() {
    let mosquitto = Mosquitto::start(None).await;
    versions_share_topics(mosquitto.addr).await;
}

/// An MQTT 5 CONNECT with a will (topic `w/t`, QoS 0, a user property).
fn connect_with_will(client_id: &[u8]) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0b0110, 0, 60]);
    body.extend(properties(&[]));
    body.extend(string(client_id));
    body.extend(properties(&user_property(b"last", b"words")));
    body.extend(string(b"w/t"));
    body.extend(string(b"gone"));
    packet(0x10, &body)
}

/// Spec §3.14.2.1: DISCONNECT 0x04 publishes the will, with the will's
/// properties; a second connection with a client id takes the session
/// over, and the first is closed [MQTT-3.1.4-3], told why as `taken_over`
/// shows (§3.1.4 describes a DISCONNECT 0x8E first, though only the close
/// is a MUST: ours sends it, Mosquitto 2.0 closes without it).
async fn will_and_takeover(addr: SocketAddr, taken_over: &[&str]) {
    let (mut watcher, _) = Client::open(addr, connect(b"w-watch")).await;
    watcher.send(&subscribe(b"w/t", 0)).await;
    assert_eq!(watcher.next().await, "SUBACK [0x00]");

    let (mut leaver, connack) = Client::open(addr, connect_with_will(b"w-leaver")).await;
    assert_eq!(connack, "CONNACK 0x00");
    leaver.send(&[0xe0, 1, 0x04]).await;
    assert_eq!(leaver.next().await, "closed");
    assert_eq!(watcher.next().await, "PUBLISH w/t gone [last=words]");

    let (mut first, _) = Client::open(addr, connect(b"w-twice")).await;
    let (_second, connack) = Client::open(addr, connect(b"w-twice")).await;
    assert_eq!(connack, "CONNACK 0x00");
    for word in taken_over {
        assert_eq!(first.next().await, *word);
    }
}

#[tokio::test]
async fn mqtt_broker_publishes_a_will_asked_for_and_says_taken_over() {
    let broker = Server::start("mqtt_broker", &[]).await;
    will_and_takeover(broker.addr, &["DISCONNECT 0x8e", "closed"]).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_publishes_a_will_asked_for_and_says_taken_over() {
    let mosquitto = Mosquitto::start(None).await;
    will_and_takeover(mosquitto.addr, &["closed"]).await;
}

/// An MQTT 5 CONNECT without Clean Start, with a Session Expiry Interval.
fn connect_keeping(client_id: &[u8], expiry: u32) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0, 0, 60]);
    let mut list = vec![0x11];
    list.extend_from_slice(&expiry.to_be_bytes());
    body.extend(properties(&list));
    body.extend(string(client_id));
    packet(0x10, &body)
}

/// Spec §3.1.2.11.2: a session outlives its connection only with a
/// Session Expiry Interval over 0, and for no longer than that; and the client's Maximum Packet Size
/// (§3.1.2.11.4): a message that would make a larger PUBLISH is not sent.
async fn sessions_and_packet_size(addr: SocketAddr) {
    for (expiry, present) in [(60, "CONNACK 0x00 present"), (0, "CONNACK 0x00")] {
        let id = format!("se-{expiry}");
        let (mut client, connack) =
            Client::open(addr, connect_keeping(id.as_bytes(), expiry)).await;
        assert_eq!(connack, "CONNACK 0x00");
        client.send(&subscribe(b"se/t", 1)).await;
        assert_eq!(client.next().await, "SUBACK [0x01]");
        client.send(&[0xe0, 0]).await;
        assert_eq!(client.next().await, "closed");
        let (_again, connack) = Client::open(addr, connect_keeping(id.as_bytes(), 0)).await;
        assert_eq!(connack, present, "session expiry {expiry}");
    }

    // A session with an interval of 1 s is gone 3 s after its client left
    // (the time is what is tested here; both brokers look once a second).
    let (mut client, _) = Client::open(addr, connect_keeping(b"se-short", 1)).await;
    client.send(&[0xe0, 0]).await;
    assert_eq!(client.next().await, "closed");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (_again, connack) = Client::open(addr, connect_keeping(b"se-short", 0)).await;
    assert_eq!(connack, "CONNACK 0x00", "a session past its expiry");

    let mut list = vec![0x27];
    list.extend_from_slice(&64u32.to_be_bytes());
    let (mut small, _) = Client::open(addr, connect_with(b"mps", &list)).await;
    small.send(&subscribe(b"mps/t", 0)).await;
    assert_eq!(small.next().await, "SUBACK [0x00]");
    let (mut publisher, _) = Client::open(addr, connect(b"mps-pub")).await;
    publisher
        .send(&publish(b"mps/t", 0, false, &[], &[b'x'; 100]))
        .await;
    publisher
        .send(&publish(b"mps/t", 0, false, &[], b"small"))
        .await;
    assert_eq!(small.next().await, "PUBLISH mps/t small []");
}

#[tokio::test]
async fn mqtt_broker_keeps_sessions_and_packet_sizes() {
    let broker = Server::start("mqtt_broker", &[]).await;
    sessions_and_packet_size(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_keeps_sessions_and_packet_sizes() {
    let mosquitto = Mosquitto::start(None).await;
    sessions_and_packet_size(mosquitto.addr).await;
}

/// [MQTT-3.3.2-5]: a retained message past its Message Expiry Interval is
/// not delivered; one within it is, with the interval it has left
/// [MQTT-3.3.2-6].
async fn message_expiry(addr: SocketAddr) {
    let expiry = |seconds: u32| {
        let mut list = vec![0x02];
        list.extend_from_slice(&seconds.to_be_bytes());
        list
    };
    let kept = observe(
        addr,
        &[
            connect(b"ex-pub"),
            subscribe(b"ex/#", 0b10_0000),
            publish(b"ex/short", 0, true, &expiry(1), b"brief"),
            publish(b"ex/long", 0, true, &expiry(600), b"lasting"),
        ],
    )
    .await;
    assert_eq!(
        kept,
        "CONNACK 0x00, SUBACK [0x00], PUBLISH ex/short brief [0x02], \
         PUBLISH ex/long lasting [0x02], PINGRESP"
    );
    // The time is what is tested: the short one's second runs out.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let seen = observe(addr, &[connect(b"ex-sub"), subscribe(b"ex/#", 0)]).await;
    observe(
        addr,
        &[
            connect(b"ex-pub"),
            publish(b"ex/short", 0, true, &[], b""),
            publish(b"ex/long", 0, true, &[], b""),
        ],
    )
    .await;
    assert_eq!(
        seen,
        "CONNACK 0x00, SUBACK [0x00], PUBLISH ex/long lasting retained [0x02], PINGRESP"
    );
}

#[tokio::test]
async fn mqtt_broker_lets_messages_expire() {
    let broker = Server::start("mqtt_broker", &[]).await;
    message_expiry(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_lets_messages_expire() {
    let mosquitto = Mosquitto::start(None).await;
    message_expiry(mosquitto.addr).await;
}

/// [MQTT-3.3.4-9]: a client with Receive Maximum 1 has at most one QoS 1
/// delivery unacknowledged; the next comes after its PUBACK.
async fn receive_maximum(addr: SocketAddr) {
    let mut list = vec![0x21];
    list.extend_from_slice(&1u16.to_be_bytes());
    let (mut slow, _) = Client::open(addr, connect_with(b"rm-slow", &list)).await;
    slow.send(&subscribe(b"rm/t", 1)).await;
    assert_eq!(slow.next().await, "SUBACK [0x01]");
    // The publisher sees its three messages come back to its own
    // subscription, so the broker has routed them all before `slow` asks.
    let (mut publisher, _) = Client::open(addr, connect(b"rm-pub")).await;
    publisher.send(&subscribe(b"rm/t", 0)).await;
    assert_eq!(publisher.next().await, "SUBACK [0x00]");
    for n in 1..=3u16 {
        // QoS 1, packet ids 1 to 3: the deliveries to `slow` are QoS 1.
        let mut body = string(b"rm/t");
        body.extend_from_slice(&n.to_be_bytes());
        body.extend(properties(&[]));
        body.extend_from_slice(n.to_string().as_bytes());
        publisher.send(&packet(0x32, &body)).await;
    }
    // Three PUBACKs and three messages, in an order that is the broker's.
    let mut back = Vec::new();
    for _ in 0..6 {
        back.push(publisher.next().await);
    }
    back.sort();
    assert_eq!(
        back,
        [
            "PUBACK",
            "PUBACK",
            "PUBACK",
            "PUBLISH rm/t 1 []",
            "PUBLISH rm/t 2 []",
            "PUBLISH rm/t 3 []"
        ]
    );
    for n in 1..=3 {
        assert_eq!(slow.next().await, format!("PUBLISH rm/t {n} []"));
        // Nothing else comes before the PINGRESP: the window is full.
        slow.send(&PINGREQ).await;
        assert_eq!(slow.next().await, "PINGRESP", "after message {n}");
        let [high, low] = slow.last_id.to_be_bytes();
        slow.send(&[0x40, 2, high, low]).await;
    }
}

#[tokio::test]
async fn mqtt_broker_keeps_to_receive_maximum() {
    let broker = Server::start("mqtt_broker", &[]).await;
    receive_maximum(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_keeps_to_receive_maximum() {
    let mosquitto = Mosquitto::start(None).await;
    receive_maximum(mosquitto.addr).await;
}

/// An MQTT 5 CONNECT without Clean Start, Session Expiry 60 s, and a will
/// (`wd/t`, "gone") with a Will Delay Interval of `delay` seconds.
fn connect_with_delayed_will(client_id: &[u8], delay: u32) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0b0100, 0, 60]);
    let mut list = vec![0x11];
    list.extend_from_slice(&60u32.to_be_bytes());
    body.extend(properties(&list));
    body.extend(string(client_id));
    let mut will = vec![0x18];
    will.extend_from_slice(&delay.to_be_bytes());
    body.extend(properties(&will));
    body.extend(string(b"wd/t"));
    body.extend(string(b"gone"));
    packet(0x10, &body)
}

/// Spec §3.1.3.2.2: a will with a Will Delay Interval goes that long after
/// its client vanished, not at once; and not at all if the client comes
/// back to its session first [MQTT-3.1.3-9].
async fn will_delay(addr: SocketAddr) {
    let (mut watcher, _) = Client::open(addr, connect(b"wd-watch")).await;
    watcher.send(&subscribe(b"wd/t", 0)).await;
    assert_eq!(watcher.next().await, "SUBACK [0x00]");

    // A client that vanishes (no DISCONNECT): its will comes after 1 s.
    let (gone, _) = Client::open(addr, connect_with_delayed_will(b"wd-gone", 1)).await;
    let vanished = std::time::Instant::now();
    drop(gone);
    assert_eq!(watcher.next().await, "PUBLISH wd/t gone []");
    let waited = vanished.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );

    // One that comes back within its 2 s: no will. A marker published 3 s
    // later is the next thing the watcher sees.
    let (back, _) = Client::open(addr, connect_with_delayed_will(b"wd-back", 2)).await;
    drop(back);
    let (_again, connack) = Client::open(addr, connect_keeping(b"wd-back", 60)).await;
    assert_eq!(connack, "CONNACK 0x00 present");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (mut marker, _) = Client::open(addr, connect(b"wd-marker")).await;
    marker
        .send(&publish(b"wd/t", 0, false, &[], b"marker"))
        .await;
    assert_eq!(watcher.next().await, "PUBLISH wd/t marker []");
}

#[tokio::test]
async fn mqtt_broker_delays_a_will() {
    let broker = Server::start("mqtt_broker", &[]).await;
    will_delay(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_delays_a_will() {
    let mosquitto = Mosquitto::start(None).await;
    will_delay(mosquitto.addr).await;
}

/// A CONNECT of `version` (4 or 5) with a keep-alive of `seconds`.
fn connect_keep_alive(client_id: &[u8], version: u8, seconds: u16) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[version, 0b10]);
    body.extend_from_slice(&seconds.to_be_bytes());
    if version == 5 {
        body.extend(properties(&[]));
    }
    body.extend(string(client_id));
    packet(0x10, &body)
}

/// Server Keep Alive (spec §3.2.2.3.14), on a broker whose longest
/// keep-alive is 10 s (Mosquitto takes no less): an MQTT 5 client that asks for more, or for none, is
/// told the broker's in CONNACK and must keep to it [MQTT-3.2.2-21], and the
/// broker holds it to that, closing with `closing`. A 3.1.1 client cannot be
/// told, and keeps the keep-alive it asked for (as Mosquitto 2.0.11 does).
async fn server_keep_alive(addr: SocketAddr, closing: &[&str]) {
    let outcomes = [
        (5, 60, "CONNACK 0x00 keep-alive 10"),
        (5, 0, "CONNACK 0x00 keep-alive 10"),
        (5, 5, "CONNACK 0x00"),
        (4, 60, "CONNACK 0"),
        (4, 10, "CONNACK 0"),
    ];
    for (version, seconds, expected) in outcomes {
        let id = format!("ka-{version}-{seconds}");
        let (_client, connack) =
            Client::open(addr, connect_keep_alive(id.as_bytes(), version, seconds)).await;
        assert_eq!(connack, expected, "MQTT {version}, keep-alive {seconds} s");
    }
    // Silent for longer than 1.5 x 10 s: closed, by ours with DISCONNECT
    // 0x8D, Keep Alive timeout.
    let (mut silent, _) = Client::open(addr, connect_keep_alive(b"ka-silent", 5, 60)).await;
    let started = std::time::Instant::now();
    // Longer than `next`'s 10 s: wait for the first byte here.
    let mut first = [0u8; 1];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        silent.stream.peek(&mut first),
    );
    assert!(matches!(read.await, Ok(Ok(_))), "nothing came in 30 s");
    for &expected in closing {
        assert_eq!(silent.next().await, expected);
    }
    let waited = started.elapsed();
    assert!(
        (14..25).contains(&waited.as_secs()),
        "closed after {waited:?}, not 15 s"
    );
}

#[tokio::test]
async fn mqtt_broker_lowers_a_keep_alive() {
    let broker = Server::start("mqtt_broker", &["--max-keep-alive", "10"]).await;
    server_keep_alive(broker.addr, &["DISCONNECT 0x8d", "closed"]).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_lowers_a_keep_alive() {
    let mosquitto = Mosquitto::start_with(None, "max_keepalive 10\n").await;
    // Mosquitto closes without a DISCONNECT, which §4.13.1 allows.
    server_keep_alive(mosquitto.addr, &["closed"]).await;
}

/// A DISCONNECT's reason code other than 0x00 (here 0x80, Unspecified
/// error) leaves the will to be published: only 0x00 deletes it
/// [MQTT-3.1.2-8, MQTT-3.1.2-10]. `published`: whether the broker does.
/// A marker published after the close shows what came before it.
async fn will_after_error_disconnect(addr: SocketAddr, published: bool) {
    let (mut watcher, _) = Client::open(addr, connect(b"we-watch")).await;
    watcher.send(&subscribe(b"w/t", 0)).await;
    assert_eq!(watcher.next().await, "SUBACK [0x00]");
    let (mut leaver, _) = Client::open(addr, connect_with_will(b"we-leaver")).await;
    leaver.send(&[0xe0, 1, 0x80]).await;
    assert_eq!(leaver.next().await, "closed");
    if published {
        assert_eq!(watcher.next().await, "PUBLISH w/t gone [last=words]");
    }
    let (mut marker, _) = Client::open(addr, connect(b"we-marker")).await;
    marker
        .send(&publish(b"w/t", 0, false, &[], b"marker"))
        .await;
    assert_eq!(watcher.next().await, "PUBLISH w/t marker []");
}

#[tokio::test]
async fn mqtt_broker_publishes_the_will_after_an_error_disconnect() {
    let broker = Server::start("mqtt_broker", &[]).await;
    will_after_error_disconnect(broker.addr, true).await;
}

/// Mosquitto 2.0.11 deletes the will on any DISCONNECT: a departure from
/// [MQTT-3.1.2-10], pinned here.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_drops_the_will_after_an_error_disconnect() {
    let mosquitto = Mosquitto::start(None).await;
    will_after_error_disconnect(mosquitto.addr, false).await;
}

/// DISCONNECT with Session Expiry Interval 0 ends a session that CONNECT
/// asked to keep; one with 60 keeps a session that CONNECT asked to keep
/// for 1 s past that second (spec §3.14.2.2.2: DISCONNECT's value replaces
/// CONNECT's).
async fn disconnect_changes_session_expiry(addr: SocketAddr) {
    let disconnect = |seconds: u32| {
        let mut body = vec![0x00, 5, 0x11];
        body.extend_from_slice(&seconds.to_be_bytes());
        packet(0xe0, &body)
    };
    for (id, at_connect, at_disconnect, present) in [
        ("dse-end", 300, 0, "CONNACK 0x00"),
        ("dse-keep", 1, 60, "CONNACK 0x00 present"),
    ] {
        let (mut client, _) = Client::open(addr, connect_keeping(id.as_bytes(), at_connect)).await;
        client.send(&subscribe(b"dse/t", 1)).await;
        assert_eq!(client.next().await, "SUBACK [0x01]");
        client.send(&disconnect(at_disconnect)).await;
        assert_eq!(client.next().await, "closed");
        // Past CONNECT's 1 s (both brokers look once a second).
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let (_again, connack) = Client::open(addr, connect_keeping(id.as_bytes(), 0)).await;
        assert_eq!(connack, present, "{id}");
    }
}

#[tokio::test]
async fn mqtt_broker_takes_the_session_expiry_of_disconnect() {
    let broker = Server::start("mqtt_broker", &[]).await;
    disconnect_changes_session_expiry(broker.addr).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_takes_the_session_expiry_of_disconnect() {
    let mosquitto = Mosquitto::start(None).await;
    disconnect_changes_session_expiry(mosquitto.addr).await;
}

/// Topic aliases from the broker to a client that allows two (Topic Alias
/// Maximum 2 in CONNECT, spec §3.3.2.3.4): what a subscriber to `ta/#`
/// sees of five messages on three topics, one line each. A broker may send
/// aliases or not; ours gives the first two topics one each.
async fn aliases_towards_the_client(addr: SocketAddr) -> Vec<String> {
    let (mut subscriber, _) = Client::open(addr, connect_with(b"ta-sub", &[0x22, 0, 2])).await;
    subscriber.send(&subscribe(b"ta/#", 1)).await;
    assert_eq!(subscriber.next().await, "SUBACK [0x01]");
    let (mut publisher, _) = Client::open(addr, connect(b"ta-pub")).await;
    for (topic, payload) in [
        ("ta/a", "1"),
        ("ta/a", "2"),
        ("ta/b", "3"),
        ("ta/c", "4"),
        ("ta/b", "5"),
    ] {
        publisher
            .send(&publish(
                topic.as_bytes(),
                0,
                false,
                &[],
                payload.as_bytes(),
            ))
            .await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(subscriber.next().await);
    }
    seen
}

#[tokio::test]
async fn mqtt_broker_sends_topic_aliases_to_a_client_that_takes_them() {
    let broker = Server::start("mqtt_broker", &[]).await;
    assert_eq!(
        aliases_towards_the_client(broker.addr).await,
        [
            "PUBLISH ta/a 1 [alias=1]",
            "PUBLISH  2 [alias=1]",
            "PUBLISH ta/b 3 [alias=2]",
            "PUBLISH ta/c 4 []",
            "PUBLISH  5 [alias=2]",
        ]
    );
}

/// Mosquitto 2.0.11 sends every topic by name: the spec lets a server
/// choose (§3.3.2.3.4).
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_sends_topic_names_to_a_client_that_takes_aliases() {
    let mosquitto = Mosquitto::start(None).await;
    assert_eq!(
        aliases_towards_the_client(mosquitto.addr).await,
        [
            "PUBLISH ta/a 1 []",
            "PUBLISH ta/a 2 []",
            "PUBLISH ta/b 3 []",
            "PUBLISH ta/c 4 []",
            "PUBLISH ta/b 5 []",
        ]
    );
}

/// A QoS 1 message that went out under a topic alias and was not
/// acknowledged goes again on the next connection by its topic name: the
/// alias belonged to the first connection [MQTT-3.3.2-7]. `first` is how
/// the first connection saw it.
async fn resend_without_alias(addr: SocketAddr, first: &str) {
    let mut list = vec![0x22, 0, 2, 0x11];
    list.extend_from_slice(&60u32.to_be_bytes());
    let mut body = string(b"MQTT");
    body.extend_from_slice(&[5, 0b10, 0, 60]);
    body.extend(properties(&list));
    body.extend(string(b"tr-sub"));
    let (mut subscriber, _) = Client::open(addr, packet(0x10, &body)).await;
    subscriber.send(&subscribe(b"tr/t", 1)).await;
    assert_eq!(subscriber.next().await, "SUBACK [0x01]");
    let (mut publisher, _) = Client::open(addr, connect(b"tr-pub")).await;
    publisher
        .send(&publish(b"tr/t", 1, false, &[], b"one"))
        .await;
    assert_eq!(subscriber.next().await, first);
    drop(subscriber);
    // No PUBACK was sent: the message goes again, with its name.
    let (mut again, connack) = Client::open(addr, connect_keeping(b"tr-sub", 60)).await;
    assert_eq!(connack, "CONNACK 0x00 present");
    assert_eq!(again.next().await, "PUBLISH tr/t one []");
}

#[tokio::test]
async fn mqtt_broker_resends_by_topic_name() {
    let broker = Server::start("mqtt_broker", &[]).await;
    resend_without_alias(broker.addr, "PUBLISH tr/t one [alias=1]").await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_resends_by_topic_name() {
    let mosquitto = Mosquitto::start(None).await;
    resend_without_alias(mosquitto.addr, "PUBLISH tr/t one []").await;
}
