//! The mqtt library driven directly against the embedded broker, and the
//! places where rumqttd alone departs from MQTT 3.1.1 and the front door
//! makes the broker follow the spec, each run against Mosquitto too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Server, within};
use mqtt::ClientConfig;
use mqtt::publisher::{self, PublishConfig, Summary};
use mqtt::subscriber::{self, SubscribeConfig};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn publish_config(port: u16, id: &str, topic: &str, qos: QoS) -> PublishConfig {
    PublishConfig {
        client: ClientConfig::new("127.0.0.1", port, id),
        topic: topic.to_string(),
        qos,
        retain: false,
        will: None,
        ack_timeout: Duration::from_secs(5),
        show_packets: false,
    }
}

fn subscribe_config(port: u16, id: &str, filter: &str, qos: QoS) -> SubscribeConfig {
    SubscribeConfig {
        client: ClientConfig::new("127.0.0.1", port, id),
        filters: vec![filter.to_string()],
        qos,
        verbose: false,
        format: None,
        newline: true,
        count: None,
        skip_retained: false,
        retained_only: false,
        hide: Vec::new(),
        exit_when_subscribed: false,
        unsubscribe: Vec::new(),
        timeout: Some(Duration::from_secs(5)),
        show_packets: false,
    }
}

/// Sends `packet` as the first bytes of a connection and returns everything
/// the broker sends back until it closes the connection.
async fn first_answer(addr: std::net::SocketAddr, packet: &[u8]) -> Vec<u8> {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    stream.write_all(packet).await.unwrap();
    let mut answer = vec![0; 4];
    let n = within("an answer or a close", stream.read(&mut answer))
        .await
        .unwrap_or(0);
    answer.truncate(n);
    answer
}

/// `publisher::run` returns only when every QoS 2 message is acknowledged,
/// and `subscriber::run` with a count writes exactly those payloads, one per
/// line, then returns.
#[tokio::test]
async fn library_publisher_and_subscriber_round_trip_at_qos_2() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.addr.port();
    let mut config = subscribe_config(port, "lib-sub", "lib/+", QoS::ExactlyOnce);
    config.count = Some(50);
    // The subscriber writes into a pipe we read; SUBACK is not visible from
    // here, so a retained "ready" message tells us it is subscribed. It is
    // retained before the subscriber starts: published while the
    // subscription is being made, it could arrive twice, live and retained.
    let mut ready = publish_config(port, "lib-ready", "lib/ready", QoS::AtLeastOnce);
    ready.retain = true;
    let one = publisher::repeat(Bytes::from_static(b"ready"), 1, Duration::ZERO);
    publisher::run(ready, one).await.unwrap();
    let (mut reader, writer) = tokio::io::duplex(1 << 16);
    let sub = tokio::spawn(subscriber::run(config, writer));
    let mut first = [0u8; 6];
    within("the ready message", reader.read_exact(&mut first))
        .await
        .unwrap();
    assert_eq!(&first, b"ready\n");

    let messages = publisher::repeat(Bytes::from_static(b"exactly once"), 49, Duration::ZERO);
    let config = publish_config(port, "lib-pub", "lib/data", QoS::ExactlyOnce);
    let summary = within("publishing", publisher::run(config, messages))
        .await
        .unwrap();
    assert_eq!(
        summary,
        Summary {
            published: 49,
            acknowledged: 49
        }
    );
    assert_eq!(within("the subscriber", sub).await.unwrap().unwrap(), 50);
    let mut rest = String::new();
    reader.read_to_string(&mut rest).await.unwrap();
    assert_eq!(rest, "exactly once\n".repeat(49));
}

