//! The three MQTT binaries run as a user runs them: `mqtt_broker --port 0`,
//! then `mqtt_subscriber` and `mqtt_publisher` against it.
//!
//! A subscriber is ready once its SUBACK arrived; we start every subscriber
//! with `--show-packets` and wait for `<- SUBACK` on its stderr before
//! publishing, instead of sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::time::Duration;

use common::{Process, Server, run, wait_stderr, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A short wait that is expected to elapse: proves that nothing arrives.
const QUIET: Duration = Duration::from_millis(500);

async fn broker(args: &[&str]) -> Server {
    Server::start("mqtt_broker", args).await
}

/// Starts `mqtt_subscriber` on `port` with `args` and waits for its SUBACK.
async fn subscriber(port: &str, args: &[&str]) -> Process {
    let mut all = vec!["--port", port, "--show-packets"];
    all.extend_from_slice(args);
    let process = Process::spawn("mqtt_subscriber", &all);
    wait_stderr(&process, "<- SUBACK", 1).await;
    process
}

/// Runs `mqtt_publisher` on `port` to its end; returns (success, stderr).
async fn publish(port: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut all = vec!["--port", port];
    all.extend_from_slice(args);
    let (status, _, stderr) = run("mqtt_publisher", &all, stdin).await;
    (status.success(), stderr)
}

/// Proves that `process` prints nothing more for [`QUIET`].
async fn assert_silent(process: &mut Process) {
    let next = tokio::time::timeout(QUIET, process.stdout.next_line()).await;
    assert!(next.is_err(), "unexpected output: {next:?}");
}

/// Each QoS level exchanges exactly its packets: QoS 0 a lone PUBLISH, QoS 1
/// PUBLISH and PUBACK, QoS 2 PUBLISH, PUBREC, PUBREL, PUBCOMP, on the
/// publisher's side and on the subscriber's; and the message arrives. The
/// publisher's last log line counts acknowledgements only at QoS 1 and 2.
#[tokio::test]
async fn each_qos_level_delivers_with_its_own_handshake() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let expected: [&[&str]; 3] = [
        &["-> PUBLISH qos=0"],
        &["-> PUBLISH id=1 qos=1", "<- PUBACK id=1"],
        &[
            "-> PUBLISH id=1 qos=2",
            "<- PUBREC id=1",
            "-> PUBREL id=1",
            "<- PUBCOMP id=1",
        ],
    ];
    for (qos, packets) in expected.iter().enumerate() {
        let qos = qos.to_string();
        let sub = subscriber(&port, &["-q", &qos, "-C", "1", "-v"]).await;
        let message = format!("at qos {qos}");
        let args = ["-q", &qos, "-m", &message, "--show-packets"];
        let (ok, stderr) = publish(&port, &args, b"").await;
        assert!(ok, "{stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("<-") || l.starts_with("->"))
            .collect();
        let mut want = vec!["<- CONNACK session_present=false code=Success"];
        want.extend_from_slice(packets);
        want.push("-> DISCONNECT");
        assert_eq!(&lines[1..], want, "{stderr}");
        // The summary counts acknowledgements only where QoS has them: at
        // QoS 0, "0 acknowledged" would read like a loss.
        let summary = match qos.as_str() {
            "0" => "published 1 message(s) at QoS 0 (no acknowledgements at QoS 0); disconnected",
            _ => "published 1 message(s), 1 acknowledged; disconnected",
        };
        assert!(stderr.contains(summary), "{stderr}");
        let (status, out, sub_stderr) = sub.finish().await;
        assert!(status.success());
        assert_eq!(out, format!("topic/learning {message}\n"));
        // The subscriber's side of the same exchange, finished before it says
        // goodbye: at QoS 2 it waits for PUBREL and answers PUBCOMP first.
        let kinds: Vec<String> = sub_stderr
            .lines()
            .filter(|l| l.starts_with("<-") || l.starts_with("->"))
            .map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" "))
            .collect();
        let want: &[&str] = match qos.as_str() {
            "0" => &["<- PUBLISH", "-> DISCONNECT"],
            "1" => &["<- PUBLISH", "-> PUBACK", "-> DISCONNECT"],
            _ => &[
                "<- PUBLISH",
                "-> PUBREC",
                "<- PUBREL",
                "-> PUBCOMP",
                "-> DISCONNECT",
            ],
        };
        assert_eq!(&kinds[kinds.len() - want.len()..], want, "{sub_stderr}");
    }
}

