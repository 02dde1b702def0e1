//! No number on the command line makes a binary panic.
//!
//! Every numeric flag of all nine binaries is tried at its type's maximum
//! (`--count 18446744073709551615`, `--port 65535`, ...) and at 0. Each run
//! must either be refused by clap (exit 2, `error: invalid value ... for
//! '--flag'`) or work: a server serves one exchange and stops on SIGTERM, a
//! client does its job (or fails with one clear `error:` line, such as
//! nobody listening on port 65535) and stops on Ctrl-C. Never a panic
//! (exit 101). The walk also reads each binary's `--help`, so a numeric flag
//! added later without an entry here fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Process, Server, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};

/// The maxima of the flags' types.
const U8: &str = "255";
const U16: &str = "65535";
const U32: &str = "4294967295";
const U64: &str = "18446744073709551615";
/// `usize` on the 64-bit machines we build for.
const USIZE: &str = U64;

/// Each binary's numeric flags, with their types' maxima.
const NUMERIC: [(&str, &[(&str, &str)]); 9] = [
    (
        "tcp_server",
        &[
            ("--port", U16),
            ("--max-line-bytes", USIZE),
            ("--max-connections", USIZE),
            ("--idle-timeout-secs", U64),
        ],
    ),
    (
        "tcp_client",
        &[
            ("--port", U16),
            ("--count", U64),
            ("--interval-ms", U64),
            ("--connect-timeout-secs", U64),
        ],
    ),
    (
        "udp_receiver",
        &[("--port", U16), ("--count", U64), ("--max-size", USIZE)],
    ),
    (
        "udp_sender",
        &[
            ("--port", U16),
            ("--count", U64),
            ("--interval-ms", U64),
            ("--size", USIZE),
            ("--wait-reply-ms", U64),
            ("--multicast-ttl", U32),
        ],
    ),
    (
        "websocket_server",
        &[
            ("--port", U16),
            ("--max-message-bytes", USIZE),
            ("--max-connections", USIZE),
            ("--ping-interval-secs", U64),
        ],
    ),
    (
        "websocket_client",
        &[
            ("--count", U64),
            ("--interval-ms", U64),
            ("--answer-wait-ms", U64),
            ("--connect-timeout-secs", U64),
        ],
    ),
    (
        "mqtt_broker",
        &[
            ("--port", U16),
            ("--max-payload-bytes", USIZE),
            ("--max-connections", USIZE),
            ("--max-queued-bytes", USIZE),
            ("--max-subscriptions", U32),
            ("--max-keep-alive", U16),
            ("--ws-port", U16),
            ("--sys-interval", U64),
        ],
    ),
    (
        "mqtt_publisher",
        &[
            ("--port", U16),
            ("--qos", U8),
            ("--count", U64),
            ("--interval-ms", U64),
            ("--will-qos", U8),
            ("--ack-timeout-secs", U64),
            ("--session-expiry-secs", U32),
        ],
    ),
    (
        "mqtt_subscriber",
        &[
            ("--port", U16),
            ("--qos", U8),
            ("--count", U64),
            ("--timeout-secs", U64),
            ("--session-expiry-secs", U32),
            ("--rh", U8),
        ],
    ),
];

/// Flags that take a value that is not a number.
const NOT_NUMERIC: [&str; 34] = [
    "--host",
    "--url",
    "--message",
    "--topic",
    "--client-id",
    "--username",
    "--password",
    "--will-topic",
    "--will-message",
    "--multicast",
    "--interface",
    "--multicast-interface",
    "--user",
    "--help",
    "--version",
    // MQTT: `-V 311` or `-V 5`, `-D COMMAND NAME VALUE` (each number in
    // it checked by its property's range, tests/mqtt5_cli.rs), and
    // mqtt_subscriber's `-F FORMAT`.
    "--protocol-version",
    "--property",
    "--format",
    // mqtt_publisher -f FILE; mqtt_subscriber -T FILTER and -U FILTER.
    "--file",
    "--filter-out",
    "--unsubscribe",
    // websocket_client -H 'Name: value' and --protocol NAME.
    "--header",
    "--protocol",
    // TLS: files and directories, a client certificate's name, and the
    // pages allowed to connect.
    "--cafile",
    "--cert",
    "--key",
    "--require-client-cert",
    "--tls-dir",
    "--issue-client-cert",
    "--allow-origin",
    // mqtt_broker --persistence-file PATH, --password-file PATH,
    // --add-user NAME:PASSWORD and --acl-file PATH.
    "--persistence-file",
    "--password-file",
    "--add-user",
    "--acl-file",
];

