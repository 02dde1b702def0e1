//! The udp library driven directly: the sequence format and its counts, the
//! receiver loop on a real loopback socket, and the sender's socket.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::within;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use udp::receiver::{self, Config};
use udp::sender::{Options, Report, Sender};
use udp::sequence::{self, Summary, Tally};

/// A short wait that is expected to elapse: proves that nothing arrives.
const QUIET: Duration = Duration::from_millis(200);

async fn loopback() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// A sequenced payload is `seq N`, padded with dots to the size asked for,
/// and parses back to N; other payloads, even numbered ones in a format of
/// their own (`m00000042...`), are not sequenced.
#[test]
fn sequence_payloads_round_trip() {
    assert_eq!(sequence::payload(42, 0), b"seq 42");
    assert_eq!(sequence::payload(7, 12), b"seq 7 ......");
    assert_eq!(sequence::parse(&sequence::payload(7, 12)), Some(7));
    assert_eq!(sequence::payload(5, 6), b"seq 5 ");
    assert_eq!(sequence::parse(b"seq 5 "), Some(5));
    assert_eq!(sequence::parse(b"seq 18446744073709551615"), Some(u64::MAX));
    for other in [
        &b"m00000042xxxxxxxxxxx"[..],
        b"seq ",
        b"seq 1x",
        b"seq 5 hello",
        b"seq 5 ..x",
        b"seq -1",
        b"seq 99999999999999999999",
        b"hello",
        b"",
    ] {
        assert_eq!(sequence::parse(other), None, "{other:?}");
    }
}

/// Lost, duplicated and reordered follow the definitions exactly:
/// lost = numbers never seen up to the highest (6 and 7); duplicated =
/// datagrams whose number was already seen (the second 3 and the second 4);
/// reordered = datagrams that arrive after one with a higher number (2 after
/// 3, 4 after 5, and the copy of 4, which is also a duplicate).
#[test]
fn tally_counts_loss_duplication_and_reordering() {
    let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut tally = Tally::default();
    for n in [0, 1, 3, 2, 3, 5, 4, 4, 8] {
        tally.count(from, &sequence::payload(n, 0), false);
    }
    tally.count(from, b"not sequenced", false);
    assert_eq!(
        tally.summary(),
        Summary {
            received: 10,
            sequenced: true,
            unique: 7,
            lost: 2,
            duplicated: 2,
            reordered: 3,
        }
    );
    assert_eq!(
        tally.summary().to_string(),
        "received=10 unique=7 lost=2 duplicated=2 reordered=3"
    );
}

/// Numbers come from the network, so the largest one must count right too:
/// `seq 18446744073709551615` from two senders (and nothing before it) is
/// 2^64 - 1 numbers lost from each, 2 x (2^64 - 1) in all, which no u64
/// holds. (A debug build used to panic here, a release build to wrap.)
#[test]
fn tally_counts_the_largest_numbers_without_overflow() {
    let mut tally = Tally::default();
    for port in [5001, 5002] {
        let from = SocketAddr::from(([127, 0, 0, 1], port));
        tally.count(from, &sequence::payload(u64::MAX, 0), false);
        tally.count(from, &sequence::payload(u64::MAX, 0), false);
    }
    let summary = tally.summary();
    assert_eq!(summary.lost, 2 * u128::from(u64::MAX));
    assert_eq!(
        summary.to_string(),
        "received=4 unique=2 lost=36893488147419103230 duplicated=2 reordered=0"
    );
}

/// Two senders both counting from 0 are two streams, not duplicates; without
/// sequenced datagrams the summary is only `received=N`.
#[test]
fn tally_keeps_senders_apart() {
    let mut tally = Tally::default();
    tally.count("127.0.0.1:5000".parse().unwrap(), b"hello", false);
    assert_eq!(tally.summary().to_string(), "received=1");
    for port in [5001, 5002] {
        let from = SocketAddr::from(([127, 0, 0, 1], port));
        for n in 0..3 {
            tally.count(from, &sequence::payload(n, 0), false);
        }
    }
    assert_eq!(
        tally.summary().to_string(),
        "received=7 unique=6 lost=0 duplicated=0 reordered=0"
    );
}

/// Round-trip percentiles use the nearest rank; without answers they are `-`.
#[test]
fn report_percentiles() {
    let report = Report {
        sent: 5,
        rtts_us: vec![50, 10, 40, 20],
    };
    assert_eq!(
        report.to_string(),
        "sent=5 answered=4 lost=1 rtt_p50_us=20 rtt_p99_us=50"
    );
    let none = Report {
        sent: 2,
        rtts_us: vec![],
    };
    assert_eq!(
        none.to_string(),
        "sent=2 answered=0 lost=2 rtt_p50_us=- rtt_p99_us=-"
    );
}

