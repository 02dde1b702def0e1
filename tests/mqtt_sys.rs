//! `$SYS`: `mqtt_broker` publishes its statistics under `$SYS/broker/...`
//! with Mosquitto's names; values change as clients come and go, `#` does
//! not match them [MQTT-4.7.2-1], and (ignored: needs mosquitto) Mosquitto
//! publishes every name we do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::mqtt::{Mosquitto, connect_packet, next_packet, packet, string};
use common::{Server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Every name `sys.rs` publishes, after `$SYS/broker/`.
const NAMES: [&str; 9] = [
    "version",
    "uptime",
    "clients/connected",
    "subscriptions/count",
    "retained messages/count",
    "publish/messages/received",
    "publish/messages/sent",
    "bytes/received",
    "bytes/sent",
];

/// A raw 3.1.1 client with id `id`, connected, subscribed to `filter` at
/// QoS 0, its SUBACK read.
async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(&connect_packet(id, "u", "p"))
        .await
        .expect("write");
    let mut body = vec![0, 1];
    body.extend_from_slice(&string(filter.as_bytes()));
    body.push(0);
    stream.write_all(&packet(0x82, &body)).await.expect("write");
    let mut buffer = Vec::new();
    assert_eq!(
        next_packet(&mut stream, &mut buffer).await,
        (0x20, vec![0, 0])
    );
    assert_eq!(
        next_packet(&mut stream, &mut buffer).await,
        (0x90, vec![0, 1, 0])
    );
    (stream, buffer)
}

/// The next PUBLISH's topic and payload (QoS 0, RETAIN either way).
async fn next_publish(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> (String, String) {
    let (first, body) = next_packet(stream, buffer).await;
    assert_eq!(first & 0xfe, 0x30, "not a QoS 0 PUBLISH: {first:#x}");
    let length = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + length].to_vec()).unwrap();
    let payload = String::from_utf8(body[2 + length..].to_vec()).unwrap();
    (topic, payload)
}

/// Reads `$SYS/broker/clients/connected` until it says `want`.
async fn until_connected(stream: &mut TcpStream, buffer: &mut Vec<u8>, want: &str) {
    within(&format!("clients/connected to be {want}"), async {
        loop {
            let (topic, value) = next_publish(stream, buffer).await;
            assert_eq!(topic, "$SYS/broker/clients/connected");
            if value == want {
                return;
            }
        }
    })
    .await;
}

/// `clients/connected` follows clients as they come and go, one
/// `--sys-interval` later.
#[tokio::test]
async fn connected_clients_are_counted_as_they_come_and_go() {
    let server = Server::start("mqtt_broker", &["--sys-interval", "1"]).await;
    let (mut watcher, mut buffer) =
        subscriber(server.addr, "watcher", "$SYS/broker/clients/connected").await;
    until_connected(&mut watcher, &mut buffer, "1").await;
    let other = subscriber(server.addr, "other", "a").await;
    until_connected(&mut watcher, &mut buffer, "2").await;
    drop(other);
    until_connected(&mut watcher, &mut buffer, "1").await;
}

/// Every name is published, with values of the right form; a subscriber
/// to `#` gets none of them, but the message published after two rounds.
#[tokio::test]
async fn every_name_is_published_and_hash_does_not_match_them() {
    let server = Server::start("mqtt_broker", &["--sys-interval", "1"]).await;
    let (mut everything, mut everything_buffer) = subscriber(server.addr, "hash", "#").await;
    let (mut sys, mut buffer) = subscriber(server.addr, "sys", "$SYS/#").await;
    let mut seen = BTreeSet::new();
    let mut uptimes = 0;
    within("two rounds of $SYS", async {
        while seen.len() < NAMES.len() || uptimes < 2 {
            let (topic, value) = next_publish(&mut sys, &mut buffer).await;
            let name = topic
                .strip_prefix("$SYS/broker/")
                .expect("a $SYS/broker/ topic");
            match name {
                "version" => assert!(value.starts_with("mqtt_broker version "), "{value}"),
                "uptime" => {
                    assert!(value.ends_with(" seconds"), "{value}");
                    uptimes += 1;
                }
                _ => assert!(value.parse::<u64>().is_ok(), "{name}: {value}"),
            }
            seen.insert(name.to_string());
        }
    })
    .await;
    let expected: BTreeSet<String> = NAMES.iter().map(|name| name.to_string()).collect();
    assert_eq!(seen, expected);

    let mut publisher = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    publisher
        .write_all(&connect_packet("publisher", "u", "p"))
        .await
        .expect("write");
    let mut body = string(b"after/sys");
    body.extend_from_slice(b"ours");
    publisher
        .write_all(&packet(0x30, &body))
        .await
        .expect("write");
    let first = next_publish(&mut everything, &mut everything_buffer).await;
    assert_eq!(first, ("after/sys".to_string(), "ours".to_string()));
}

/// A client cannot write under `$SYS/`: its PUBLISH is acknowledged as
/// usual (3.1.1 has no way to refuse one) and dropped, so the broker's own
/// values stay.
#[tokio::test]
async fn clients_cannot_forge_sys_values() {
    let server = Server::start("mqtt_broker", &["--sys-interval", "3600"]).await;
    let mut forger = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    forger
        .write_all(&connect_packet("forger", "u", "p"))
        .await
        .expect("write");
    let mut buffer = Vec::new();
    assert_eq!(
        next_packet(&mut forger, &mut buffer).await,
        (0x20, vec![0, 0])
    );
    let mut body = string(b"$SYS/broker/version");
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(b"forged");
    // QoS 1, RETAIN.
    forger.write_all(&packet(0x33, &body)).await.expect("write");
    assert_eq!(
        next_packet(&mut forger, &mut buffer).await,
        (0x40, vec![0, 1])
    );
    let (mut reader, mut buffer) = subscriber(server.addr, "reader", "$SYS/broker/version").await;
    let (topic, value) = next_publish(&mut reader, &mut buffer).await;
    assert_eq!(topic, "$SYS/broker/version");
    assert!(value.starts_with("mqtt_broker version "), "{value}");
}

/// Mosquitto, with `sys_interval 1`, publishes every name we do (their
/// values are its own).
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto"]
async fn mosquitto_publishes_every_name_we_do() {
    let mosquitto = Mosquitto::start_with(None, "sys_interval 1\n").await;
    let (mut sys, mut buffer) = subscriber(mosquitto.addr, "sys", "$SYS/broker/#").await;
    let mut seen = BTreeSet::new();
    within("mosquitto's $SYS names", async {
        while !NAMES.iter().all(|name| seen.contains(*name)) {
            let (topic, _) = next_publish(&mut sys, &mut buffer).await;
            seen.insert(topic.trim_start_matches("$SYS/broker/").to_string());
        }
    })
    .await;
}