/// The publisher refuses a PUBLISH one byte over its packet limit with its
/// own clear error, counting the whole packet as rumqttc does (header,
/// remaining length, topic, packet id, payload), and sends one exactly at the
/// limit.
#[tokio::test]
async fn publisher_checks_the_whole_packet_against_its_limit() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.addr.port();
    // 1 header byte, 3 remaining-length bytes, 2 + 1 for the topic "t", 2 for
    // the packet id: 9 bytes besides the payload.
    let at_limit = mqtt::MAX_PACKET_BYTES - 9;
    let config = publish_config(port, "big", "t", QoS::AtLeastOnce);
    let over = publisher::repeat(Bytes::from(vec![b'x'; at_limit + 1]), 1, Duration::ZERO);
    let error = within("the refusal", publisher::run(config.clone(), over))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "message 1 is too large: a 1048577-byte PUBLISH, the limit is 1048576"
    );
    let fits = publisher::repeat(Bytes::from(vec![b'x'; at_limit]), 1, Duration::ZERO);
    let summary = within("publishing", publisher::run(config, fits))
        .await
        .unwrap();
    assert_eq!(
        summary,
        Summary {
            published: 1,
            acknowledged: 1
        }
    );
}

/// A subscriber with a timeout fails, with the count so far, when nothing
/// arrives in time.
#[tokio::test]
async fn subscriber_times_out_when_nothing_arrives() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let mut config = subscribe_config(broker.addr.port(), "quiet", "nothing/here", QoS::AtMostOnce);
    config.timeout = Some(Duration::from_millis(300));
    let error = within("the timeout", subscriber::run(config, tokio::io::sink()))
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "no message for 300ms (0 received)");
}

/// MQTT 3.1.1 section 3.2.2.3: a bad username or password gets CONNACK with
/// return code 5 (20 02 00 05) before the close, so the client can tell
/// why; a good login gets CONNACK 0. (rumqttd alone closes without a byte;
/// the front door answers.)
#[tokio::test]
async fn bad_credentials_get_connack_5() {
    let broker = Server::start("mqtt_broker", &["--user", "alice:secret"]).await;
    let bad = first_answer(
        broker.addr,
        &common::mqtt::connect_packet("raw", "alice", "wrong"),
    )
    .await;
    assert_eq!(bad, [0x20, 0x02, 0x00, 0x05]);
    let good = first_answer(
        broker.addr,
        &common::mqtt::connect_packet("raw", "alice", "secret"),
    )
    .await;
    assert_eq!(good, [0x20, 0x02, 0x00, 0x00]);
}

/// MQTT 3.1.1 section 3.1.2.10: a keep-alive of 0 turns the keep-alive
/// mechanism off, and the CONNECT is accepted (CONNACK 0). (rumqttd alone
/// refuses it; the front door keeps rumqttd's side alive itself.)
#[tokio::test]
async fn a_keep_alive_of_zero_is_accepted() {
    let broker = Server::start("mqtt_broker", &[]).await;
    for keep_alive in [0, 5] {
        let connect = common::mqtt::connect_packet_with_keep_alive("raw", "any", "any", keep_alive);
        assert_eq!(
            first_answer(broker.addr, &connect).await,
            [0x20, 0x02, 0x00, 0x00],
            "keep-alive {keep_alive}"
        );
    }
}

/// [MQTT-3.3.1-10, MQTT-3.3.1-12]: only a *retained* message with an
/// empty payload removes a topic's retained message. An empty message that
/// is not retained goes to the subscribers and leaves the retained one, so
/// a late subscriber still gets `online`; a retained empty one removes it,
/// and the next late subscriber gets nothing. (rumqttd alone removes it on
/// any empty message; see `mqtt/src/frontdoor/publish.rs`.)
async fn only_a_retained_empty_message_clears_the_retained_one(port: u16) {
    let mut keep = publish_config(port, "keep", "status", QoS::AtLeastOnce);
    keep.retain = true;
    let online = publisher::repeat(Bytes::from_static(b"online"), 1, Duration::ZERO);
    publisher::run(keep.clone(), online).await.unwrap();
    let plain = publish_config(port, "plain", "status", QoS::AtLeastOnce);
    let empty = publisher::repeat(Bytes::new(), 1, Duration::ZERO);
    publisher::run(plain, empty).await.unwrap();

    let mut late = subscribe_config(port, "late", "status", QoS::AtLeastOnce);
    late.count = Some(1);
    let mut out = Vec::new();
    subscriber::run(late.clone(), &mut out).await.unwrap();
    assert_eq!(out, b"online\n");

    let clear = publisher::repeat(Bytes::new(), 1, Duration::ZERO);
    publisher::run(keep, clear).await.unwrap();
    late.count = None;
    late.timeout = Some(Duration::from_millis(500));
    let mut out = Vec::new();
    let error = subscriber::run(late, &mut out).await.unwrap_err();
    assert_eq!(error.to_string(), "no message for 500ms (0 received)");
}