/// Every flag that takes a value in `bin --help` is in [`NUMERIC`] or in
/// [`NOT_NUMERIC`]: a new numeric flag cannot escape the walk.
#[tokio::test]
async fn every_numeric_flag_is_walked() {
    for (bin, flags) in NUMERIC {
        let (status, help, _) = common::run(bin, &["--help"], b"").await;
        assert!(status.success());
        let mut taking_values = BTreeSet::new();
        for line in help.lines() {
            // `  -C, --count <COUNT>`, `      --port <PORT>`, or a value
            // that may be left out, `      --ws-port [<PORT>]`
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                let value = pair[1].trim_start_matches('[');
                if pair[0].starts_with("--") && value.starts_with('<') {
                    taking_values.insert(pair[0].trim_end_matches(','));
                }
            }
        }
        let walked: BTreeSet<&str> = flags.iter().map(|(flag, _)| *flag).collect();
        for flag in &taking_values {
            assert!(
                walked.contains(flag) || NOT_NUMERIC.contains(flag),
                "{bin} {flag} takes a value: add it to NUMERIC or NOT_NUMERIC"
            );
        }
        for flag in &walked {
            assert!(taking_values.contains(flag), "{bin} has no {flag}");
        }
    }
}

/// The servers, each flag at its maximum and at 0.
#[tokio::test]
async fn servers_survive_every_numeric_flag_at_its_extremes() {
    for bin in [
        "tcp_server",
        "udp_receiver",
        "websocket_server",
        "mqtt_broker",
    ] {
        for (flag, max) in flags_of(bin) {
            for value in [max, "0"] {
                server_case(bin, flag, value).await;
            }
        }
    }
}

/// The clients, each flag at its maximum and at 0, against a real server.
#[tokio::test]
async fn clients_survive_every_numeric_flag_at_its_extremes() {
    let tcp = Server::start("tcp_server", &[]).await;
    let ws = Server::start("websocket_server", &[]).await;
    let mqtt = Server::start("mqtt_broker", &[]).await;
    let ws_url = format!("ws://{}", ws.addr);
    for bin in [
        "tcp_client",
        "udp_sender",
        "websocket_client",
        "mqtt_publisher",
        "mqtt_subscriber",
    ] {
        for (flag, max) in flags_of(bin) {
            for value in [max, "0"] {
                // A receiver of its own for each UDP case: its output is
                // how we see the sender at work.
                let mut udp = match bin {
                    "udp_sender" => Some(Server::start("udp_receiver", &["--echo"]).await),
                    _ => None,
                };
                let port = match (bin, &udp) {
                    ("tcp_client", _) => tcp.port(),
                    (_, Some(udp)) => udp.port(),
                    _ => mqtt.port(),
                };
                let mut args: Vec<&str> = match bin {
                    "websocket_client" => vec!["--url", &ws_url],
                    _ if *flag == "--port" => vec![],
                    _ => vec!["--port", &port],
                };
                args.extend(client_args(bin, flag));
                args.extend([flag, value]);
                client_case(bin, &args, udp.as_mut()).await;
            }
        }
    }
}

fn flags_of(bin: &str) -> &'static [(&'static str, &'static str)] {
    NUMERIC
        .iter()
        .find(|(name, _)| *name == bin)
        .map(|(_, flags)| *flags)
        .expect("a binary of NUMERIC")
}

/// What a client needs besides `flag` to do one job: a message to send, or
/// the flag another one requires.
fn client_args(bin: &str, flag: &str) -> Vec<&'static str> {
    match (bin, flag) {
        ("udp_sender", "--count") => vec![],
        ("udp_sender", "--interval-ms" | "--size") => vec!["--count", "2"],
        ("mqtt_publisher", "--will-qos") => vec!["--will-topic", "gone", "-m", "hi"],
        // MQTT 5 flags, which need `-V 5`.
        ("mqtt_publisher", "--session-expiry-secs") => vec!["-V", "5", "-m", "hi"],
        ("mqtt_subscriber", "--session-expiry-secs" | "--rh") => vec!["-V", "5"],
        ("mqtt_subscriber", _) => vec![],
        _ => vec!["-m", "hi"],
    }
}

/// Whether `err` is clap refusing `flag`'s value (exit 2).
fn refused_by_clap(bin: &str, flag: &str, value: &str, code: Option<i32>, err: &str) -> bool {
    if code != Some(2) {
        return false;
    }
    assert!(
        err.starts_with(&format!("error: invalid value '{value}' for '{flag}")),
        "{bin} {flag} {value}: exit 2 without clap's error:\n{err}"
    );
    true
}

fn assert_no_panic(what: &str, code: Option<i32>, err: &str) {
    assert_ne!(code, Some(101), "{what} panicked:\n{err}");
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
}

