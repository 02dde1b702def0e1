//! `udp_receiver` and `udp_sender` as a user runs them: real processes, real
//! ports (picked with `--port 0`), piped stdin, stdout, stderr and exit codes.
//! Broadcast and multicast stay on loopback: 127.255.255.255, and a group
//! joined and sent on interface 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::time::Duration;

use common::{Process, Server, run, within};
use tokio::net::UdpSocket;
use udp::sequence;

/// Finishes a receiver with SIGTERM and returns the rest of its stdout.
async fn stop(receiver: Server) -> String {
    receiver.process.signal("TERM");
    let (status, out, err) = receiver.process.finish().await;
    assert!(status.success(), "stderr: {err}");
    out
}

/// The receiver prints each datagram with the address it came from.
#[tokio::test]
async fn receiver_prints_sender_address_and_payload() {
    let mut receiver = Server::start("udp_receiver", &[]).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(b"hello", receiver.addr).await.unwrap();
    let from = client.local_addr().unwrap();
    assert_eq!(
        receiver.process.line().await.unwrap(),
        format!("[{from}] 5 bytes: hello")
    );
    assert_eq!(stop(receiver).await, "received=1\n");
}

/// `udp_sender -m` sends one datagram; without -m every stdin line is one
/// datagram (an empty line is an empty datagram, still a datagram).
#[tokio::test]
async fn sender_sends_message_and_stdin_lines() {
    let mut receiver = Server::start("udp_receiver", &["--count", "4"]).await;
    let port = receiver.port();
    let (status, out, err) = run("udp_sender", &["--port", &port, "-m", "one"], b"").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "");
    assert!(
        receiver
            .process
            .line()
            .await
            .unwrap()
            .ends_with("] 3 bytes: one")
    );
    let (status, _, err) = run("udp_sender", &["--port", &port], b"two\n\nthree").await;
    assert!(status.success(), "stderr: {err}");
    let (status, out, err) = receiver.process.finish().await;
    assert!(status.success(), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].ends_with("] 3 bytes: two"), "{out}");
    assert!(lines[1].ends_with("] 0 bytes: "), "{out}");
    assert!(lines[2].ends_with("] 5 bytes: three"), "{out}");
    assert_eq!(lines[3], "received=4");
}

/// Echo round trips: every numbered datagram is answered, and the sender
/// reports sent, answered, lost and round-trip percentiles.
#[tokio::test]
async fn echo_round_trips_are_counted() {
    let receiver = Server::start("udp_receiver", &["--echo"]).await;
    let args = [
        "--port",
        &receiver.port(),
        "--count",
        "20",
        "--interval-ms",
        "0",
        "--size",
        "100",
        "--wait-reply-ms",
        "5000",
    ];
    let (status, out, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    let fields: Vec<&str> = out.trim_end().split(' ').collect();
    assert_eq!(fields[..3], ["sent=20", "answered=20", "lost=0"], "{out}");
    let p50: u64 = fields[3]
        .strip_prefix("rtt_p50_us=")
        .unwrap()
        .parse()
        .unwrap();
    let p99: u64 = fields[4]
        .strip_prefix("rtt_p99_us=")
        .unwrap()
        .parse()
        .unwrap();
    assert!(0 < p50 && p50 <= p99, "{out}");
    let out = stop(receiver).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 21, "{out}");
    assert!(lines[0].ends_with(&format!("] 100 bytes: seq 0 {}", ".".repeat(94))));
    assert_eq!(
        lines[20],
        "received=20 unique=20 lost=0 duplicated=0 reordered=0"
    );
}

