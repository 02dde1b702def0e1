//! MQTT 5 in `mqtt_publisher` and `mqtt_subscriber` (`-V 5`), run as a user
//! runs them.
//!
//! The command line is checked without a broker: `-V` is the MQTT version
//! (as in mosquitto_pub and mosquitto_sub), `--version` prints ours, and an
//! MQTT 5 flag with `-V 311` is one clear error. The round trips run
//! through our own `mqtt_broker` and through Mosquitto (those ignored unless
//! it is installed: `cargo test --test mqtt5_cli -- --include-ignored`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use common::mqtt::Mosquitto;
use common::{Process, Server, free_port, run, wait_stderr};

const BINARIES: [&str; 2] = ["mqtt_publisher", "mqtt_subscriber"];

/// Starts `mqtt_subscriber -V 5` on `port` with `args` and waits for its SUBACK.
async fn subscriber(port: &str, args: &[&str]) -> Process {
    let mut all = vec!["--port", port, "-V", "5", "--show-packets"];
    all.extend_from_slice(args);
    let process = Process::spawn("mqtt_subscriber", &all);
    wait_stderr(&process, "<- SUBACK", 1).await;
    process
}

/// Runs `mqtt_publisher -V 5 --show-packets` on `port` to its end; returns
/// (success, stderr).
async fn publish(port: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut all = vec!["--port", port, "-V", "5", "--show-packets"];
    all.extend_from_slice(args);
    let (status, _, stderr) = run("mqtt_publisher", &all, stdin).await;
    (status.success(), stderr)
}

/// Asserts a failure as our binaries report one: exit 1, and the last line
/// of stderr is `error: ...` containing `words`.
fn assert_one_error(what: &str, status: std::process::ExitStatus, stderr: &str, words: &str) {
    assert_eq!(status.code(), Some(1), "{what}:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{what}:\n{stderr}");
    assert!(last.contains(words), "{what}: {last:?} lacks {words:?}");
}

/// `--help` lists `-V` as the MQTT version and each client's MQTT 5 flags.
#[tokio::test]
async fn help_shows_the_protocol_version_and_the_mqtt5_flags() {
    for (bin, flags) in [
        (
            "mqtt_publisher",
            &["-D, --property <COMMAND> <NAME> <VALUE>"][..],
        ),
        (
            "mqtt_subscriber",
            &[
                "--show-properties",
                "--nl",
                "--rap",
                "--rh <0|1|2>",
                "-D, --property <COMMAND> <NAME> <VALUE>",
                "-F, --format <FORMAT>",
            ][..],
        ),
    ] {
        let (status, help, _) = run(bin, &["--help"], b"").await;
        assert!(status.success(), "{bin} --help");
        assert!(help.contains("-V, --protocol-version <VERSION>"), "{help}");
        assert!(
            help.contains("-x, --session-expiry-secs <SECONDS>"),
            "{help}"
        );
        for flag in flags {
            assert!(help.contains(flag), "{bin} --help lacks {flag}:\n{help}");
        }
    }
}

/// `--version` prints the version; `-V` alone is no longer clap's version flag.
#[tokio::test]
async fn long_version_flag_prints_the_version() {
    for bin in BINARIES {
        let (status, out, _) = run(bin, &["--version"], b"").await;
        assert!(status.success(), "{bin} --version");
        assert_eq!(out, format!("mqtt {}\n", env!("CARGO_PKG_VERSION")));
        let (status, _, err) = run(bin, &["-V"], b"").await;
        assert_eq!(status.code(), Some(2), "{bin} -V:\n{err}");
        assert!(err.starts_with("error: a value is required for '--protocol-version"));
    }
}

