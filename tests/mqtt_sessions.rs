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
        // Whole packets off the front of the buffer, cut off once.
        let mut start = 0;
        loop {
            let packet = &buffer[start..];
            let mut length = 0usize;
            let mut at = 1;
            let whole = loop {
                let Some(&byte) = packet.get(at) else {
                    break None;
                };
                length |= usize::from(byte & 0x7f) << (7 * (at - 1));
                at += 1;
                if byte & 0x80 == 0 {
                    break (packet.len() >= at + length).then_some(at + length);
                }
            };
            let Some(end) = whole else { break };
            if packet[0] >> 4 == 3 {
                let topic_end =
                    at + 2 + usize::from(u16::from_be_bytes([packet[at], packet[at + 1]]));
                payloads.push(packet[topic_end..end].to_vec());
            }
            start += end;
        }
        buffer.drain(..start);
    }
}

/// What a broker cannot keep, it says: a persistent session that has read
/// one message and is away while 40 MB more are published to its topic
/// (more than the 8 MiB `--max-queued-bytes` a session keeps) gets, when it
/// comes back, the oldest messages that fit, in order, and the broker's
/// log names the client and counts the rest; kept and dropped add up to
/// every message published while it was away.
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
    // The broker closes the connection once it has handled the DISCONNECT
    // [MQTT-3.14.4-1]; what is published after goes to the session.
    let mut rest = Vec::new();
    within("the close after DISCONNECT", away.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());

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
    // The broker routes messages in the order it takes them: once a
    // watcher has the one published after the flood, the flood is routed.
    let mut done = vec![0, 1];
    done.extend(string(b"done"));
    done.push(0);
    let mut watcher = client(broker.addr, b"watcher", true, &packet(0x82, &done)).await;
    within("SUBACK", watcher.read_exact(&mut suback))
        .await
        .unwrap();
    let mut last = string(b"done");
    last.push(b'!');
    publisher.write_all(&packet(0x30, &last)).await.unwrap();
    let mut marker = [0u8; 9];
    within(
        "the message after the flood",
        watcher.read_exact(&mut marker),
    )
    .await
    .unwrap();
    assert_eq!(marker, packet(0x30, &last)[..]);

    let mut back = client(broker.addr, b"away", false, &[]).await;
    let kept = payloads(&mut back, Duration::from_secs(2)).await;
    // Each payload starts with its number: the kept ones are the oldest,
    // in order.
    let numbers: Vec<u64> = kept
        .iter()
        .map(|p| std::str::from_utf8(&p[..8]).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.iter().copied().eq(0..numbers.len() as u64));
    // A message counts as its PUBLISH would at most: 9 bytes (fixed header,
    // topic length, packet id), topic and payload.
    let fits = 8 * 1024 * 1024 / (9 + 5 + 1000);
    assert_eq!(numbers.len(), fits);
    let log = broker.process.stderr();
    let dropped: u64 = log
        .lines()
        .filter(|line| line.contains("client=\"away\"") && line.contains("messages dropped"))
        .map(|line| {
            line.split("dropped=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no count in {line}"))
        })
        .sum();
    assert_eq!(fits as u64 + dropped, MESSAGES, "dropped {dropped}:\n{log}");
}
