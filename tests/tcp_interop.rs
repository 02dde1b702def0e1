//! The TCP pair against peers someone else wrote: OpenBSD netcat as a client
//! of `tcp_server`, and `tcp_client` against a socat echo server.
//!
//! Ignored by default (they need those tools installed); `.ci/run` installs
//! them and runs these too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Server, run, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::process::Command;

/// `nc -N` (send stdin, half-close at EOF, print until the server closes)
/// gets every line back from `tcp_server`, byte for byte.
#[tokio::test]
#[ignore = "needs nc.openbsd: apt-get install netcat-openbsd"]
async fn netcat_is_a_client_of_tcp_server() {
    let server = Server::start("tcp_server", &[]).await;
    let mut nc = Command::new("nc.openbsd")
        .args(["-N", "127.0.0.1", &server.port()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run nc.openbsd (apt-get install netcat-openbsd)");
    let sent = b"hello\r\nfrom netcat\n\xffbinary\n";
    let mut stdin = nc.stdin.take().expect("stdin");
    stdin.write_all(sent).await.expect("write");
    drop(stdin);
    let output = within("nc to finish", nc.wait_with_output())
        .await
        .expect("nc");
    assert!(output.status.success());
    assert_eq!(output.stdout, sent);
}

/// `tcp_client` talks to socat's echo (`PIPE` sends back what it reads), and
/// exits 0 once socat closes after our half-close.
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn tcp_client_talks_to_socat_echo() {
    // socat cannot report a port it picked, so we find a free one first.
    let port = common::free_port();
    let _socat = Command::new("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("PIPE")
        .kill_on_drop(true)
        .spawn()
        .expect("run socat (apt-get install socat)");
    // Wait until socat listens: retry connecting until the deadline.
    within("socat to listen", async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let port = port.to_string();
    let (status, out, err) = run("tcp_client", &["--port", &port, "-m", "hello socat"], b"").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "hello socat\n");
    let (status, out, err) = run("tcp_client", &["--port", &port], b"one\ntwo\n").await;
    assert!(status.success(), "stderr: {err}");
    assert_eq!(out, "one\ntwo\n");
}