/// `-V 7` is refused by clap with one `error:` line naming the flag.
#[tokio::test]
async fn an_unknown_protocol_version_is_an_error() {
    for bin in BINARIES {
        for version in ["7", "31", "v5"] {
            let (status, _, err) = run(bin, &["-V", version], b"").await;
            assert_eq!(status.code(), Some(2), "{bin} -V {version}:\n{err}");
            let first = err.lines().next().unwrap_or_default();
            let want =
                format!("error: invalid value '{version}' for '--protocol-version <VERSION>'");
            assert!(first.starts_with(&want), "{bin}: {first}");
        }
    }
}

/// Every spelling mosquitto accepts (`311`, `mqttv311`, `5`, `mqttv5`) is
/// taken: with nobody listening, the run gets as far as the connect.
#[tokio::test]
async fn every_mosquitto_spelling_of_the_version_is_accepted() {
    let port = free_port().to_string();
    for bin in BINARIES {
        for version in ["311", "mqttv311", "5", "mqttv5"] {
            let args = ["--port", &port, "-V", version];
            let (status, _, err) = run(bin, &args, b"").await;
            assert_one_error(bin, status, &err, "connection refused");
        }
    }
}

/// An MQTT 5 flag with MQTT 3.1.1 is one clear error, before any connect.
#[tokio::test]
async fn mqtt5_flags_with_version_311_are_an_error() {
    let port = free_port().to_string();
    let cases: [(&str, &[&str]); 8] = [
        ("mqtt_publisher", &["-V", "311", "-x", "10"]),
        ("mqtt_subscriber", &["-V", "311", "-x", "10"]),
        (
            "mqtt_publisher",
            &["-D", "PUBLISH", "content-type", "text/plain"],
        ),
        ("mqtt_subscriber", &["--nl"]),
        ("mqtt_subscriber", &["--rap"]),
        ("mqtt_subscriber", &["--rh", "0"]),
        ("mqtt_subscriber", &["--show-properties"]),
        (
            "mqtt_subscriber",
            &["-D", "SUBSCRIBE", "subscription-identifier", "3"],
        ),
    ];
    for (bin, flags) in cases {
        let mut args = vec!["--port", &port];
        args.extend_from_slice(flags);
        let (status, _, err) = run(bin, &args, b"").await;
        assert_one_error(&format!("{bin} {flags:?}"), status, &err, "add -V 5");
    }
}

/// A `-D` a client does not know, or a value out of its property's range,
/// is refused with the forms it knows, before anything connects.
#[tokio::test]
async fn an_unknown_property_is_an_error() {
    let port = free_port().to_string();
    let cases: [(&str, &[&str], &str); 9] = [
        (
            "mqtt_publisher",
            &["-D", "PUBLISH", "colour", "red"],
            "expected user-property",
        ),
        (
            "mqtt_publisher",
            &["-D", "CONNECT", "content-type", "text/plain"],
            "expected user-property",
        ),
        (
            "mqtt_publisher",
            &["-D", "PUBLISH", "message-expiry-interval", "soon"],
            "0 to 4294967295",
        ),
        (
            "mqtt_publisher",
            &["-D", "CONNECT", "receive-maximum", "0"],
            "takes 1 to 65535",
        ),
        (
            "mqtt_publisher",
            &["-D", "SUBSCRIBE", "subscription-identifier", "1"],
            "takes -D CONNECT and -D PUBLISH",
        ),
        (
            "mqtt_subscriber",
            &["-D", "PUBLISH", "content-type", "text/plain"],
            "takes -D CONNECT and -D SUBSCRIBE",
        ),
        (
            "mqtt_subscriber",
            &["-D", "SUBSCRIBE", "subscription-identifier", "0"],
            "takes 1 to 268435455",
        ),
        (
            "mqtt_subscriber",
            &["-D", "CONNECT", "maximum-packet-size", "0"],
            "takes 1 to 4294967295",
        ),
        (
            "mqtt_subscriber",
            &["-x", "5", "-D", "CONNECT", "session-expiry-interval", "5"],
            "give one",
        ),
    ];
    for (bin, flags, words) in cases {
        let mut args = vec!["--port", &port, "-V", "5"];
        args.extend_from_slice(flags);
        let (status, _, err) = run(bin, &args, b"").await;
        assert_one_error(&format!("{bin} {flags:?}"), status, &err, words);
    }
}

