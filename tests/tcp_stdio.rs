//! `tcp_server --stdio` (one client, joined to stdin and stdout, as `nc -l`)
//! and `-x` (the bytes that cross, in hex), through the real binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::hexdump::{self, Chunk};
use common::{Server, feed_and_collect, stdio_server, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{ChildStderr, Command};

/// Bytes no line-based or text-based path would keep: every byte value,
/// NUL, `\r` and `\xff` among them, and no newline at the end.
fn binary_payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads `stderr` until a line contains `text`; returns everything read.
async fn wait_for(stderr: &mut BufReader<ChildStderr>, text: &str) -> String {
    let mut seen = String::new();
    within(text, async {
        while !seen.contains(text) {
            let mut line = String::new();
            if stderr.read_line(&mut line).await.expect("read stderr") == 0 {
                panic!("stderr ended before {text:?}:\n{seen}");
            }
            seen.push_str(&line);
        }
    })
    .await;
    seen
}

/// The pair copies binary data exactly, both ways at once: what the client
/// pipes in comes out of the server's stdout, and what the server pipes in
/// comes out of the client's. Both exit 0.
#[tokio::test]
async fn stdio_copies_binary_data_exactly_both_ways() {
    let (server, addr, _stderr) = stdio_server(&[]).await;
    let client = Command::new(common::binary("tcp_client"))
        .args(["--port", &addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tcp_client");
    let (to_client, to_server) = (binary_payload(300_000, 7), binary_payload(200_000, 99));
    let (server_done, client_done) = tokio::join!(
        feed_and_collect(server, to_client.clone()),
        feed_and_collect(client, to_server.clone()),
    );
    assert_eq!(server_done.0, Some(0), "tcp_server --stdio's exit code");
    assert_eq!(client_done.0, Some(0), "tcp_client's exit code");
    assert!(server_done.1 == to_server, "the server's stdout differs");
    assert!(client_done.1 == to_client, "the client's stdout differs");
}

/// One client only: once it is connected the port is closed, and the next
/// connection is refused by the kernel.
#[tokio::test]
async fn stdio_serves_one_client_and_closes_the_port() {
    let (_server, addr, mut stderr) = stdio_server(&[]).await;
    let _first = within("connect", TcpStream::connect(addr))
        .await
        .expect("the first client");
    wait_for(&mut stderr, "the port is closed now").await;
    let second = within("connect", TcpStream::connect(addr)).await;
    assert_eq!(
        second.expect_err("refused").kind(),
        std::io::ErrorKind::ConnectionRefused
    );
}

/// When our stdin ends we keep the connection open (no FIN, as `nc -l`):
/// a client still sending is not told the conversation is over. Once it
/// finishes (its FIN), we close, and its last bytes are on our stdout.
#[tokio::test]
async fn stdio_holds_its_fin_until_the_client_is_done() {
    let (mut server, addr, mut stderr) = stdio_server(&[]).await;
    let mut client = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let mut stdin = server.stdin.take().expect("stdin");
    stdin.write_all(b"from the server").await.expect("write");
    drop(stdin);
    wait_for(&mut stderr, "our input ended").await;
    let mut got = vec![0u8; 15];
    within("the server's bytes", client.read_exact(&mut got))
        .await
        .expect("read");
    assert_eq!(got, b"from the server");
    // Nothing more comes, not even the end of the stream: a FIN would make
    // this read return 0 at once.
    let mut more = [0u8; 16];
    let early = tokio::time::timeout(Duration::from_millis(300), client.read(&mut more)).await;
    assert!(early.is_err(), "the server closed early: {early:?}");

    client.write_all(b"late\x00bytes").await.expect("write");
    client.shutdown().await.expect("our FIN");
    let n = within("the server's FIN", client.read(&mut more))
        .await
        .expect("read");
    assert_eq!(n, 0, "the server's FIN, after ours");
    let mut out = Vec::new();
    let mut stdout = server.stdout.take().expect("stdout");
    within("stdout", stdout.read_to_end(&mut out))
        .await
        .expect("read stdout");
    assert_eq!(out, b"late\x00bytes");
    let status = within("exit", server.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// Ctrl-C ends our input, as Ctrl-D does, and we still take the rest of
/// what the client sends; a Ctrl-C before any client comes ends the wait.
#[tokio::test]
async fn stdio_ctrl_c_ends_our_input_not_the_clients() {
    let (server, addr, mut stderr) = stdio_server(&[]).await;
    let mut client = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    wait_for(&mut stderr, "the port is closed now").await;
    let pid = server.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(kill.expect("kill").success());
    wait_for(&mut stderr, "our input ended").await;
    client.write_all(b"after Ctrl-C").await.expect("write");
    client.shutdown().await.expect("our FIN");
    let (code, out) = feed_and_collect(server, Vec::new()).await;
    assert_eq!(code, Some(0));
    assert_eq!(out, b"after Ctrl-C");

    let (server, _, _stderr) = stdio_server(&[]).await;
    let pid = server.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(kill.expect("kill").success());
    let (code, out) = feed_and_collect(server, Vec::new()).await;
    assert_eq!((code, out), (Some(0), Vec::new()));
}

/// SIGTERM (`kill`) stops a `--stdio` server at once, client or not,
/// where Ctrl-C only ends its input.
#[tokio::test]
async fn stdio_sigterm_quits_at_once() {
    let (mut server, addr, _stderr) = stdio_server(&[]).await;
    let _client = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let _stdin = server.stdin.take();
    let pid = server.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    assert!(kill.expect("kill").success());
    let status = within("exit", server.wait()).await.expect("wait");
    assert_eq!(status.code(), Some(0));
}

/// `--stdio` serves bytes, not lines, and one client: the flags of the line
/// server are refused with it, not silently ignored.
#[tokio::test]
async fn stdio_refuses_the_line_servers_flags() {
    for flag in [
        &["--chat"][..],
        &["--max-line-bytes", "10"],
        &["--max-connections", "2"],
        &["--idle-timeout-secs", "5"],
    ] {
        let mut args = vec!["--stdio"];
        args.extend_from_slice(flag);
        let (status, out, err) = common::run("tcp_server", &args, b"").await;
        assert_eq!(status.code(), Some(2), "{flag:?}: {err}");
        assert_eq!(out, "");
        assert!(err.contains("cannot be used with"), "{flag:?}: {err}");
    }
}

/// `-x` on both sides: each shows every chunk, and what one sent (`>`) is
/// what the other received (`<`), byte for byte, with headers that count
/// the bytes of each direction from 0.
#[tokio::test]
async fn hex_dumps_of_both_sides_agree() {
    let server = Server::start("tcp_server", &["-x"]).await;
    // (Valid UTF-8, for the test's line reader; NUL and `\r` among them.)
    let sent = b"hello\n\x00\x01\r\n0123456789abcdefghijklmnop\n";
    let (status, out, err) =
        common::run("tcp_client", &["-x", "--port", &server.port()], sent).await;
    assert!(status.success(), "{err}");
    // (The test reads stdout as lines, which drops a `\r` before `\n`.)
    assert_eq!(out, String::from_utf8_lossy(sent).replace("\r\n", "\n"));
    let client = hexdump::parse(&err);
    assert_eq!(hexdump::one_way(&client, '>'), sent, "{err}");
    assert_eq!(hexdump::one_way(&client, '<'), sent, "{err}");
    let client_header = |chunk: &Chunk| {
        chunk
            .header
            .starts_with(&format!("{} {} ", chunk.mark, server.addr))
    };
    assert!(client.iter().all(client_header), "{err}");

    let (_, _, server_err) = server_log(server).await;
    let seen = hexdump::parse(&server_err);
    assert_eq!(hexdump::one_way(&seen, '<'), sent, "{server_err}");
    assert_eq!(hexdump::one_way(&seen, '>'), sent, "{server_err}");
    // Each line of 16 bytes shows them as text too, after the hex.
    assert!(
        server_err.contains(" 34 35  hello.....012345\n"),
        "{server_err}"
    );
}

/// Stops a server and returns what it printed.
async fn server_log(server: Server) -> (std::process::ExitStatus, String, String) {
    server.process.signal("TERM");
    server.process.finish().await
}
