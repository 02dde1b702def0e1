//! MQTT with an independent implementation on the other side: Mosquitto's
//! clients against `mqtt_broker`, and `mqtt_publisher`/`mqtt_subscriber`
//! against a Mosquitto broker (the original project's setup). Mosquitto also
//! shows the spec's behaviour where rumqttd departs from it (see also
//! `tests/mqtt_conformance.rs`, which runs one list of cases against both).
//!
//! Each test starts its own `mosquitto -c <config>` on a free loopback port;
//! a system-wide Mosquitto service is neither needed nor used.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use common::mqtt::{Mosquitto, program};
use common::{Process, Server, run, wait_stderr, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts our subscriber on `port` and waits for its SUBACK.
async fn subscriber(port: &str, args: &[&str]) -> Process {
    let mut all = vec!["--port", port, "--show-packets"];
    all.extend_from_slice(args);
    let process = Process::spawn("mqtt_subscriber", &all);
    wait_stderr(&process, "<- SUBACK", 1).await;
    process
}

/// mosquitto_sub and mosquitto_pub work through `mqtt_broker` at every QoS,
/// with wildcards and retained messages.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_clients_through_mqtt_broker() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.port();
    let retained = [
        "-p",
        &port,
        "-t",
        "interop/status",
        "-m",
        "up",
        "-r",
        "-q",
        "1",
    ];
    let (status, _, stderr) = run(&program("mosquitto_pub"), &retained, b"").await;
    assert!(status.success(), "{stderr}");

    // The retained message arrives as soon as the subscription is in place:
    // from then on, live messages reach the subscriber too.
    let args = ["-p", &port, "-t", "interop/#", "-q", "2", "-v", "-C", "4"];
    let mut sub = Process::spawn(&program("mosquitto_sub"), &args);
    assert_eq!(sub.line().await.unwrap(), "interop/status up");
    for qos in ["0", "1", "2"] {
        let topic = format!("interop/q{qos}");
        let args = ["-p", &port, "-t", &topic, "-m", "hello", "-q", qos];
        let (status, _, stderr) = run(&program("mosquitto_pub"), &args, b"").await;
        assert!(status.success(), "{stderr}");
    }
    let (status, out, _) = sub.finish().await;
    assert!(status.success());
    let messages: Vec<&str> = out.lines().collect();
    assert_eq!(
        messages,
        ["interop/q0 hello", "interop/q1 hello", "interop/q2 hello"]
    );
}

/// `mqtt_publisher` and `mqtt_subscriber` against Mosquitto: 1000 QoS 2
/// messages from a publisher that exits right after its last one all arrive,
/// exactly once, and QoS 1 shows its handshake.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn our_clients_through_mosquitto_lose_nothing() {
    let mosquitto = Mosquitto::start(None).await;
    let port = mosquitto.port();
    let input: String = (0..1000).map(|i| format!("message {i}\n")).collect();
    let sub = subscriber(&port, &["-q", "2", "-C", "1001", "-W", "3"]).await;
    let (status, _, stderr) = run(
        "mqtt_publisher",
        &["--port", &port, "-q", "2", "-l"],
        input.as_bytes(),
    )
    .await;
    assert!(status.success(), "{stderr}");
    let (status, out, _) = sub.finish().await;
    assert!(!status.success(), "timed out waiting for a 1001st message");
    assert_eq!(out, input);

    let sub = subscriber(&port, &["-q", "1", "-C", "1", "-v"]).await;
    let args = ["--port", &port, "-q", "1", "--show-packets"];
    let (status, _, stderr) = run("mqtt_publisher", &args, b"").await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("-> PUBLISH id=1 qos=1\n<- PUBACK id=1\n-> DISCONNECT\n"),
        "{stderr}"
    );
    let (status, out, _) = sub.finish().await;
    assert!(status.success());
    assert_eq!(out, "topic/learning Hello MQTT!\n");
}

/// Mosquitto follows MQTT 3.1.1 section 3.2.2.3: a bad password gets CONNACK
/// with return code 5 (as `mqtt_broker` does; see tests/mqtt.rs), so our
/// publisher can name the cause.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_answers_a_bad_password_with_connack_5() {
    let mosquitto = Mosquitto::start(Some(("alice", "secret"))).await;
    let mut stream = within("connect", TcpStream::connect(mosquitto.addr))
        .await
        .unwrap();
    stream
        .write_all(&common::mqtt::connect_packet("raw", "alice", "wrong"))
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("the answer and close", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x05]);

    let port = mosquitto.port();
    let args = ["--port", &port, "-u", "alice", "-P", "wrong"];
    let (status, _, stderr) = run("mqtt_publisher", &args, b"").await;
    assert!(!status.success());
    let want = format!(
        "error: broker at 127.0.0.1:{port} refused the connection (CONNACK NotAuthorized): \
         bad username or password; check -u and -P\n"
    );
    assert!(stderr.ends_with(&want), "{stderr}");
    let args = ["--port", &port, "-u", "alice", "-P", "secret", "-q", "2"];
    let (status, _, stderr) = run("mqtt_publisher", &args, b"").await;
    assert!(status.success(), "{stderr}");
}