/// A publisher that exits right after its last publish loses nothing: 1000
/// QoS 1 messages all arrive, and 1000 QoS 2 messages arrive exactly once.
#[tokio::test]
async fn a_thousand_messages_all_arrive_at_qos_1_and_exactly_once_at_qos_2() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let input: String = (0..1000).map(|i| format!("message {i}\n")).collect();
    for qos in ["1", "2"] {
        // One more than we send, with -W: the subscriber exits non-zero when
        // nothing more comes, after printing every message it got.
        let sub = subscriber(&port, &["-q", qos, "-C", "1001", "-W", "3"]).await;
        let (ok, stderr) = publish(&port, &["-q", qos, "-l"], input.as_bytes()).await;
        assert!(ok, "{stderr}");
        assert!(
            stderr.contains("published 1000 message(s), 1000 acknowledged"),
            "{stderr}"
        );
        let (status, out, _) = sub.finish().await;
        assert!(!status.success());
        let mut got: Vec<&str> = out.lines().collect();
        if qos == "1" {
            // At least once: duplicates would be allowed, losses not.
            got.dedup();
        }
        let want: Vec<&str> = input.lines().collect();
        assert_eq!(got, want, "qos {qos}");
    }
}

/// A retained message reaches a subscriber that arrives later, marked as
/// retained; `--clear-retained` removes it, so the next one gets nothing.
#[tokio::test]
async fn retained_message_reaches_late_subscriber_until_cleared() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let (ok, stderr) = publish(
        &port,
        &["-t", "status", "-m", "online", "-r", "-q", "1"],
        b"",
    )
    .await;
    assert!(ok, "{stderr}");

    let late = subscriber(&port, &["-t", "status", "-v", "-C", "1"]).await;
    let (status, out, _) = late.finish().await;
    assert!(status.success());
    assert_eq!(out, "status online (retained)\n");

    let (ok, stderr) = publish(&port, &["-t", "status", "--clear-retained", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    let mut later = subscriber(&port, &["-t", "status", "-v"]).await;
    assert_silent(&mut later).await;
}

/// The broker publishes a client's last will when the client vanishes
/// without DISCONNECT (killed), and not when it says goodbye.
#[tokio::test]
async fn last_will_is_published_when_the_publisher_is_killed() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let will = [
        "--will-topic",
        "clients/gone",
        "--will-message",
        "publisher died",
        "-l",
    ];
    let mut sub = subscriber(&port, &["-t", "clients/gone", "-v"]).await;

    // A publisher that ends politely: no will.
    let (ok, stderr) = publish(&port, &will, b"bye\n").await;
    assert!(ok, "{stderr}");
    assert_silent(&mut sub).await;

    // One that is killed: the will.
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(&will);
    let mut doomed = Process::spawn("mqtt_publisher", &args);
    wait_stderr(&doomed, "connected to", 1).await;
    doomed.signal("KILL");
    doomed.exit().await;
    assert_eq!(sub.line().await.unwrap(), "clients/gone publisher died");
}

/// `+` matches exactly one topic level and `#` every level below (and the
/// level itself); one subscriber may hold several filters.
#[tokio::test]
async fn wildcards_match_levels() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let mut sub = subscriber(&port, &["-t", "home/+/temp", "-t", "office/#", "-v"]).await;
    for topic in [
        "home/kitchen/temp",
        "home/kitchen/humidity",
        "home/a/b/temp",
        "office",
        "office/1/2",
    ] {
        let (ok, stderr) = publish(&port, &["-t", topic, "-m", "x", "-q", "1"], b"").await;
        assert!(ok, "{stderr}");
    }
    assert_eq!(sub.line().await.unwrap(), "home/kitchen/temp x");
    // `office/#` also matches `office` itself: # includes the parent level.
    assert_eq!(sub.line().await.unwrap(), "office x");
    assert_eq!(sub.line().await.unwrap(), "office/1/2 x");
    assert_silent(&mut sub).await;
}