#[tokio::test]
async fn mqtt_broker_clears_a_retained_message_only_on_a_retained_empty_one() {
    let broker = Server::start("mqtt_broker", &[]).await;
    only_a_retained_empty_message_clears_the_retained_one(broker.addr.port()).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_clears_a_retained_message_only_on_a_retained_empty_one() {
    let broker = common::mqtt::Mosquitto::start(None).await;
    only_a_retained_empty_message_clears_the_retained_one(broker.addr.port()).await;
}

/// Subscribes to `again` at QoS 0, then at QoS 1, with a clean or a
/// persistent session, and returns the QoS a QoS 1 message then arrives at.
async fn qos_after_a_repeated_subscription(port: u16, clean_session: bool) -> QoS {
    let mut client = ClientConfig::new("127.0.0.1", port, "resubscriber");
    client.clean_session = clean_session;
    let (sub, mut events) = AsyncClient::new(client.mqtt_options().unwrap(), 10);
    sub.subscribe("again", QoS::AtMostOnce).await.unwrap();
    sub.subscribe("again", QoS::AtLeastOnce).await.unwrap();
    let mut granted = Vec::new();
    while granted.len() < 2 {
        let event = within("two SUBACKs", events.poll()).await.unwrap();
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            granted.extend(ack.return_codes);
        }
    }
    assert_eq!(
        granted,
        [
            rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce),
            rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ]
    );
    let config = publish_config(port, "qos1-pub", "again", QoS::AtLeastOnce);
    let one = publisher::repeat(Bytes::from_static(b"q1"), 1, Duration::ZERO);
    publisher::run(config, one).await.unwrap();
    loop {
        let event = within("the PUBLISH", events.poll()).await.unwrap();
        if let Event::Incoming(Packet::Publish(publish)) = event {
            return publish.qos;
        }
    }
}