/// With MQTT 5, a message's user properties and content type travel with it:
/// the subscriber prints them after the payload with `--show-properties`,
/// and `--show-packets` names each reason code in words.
async fn user_property_round_trip(port: &str) {
    let sub = subscriber(port, &["-v", "--show-properties", "-q", "1", "-C", "1"]).await;
    let args = [
        "-q",
        "1",
        "-m",
        "21.5",
        "-D",
        "PUBLISH",
        "user-property",
        "sensor",
        "kitchen",
        "-D",
        "PUBLISH",
        "content-type",
        "text/plain",
    ];
    let (ok, stderr) = publish(port, &args, b"").await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("<- CONNACK Success session_present=false"),
        "{stderr}"
    );
    assert!(stderr.contains("<- PUBACK id=1 Success"), "{stderr}");
    let (status, out, sub_stderr) = sub.finish().await;
    assert!(status.success(), "{sub_stderr}");
    assert_eq!(
        out,
        "topic/learning 21.5 [user-property sensor kitchen, content-type text/plain]\n"
    );
    assert!(
        sub_stderr.contains("<- SUBACK id=1 [GrantedQoS1]"),
        "{sub_stderr}"
    );
}

/// Every QoS level works with MQTT 5, for lines read from stdin too.
async fn each_qos_round_trip(port: &str) {
    for qos in ["0", "1", "2"] {
        let sub = subscriber(port, &["-q", qos, "-C", "2", "-v"]).await;
        let (ok, stderr) = publish(port, &["-q", qos, "-l"], b"one\ntwo\n").await;
        assert!(ok, "{stderr}");
        let (status, out, sub_stderr) = sub.finish().await;
        assert!(status.success(), "{sub_stderr}");
        assert_eq!(out, "topic/learning one\ntopic/learning two\n", "qos {qos}");
    }
}

/// The user property reaches a subscriber through Mosquitto.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn mosquitto_carries_a_user_property_from_publisher_to_subscriber() {
    let mosquitto = Mosquitto::start(None).await;
    user_property_round_trip(&mosquitto.port()).await;
}

/// QoS 0, 1 and 2 round trips through Mosquitto with MQTT 5.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn mosquitto_round_trips_at_every_qos_with_mqtt5() {
    let mosquitto = Mosquitto::start(None).await;
    each_qos_round_trip(&mosquitto.port()).await;
}

/// A PUBACK with reason code 0x10, "no matching subscribers", is a success:
/// the broker took the message; nobody wanted it.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn no_matching_subscribers_is_a_success_in_words() {
    let mosquitto = Mosquitto::start(None).await;
    let (ok, stderr) = publish(&mosquitto.port(), &["-q", "1", "-t", "nobody"], b"").await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("<- PUBACK id=1 NoMatchingSubscribers"),
        "{stderr}"
    );
}

/// `-x`: a clean start whose session outlives the connection by 60 s. The
/// broker queues a QoS 1 message for the absent subscriber and hands it over
/// when it comes back with `--persistent` (Clean Start 0).
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn session_expiry_keeps_the_session_after_a_clean_start() {
    let mosquitto = Mosquitto::start(None).await;
    let port = mosquitto.port();
    let session = ["-i", "mqtt5-expiry", "-x", "60", "-q", "1", "-C", "1"];
    let first = subscriber(&port, &session).await;
    assert!(
        first.stderr().contains("session_expiry=60"),
        "{}",
        first.stderr()
    );
    let (ok, stderr) = publish(&port, &["-q", "1", "-m", "first"], b"").await;
    assert!(ok, "{stderr}");
    let (status, out, _) = first.finish().await;
    assert!(status.success());
    assert_eq!(out, "first\n");
    let (ok, stderr) = publish(&port, &["-q", "1", "-m", "queued"], b"").await;
    assert!(ok, "{stderr}");
    // The queued message may come before the SUBACK, and end the run
    // (`-C 1`): we wait for the exit, not for the SUBACK.
    let mut all = vec!["--port", &port, "-V", "5", "--show-packets", "--persistent"];
    all.extend_from_slice(&session);
    let (status, out, err) = run("mqtt_subscriber", &all, b"").await;
    assert!(status.success(), "{err}");
    assert!(err.contains("session_present=true"), "{err}");
    assert_eq!(out, "queued\n");
}