/// With a persistent session, the broker keeps a subscriber's subscription
/// and queues QoS 1 messages while it is away, and delivers them when it
/// returns (CONNACK says session_present=true). The subscriber subscribes
/// again anyway, as `mosquitto_sub -c` does.
#[tokio::test]
async fn persistent_session_receives_what_was_published_while_away() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let me = [
        "--persistent",
        "-i",
        "learner",
        "-q",
        "1",
        "-t",
        "mail",
        "-C",
        "1",
    ];
    let first = subscriber(&port, &me).await;
    let (ok, stderr) = publish(&port, &["-t", "mail", "-m", "first", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    let (status, out, _) = first.finish().await;
    assert!(status.success());
    assert_eq!(out, "first\n");

    // Published while nobody is connected as "learner".
    let (ok, stderr) = publish(&port, &["-t", "mail", "-m", "while away", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");

    let mut args = vec!["--port", port.as_str(), "--show-packets"];
    args.extend_from_slice(&me);
    let (status, out, stderr) = run("mqtt_subscriber", &args, b"").await;
    assert!(status.success(), "{stderr}");
    assert_eq!(out, "while away\n");
    assert!(
        stderr.contains("<- CONNACK session_present=true"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the broker kept our session and subscriptions; subscribing to mail"),
        "{stderr}"
    );
    assert!(stderr.contains("-> SUBSCRIBE id=1"), "{stderr}");
}

/// A persistent session from an earlier run with other flags: `-t other`
/// (and its `-q`) must take effect although the broker kept the session of
/// `-t news`, so the subscriber subscribes on every connection.
#[tokio::test]
async fn persistent_session_subscribes_to_this_runs_topics() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let first = subscriber(&port, &["--persistent", "-i", "me", "-t", "news"]).await;
    // Ctrl-C: the subscriber stops without DISCONNECT; the broker keeps
    // the session (and its subscription to `news`).
    first.signal("INT");
    let (status, _, stderr) = first.finish().await;
    assert!(status.success(), "{stderr}");
    let again = [
        "--persistent",
        "-i",
        "me",
        "-t",
        "other",
        "-q",
        "1",
        "-C",
        "1",
    ];
    let second = subscriber(&port, &again).await;
    wait_stderr(&second, "<- SUBACK id=1 [qos=1]", 1).await;
    let (ok, stderr) = publish(&port, &["-t", "other", "-m", "for me", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    let (status, out, stderr) = second.finish().await;
    assert!(status.success(), "{stderr}");
    assert_eq!(out, "for me\n");
    assert!(
        stderr.contains("<- CONNACK session_present=true"),
        "{stderr}"
    );
}

/// A persistent session needs a client id, since the broker finds the
/// session by it [MQTT-3.1.3-7]: `-i '' --persistent` is one clear error
/// (rumqttc used to panic).
#[tokio::test]
async fn persistent_session_with_an_empty_client_id_is_an_error() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let args = ["--port", &port, "-i", "", "--persistent"];
    let (status, out, err) = run("mqtt_subscriber", &args, b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err.lines().last().unwrap(),
        "error: a persistent session needs a client id: the broker finds the session \
         by it; pass a non-empty -i"
    );
}

/// A broker started with --user refuses clients without the right password
/// with CONNACK 5 (not authorized, spec 3.2.2.3) and says so in its log; the
/// clients say so in one error line; the right password gets in.
#[tokio::test]
async fn broker_with_users_refuses_bad_credentials() {
    let broker = broker(&["--user", "alice:secret"]).await;
    let port = broker.port();
    for login in [
        &["-u", "alice", "-P", "wrong"][..],
        &["-u", "bob", "-P", "secret"],
        &[],
    ] {
        let (ok, stderr) = publish(&port, login, b"").await;
        assert!(!ok);
        let error = format!(
            "error: broker at 127.0.0.1:{port} refused the connection (CONNACK NotAuthorized): \
             bad username or password; check -u and -P"
        );
        assert!(stderr.contains(&error), "{stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    }
    wait_stderr(&broker.process, "(CONNACK 5)", 3).await;
    let log = broker.process.stderr();
    assert!(
        log.contains("refused a client: bad user name or password for \"alice\""),
        "{log}"
    );
    assert!(log.contains("for \"(no user name)\""), "{log}");
    let (ok, stderr) = publish(&port, &["-u", "alice", "-P", "secret"], b"").await;
    assert!(ok, "{stderr}");
}

/// A subscriber outlives a broker restart: it reconnects (with backoff),
/// subscribes again, and receives what is published on the new broker.
#[tokio::test]
async fn subscriber_survives_a_broker_restart() {
    let mut first = broker(&[]).await;
    let port = first.port();
    let mut sub = subscriber(&port, &["-q", "1", "-t", "news"]).await;
    first.process.signal("KILL");
    first.process.exit().await;
    wait_stderr(&sub, "reconnecting in", 1).await;

    // The same port again: the subscriber knows no other.
    let mut second = Process::spawn("mqtt_broker", &["--port", &port]);
    assert_eq!(
        second.line().await.unwrap(),
        format!("listening on 127.0.0.1:{port}")
    );
    wait_stderr(&sub, "<- SUBACK", 2).await;
    let (ok, stderr) = publish(&port, &["-t", "news", "-m", "back again", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    assert_eq!(sub.line().await.unwrap(), "back again");
    // Backoff: a second of a broker being away takes a handful of retries,
    // not thousands.
    assert!(
        sub.stderr().matches("reconnecting in").count() < 10,
        "{}",
        sub.stderr()
    );
}

/// Two subscribers with the same client id knock each other off the broker
/// (a new connection replaces the older one with that id). Every reconnect
/// gets its CONNACK, yet the pause keeps doubling: a connection that breaks
/// at once is no reason to hurry back.
#[tokio::test]
async fn reconnects_back_off_even_when_each_connection_is_accepted() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let first = subscriber(&port, &["-i", "twin"]).await;
    let second = subscriber(&port, &["-i", "twin"]).await;
    within("a pause of 2 s", async {
        while !(first.stderr() + &second.stderr()).contains("reconnecting in 2s") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Bytes that are not MQTT get that one connection closed, with a log line
/// that says what they evidently are (here an HTTP request, written in one
/// piece); the broker keeps serving everyone else. Its terminal shows
/// each client connecting and disconnecting, and no ERROR lines.
#[tokio::test]
async fn garbage_bytes_leave_the_broker_serving() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let mut junk = within("connect", tokio::net::TcpStream::connect(broker.addr))
        .await
        .unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\xff\xff\xff\xff\xff")
        .await
        .unwrap();
    let mut rest = Vec::new();
    // The broker closes the connection without answering a byte.
    let read = within("the broker to close", junk.read_to_end(&mut rest)).await;
    assert!(read.is_ok() || rest.is_empty());
    assert!(rest.is_empty(), "{rest:?}");

    let sub = subscriber(&port, &["-C", "1"]).await;
    let (ok, stderr) = publish(&port, &["-m", "still here"], b"").await;
    assert!(ok, "{stderr}");
    let (status, out, _) = sub.finish().await;
    assert!(status.success());
    assert_eq!(out, "still here\n");
    wait_stderr(&broker.process, "client disconnected", 2).await;
    let log = broker.process.stderr();
    assert_eq!(log.matches("client connected").count(), 2, "{log}");
    assert!(
        log.contains("closed a connection: an HTTP request (GET / HTTP/1.1), not MQTT"),
        "{log}"
    );
    assert!(!log.contains("ERROR"), "{log}");
}

/// One client over --max-connections is turned away with CONNACK 3 (server
/// unavailable, spec 3.2.2.3), and the publisher reports it in one line.
#[tokio::test]
async fn connection_limit_turns_away_one_more_client() {
    let broker = broker(&["--max-connections", "1"]).await;
    let port = broker.port();
    let _only = subscriber(&port, &[]).await;
    let (ok, stderr) = publish(&port, &[], b"").await;
    assert!(!ok);
    assert!(
        stderr.contains("refused the connection (CONNACK ServiceUnavailable)"),
        "{stderr}"
    );
}

/// Payload limits: the broker disconnects a client whose PUBLISH exceeds
/// --max-payload-bytes, and the publisher refuses one over its own limit
/// before sending it; both are one clear error.
#[tokio::test]
async fn oversized_payloads_are_clear_errors() {
    let broker = broker(&["--max-payload-bytes", "100"]).await;
    let port = broker.port();
    let big = "x".repeat(200);
    let (ok, stderr) = publish(&port, &["-m", &big, "-q", "1"], b"").await;
    assert!(!ok);
    assert!(
        stderr.contains("closed the connection; a broker does that when it stops, when another client connects with our client id (-i), or when our packet exceeds its size limit"),
        "{stderr}"
    );

    // Over the publisher's own 1 MiB limit: it stops reading at the limit
    // (so our write may meet a closed pipe) and says why, after delivering
    // the message before it, acknowledged, and disconnecting.
    let sub = subscriber(&port, &["-q", "1", "-C", "1"]).await;
    let mut input = b"first\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    input.push(b'\n');
    let mut publisher = Process::spawn("mqtt_publisher", &["--port", &port, "-l", "-q", "1"]);
    let stdin = publisher.child.stdin.as_mut().unwrap();
    let _ = within("writing stdin", stdin.write_all(&input)).await;
    let (status, _, stderr) = publisher.finish().await;
    assert!(!status.success());
    assert!(
        stderr.contains("published 1 message(s), 1 acknowledged; disconnected"),
        "{stderr}"
    );
    let error =
        "error: cannot read the message: a line is longer than the 1048576-byte packet limit\n";
    assert!(stderr.ends_with(error), "{stderr}");
    let (status, out, _) = sub.finish().await;
    assert!(status.success());
    assert_eq!(out, "first\n");
}

/// With no broker listening, the publisher and subscriber fail at once with
/// one error line naming the address, and do not retry in a loop.
#[tokio::test]
async fn unreachable_broker_is_one_clear_error() {
    // A port we hold (bound, never listening), so no other test can take it:
    // a connection to it is refused.
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let port = held
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .port()
        .to_string();
    for bin in ["mqtt_publisher", "mqtt_subscriber"] {
        let (status, out, stderr) = run(bin, &["--port", &port], b"").await;
        assert!(!status.success());
        assert_eq!(out, "");
        let want = format!(
            "error: cannot connect to 127.0.0.1:{port}: connection refused; is a broker running there?\n"
        );
        assert!(stderr.ends_with(&want), "{stderr}");
    }
}

/// A server that is not an MQTT broker (here one that answers like a web
/// server) gets one clear error line from both clients, not a dump of the
/// packet rumqttc thought it read.
#[tokio::test]
async fn a_server_that_is_not_mqtt_is_one_clear_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut connect = [0u8; 64];
            let _ = stream.read(&mut connect).await;
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    for bin in ["mqtt_publisher", "mqtt_subscriber"] {
        let (status, _, stderr) = run(bin, &["--port", &port], b"").await;
        assert!(!status.success());
        let want = format!(
            "error: cannot connect to 127.0.0.1:{port}: the answer is not MQTT; \
             is that port an MQTT broker? check --host and --port\n"
        );
        assert!(stderr.ends_with(&want), "{bin}: {stderr}");
    }
}

/// Ctrl-C stops the broker promptly with exit 0, and a port in use is one
/// clear error.
#[tokio::test]
async fn broker_stops_on_ctrl_c_and_explains_a_busy_port() {
    let mut first = broker(&[]).await;
    let port = first.port();
    let (status, _, stderr) = run("mqtt_broker", &["--port", &port], b"").await;
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("error: cannot listen on 127.0.0.1:{port}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("pass --port"), "{stderr}");

    first.process.signal("INT");
    assert!(first.process.exit().await.success());
}

/// Ctrl-C ends a publisher's input, not its duty: what it already published
/// is acknowledged, then it sends DISCONNECT (so no last will) and exits 0.
#[tokio::test]
async fn publisher_finishes_politely_on_ctrl_c() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let mut sub = subscriber(&port, &["-t", "#", "-v", "-q", "1"]).await;
    let args = [
        "--port",
        &port,
        "-l",
        "-q",
        "1",
        "-t",
        "typed",
        "--will-topic",
        "gone",
    ];
    let mut publisher = Process::spawn("mqtt_publisher", &args);
    publisher.write_stdin(b"one\ntwo\n").await;
    assert_eq!(sub.line().await.unwrap(), "typed one");
    assert_eq!(sub.line().await.unwrap(), "typed two");
    publisher.signal("INT");
    // Done while its stdin is still open: Ctrl-C, not end of input, ended it.
    wait_stderr(&publisher, "; disconnected", 1).await;
    let (status, _, stderr) = publisher.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("published 2 message(s), 2 acknowledged; disconnected"),
        "{stderr}"
    );
    assert_silent(&mut sub).await;
}

/// The publisher never has more than 20 QoS 2 publishes unacknowledged
/// (Mosquitto's default limit), as its own packet trace shows: 200 PUBLISH,
/// 200 PUBCOMP, and at no point more than 20 between them.
#[tokio::test]
async fn publisher_keeps_at_most_20_in_flight() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let args = ["-q", "2", "--count", "200", "--show-packets"];
    let (ok, stderr) = publish(&port, &args, b"").await;
    assert!(ok, "{stderr}");
    let (mut in_flight, mut most, mut published, mut completed) = (0, 0, 0, 0);
    for line in stderr.lines() {
        if line.starts_with("-> PUBLISH ") {
            published += 1;
            in_flight += 1;
            most = most.max(in_flight);
        } else if line.starts_with("<- PUBCOMP ") {
            completed += 1;
            in_flight -= 1;
        }
    }
    assert_eq!((published, completed), (200, 200));
    assert!(most <= 20, "{most} in flight");
}

/// `-f FILE` publishes the file's bytes as one message, and `-s` all of
/// stdin: any bytes, newlines and bytes that are not UTF-8 among them,
/// arrive exactly (`-F %x` prints them in hex). A missing file is one
/// error before anything connects.
#[tokio::test]
async fn a_file_or_all_of_stdin_is_one_message() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let bytes: Vec<u8> = (0..=255u8).chain(b"\n\nend".iter().copied()).collect();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("mqtt-file-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("payload.bin");
    std::fs::write(&file, &bytes).unwrap();
    let file = file.to_str().unwrap();
    for (args, stdin) in [(&["-f", file][..], &[][..]), (&["-s"][..], &bytes[..])] {
        let sub = subscriber(&port, &["-C", "1", "-F", "%l %x"]).await;
        let (ok, stderr) = publish(&port, args, stdin).await;
        assert!(ok, "{args:?}: {stderr}");
        let (status, out, _) = sub.finish().await;
        assert!(status.success());
        assert_eq!(out, format!("{} {hex}\n", bytes.len()), "{args:?}");
    }
    let (status, _, stderr) = run(
        "mqtt_publisher",
        &["--port", &port, "-f", "/no/such/file"],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        stderr.trim_end(),
        "error: cannot read /no/such/file: No such file or directory (os error 2)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `-R` leaves out the retained message and prints the live one;
/// `--retained-only` prints the retained one and stops, without printing,
/// at the live one.
#[tokio::test]
async fn retained_messages_can_be_left_out_or_kept_alone() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let (ok, stderr) = publish(&port, &["-t", "r/t", "-m", "old", "-r", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    let skipping = subscriber(&port, &["-t", "r/t", "-R", "-C", "1"]).await;
    let only = subscriber(&port, &["-t", "r/t", "--retained-only"]).await;
    let (ok, stderr) = publish(&port, &["-t", "r/t", "-m", "new", "-q", "1"], b"").await;
    assert!(ok, "{stderr}");
    let (status, out, err) = skipping.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "new\n");
    let (status, out, err) = only.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "old\n");
}

/// `-T FILTER` leaves out the messages whose topic matches it.
#[tokio::test]
async fn filtered_out_topics_are_not_printed() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let sub = subscriber(&port, &["-t", "h/#", "-T", "h/secret/#", "-C", "1", "-v"]).await;
    for topic in ["h/secret/x", "h/open"] {
        let (ok, stderr) = publish(&port, &["-t", topic, "-m", "m", "-q", "1"], b"").await;
        assert!(ok, "{stderr}");
    }
    let (status, out, err) = sub.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "h/open m\n");
}

/// `-E` leaves a persistent session behind, subscribed, and exits; `-U`
/// takes one of its subscriptions away. Coming back, the session holds
/// what was published to the filter it kept, and nothing from the one it
/// dropped.
#[tokio::test]
async fn a_session_is_set_up_and_changed_without_staying() {
    let broker = broker(&[]).await;
    let port = broker.port();
    let session = ["-i", "e-session", "--persistent", "-q", "1"];
    let mut args = session.to_vec();
    args.extend(["-t", "u/dropped", "-t", "u/kept", "-E"]);
    let (status, _, err) = run(
        "mqtt_subscriber",
        &[&["--port", &port][..], &args].concat(),
        b"",
    )
    .await;
    assert!(status.success(), "-E: {err}");
    let mut args = session.to_vec();
    args.extend(["-U", "u/dropped"]);
    let (status, _, err) = run(
        "mqtt_subscriber",
        &[&["--port", &port][..], &args].concat(),
        b"",
    )
    .await;
    assert!(status.success(), "-U: {err}");
    assert!(err.contains("unsubscribed from u/dropped"), "{err}");
    for (topic, message) in [("u/dropped", "gone"), ("u/kept", "kept")] {
        let (ok, stderr) = publish(&port, &["-t", topic, "-m", message, "-q", "1"], b"").await;
        assert!(ok, "{stderr}");
    }
    let mut args = session.to_vec();
    args.extend(["-t", "u/kept", "-C", "1", "-v"]);
    let (status, out, err) = run(
        "mqtt_subscriber",
        &[&["--port", &port][..], &args].concat(),
        b"",
    )
    .await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "u/kept kept\n");
}