/// Every datagram arrives with its sender's address: the receiver prints it,
/// the size and the payload, one line per datagram.
#[tokio::test]
async fn receiver_shows_sender_address_and_payload() {
    let (socket, addr) = loopback().await;
    let (client, client_addr) = loopback().await;
    let config = Config {
        count: Some(2),
        ..Config::default()
    };
    client.send_to(b"hello", addr).await.unwrap();
    client.send_to(b"line\nbreak\\", addr).await.unwrap();
    let mut out = Vec::new();
    let summary = within(
        "two datagrams",
        receiver::run(&socket, &config, &mut out, std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("[{client_addr}] 5 bytes: hello\n[{client_addr}] 11 bytes: line\\nbreak\\\\\n")
    );
    assert_eq!(summary.to_string(), "received=2");
}

/// `--echo` sends every datagram back to its sender unchanged, binary bytes
/// included; `--hex` shows them exactly.
#[tokio::test]
async fn echo_returns_binary_payloads_unchanged() {
    let (socket, addr) = loopback().await;
    let (client, client_addr) = loopback().await;
    let config = Config {
        echo: true,
        hex: true,
        count: Some(1),
        ..Config::default()
    };
    let payload: Vec<u8> = (0..=255).collect();
    client.send_to(&payload, addr).await.unwrap();
    let mut out = Vec::new();
    within(
        "one datagram",
        receiver::run(&socket, &config, &mut out, std::future::pending()),
    )
    .await
    .unwrap();
    let mut answer = [0u8; 512];
    let (len, from) = within("the echo", client.recv_from(&mut answer))
        .await
        .unwrap();
    assert_eq!(from, addr);
    assert_eq!(&answer[..len], &payload[..]);
    let hex: Vec<String> = payload.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("[{client_addr}] 256 bytes: {}\n", hex.join(" "))
    );
}