/// Retain handling 2 sends no retained message on subscribe; 0 does.
#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn retain_handling_2_skips_the_retained_message() {
    let mosquitto = Mosquitto::start(None).await;
    let port = mosquitto.port();
    let (ok, stderr) = publish(&port, &["-q", "1", "-r", "-t", "kept", "-m", "old"], b"").await;
    assert!(ok, "{stderr}");
    let mut skipping = subscriber(&port, &["-t", "kept", "--rh", "2", "-v"]).await;
    let mut getting = subscriber(&port, &["-t", "kept", "--rh", "0", "-v"]).await;
    assert_eq!(getting.line().await.as_deref(), Some("kept old (retained)"));
    let (ok, stderr) = publish(&port, &["-q", "1", "-t", "kept", "-m", "new"], b"").await;
    assert!(ok, "{stderr}");
    // The live message is the first the skipping subscriber sees.
    assert_eq!(skipping.line().await.as_deref(), Some("kept new"));
}

/// The user property reaches a subscriber through `mqtt_broker`.
#[tokio::test]
async fn mqtt_broker_carries_a_user_property_from_publisher_to_subscriber() {
    let broker = Server::start("mqtt_broker", &[]).await;
    user_property_round_trip(&broker.port()).await;
}

/// QoS 0, 1 and 2 round trips through `mqtt_broker` with MQTT 5.
#[tokio::test]
async fn mqtt_broker_round_trips_at_every_qos_with_mqtt5() {
    let broker = Server::start("mqtt_broker", &[]).await;
    each_qos_round_trip(&broker.port()).await;
}

/// Request/response (MQTT 5 §4.10) with the two binaries alone, as the
/// README shows it: the requester publishes with a Response Topic and
/// Correlation Data; the responder, `mqtt_subscriber -F '%R %D'`, prints
/// where to answer and what to answer with, and `mqtt_publisher` answers
/// there with the data (here the test plays the shell loop between them);
/// the requester gets the answer with the data it sent.
async fn request_response(port: &str) {
    let mut responder = subscriber(port, &["-t", "svc/time", "-F", "%R %D", "-C", "1"]).await;
    let requester = subscriber(port, &["-t", "replies/me", "-F", "%D %p", "-C", "1"]).await;
    let request = [
        "-t",
        "svc/time",
        "-m",
        "time?",
        "-D",
        "PUBLISH",
        "response-topic",
        "replies/me",
        "-D",
        "PUBLISH",
        "correlation-data",
        "42",
    ];
    let (ok, stderr) = publish(port, &request, b"").await;
    assert!(ok, "{stderr}");
    let line = responder.line().await.unwrap_or_default();
    assert_eq!(line, "replies/me 42");
    let (topic, data) = line.split_once(' ').unwrap();
    let answer = [
        "-t",
        topic,
        "-m",
        "noon",
        "-D",
        "PUBLISH",
        "correlation-data",
        data,
    ];
    let (ok, stderr) = publish(port, &answer, b"").await;
    assert!(ok, "{stderr}");
    let (status, out, err) = requester.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "42 noon\n");
}

