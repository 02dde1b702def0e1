//! Our UDP pair against an independent implementation: socat as sender, as
//! receiver and as an echo. Ignored by default; CI runs them with
//! `--include-ignored` after installing socat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;

use common::{Server, run, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// A port for socat, which cannot report a port it picked. We hold
/// 127.0.0.1:P for the whole test, so no other test gets P as a free port,
/// and socat binds P on 127.0.0.2, another loopback address.
fn port_for_socat() -> (std::net::UdpSocket, String) {
    let guard = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = guard.local_addr().expect("addr").port().to_string();
    (guard, port)
}

/// Starts socat with `-d -d` (notices on stderr) and waits for the notice
/// that says its socket is open, so no datagram is sent before it listens.
async fn socat(args: &[&str], ready: &str) -> Child {
    let mut child = Command::new("socat")
        .args(["-d", "-d"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run socat (apt-get install socat)");
    let mut notices = BufReader::new(child.stderr.take().expect("stderr")).lines();
    within("socat to open its socket", async {
        while let Some(line) = notices.next_line().await.expect("socat stderr") {
            if line.contains(ready) {
                return;
            }
        }
        panic!("socat exited before {ready:?}");
    })
    .await;
    // Keep draining its notices so socat never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = notices.next_line().await {} });
    child
}

/// socat as the sender: `udp_receiver` shows its datagram and address.
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn socat_sends_to_udp_receiver() {
    let mut receiver = Server::start("udp_receiver", &[]).await;
    let to = format!("UDP-SENDTO:127.0.0.1:{}", receiver.port());
    let mut sender = Command::new("socat")
        .args(["-u", "STDIN", &to])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run socat (apt-get install socat)");
    let mut stdin = sender.stdin.take().expect("stdin");
    stdin.write_all(b"hello from socat").await.unwrap();
    drop(stdin);
    assert!(
        within("socat to finish", sender.wait())
            .await
            .unwrap()
            .success()
    );
    let line = receiver.process.line().await.unwrap();
    assert!(
        line.starts_with("[127.0.0.1:") && line.ends_with("] 16 bytes: hello from socat"),
        "{line}"
    );
}

/// socat as the receiver: it writes each payload of `udp_sender` to stdout,
/// byte for byte (no newline: a datagram needs none).
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn udp_sender_sends_to_socat() {
    let (_guard, port) = port_for_socat();
    let listen = format!("UDP-RECV:{port},bind=127.0.0.2");
    let mut socat = socat(&["-u", &listen, "STDOUT"], "starting data transfer loop").await;
    let (status, _, err) = run(
        "udp_sender",
        &["--host", "127.0.0.2", "--port", &port, "-m", "hello socat"],
        b"",
    )
    .await;
    assert!(status.success(), "stderr: {err}");
    let (status, _, err) = run(
        "udp_sender",
        &["--host", "127.0.0.2", "--port", &port],
        b"one\ntwo\n",
    )
    .await;
    assert!(status.success(), "stderr: {err}");
    let expected = b"hello socatonetwo";
    let mut got = vec![0u8; expected.len()];
    let stdout = socat.stdout.as_mut().expect("stdout");
    within("socat's output", stdout.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(got, expected);
}

/// socat as an echo (`UDP-LISTEN ... PIPE`): `udp_sender --wait-reply-ms`
/// gets every numbered datagram back and counts no loss.
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn udp_sender_counts_socat_echoes() {
    let (_guard, port) = port_for_socat();
    let listen = format!("UDP-LISTEN:{port},bind=127.0.0.2");
    let _socat = socat(&[&listen, "PIPE"], "listening on").await;
    let args = [
        "--host",
        "127.0.0.2",
        "--port",
        &port,
        "--count",
        "10",
        "--interval-ms",
        "0",
        "--wait-reply-ms",
        "5000",
    ];
    let (status, out, err) = run("udp_sender", &args, b"").await;
    assert!(status.success(), "stderr: {err}");
    assert!(
        out.starts_with("sent=10 answered=10 lost=0 rtt_p50_us="),
        "{out}"
    );
}