/// [MQTT-3.8.4-3]: a SUBSCRIBE to a filter the client already has replaces
/// that subscription, QoS included, for a clean session and a persistent
/// one alike. The front door keeps each filter's QoS itself (see
/// `mqtt/src/frontdoor/subscribe.rs`); rumqttd alone keeps a persistent
/// session's first QoS.
#[tokio::test]
async fn a_repeated_subscription_takes_the_new_qos() {
    for clean_session in [true, false] {
        let broker = Server::start("mqtt_broker", &[]).await;
        let qos = qos_after_a_repeated_subscription(broker.addr.port(), clean_session).await;
        assert_eq!(qos, QoS::AtLeastOnce, "clean session {clean_session}");
    }
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_gives_a_repeated_subscription_the_new_qos() {
    for clean_session in [true, false] {
        let broker = common::mqtt::Mosquitto::start(None).await;
        let qos = qos_after_a_repeated_subscription(broker.addr.port(), clean_session).await;
        assert_eq!(qos, QoS::AtLeastOnce, "clean session {clean_session}");
    }
}

/// Subscribes to `status`, which holds a retained message, then subscribes
/// to it again, and returns how many times the retained message arrived.
async fn retained_deliveries_after_a_repeated_subscription(port: u16) -> usize {
    let mut keep = publish_config(port, "keeper", "status", QoS::AtLeastOnce);
    keep.retain = true;
    let online = publisher::repeat(Bytes::from_static(b"online"), 1, Duration::ZERO);
    publisher::run(keep, online).await.unwrap();
    let client = ClientConfig::new("127.0.0.1", port, "twice");
    let (sub, mut events) = AsyncClient::new(client.mqtt_options().unwrap(), 10);
    sub.subscribe("status", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("status", QoS::AtLeastOnce).await.unwrap();
    let (mut subacks, mut retained) = (0, 0);
    // Both SUBACKs, then half a second for retained messages to come.
    let mut quiet_until = None;
    loop {
        let wait = match quiet_until {
            Some(until) => tokio::time::timeout_at(until, events.poll()).await,
            None => Ok(within("two SUBACKs", events.poll()).await),
        };
        match wait {
            Err(_) => return retained,
            Ok(event) => match event.unwrap() {
                Event::Incoming(Packet::SubAck(_)) => {
                    subacks += 1;
                    if subacks == 2 {
                        quiet_until =
                            Some(tokio::time::Instant::now() + Duration::from_millis(500));
                    }
                }
                Event::Incoming(Packet::Publish(publish)) if publish.retain => retained += 1,
                _ => {}
            },
        }
    }
}

/// [MQTT-3.8.4-3]: a SUBSCRIBE to a filter the client already has replaces
/// it, and "any existing retained messages matching the Topic Filter MUST be
/// re-sent": two deliveries, as with Mosquitto.
#[tokio::test]
async fn a_repeated_subscription_gets_the_retained_message_again() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.addr.port();
    assert_eq!(
        retained_deliveries_after_a_repeated_subscription(port).await,
        2
    );
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_sends_the_retained_message_again_on_a_repeated_subscription() {
    let broker = common::mqtt::Mosquitto::start(None).await;
    let port = broker.addr.port();
    assert_eq!(
        retained_deliveries_after_a_repeated_subscription(port).await,
        2
    );
}

/// Subscribes to `a/b` and `$share/g/a/b` in one SUBSCRIBE, publishes one
/// message to `a/b`, and returns the SUBACK's return codes and how many
/// copies of the message arrived within half a second.
async fn a_filter_and_its_share(port: u16) -> (Vec<rumqttc::SubscribeReasonCode>, usize) {
    let client = ClientConfig::new("127.0.0.1", port, "both");
    let (sub, mut events) = AsyncClient::new(client.mqtt_options().unwrap(), 10);
    let filters = ["a/b", "$share/g/a/b"]
        .map(|path| rumqttc::SubscribeFilter::new(path.to_string(), QoS::AtMostOnce));
    sub.subscribe_many(filters).await.unwrap();
    let codes = loop {
        let event = within("the SUBACK", events.poll()).await.unwrap();
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            break ack.return_codes;
        }
    };
    let once = publisher::repeat(Bytes::from_static(b"hi"), 1, Duration::ZERO);
    publisher::run(publish_config(port, "pub", "a/b", QoS::AtLeastOnce), once)
        .await
        .unwrap();
    let mut copies = 0;
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(event) = tokio::time::timeout_at(quiet_until, events.poll()).await {
        if let Event::Incoming(Packet::Publish(_)) = event.unwrap() {
            copies += 1;
        }
    }
    (codes, copies)
}

/// A client may hold `a/b` and `$share/g/a/b` (shared subscriptions are a
/// common extension to 3.1.1), and a message that matches both reaches it
/// once [MQTT-3.3.5-1], as with Mosquitto.
#[tokio::test]
async fn a_filter_and_its_shared_subscription_bring_one_copy() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let (codes, copies) = a_filter_and_its_share(broker.addr.port()).await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce); 2]
    );
    assert_eq!(copies, 1);
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_gives_a_filter_and_its_shared_subscription_one_copy() {
    let broker = common::mqtt::Mosquitto::start(None).await;
    let (codes, copies) = a_filter_and_its_share(broker.addr.port()).await;
    assert_eq!(
        codes,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce); 2]
    );
    assert_eq!(copies, 1);
}