/// `-F` prints the fields asked for, MQTT 5 properties included, and
/// nothing for a property a message lacks (a 3.1.1 publisher's here); `-N`
/// leaves out the newline, so the format's own `\n` ends each line.
async fn format_fields(port: &str) {
    let format = "%t|%p|%q|%r|%l|%x|%C|%F|%P|%R|%D\\n";
    let sub = subscriber(
        port,
        &["-t", "f/#", "-q", "1", "-C", "2", "-N", "-F", format],
    )
    .await;
    let args = [
        "-t",
        "f/5",
        "-q",
        "1",
        "-m",
        "hi",
        "-D",
        "PUBLISH",
        "content-type",
        "text/plain",
        "-D",
        "PUBLISH",
        "user-property",
        "a",
        "1",
        "-D",
        "PUBLISH",
        "user-property",
        "a",
        "2",
        "-D",
        "PUBLISH",
        "payload-format-indicator",
        "1",
        "-D",
        "PUBLISH",
        "response-topic",
        "r/t",
        "-D",
        "PUBLISH",
        "correlation-data",
        "c1",
    ];
    let (ok, stderr) = publish(port, &args, b"").await;
    assert!(ok, "{stderr}");
    let (status, _, stderr) = run(
        "mqtt_publisher",
        &["--port", port, "-t", "f/4", "-q", "1", "-m", "old"],
        b"",
    )
    .await;
    assert!(status.success(), "{stderr}");
    let (status, out, err) = sub.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        "f/5|hi|1|0|2|6869|text/plain|1|a:1 a:2|r/t|c1\n\
         f/4|old|1|0|3|6f6c64|||||\n"
    );
}

#[tokio::test]
async fn mqtt_broker_answers_requests_with_the_two_binaries() {
    let broker = Server::start("mqtt_broker", &[]).await;
    request_response(&broker.port()).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn mosquitto_answers_requests_with_the_two_binaries() {
    let mosquitto = Mosquitto::start(None).await;
    request_response(&mosquitto.port()).await;
}

#[tokio::test]
async fn mqtt_broker_messages_print_in_the_format_asked_for() {
    let broker = Server::start("mqtt_broker", &[]).await;
    format_fields(&broker.port()).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn mosquitto_messages_print_in_the_format_asked_for() {
    let mosquitto = Mosquitto::start(None).await;
    format_fields(&mosquitto.port()).await;
}

/// A `-F` field we do not print is refused before anything connects.
#[tokio::test]
async fn an_unknown_format_field_is_an_error() {
    let (status, _, stderr) = run("mqtt_subscriber", &["-F", "%I %p"], b"").await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("%I is not a field we print"), "{stderr}");
}

/// `-D SUBSCRIBE subscription-identifier N` comes back on each message the
/// subscription brings (`-F %S`); `-D CONNECT maximum-packet-size N` keeps
/// the broker from sending a larger packet: it drops, for this client, a
/// message that would make one [MQTT-3.1.2-25].
async fn connect_and_subscribe_properties(port: &str) {
    let args = [
        "-t",
        "d/t",
        "-C",
        "1",
        "-F",
        "%S %t %p",
        "-D",
        "SUBSCRIBE",
        "subscription-identifier",
        "7",
        "-D",
        "CONNECT",
        "maximum-packet-size",
        "64",
    ];
    let sub = subscriber(port, &args).await;
    let large = "x".repeat(100);
    for message in [large.as_str(), "small"] {
        let (ok, stderr) = publish(port, &["-t", "d/t", "-q", "1", "-m", message], b"").await;
        assert!(ok, "{stderr}");
    }
    let (status, out, err) = sub.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "7 d/t small\n");
}

#[tokio::test]
async fn mqtt_broker_takes_connect_and_subscribe_properties() {
    let broker = Server::start("mqtt_broker", &[]).await;
    connect_and_subscribe_properties(&broker.port()).await;
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto mosquitto-clients"]
async fn mosquitto_takes_connect_and_subscribe_properties() {
    let mosquitto = Mosquitto::start(None).await;
    connect_and_subscribe_properties(&mosquitto.port()).await;
}
