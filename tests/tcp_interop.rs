//! The TCP pair against peers someone else wrote: OpenBSD netcat as a client
//! of `tcp_server` and of `tcp_server --stdio`, `tcp_client` against a socat
//! echo server, and our `-x` hex dumps against socat's.
//!
//! Ignored by default (they need those tools installed); `.ci/run` installs
//! them and runs these too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Server, feed_and_collect, hexdump, run, within};
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

/// socat's `-x` and ours, on the two ends of one connection: socat as a
/// client of `tcp_server -x`. What socat sent (`>`) is what the server
/// received (`<`), and the other way round, byte for byte; each dump's
/// headers count the bytes of each direction from 0.
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn tcp_server_hex_dump_agrees_with_socats() {
    let server = Server::start("tcp_server", &["-x"]).await;
    let sent = b"hello\r\n\x00\x01\xfe\xff\nand a line longer than sixteen bytes\n";
    let mut socat = Command::new("socat")
        .args(["-x", "-t", "5", "-"])
        .arg(format!("TCP:127.0.0.1:{}", server.port()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run socat (apt-get install socat)");
    let mut stdin = socat.stdin.take().expect("stdin");
    stdin.write_all(sent).await.expect("write");
    drop(stdin);
    let output = within("socat to finish", socat.wait_with_output())
        .await
        .expect("socat");
    assert!(output.status.success());
    assert_eq!(output.stdout, sent, "the echo");
    let socat_dump = String::from_utf8_lossy(&output.stderr).into_owned();
    let theirs = hexdump::parse(&socat_dump);
    assert_eq!(hexdump::one_way(&theirs, '>'), sent, "{socat_dump}");
    assert_eq!(hexdump::one_way(&theirs, '<'), sent, "{socat_dump}");

    server.process.signal("TERM");
    let (_, _, server_log) = server.process.finish().await;
    let ours = hexdump::parse(&server_log);
    assert_eq!(hexdump::one_way(&ours, '<'), sent, "{server_log}");
    assert_eq!(hexdump::one_way(&ours, '>'), sent, "{server_log}");
}

/// `tcp_client -x` against socat's echo with `-x`: socat's `>` (from the TCP
/// side to its echo) is what the client sent, and socat's `<` what the
/// client received.
#[tokio::test]
#[ignore = "needs socat: apt-get install socat"]
async fn tcp_client_hex_dump_agrees_with_socats() {
    let port = common::free_port();
    // `fork`: one child process per connection, so the readiness probe
    // below does not use up socat's one connection. The probe sends no
    // bytes, so it adds nothing to the dump.
    let mut socat = Command::new("socat")
        .arg("-x")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
        .arg("PIPE")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run socat (apt-get install socat)");
    within("socat to listen", async {
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let sent = "hello socat\nline two, longer than sixteen bytes\n";
    let port = port.to_string();
    let (status, out, err) = run("tcp_client", &["-x", "--port", &port], sent.as_bytes()).await;
    assert!(status.success(), "{err}");
    assert_eq!(out, sent);
    let ours = hexdump::parse(&err);
    assert_eq!(hexdump::one_way(&ours, '>'), sent.as_bytes(), "{err}");
    assert_eq!(hexdump::one_way(&ours, '<'), sent.as_bytes(), "{err}");

    // The connection's child has written its dump and exited (it closed
    // the connection, which ended tcp_client); stop the listener.
    socat.start_kill().expect("stop socat");
    let output = within("socat to finish", socat.wait_with_output())
        .await
        .expect("socat");
    let socat_dump = String::from_utf8_lossy(&output.stderr).into_owned();
    let theirs = hexdump::parse(&socat_dump);
    assert_eq!(
        hexdump::one_way(&theirs, '>'),
        sent.as_bytes(),
        "{socat_dump}"
    );
    assert_eq!(
        hexdump::one_way(&theirs, '<'),
        sent.as_bytes(),
        "{socat_dump}"
    );
}

/// `nc -l`'s counterpart: OpenBSD netcat (`-N`: half-close at the end of
/// its input) as the client of `tcp_server --stdio`, binary data both ways
/// at once, byte for byte.
#[tokio::test]
#[ignore = "needs nc.openbsd: apt-get install netcat-openbsd"]
async fn netcat_and_tcp_server_stdio_copy_both_ways() {
    let (server, addr, _stderr) = common::stdio_server(&[]).await;
    let port = addr.port().to_string();
    let nc = Command::new("nc.openbsd")
        .args(["-N", "127.0.0.1", &port])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run nc.openbsd (apt-get install netcat-openbsd)");
    let to_nc: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let to_server: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let (server_out, nc_out) = tokio::join!(
        feed_and_collect(server, to_nc.clone()),
        feed_and_collect(nc, to_server.clone())
    );
    assert_eq!(server_out.0, Some(0), "tcp_server --stdio's exit code");
    assert_eq!(nc_out.0, Some(0), "nc's exit code");
    assert!(
        server_out.1 == to_server,
        "tcp_server --stdio's stdout differs"
    );
    assert!(nc_out.1 == to_nc, "nc's stdout differs");
}
