//! Persistent sessions (clean session 0) through `mqtt_broker`: what the
//! broker keeps for a client that is away, and what it says when it cannot
//! keep everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::time::Duration;

use common::mqtt::{packet, string};
use common::{Server, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// CONNECT with keep-alive 0 and this client id; clean session or not.
fn connect(id: &[u8], clean_session: bool) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend([4, u8::from(clean_session) << 1, 0, 0]);
    body.extend(string(id));
    packet(0x10, &body)
}

/// Connects, sends `then` after the CONNECT, and returns the stream once
/// the CONNACK is in.
async fn client(addr: std::net::SocketAddr, id: &[u8], clean: bool, then: &[u8]) -> TcpStream {
    let mut stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut wire = connect(id, clean);
    wire.extend_from_slice(then);
    stream.write_all(&wire).await.unwrap();
    let mut connack = [0u8; 4];
    within("CONNACK", stream.read_exact(&mut connack))
        .await
        .unwrap();
    assert_eq!(connack[..2], [0x20, 0x02]);
    stream
}

/// The payloads of the PUBLISH packets (QoS 0) that arrive until none has
/// come for `quiet`.
async fn payloads(stream: &mut TcpStream, quiet: Duration) -> Vec<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut payloads = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return payloads,
        }
        // Whole packets off the front of the buffer.
        loop {
            let mut length = 0usize;
            let mut at = 1;
            let whole = loop {
                let Some(&byte) = buffer.get(at) else {
                    break None;
                };
                length |= usize::from(byte & 0x7f) << (7 * (at - 1));
                at += 1;
                if byte & 0x80 == 0 {
                    break (buffer.len() >= at + length).then_some(at + length);
                }
            };
            let Some(end) = whole else { break };
            if buffer[0] >> 4 == 3 {
                let topic_end =
                    at + 2 + usize::from(u16::from_be_bytes([buffer[at], buffer[at + 1]]));
                payloads.push(buffer[topic_end..end].to_vec());
            }
            buffer.drain(..end);
        }
    }
}

/// What a broker cannot keep, it says: a persistent session that has read
/// one message and is away while 40 MB more are published to its topic
/// (more than the 32 MiB the router keeps per filter) gets, when it comes
/// back, the messages that were kept, and the broker's log names the
/// client, the filter and how many were dropped; kept and dropped add up
/// to every message published while it was away.
#[tokio::test]
async fn an_absent_persistent_session_past_its_bound_is_told_in_the_log() {
    const MESSAGES: u64 = 40_000;
    let broker = Server::start("mqtt_broker", &[]).await;
    let mut subscribe = vec![0, 1];
    subscribe.extend(string(b"flood"));
    subscribe.push(0);
    let mut away = client(broker.addr, b"away", false, &packet(0x82, &subscribe)).await;
    let mut suback = [0u8; 5];
    within("SUBACK", away.read_exact(&mut suback))
        .await
        .unwrap();
    let mut first = string(b"flood");
    first.extend_from_slice(b"first");
    let mut publisher = client(broker.addr, b"flooder", true, &packet(0x30, &first)).await;
    let mut delivered = [0u8; 14];
    within("the first message", away.read_exact(&mut delivered))
        .await
        .unwrap();
    assert_eq!(delivered, packet(0x30, &first)[..]);
    away.write_all(&[0xe0, 0]).await.unwrap();
    drop(away);

    let mut burst = Vec::new();
    for n in 0..MESSAGES {
        let mut body = string(b"flood");
        let mut payload = format!("{n:08}").into_bytes();
        payload.resize(1000, b'.');
        body.extend(payload);
        burst.extend(packet(0x30, &body));
    }
    within("the flood", publisher.write_all(&burst))
        .await
        .unwrap();
    // PINGRESP comes once the broker has taken everything before it.
    publisher.write_all(&[0xc0, 0]).await.unwrap();
    let mut pingresp = [0u8; 2];
    within("PINGRESP", publisher.read_exact(&mut pingresp))
        .await
        .unwrap();
    assert_eq!(pingresp, [0xd0, 0]);

    let mut back = client(broker.addr, b"away", false, &[]).await;
    let kept = payloads(&mut back, Duration::from_secs(2)).await;
    // Each payload starts with its number: the kept ones are the newest,
    // in order.
    let numbers: Vec<u64> = kept
        .iter()
        .map(|p| std::str::from_utf8(&p[..8]).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|pair| pair[1] == pair[0] + 1));
    assert_eq!(numbers.last(), Some(&(MESSAGES - 1)));
    let kept = numbers.len() as u64;
    let log = broker.process.stderr();
    let line = log
        .lines()
        .find(|line| line.contains("dropped messages before the client read them"))
        .unwrap_or_else(|| panic!("no log line about dropped messages:\n{log}"));
    assert!(
        line.contains("client=\"away\"") && line.contains("filter=\"flood\""),
        "{line}"
    );
    let dropped: u64 = line
        .split("skipped=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line}"));
    assert!(kept > 0 && dropped > 0, "kept {kept}, dropped {dropped}");
    assert_eq!(kept + dropped, MESSAGES, "kept {kept}, dropped {dropped}");
}