/// Mosquitto follows MQTT 3.1.1 section 3.1.2.10: a keep-alive of 0 (none)
/// is accepted with CONNACK 0 (as `mqtt_broker` does; see tests/mqtt.rs).
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_accepts_a_keep_alive_of_zero() {
    let mosquitto = Mosquitto::start(None).await;
    let mut stream = within("connect", TcpStream::connect(mosquitto.addr))
        .await
        .unwrap();
    let connect = common::mqtt::connect_packet_with_keep_alive("raw", "any", "any", 0);
    stream.write_all(&connect).await.unwrap();
    let mut answer = [0u8; 4];
    within("the CONNACK", stream.read_exact(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, [0x20, 0x02, 0x00, 0x00]);
}

/// `mosquitto_pub -V 5` and `mosquitto_sub -V 5` through `mqtt_broker`: a
/// message's user property, content type, response topic and correlation
/// data (request/response) arrive unchanged, its expiry interval counted
/// down from 100 s by at most a second, and a message sent with a topic
/// alias arrives under its topic name.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_v5_clients_through_mqtt_broker() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.port();
    // mosquitto_sub's format: topic, payload, then %P user properties, %C
    // content type, %R response topic, %D correlation data, %E expiry.
    let format = "%t %p %P|%C|%R|%D|%E";
    let args = [
        "-V", "5", "-p", &port, "-t", "v5/#", "-C", "2", "-F", format,
    ];
    let mut sub = Process::spawn(&program("mosquitto_sub"), &args);
    // A retained probe reaches the subscriber whenever it subscribes: from
    // then on, live messages do too.
    let probe = ["-V", "5", "-p", &port, "-t", "v5/probe", "-m", "p", "-r"];
    let (status, _, stderr) = run(&program("mosquitto_pub"), &probe, b"").await;
    assert!(status.success(), "{stderr}");
    assert_eq!(sub.line().await.unwrap(), "v5/probe p ||||");

    let request = [
        "-V",
        "5",
        "-p",
        &port,
        "-t",
        "v5/request",
        "-m",
        "question",
        "-D",
        "publish",
        "user-property",
        "lang",
        "en",
        "-D",
        "publish",
        "content-type",
        "text/plain",
        "-D",
        "publish",
        "response-topic",
        "v5/reply",
        "-D",
        "publish",
        "correlation-data",
        "id-42",
        "-D",
        "publish",
        "message-expiry-interval",
        "100",
    ];
    let (status, _, stderr) = run(&program("mosquitto_pub"), &request, b"").await;
    assert!(status.success(), "{stderr}");
    let line = sub.line().await.unwrap();
    let expiry: u32 = line.rsplit('|').next().unwrap().parse().unwrap();
    assert!((99..=100).contains(&expiry), "{line}");
    assert!(
        line.starts_with("v5/request question lang:en|text/plain|v5/reply|id-42|"),
        "{line}"
    );
    let (status, _, _) = sub.finish().await;
    assert!(status.success());

    // Retained, so that it reaches the subscriber whenever it subscribes.
    let aliased = [
        "-V",
        "5",
        "-p",
        &port,
        "-t",
        "v5/alias/t",
        "-m",
        "named",
        "-r",
        "-D",
        "publish",
        "topic-alias",
        "3",
    ];
    let (status, _, stderr) = run(&program("mosquitto_pub"), &aliased, b"").await;
    assert!(status.success(), "{stderr}");
    let args = ["-V", "5", "-p", &port, "-t", "v5/alias/#", "-C", "1", "-v"];
    let mut sub = Process::spawn(&program("mosquitto_sub"), &args);
    assert_eq!(sub.line().await.unwrap(), "v5/alias/t named");
}