/// Starts server `bin` with `flag value`; it is refused by clap, fails with
/// one `error:` line (such as port 65535 in use), or serves one exchange and
/// exits 0 on SIGTERM.
async fn server_case(bin: &str, flag: &str, value: &str) {
    let what = format!("{bin} {flag} {value}");
    let mut args = vec![flag, value];
    if flag != "--port" {
        args.extend(["--port", "0"]);
    }
    let mut process = Process::spawn(bin, &args);
    let Some(first) = process.line().await else {
        let (status, _, err) = process.finish().await;
        assert_no_panic(&what, status.code(), &err);
        if !refused_by_clap(bin, flag, value, status.code(), &err) {
            assert_eq!(status.code(), Some(1), "{what}:\n{err}");
            assert_eq!(
                err.lines().last().map(|l| l.starts_with("error: ")),
                Some(true),
                "{what}:\n{err}"
            );
        }
        return;
    };
    let addr: SocketAddr = first
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("{what}: first line {first:?}"));
    within(&what, exchange(bin, addr, &mut process)).await;
    process.signal("TERM");
    let (status, _, err) = process.finish().await;
    assert_no_panic(&what, status.code(), &err);
    assert_eq!(status.code(), Some(0), "{what}:\n{err}");
}

/// One exchange with a server, the simplest its protocol has.
async fn exchange(bin: &str, addr: SocketAddr, process: &mut Process) {
    match bin {
        "udp_receiver" => {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            socket.send_to(b"hi", addr).await.unwrap();
            let line = process.line().await.unwrap();
            assert!(line.ends_with("] 2 bytes: hi"), "{line}");
        }
        "tcp_server" => {
            let mut conn = BufReader::new(TcpStream::connect(addr).await.unwrap());
            conn.get_mut().write_all(b"hi\n").await.unwrap();
            let mut answer = String::new();
            conn.read_line(&mut answer).await.unwrap();
            assert_eq!(answer, "hi\n");
        }
        "websocket_server" => {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut answer = [0u8; 15];
            conn.read_exact(&mut answer).await.unwrap();
            assert_eq!(&answer, b"HTTP/1.1 200 OK");
        }
        "mqtt_broker" => {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            // CONNECT, clean session, keep-alive 60 s, client id "flags".
            let connect = [
                0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 5, b'f', b'l', b'a',
                b'g', b's',
            ];
            conn.write_all(&connect).await.unwrap();
            let mut connack = [0u8; 4];
            conn.read_exact(&mut connack).await.unwrap();
            assert_eq!(connack, [0x20, 2, 0, 0]);
        }
        _ => unreachable!("{bin} is not a server"),
    }
}

/// Runs client `bin` with `args`: it is refused by clap, or ends by itself
/// (its job done, or one `error:` line), or, still working once it has shown
/// that it works, stops on Ctrl-C with exit 0.
///
/// The sign that it works comes after the client has taken over Ctrl-C: the
/// first answer on its stdout (TCP, WebSocket), the first datagram at the
/// receiver (UDP), the INFO line that it connected (MQTT).
async fn client_case(bin: &str, args: &[&str], mut receiver: Option<&mut Server>) {
    let what = format!("{bin} {}", args.join(" "));
    let mut process = Process::spawn(bin, args);
    // Keep stdin open: `Child::wait` would close it, and an input that ends
    // ends some clients before the flag shows what it does.
    let _stdin = process.child.stdin.take();
    // Whether it still runs once it has shown that it works.
    let running = within(&format!("{what} to start"), async {
        loop {
            tokio::select! {
                status = process.child.wait() => {
                    status.unwrap();
                    return false;
                }
                // A closed stdout: it is about to exit.
                line = process.stdout.next_line(), if bin.contains("_client") => {
                    return line.unwrap().is_some();
                }
                line = async { receiver.as_mut().unwrap().process.stdout.next_line().await },
                    if receiver.is_some() => {
                    assert!(line.unwrap().is_some(), "{what}: the receiver stopped");
                    return true;
                }
                () = tokio::time::sleep(Duration::from_millis(20)), if bin.starts_with("mqtt") => {
                    if process.stderr().contains(" INFO ") {
                        return true;
                    }
                }
            }
        }
    })
    .await;
    if running {
        process.signal("INT");
    }
    let (status, _, err) = process.finish().await;
    assert_no_panic(&what, status.code(), &err);
    let (flag, value) = (args[args.len() - 2], args[args.len() - 1]);
    if refused_by_clap(bin, flag, value, status.code(), &err) {
        return;
    }
    match status.code() {
        Some(0) => {}
        Some(1) if !running => assert!(
            err.lines()
                .last()
                .is_some_and(|line| line.starts_with("error: ")),
            "{what}: exit 1 without an error line:\n{err}"
        ),
        other => panic!("{what}: exit {other:?}:\n{err}"),
    }
}
