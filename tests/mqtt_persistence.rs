//! `mqtt_broker --persistence-file`: retained messages survive a restart,
//! and a crash after a save; a file that does not read back is set aside,
//! not emptied; a file that cannot be read stops the start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::mqtt::{connect_packet, next_packet, packet, string};
use common::tls::TempDir;
use common::{Server, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A raw 3.1.1 client: connected, its CONNACK read.
async fn client(addr: SocketAddr, id: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    stream
        .write_all(&connect_packet(id, "u", "p"))
        .await
        .expect("write");
    let mut buffer = Vec::new();
    assert_eq!(
        next_packet(&mut stream, &mut buffer).await,
        (0x20, vec![0, 0])
    );
    (stream, buffer)
}

/// Publishes `payload` to `topic` with RETAIN at QoS 1 and waits for the
/// PUBACK (so the broker has routed it).
async fn retain(addr: SocketAddr, topic: &str, payload: &[u8]) {
    let (mut stream, mut buffer) = client(addr, "retainer").await;
    let mut body = string(topic.as_bytes());
    body.extend_from_slice(&[0, 1]);
    body.extend_from_slice(payload);
    stream.write_all(&packet(0x33, &body)).await.expect("write");
    assert_eq!(
        next_packet(&mut stream, &mut buffer).await,
        (0x40, vec![0, 1])
    );
    stream.write_all(&packet(0xe0, &[])).await.expect("write");
}

/// Subscribes to `filter` at QoS 0 and returns the retained messages that
/// come before a PINGRESP (the broker sends them right after the SUBACK),
/// as (topic, payload).
async fn retained_now(addr: SocketAddr, filter: &str) -> Vec<(String, Vec<u8>)> {
    let (mut stream, mut buffer) = client(addr, "reader").await;
    let mut body = vec![0, 1];
    body.extend_from_slice(&string(filter.as_bytes()));
    body.push(0);
    stream.write_all(&packet(0x82, &body)).await.expect("write");
    assert_eq!(
        next_packet(&mut stream, &mut buffer).await,
        (0x90, vec![0, 1, 0])
    );
    stream.write_all(&packet(0xc0, &[])).await.expect("write");
    let mut found = Vec::new();
    loop {
        match next_packet(&mut stream, &mut buffer).await {
            (0xd0, _) => return found,
            // PUBLISH, QoS 0, RETAIN set [MQTT-3.3.1-8].
            (0x31, body) => {
                let length = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let topic = String::from_utf8(body[2..2 + length].to_vec()).unwrap();
                found.push((topic, body[2 + length..].to_vec()));
            }
            other => panic!("not a retained PUBLISH: {other:?}"),
        }
    }
}

/// Waits until `path` holds `needle` (the saver writes within a second).
async fn saved(path: &str, needle: &[u8]) {
    within("the persistence file to be saved", async {
        loop {
            let bytes = std::fs::read(path).unwrap_or_default();
            if bytes.windows(needle.len()).any(|window| window == needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Retained messages set, replaced and cleared before a restart are as
/// they were after it; the broker logs how many it saved and restored.
#[tokio::test]
async fn retained_messages_survive_a_restart() {
    let dir = TempDir::new();
    let file = dir.path("retained");
    let broker = Server::start("mqtt_broker", &["--persistence-file", &file]).await;
    retain(broker.addr, "sensors/temp", b"20.0").await;
    retain(broker.addr, "sensors/temp", b"21.5 \x00\xff").await;
    retain(broker.addr, "sensors/gone", b"soon cleared").await;
    retain(broker.addr, "sensors/gone", b"").await;
    retain(broker.addr, "lights/hall", b"on").await;
    broker.process.signal("TERM");
    let (status, _, log) = broker.process.finish().await;
    assert!(status.success(), "{log}");
    assert!(log.contains("saved 2 retained message(s)"), "{log}");
    // Retained messages may be private: the file is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let broker = Server::start("mqtt_broker", &["--persistence-file", &file]).await;
    let mut found = retained_now(broker.addr, "#").await;
    found.sort();
    let expected = [
        ("lights/hall", &b"on"[..]),
        ("sensors/temp", b"21.5 \x00\xff"),
    ];
    let expected: Vec<(String, Vec<u8>)> = expected
        .iter()
        .map(|(topic, payload)| (topic.to_string(), payload.to_vec()))
        .collect();
    assert_eq!(found, expected);
    assert!(
        broker
            .process
            .stderr()
            .contains("restored 2 retained message(s)"),
        "{}",
        broker.process.stderr()
    );
}

/// A broker killed without a chance to save (SIGKILL) still has what it
/// saved before: the file is written within a second of a change.
#[tokio::test]
async fn a_crash_keeps_what_was_saved() {
    let dir = TempDir::new();
    let file = dir.path("retained");
    let broker = Server::start("mqtt_broker", &["--persistence-file", &file]).await;
    retain(broker.addr, "door", b"open").await;
    saved(&file, b"open").await;
    broker.process.signal("KILL");
    let mut process = broker.process;
    process.exit().await;
    // A save cut short by a crash leaves only the temporary file behind:
    // it is ignored.
    std::fs::write(format!("{file}.12345.tmp"), b"half a file").unwrap();

    let broker = Server::start("mqtt_broker", &["--persistence-file", &file]).await;
    let found = retained_now(broker.addr, "door").await;
    assert_eq!(found, [("door".to_string(), b"open".to_vec())]);
}

/// A file that does not read back is reported and moved aside, unchanged,
/// and the broker starts without retained messages; a path that cannot be
/// read at all stops the start with one error line.
#[tokio::test]
async fn a_corrupt_file_is_set_aside_and_an_unreadable_one_stops_the_start() {
    let dir = TempDir::new();
    let file = dir.path("retained");
    std::fs::write(&file, b"not our format").unwrap();
    let broker = Server::start("mqtt_broker", &["--persistence-file", &file]).await;
    assert_eq!(retained_now(broker.addr, "#").await, []);
    let log = broker.process.stderr();
    assert!(
        log.contains(&format!(
            "{file} is corrupt (not a persistence file of this broker): moved to {file}.corrupt"
        )),
        "{log}"
    );
    assert_eq!(
        std::fs::read(format!("{file}.corrupt")).unwrap(),
        b"not our format"
    );

    // A directory where the file should be.
    let (status, out, err) = common::run(
        "mqtt_broker",
        &["--port", "0", "--persistence-file", &dir.path("")],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(
        err.ends_with(&format!(
            "error: cannot read {}: Is a directory (os error 21)\n",
            dir.path("")
        )),
        "{err}"
    );
}