/// Two `mosquitto_sub -V 5` in one share group, `$share/workers/jobs`,
/// through `mqtt_broker`: each of ten QoS 1 messages from `mosquitto_pub`
/// reaches exactly one of them, and the group takes turns (five each).
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn mosquitto_v5_share_group_through_mqtt_broker() {
    let broker = Server::start("mqtt_broker", &[]).await;
    let port = broker.port();
    let mut workers = Vec::new();
    for worker in ["w1", "w2"] {
        // Each worker also holds a topic of its own, subscribed in the same
        // SUBSCRIBE: once its retained probe arrives, the share is in place.
        let probe = format!("probe/{worker}");
        let args = [
            "-V",
            "5",
            "-p",
            &port,
            "-q",
            "1",
            "-t",
            "$share/workers/jobs",
            "-t",
            &probe,
            "-C",
            "6",
            "-W",
            "20",
            "-F",
            "%t %p",
        ];
        let mut sub = Process::spawn(&program("mosquitto_sub"), &args);
        let publish = ["-V", "5", "-p", &port, "-t", &probe, "-m", "ready", "-r"];
        let (status, _, stderr) = run(&program("mosquitto_pub"), &publish, b"").await;
        assert!(status.success(), "{stderr}");
        assert_eq!(sub.line().await.unwrap(), format!("{probe} ready"));
        workers.push(sub);
    }
    let jobs: String = (0..10).map(|n| format!("job-{n}\n")).collect();
    let args = ["-V", "5", "-p", &port, "-q", "1", "-t", "jobs", "-l"];
    let (status, _, stderr) = run(&program("mosquitto_pub"), &args, jobs.as_bytes()).await;
    assert!(status.success(), "{stderr}");
    let mut everyone = Vec::new();
    for sub in workers {
        let (status, out, stderr) = sub.finish().await;
        assert!(status.success(), "{stderr}");
        let got: Vec<String> = out.lines().map(str::to_string).collect();
        assert_eq!(got.len(), 5, "each worker takes its turn: {got:?}");
        everyone.extend(got);
    }
    everyone.sort();
    let expected: Vec<String> = (0..10).map(|n| format!("jobs job-{n}")).collect();
    assert_eq!(everyone, expected, "each job once, to one worker");
}

/// `mqtt_subscriber -F` prints what `mosquitto_sub -F` prints for the same
/// format, line for line: both subscribed to `f/#` on one Mosquitto, for a
/// retained message, one with MQTT 5 properties and one of control bytes.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install -y mosquitto mosquitto-clients"]
async fn our_format_prints_what_mosquitto_sub_prints() {
    let mosquitto = Mosquitto::start(None).await;
    let port = mosquitto.port();
    let pubs = ["-V", "5", "-p", &port, "-q", "1"];
    let retained = [&pubs[..], &["-t", "f/r", "-m", "kept", "-r"]].concat();
    let (status, _, stderr) = run(&program("mosquitto_pub"), &retained, b"").await;
    assert!(status.success(), "{stderr}");

    let format = "%t|%p|%x|%X|%l|%q|%r|%C|%D|%F|%P|%R|%%";
    let subs = ["-V", "5", "-t", "f/#", "-q", "1", "-C", "3", "-F", format];
    let mut ours = Process::spawn("mqtt_subscriber", &[&["--port", &port][..], &subs].concat());
    let mut theirs = Process::spawn(
        &program("mosquitto_sub"),
        &[&["-p", &port][..], &subs].concat(),
    );
    // Each prints the retained message once it has subscribed.
    let first = theirs.line().await.unwrap();
    assert_eq!(first, "f/r|kept|6b657074|6B657074|4|1|1||||||%");
    assert_eq!(ours.line().await.unwrap(), first);

    let with_properties = [
        &pubs[..],
        &[
            "-t",
            "f/p",
            "-m",
            "hi there",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "publish",
            "user-property",
            "a",
            "1",
            "-D",
            "publish",
            "user-property",
            "b",
            "2",
            "-D",
            "publish",
            "response-topic",
            "r/t",
            "-D",
            "publish",
            "correlation-data",
            "c1",
            "-D",
            "publish",
            "payload-format-indicator",
            "1",
        ],
    ]
    .concat();
    let (status, _, stderr) = run(&program("mosquitto_pub"), &with_properties, b"").await;
    assert!(status.success(), "{stderr}");
    let control = [&pubs[..], &["-t", "f/c", "-s"]].concat();
    let (status, _, stderr) = run(&program("mosquitto_pub"), &control, b"\x01\x02\x1b\x7fx").await;
    assert!(status.success(), "{stderr}");
    for _ in 0..2 {
        let line = theirs.line().await.unwrap();
        assert_eq!(ours.line().await.unwrap(), line);
    }
    for process in [ours, theirs] {
        assert!(process.finish().await.0.success());
    }
}