/// With --wait-reply-ms the sender prints each answer (to -m or to a stdin
/// line), then the summary.
#[tokio::test]
async fn sender_prints_the_echo() {
    let receiver = Server::start("udp_receiver", &["--echo"]).await;
    let args = [
        "--port",
        &receiver.port(),
        "-m",
        "hi there",
        "--wait-reply-ms",
        "5000",
    ];
    let (status, out, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert!(
        out.starts_with("hi there\nsent=1 answered=1 lost=0 rtt_p50_us="),
        "{out}"
    );
    let args = ["--port", &receiver.port(), "--wait-reply-ms", "5000"];
    let (status, out, err) = run("udp_sender", &args, b"a\nb\n").await;
    assert!(status.success(), "stderr: {err}");
    assert!(
        out.starts_with("a\nb\nsent=2 answered=2 lost=0 rtt_p50_us="),
        "{out}"
    );
}

/// The receiver's summary through a deliberately faulty relay: it drops 3 and
/// 7, duplicates 5 at once and 10 late (the copy follows 11), and delays 12
/// until after 15 and 16 until after 18. Exactly 2 are lost, 2 duplicated,
/// and 3 reordered: the late copy of 10 (also a duplicate), 12 and 16.
#[tokio::test]
async fn summary_counts_what_a_faulty_relay_did() {
    let receiver = Server::start("udp_receiver", &["--count", "20"]).await;
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port().to_string();
    let args = ["--port", &relay_port, "--count", "20", "--interval-ms", "1"];
    let sender = Process::spawn("udp_sender", &args);

    let mut held = Vec::new();
    let mut buffer = [0u8; 64];
    for _ in 0..20 {
        let len = within("a datagram at the relay", relay.recv(&mut buffer))
            .await
            .unwrap();
        let datagram = buffer[..len].to_vec();
        let mut forward = match sequence::parse(&datagram).unwrap() {
            3 | 7 => vec![],
            5 => vec![datagram.clone(), datagram],
            10 => {
                held.push(datagram.clone());
                vec![datagram]
            }
            12 | 16 => {
                held.push(datagram);
                vec![]
            }
            11 | 15 | 18 => vec![datagram, held.remove(0)],
            _ => vec![datagram],
        };
        for datagram in forward.drain(..) {
            relay.send_to(&datagram, receiver.addr).await.unwrap();
        }
    }
    let (status, _, err) = sender.finish().await;
    assert!(status.success(), "stderr: {err}");

    let (status, out, err) = receiver.process.finish().await;
    assert!(status.success(), "stderr: {err}");
    let order: Vec<u64> = out
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .filter_map(|payload| sequence::parse(payload.as_bytes()))
        .collect();
    assert_eq!(
        order,
        [
            0, 1, 2, 4, 5, 5, 6, 8, 9, 10, 11, 10, 13, 14, 15, 12, 17, 18, 16, 19
        ]
    );
    assert_eq!(
        out.lines().last().unwrap(),
        "received=20 unique=18 lost=2 duplicated=2 reordered=3"
    );
}

/// `--max-size`: a larger datagram is reported as truncated.
#[tokio::test]
async fn receiver_reports_truncation() {
    let mut receiver = Server::start("udp_receiver", &["--max-size", "4"]).await;
    let (status, _, err) = run(
        "udp_sender",
        &["--port", &receiver.port(), "-m", "hello"],
        b"",
    )
    .await;
    assert!(status.success(), "stderr: {err}");
    let line = receiver.process.line().await.unwrap();
    assert!(
        line.ends_with("] truncated to 4 bytes (over --max-size): hell"),
        "{line}"
    );
    assert!(stop(receiver).await.ends_with("received=1\n"));
}

/// Binary payloads survive: bytes that are not text are escaped, or shown as
/// hex with `--hex`.
#[tokio::test]
async fn binary_payloads_are_shown_safely() {
    let mut text = Server::start("udp_receiver", &[]).await;
    let mut hex = Server::start("udp_receiver", &["--hex"]).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = client.local_addr().unwrap();
    let payload = b"\x00\xffA\xc3\xa9\x1b";
    client.send_to(payload, text.addr).await.unwrap();
    client.send_to(payload, hex.addr).await.unwrap();
    assert_eq!(
        text.process.line().await.unwrap(),
        format!("[{from}] 6 bytes: \\x00\\xffAé\\x1b")
    );
    assert_eq!(
        hex.process.line().await.unwrap(),
        format!("[{from}] 6 bytes: 00 ff 41 c3 a9 1b")
    );
}

/// Sending to a broadcast address needs `--broadcast` (SO_BROADCAST); with it
/// the datagram reaches a receiver bound to 0.0.0.0, whose echo comes back.
#[tokio::test]
async fn broadcast_needs_the_flag_and_reaches_0_0_0_0() {
    let mut receiver = Server::start("udp_receiver", &["--host", "0.0.0.0", "--echo"]).await;
    let port = receiver.port();
    let to = ["--host", "127.255.255.255", "--port", &port, "-m", "to all"];
    let (status, out, err) = run("udp_sender", &to, b"").await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert!(
        err.contains(&format!("error: cannot send to 127.255.255.255:{port}: "))
            && err.trim_end().ends_with("pass --broadcast"),
        "{err}"
    );

    // The echo comes back from the receiver's own address, not from the
    // broadcast address: the sender must accept answers from anyone.
    let mut with_flag = to.to_vec();
    with_flag.extend(["--broadcast", "--wait-reply-ms", "5000"]);
    let (status, out, err) = run("udp_sender", &with_flag, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert!(
        out.starts_with("to all\nsent=1 answered=1 lost=0 "),
        "{out}"
    );
    let line = receiver.process.line().await.unwrap();
    assert!(
        line.starts_with("[127.0.0.1:") && line.ends_with("] 6 bytes: to all"),
        "{line}"
    );
    assert_eq!(stop(receiver).await, "received=1\n");
}

/// A socket bound to 127.0.0.1 only gets datagrams addressed to 127.0.0.1:
/// the broadcast never shows, and the unicast sent after it is the first line.
#[tokio::test]
async fn broadcast_does_not_reach_a_receiver_bound_to_127_0_0_1() {
    let mut receiver = Server::start("udp_receiver", &[]).await;
    let port = receiver.port();
    let to_all = [
        "--host",
        "127.255.255.255",
        "--port",
        &port,
        "--broadcast",
        "-m",
        "all",
    ];
    let (status, _, err) = run("udp_sender", &to_all, b"").await;
    assert!(status.success(), "stderr: {err}");
    let (status, _, err) = run("udp_sender", &["--port", &port, "-m", "just you"], b"").await;
    assert!(status.success(), "stderr: {err}");
    let line = receiver.process.line().await.unwrap();
    assert!(line.ends_with("] 8 bytes: just you"), "{line}");
    assert_eq!(stop(receiver).await, "received=1\n");
}

/// Two receivers share a port through a multicast group joined on 127.0.0.1,
/// and each gets its own copy of one datagram sent to the group.
#[tokio::test]
async fn two_receivers_share_a_multicast_group() {
    let group = "239.255.43.21";
    let join = ["--multicast", group, "--interface", "127.0.0.1"];
    let mut first = Server::start("udp_receiver", &join).await;
    assert_eq!(first.addr.ip().to_string(), group);
    let port = first.port();
    let mut second_args = vec!["--port", &port];
    second_args.extend(join);
    let mut second = Process::spawn("udp_receiver", &second_args);
    assert_eq!(
        second.line().await.unwrap(),
        format!("listening on {group}:{port}")
    );

    let args = [
        "--host",
        group,
        "--port",
        &port,
        "--multicast-interface",
        "127.0.0.1",
        "-m",
        "to the group",
    ];
    let (status, _, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    for line in [first.process.line().await, second.line().await] {
        let line = line.unwrap();
        assert!(line.starts_with("[127.0.0.1:") && line.ends_with("] 12 bytes: to the group"));
    }
    // Exactly one copy each.
    assert_eq!(stop(first).await, "received=1\n");
    second.signal("TERM");
    let (status, out, _) = second.finish().await;
    assert!(status.success());
    assert_eq!(out, "received=1\n");
}

/// Nobody listening: `-m` still succeeds (the send only hands the datagram to
/// our kernel). Waiting for an answer shows the loss, and the ICMP refusal.
#[tokio::test]
async fn sending_to_nobody_succeeds_but_nothing_answers() {
    // A port nobody listens on, without racing other tests for it: we hold
    // 127.0.0.1:P (so no test gets P as a free port) and send to 127.0.0.2:P,
    // another loopback address, where nothing is bound.
    let guard = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = guard.local_addr().unwrap().port().to_string();
    let to_nobody = ["--host", "127.0.0.2", "--port", &port, "-m", "hello?"];
    let (status, out, err) = run("udp_sender", &to_nobody, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "");

    let mut args = to_nobody.to_vec();
    args.extend(["--wait-reply-ms", "5000"]);
    let started = std::time::Instant::now();
    let (status, out, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "sent=1 answered=0 lost=1 rtt_p50_us=- rtt_p99_us=-\n");
    assert!(err.contains("ICMP port unreachable"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not timed out"
    );
}

/// Errors: one `error:` line naming the address, exit 1, no panic.
#[tokio::test]
async fn errors_are_one_clear_line() {
    let busy = Server::start("udp_receiver", &[]).await;
    let (status, out, err) = run("udp_receiver", &["--port", &busy.port()], b"").await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot listen on {}: ", busy.addr))
            && err.contains("pass --port"),
        "{err}"
    );

    // Larger than any UDP datagram over IPv4 (but not over IPv6): refused
    // before sending.
    let port = busy.port();
    let args = ["--port", &port, "--count", "1", "--size", "65527"];
    let (status, _, err) = run("udp_sender", &args, b"").await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.lines().last().unwrap(),
        format!(
            "error: cannot send 65527 bytes to {}: a UDP datagram over IPv4 holds at most 65507",
            busy.addr
        )
    );
    // Larger than any UDP datagram at all: clap refuses the flag.
    let args = ["--port", &port, "--count", "1", "--size", "65528"];
    let (status, _, err) = run("udp_sender", &args, b"").await;
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("65528 is not in 0..=65527"), "{err}");
}

/// Over IPv6 a datagram carries up to 65,527 bytes: `udp_sender --size
/// 65527` to a receiver on ::1 arrives whole, not reported as truncated.
#[tokio::test]
async fn ipv6_datagrams_carry_65527_bytes() {
    let mut receiver = Server::start("udp_receiver", &["--host", "::1", "--count", "1"]).await;
    let port = receiver.port();
    let args = [
        "--host", "::1", "--port", &port, "--count", "1", "--size", "65527",
    ];
    let (status, _, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "{err}");
    let line = receiver.process.line().await.unwrap();
    assert!(
        line.contains("] 65527 bytes: seq 0 ...."),
        "{}",
        &line[..80]
    );
    let (status, out, _) = receiver.process.finish().await;
    assert!(status.success());
    assert_eq!(out, "received=1 unique=1 lost=0 duplicated=0 reordered=0\n");
}

/// A multicast receiver shares its port only with sockets that allow it
/// (SO_REUSEADDR): one that holds the port alone makes it a bind error.
#[tokio::test]
async fn multicast_port_held_without_sharing_is_in_use() {
    let group = "239.255.43.22";
    let alone = UdpSocket::bind((group, 0)).await.unwrap();
    let taken = alone.local_addr().unwrap();
    let port = taken.port().to_string();
    let join = [
        "--port",
        &port,
        "--multicast",
        group,
        "--interface",
        "127.0.0.1",
    ];
    let (status, out, err) = run("udp_receiver", &join, b"").await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot listen on {taken}: "))
            && err.trim_end().ends_with("pass --port"),
        "{err}"
    );
}

