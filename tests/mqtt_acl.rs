//! `mqtt_broker --acl-file` in Mosquitto's syntax, with one list of cases
//! run against our broker and (ignored: needs mosquitto) against Mosquitto
//! 2.0.11 with the same password and ACL files: the same outcome for each.
//! The outcomes were first measured against Mosquitto with raw packets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;

use common::mqtt::{Mosquitto, connect_packet, next_packet, packet, string};
use common::tls::TempDir;
use common::{Server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ACL: &str = "# anonymous clients: the lines before the first user\n\
topic read public/#\n\
user alice\n\
topic readwrite alice/#\n\
topic read sensors/#\n\
topic write cmd/alice\n\
topic deny sensors/secret\n\
user root\n\
topic readwrite #\n\
pattern readwrite devices/%c/#\n\
pattern read users/%u/inbox\n";

/// What each case must give, on both brokers.
const EXPECTED: [&str; 6] = [
    "alice SUBSCRIBE #, sensors/secret, cmd/alice: SUBACK [0, 0, 0]",
    "alice on # receives: sensors/temp, devices/alice-c/x, users/alice/inbox, alice/end",
    "alice 3.1.1 QoS 1 to sensors/temp (read only): PUBACK [0x40, 0x02, 0x00, 0x01]; root receives alice/ok first",
    "alice 5 QoS 1 to sensors/temp: PUBACK [0x40, 0x03, 0x00, 0x01, 0x87]",
    "alice 5 QoS 2 to other/x: PUBREC [0x50, 0x03, 0x00, 0x02, 0x87]",
    "alice's will to other/will is not published; her will to alice/will is",
];

/// A connection logged in as `user` (password `pw`), MQTT `version` 4 or
/// 5, with an optional will (topic, payload); its CONNACK read.
async fn client(
    addr: SocketAddr,
    id: &str,
    user: &str,
    version: u8,
    will: Option<(&str, &str)>,
) -> (TcpStream, Vec<u8>) {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let connect = if version == 4 && will.is_none() {
        connect_packet(id, user, "pw")
    } else {
        let mut flags = 0b1100_0010;
        if will.is_some() {
            flags |= 0b100;
        }
        let mut body = string(b"MQTT");
        body.extend_from_slice(&[version, flags, 0, 60]);
        if version == 5 {
            body.push(0);
        }
        body.extend(string(id.as_bytes()));
        if let Some((topic, payload)) = will {
            if version == 5 {
                body.push(0);
            }
            body.extend(string(topic.as_bytes()));
            body.extend(string(payload.as_bytes()));
        }
        body.extend(string(user.as_bytes()));
        body.extend(string(b"pw"));
        packet(0x10, &body)
    };
    stream.write_all(&connect).await.expect("write");
    let mut buffer = Vec::new();
    let (first, body) = next_packet(&mut stream, &mut buffer).await;
    assert_eq!(first, 0x20, "CONNACK for {user}");
    assert_eq!(body[1], 0, "CONNACK code for {user}");
    (stream, buffer)
}

/// SUBSCRIBE (3.1.1) to `filters` at QoS 0; the SUBACK's return codes.
async fn subscribe(stream: &mut TcpStream, buffer: &mut Vec<u8>, filters: &[&str]) -> Vec<u8> {
    let mut body = vec![0, 1];
    for filter in filters {
        body.extend(string(filter.as_bytes()));
        body.push(0);
    }
    stream.write_all(&packet(0x82, &body)).await.expect("write");
    let (first, body) = next_packet(stream, buffer).await;
    assert_eq!(first, 0x90);
    body[2..].to_vec()
}

/// A QoS 0 PUBLISH from a 3.1.1 client.
async fn publish0(stream: &mut TcpStream, topic: &str) {
    let mut body = string(topic.as_bytes());
    body.extend_from_slice(b"x");
    stream.write_all(&packet(0x30, &body)).await.expect("write");
}

/// The topic of the next PUBLISH.
async fn next_topic(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> String {
    let (first, body) = next_packet(stream, buffer).await;
    assert_eq!(first >> 4, 3, "not a PUBLISH: {first:#x}");
    let length = usize::from(u16::from_be_bytes([body[0], body[1]]));
    String::from_utf8(body[2..2 + length].to_vec()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    let all: Vec<String> = bytes.iter().map(|b| format!("{b:#04x}")).collect();
    all.join(", ")
}

/// Runs every case against the broker at `addr`; returns what each gave.
async fn outcomes(addr: SocketAddr) -> Vec<String> {
    let mut said = Vec::new();
    let (mut root, mut root_buffer) = client(addr, "root-c", "root", 4, None).await;
    subscribe(&mut root, &mut root_buffer, &["#"]).await;

    let (mut alice, mut buffer) = client(addr, "alice-c", "alice", 4, None).await;
    let granted = subscribe(
        &mut alice,
        &mut buffer,
        &["#", "sensors/secret", "cmd/alice"],
    )
    .await;
    said.push(format!(
        "alice SUBSCRIBE #, sensors/secret, cmd/alice: SUBACK {granted:?}"
    ));

    for topic in [
        "public/x",
        "other/x",
        "sensors/secret",
        "sensors/temp",
        "cmd/alice",
        "devices/alice-c/x",
        "devices/other/x",
        "users/alice/inbox",
        "users/bob/inbox",
        "alice/end",
    ] {
        publish0(&mut root, topic).await;
    }
    let mut got = Vec::new();
    loop {
        let topic = next_topic(&mut alice, &mut buffer).await;
        let end = topic == "alice/end";
        got.push(topic);
        if end {
            break;
        }
    }
    said.push(format!("alice on # receives: {}", got.join(", ")));
    // Root has its own copies of those ten: read them away.
    for _ in 0..10 {
        next_topic(&mut root, &mut root_buffer).await;
    }

    let mut body = string(b"sensors/temp");
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(b"21");
    alice.write_all(&packet(0x32, &body)).await.expect("write");
    let (first, ack) = next_packet(&mut alice, &mut buffer).await;
    let mut ok = string(b"alice/ok");
    ok.extend_from_slice(b"y");
    alice.write_all(&packet(0x30, &ok)).await.expect("write");
    let first_at_root = next_topic(&mut root, &mut root_buffer).await;
    said.push(format!(
        "alice 3.1.1 QoS 1 to sensors/temp (read only): PUBACK [{}]; root receives {first_at_root} first",
        hex(&[&[first, ack.len() as u8][..], &ack].concat())
    ));
    drop(alice);

    let (mut alice5, mut buffer) = client(addr, "alice-5", "alice", 5, None).await;
    for (kind, id, topic, name) in [
        (
            0x32,
            1u8,
            "sensors/temp",
            "alice 5 QoS 1 to sensors/temp: PUBACK",
        ),
        (0x34, 2u8, "other/x", "alice 5 QoS 2 to other/x: PUBREC"),
    ] {
        let mut body = string(topic.as_bytes());
        body.extend_from_slice(&[0, id, 0]);
        body.extend_from_slice(b"v5");
        alice5.write_all(&packet(kind, &body)).await.expect("write");
        let (first, ack) = next_packet(&mut alice5, &mut buffer).await;
        said.push(format!(
            "{name} [{}]",
            hex(&[&[first, ack.len() as u8][..], &ack].concat())
        ));
    }
    drop(alice5);

    // Wills: each connection closed without DISCONNECT.
    let (denied, _) = client(addr, "will-1", "alice", 4, Some(("other/will", "w"))).await;
    drop(denied);
    let (allowed, _) = client(addr, "will-2", "alice", 4, Some(("alice/will", "w"))).await;
    drop(allowed);
    let first_will = next_topic(&mut root, &mut root_buffer).await;
    said.push(if first_will == "alice/will" {
        "alice's will to other/will is not published; her will to alice/will is".to_string()
    } else {
        format!("root got the will {first_will} first")
    });
    said
}

/// The password and ACL files, readable by the `mosquitto` user that
/// Mosquitto drops to when started as root.
fn files(dir: &TempDir) -> (String, String) {
    let passwords = dir.path("passwords");
    let acl = dir.path("acl");
    for (user, create) in [("alice", true), ("root", false)] {
        let mut command = std::process::Command::new(common::mqtt::program("mosquitto_passwd"));
        if create {
            command.arg("-c");
        }
        let status = command
            .args(["-b", &passwords, user, "pw"])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success());
    }
    std::fs::write(&acl, ACL).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in [&passwords, &acl] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    (passwords, acl)
}

#[tokio::test]
async fn our_broker_gives_mosquittos_outcomes() {
    let dir = TempDir::new();
    // Our own --add-user makes the password file here, so that this test
    // needs nothing installed (Mosquitto's test uses mosquitto_passwd).
    let passwords = dir.path("passwords");
    let acl = dir.path("acl");
    std::fs::write(&acl, ACL).unwrap();
    let mut args = vec![
        "--password-file",
        passwords.as_str(),
        "--acl-file",
        acl.as_str(),
    ];
    let first = Server::start(
        "mqtt_broker",
        &[&args[..], &["--add-user", "alice:pw"]].concat(),
    )
    .await;
    drop(first);
    let second = Server::start(
        "mqtt_broker",
        &[&args[..], &["--add-user", "root:pw"]].concat(),
    )
    .await;
    drop(second);
    args.extend(["--sys-interval", "0"]);
    let broker = Server::start("mqtt_broker", &args).await;
    assert_eq!(outcomes(broker.addr).await, EXPECTED);
}

#[tokio::test]
#[ignore = "needs mosquitto: apt-get install mosquitto"]
async fn mosquitto_gives_the_same_outcomes() {
    let dir = TempDir::new();
    let (passwords, acl) = files(&dir);
    let mosquitto = Mosquitto::start_with(
        None,
        &format!("allow_anonymous false\npassword_file {passwords}\nacl_file {acl}\n"),
    )
    .await;
    assert_eq!(outcomes(mosquitto.addr).await, EXPECTED);
}

/// A line Mosquitto would refuse names the file and the line, and the
/// broker does not start.
#[tokio::test]
async fn a_malformed_acl_line_stops_the_start() {
    let dir = TempDir::new();
    let acl = dir.path("acl");
    for (text, why) in [
        (
            "user alice\ntopic readwrte x\n",
            "2: \"readwrte\" is no access type",
        ),
        ("user\n", "1: `user` without a user name"),
        (
            "topic read a/#/b\n",
            "1: \"a/#/b\" is no valid topic filter",
        ),
        (
            "Topic read x\n",
            "1: expected user, topic or pattern, not \"Topic\"",
        ),
    ] {
        std::fs::write(&acl, text).unwrap();
        let (status, _, err) =
            common::run("mqtt_broker", &["--port", "0", "--acl-file", &acl], b"").await;
        assert_eq!(status.code(), Some(1), "{text}: {err}");
        assert!(
            err.contains(&format!("error: {acl}:{why}")),
            "{text}: {err}"
        );
    }
}