/// Payloads numbered in a format of their own (`m` + 8 digits) are echoed
/// unchanged and never taken for sequence numbers: the same one twice is not
/// a duplicate.
#[tokio::test]
async fn other_numbered_payloads_are_echoed_not_counted() {
    let (socket, addr) = loopback().await;
    let (client, _) = loopback().await;
    let config = Config {
        echo: true,
        count: Some(2),
        ..Config::default()
    };
    let payload = b"m00000042xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    client.send_to(payload, addr).await.unwrap();
    client.send_to(payload, addr).await.unwrap();
    let summary = within(
        "two datagrams",
        receiver::run(&socket, &config, std::io::sink(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(summary.to_string(), "received=2");
    let mut answer = [0u8; 128];
    for _ in 0..2 {
        let len = within("an echo", client.recv(&mut answer)).await.unwrap();
        assert_eq!(&answer[..len], payload);
    }
}

/// Without `--echo`, nothing comes back: UDP itself never answers.
#[tokio::test]
async fn without_echo_nothing_comes_back() {
    let (socket, addr) = loopback().await;
    let (client, _) = loopback().await;
    client.send_to(b"anyone?", addr).await.unwrap();
    let config = Config {
        count: Some(1),
        ..Config::default()
    };
    within(
        "one datagram",
        receiver::run(&socket, &config, std::io::sink(), std::future::pending()),
    )
    .await
    .unwrap();
    let mut answer = [0u8; 16];
    let nothing = tokio::time::timeout(QUIET, client.recv_from(&mut answer)).await;
    assert!(nothing.is_err(), "unexpected answer: {nothing:?}");
}

/// A datagram larger than `max_size` is reported as truncated, never passed
/// off as whole, and not echoed; one of exactly `max_size` bytes is whole.
#[tokio::test]
async fn truncation_is_reported() {
    let (socket, addr) = loopback().await;
    let (client, client_addr) = loopback().await;
    let config = Config {
        echo: true,
        max_size: 10,
        count: Some(2),
        ..Config::default()
    };
    client.send_to(b"0123456789A", addr).await.unwrap();
    client.send_to(b"0123456789", addr).await.unwrap();
    let mut out = Vec::new();
    within(
        "two datagrams",
        receiver::run(&socket, &config, &mut out, std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!(
            "[{client_addr}] truncated to 10 bytes (over --max-size): 0123456789\n\
             [{client_addr}] 10 bytes: 0123456789\n"
        )
    );
    // Only the whole datagram is echoed.
    let mut answer = [0u8; 64];
    let len = within("the echo", client.recv(&mut answer)).await.unwrap();
    assert_eq!(&answer[..len], b"0123456789");
    let nothing = tokio::time::timeout(QUIET, client.recv(&mut answer)).await;
    assert!(nothing.is_err(), "unexpected answer: {nothing:?}");
}

/// A truncated datagram's number counts only if it arrived whole: `seq 1 `
/// (cut from `seq 1 .....`) is number 1, but `seq 10` (cut from `seq 100`)
/// may be any number, so it is received but not counted as 10.
#[tokio::test]
async fn truncated_numbers_count_only_when_whole() {
    let (socket, addr) = loopback().await;
    let (client, _) = loopback().await;
    let config = Config {
        max_size: 6,
        count: Some(3),
        ..Config::default()
    };
    for payload in [&b"seq 0"[..], b"seq 1 .....", b"seq 100"] {
        client.send_to(payload, addr).await.unwrap();
    }
    let summary = within(
        "three datagrams",
        receiver::run(&socket, &config, std::io::sink(), std::future::pending()),
    )
    .await
    .unwrap();
    assert_eq!(
        summary.to_string(),
        "received=3 unique=2 lost=0 duplicated=0 reordered=0"
    );
}

/// The shutdown future stops the receiver, which returns its counts.
#[tokio::test]
async fn receiver_stops_on_shutdown() {
    let (socket, addr) = loopback().await;
    let (client, _) = loopback().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let config = Config {
        echo: true,
        ..Config::default()
    };
    let running =
        tokio::spawn(
            async move { receiver::run(&socket, &config, std::io::sink(), shutdown).await },
        );
    // The echo proves the loop is running and has counted the datagram.
    client.send_to(b"seq 0", addr).await.unwrap();
    let mut answer = [0u8; 16];
    within("the echo", client.recv_from(&mut answer))
        .await
        .unwrap();
    stop.send(()).unwrap();
    let summary = within("the receiver to stop", running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        summary.to_string(),
        "received=1 unique=1 lost=0 duplicated=0 reordered=0"
    );
}

/// Sending to a port where nobody listens succeeds: UDP has no handshake.
/// The ICMP "port unreachable" that comes back is reported by the connected
/// socket's next receive, as a lost answer, not as an error.
#[tokio::test]
async fn nobody_listening_send_succeeds_and_answer_is_refused() {
    // A port nobody listens on, without racing other tests for it: we hold
    // 127.0.0.1:P (so no test gets P as a free port) and send to 127.0.0.2:P,
    // another loopback address, where nothing is bound.
    let (_guard, held) = loopback().await;
    let sender = Sender::open("127.0.0.2", held.port(), &Options::default())
        .await
        .unwrap();
    sender.send(b"hello?").await.unwrap();
    let mut buffer = [0u8; 64];
    let started = std::time::Instant::now();
    let wait = Duration::from_secs(5);
    let answer = within("the refusal", sender.reply(&mut buffer, wait, None))
        .await
        .unwrap();
    assert_eq!(answer, None);
    // Refused at once by the ICMP answer, not after waiting in vain.
    assert!(started.elapsed() < wait, "took {:?}", started.elapsed());
}

/// A datagram larger than UDP over IPv4 can carry is refused before sending,
/// with the limit in the message.
#[tokio::test]
async fn oversized_datagram_is_an_error() {
    let (_socket, addr) = loopback().await;
    let sender = Sender::open("127.0.0.1", addr.port(), &Options::default())
        .await
        .unwrap();
    let error = sender.send(&vec![b'x'; 65_508]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot send 65508 bytes to {addr}: a UDP datagram over IPv4 holds at most 65507")
    );
}

/// IPv6 counts its 65,535 bytes after its own header, so a UDP datagram over
/// IPv6 carries up to 65,527 bytes, 20 more than over IPv4: over ::1 the
/// sender sends one that large, the receiver takes it whole and echoes it,
/// and one byte more is refused with the IPv6 limit in the message.
#[tokio::test]
async fn ipv6_carries_65527_bytes() {
    let socket = UdpSocket::bind("[::1]:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let sender = Sender::open("::1", addr.port(), &Options::default())
        .await
        .unwrap();
    let config = Config {
        echo: true,
        count: Some(1),
        ..Config::default()
    };
    let receiving = tokio::spawn(async move {
        let mut out = Vec::new();
        let summary = receiver::run(&socket, &config, &mut out, std::future::pending()).await;
        (summary.map(|summary| summary.to_string()), out)
    });
    let payload = vec![b'x'; 65_527];
    sender.send(&payload).await.unwrap();
    let mut answer = vec![0u8; 70_000];
    let len = within("the echo", sender.reply(&mut answer, common::WAIT, None))
        .await
        .unwrap();
    assert_eq!(len, Some(65_527));
    let (summary, out) = within("the receiver", receiving).await.unwrap();
    assert_eq!(summary.unwrap(), "received=1");
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("] 65527 bytes: xxx"), "{}", &out[..80]);

    let error = sender.send(&vec![b'x'; 65_528]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot send 65528 bytes to {addr}: a UDP datagram over IPv6 holds at most 65527")
    );
}