/// Flags the system would only refuse with a vague error are checked first:
/// a `--multicast` address outside 224.0.0.0/4, a multicast TTL above 255,
/// and port 0, which no datagram can be sent to. Exit 2, like any bad flag.
#[tokio::test]
async fn bad_flags_are_refused_with_the_reason() {
    let cases = [
        (
            "udp_receiver",
            &["--multicast", "10.1.2.3"][..],
            "error: invalid value '10.1.2.3' for '--multicast <MULTICAST>': not a multicast group",
        ),
        (
            "udp_sender",
            &["--multicast-ttl", "256", "-m", "x"],
            "error: invalid value '256' for '--multicast-ttl <MULTICAST_TTL>'",
        ),
        (
            "udp_sender",
            &["--port", "0", "-m", "x"],
            "error: invalid value '0' for '--port <PORT>'",
        ),
    ];
    for (bin, args, expected) in cases {
        let (status, out, err) = run(bin, args, b"").await;
        assert_eq!(status.code(), Some(2), "{bin} {args:?}: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with(expected), "{bin} {args:?}: {err}");
    }
}

/// Ctrl-C (SIGINT) stops the receiver cleanly: exit 0 and the summary.
#[tokio::test]
async fn receiver_stops_on_ctrl_c_with_summary() {
    let mut receiver = Server::start("udp_receiver", &[]).await;
    let args = [
        "--port",
        &receiver.port(),
        "--count",
        "3",
        "--interval-ms",
        "0",
    ];
    let (status, _, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    for n in 0..3 {
        let line = receiver.process.line().await.unwrap();
        assert!(line.ends_with(&format!("bytes: seq {n}")), "{line}");
    }
    receiver.process.signal("INT");
    let (status, out, err) = receiver.process.finish().await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "received=3 unique=3 lost=0 duplicated=0 reordered=0\n");
}

/// `RUST_LOG=debug` shows each datagram as the socket hands it over: its
/// source and size at the receiver, its destination and size at the sender.
#[tokio::test]
async fn debug_log_shows_each_datagram() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    use tokio::process::Command;

    let spawn = |bin: &str, args: &[&str]| {
        Command::new(common::binary(bin))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start")
    };
    let mut receiver = spawn("udp_receiver", &["--port", "0", "--count", "1"]);
    let mut stdout = BufReader::new(receiver.stdout.take().unwrap()).lines();
    let first = within("listening", stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    let port = first.rsplit(':').next().unwrap().to_string();
    let sender = spawn("udp_sender", &["--port", &port, "-m", "hello"]);
    let sent = within("the sender", sender.wait_with_output())
        .await
        .unwrap();
    assert!(sent.status.success());
    let sender_log = String::from_utf8(sent.stderr).unwrap();
    assert!(
        sender_log.contains(&format!(" datagram sent to=127.0.0.1:{port} bytes=5")),
        "{sender_log}"
    );
    let mut receiver_log = String::new();
    let mut pipe = receiver.stderr.take().unwrap();
    within("the receiver's log", pipe.read_to_string(&mut receiver_log))
        .await
        .unwrap();
    assert!(
        receiver_log.contains(" datagram received from=127.0.0.1:")
            && receiver_log.contains(" bytes=5 truncated=false"),
        "{receiver_log}"
    );
    assert!(
        within("the receiver", receiver.wait())
            .await
            .unwrap()
            .success()
    );
}
