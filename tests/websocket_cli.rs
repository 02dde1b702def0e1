//! websocket_server and websocket_client as a user runs them: real
//! executables, `--port 0`, piped stdin, stdout, stderr and exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use common::{Process, Server, run};

const SERVER: &str = "websocket_server";
const CLIENT: &str = "websocket_client";

fn url(server: &Server) -> String {
    format!("ws://{}", server.addr)
}

/// The server's first stdout line is `listening on <ip:port>` with the real
/// port; `-m` prints the echo as one line and exits 0.
#[tokio::test]
async fn message_flag_prints_the_echo() {
    let server = Server::start(SERVER, &[]).await;
    assert_eq!(server.addr.ip().to_string(), "127.0.0.1");
    let (status, out, err) = run(CLIENT, &["--url", &url(&server), "-m", "hello ✓"], b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "hello ✓\n");
    assert!(
        err.contains("closed: server answered 1000 (normal)"),
        "{err}"
    );
}

/// `--count` and `--interval-ms` send the message several times; each echo is a line.
#[tokio::test]
async fn count_sends_several_messages() {
    let server = Server::start(SERVER, &[]).await;
    let args = [
        "--url",
        &url(&server),
        "-m",
        "tick",
        "--count",
        "3",
        "--interval-ms",
        "10",
    ];
    let (status, out, err) = run(CLIENT, &args, b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "tick\ntick\ntick\n");
}

/// Piped stdin: every line is one text message; at EOF the client waits for
/// every answer, closes with 1000 and exits 0.
#[tokio::test]
async fn stdin_lines_are_echoed_in_order() {
    let server = Server::start(SERVER, &[]).await;
    let input: String = (0..500).map(|i| format!("line {i}\n")).collect();
    let (status, out, err) = run(CLIENT, &["--url", &url(&server)], input.as_bytes()).await;
    assert!(status.success(), "{err}");
    assert_eq!(out, input);
}

/// `--binary` sends each line's bytes as a binary message; binary answers
/// print as hex.
#[tokio::test]
async fn binary_messages_print_as_hex() {
    let server = Server::start(SERVER, &[]).await;
    let (status, out, err) = run(
        CLIENT,
        &["--url", &url(&server), "--binary"],
        b"AB\n\xff\x00\n",
    )
    .await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "4142\nff00\n");
}

/// Interactive use: a message typed later still gets its answer while stdin
/// stays open (full duplex), and EOF ends the session cleanly.
#[tokio::test]
async fn client_is_interactive() {
    let server = Server::start(SERVER, &[]).await;
    let mut client = Process::spawn(CLIENT, &["--url", &url(&server)]);
    client.write_stdin(b"first\n").await;
    assert_eq!(client.line().await.as_deref(), Some("first"));
    client.write_stdin(b"second\n").await;
    assert_eq!(client.line().await.as_deref(), Some("second"));
    let (status, out, err) = client.finish().await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "");
}

/// Chat between two real clients: each learns its own address; one's line
/// reaches the other, tagged with the sender's address; the sender gets no
/// copy; leaving is announced.
#[tokio::test]
async fn chat_between_two_clients() {
    let server = Server::start(SERVER, &["--chat"]).await;
    let mut alice = Process::spawn(CLIENT, &["--url", &url(&server)]);
    let mut bob = Process::spawn(CLIENT, &["--url", &url(&server)]);
    // Each first learns its own address, the one its log names too.
    for client in [&mut alice, &mut bob] {
        let welcome = client.line().await.unwrap();
        let me = welcome.strip_prefix("[server] you are ").expect(&welcome);
        assert!(me.starts_with("127.0.0.1:"), "{welcome}");
        let log = format!("connected to {} from {me}", url(&server));
        // stderr comes through a pipe of its own, copied as it arrives.
        common::within("the client's log line", async {
            while !client.stderr().contains(&log) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // Whoever connected first hears the other join.
    let (first, line) = common::within("a join", async {
        tokio::select! {
            line = alice.line() => ("alice", line),
            line = bob.line() => ("bob", line),
        }
    })
    .await;
    let joined = line.unwrap();
    assert!(
        joined.starts_with("[server] 127.0.0.1:") && joined.ends_with(" joined"),
        "{joined}"
    );
    let (mut listener, mut talker) = if first == "alice" {
        (alice, bob)
    } else {
        (bob, alice)
    };
    talker.write_stdin(b"hi there\n").await;
    let heard = listener.line().await.unwrap();
    assert!(
        heard.starts_with("[127.0.0.1:") && heard.ends_with("] hi there"),
        "{heard}"
    );
    let (status, out, err) = talker.finish().await;
    assert!(status.success(), "{err}");
    // If both connected at once, the talker heard the listener join too.
    assert!(!out.contains("hi there"), "the sender gets no copy: {out}");
    assert!(out.lines().all(|line| line.ends_with(" joined")), "{out}");
    let left = listener.line().await.unwrap();
    assert!(
        left.starts_with("[server] 127.0.0.1:") && left.ends_with(" left"),
        "{left}"
    );
    assert!(listener.finish().await.0.success());
}

/// `--help` documents every flag with its default.
#[tokio::test]
async fn help_shows_flags_and_defaults() {
    let (status, out, _) = run(SERVER, &["--help"], b"").await;
    assert!(status.success());
    for needle in [
        "--host",
        "[default: 127.0.0.1]",
        "[default: 8765]",
        "--chat",
        "--max-message-bytes",
        "[default: 1048576]",
        "--max-connections",
        "[default: 1024]",
        "--ping-interval-secs",
        "[default: 20]",
    ] {
        assert!(out.contains(needle), "server --help lacks {needle}:\n{out}");
    }
    let (status, out, _) = run(CLIENT, &["--help"], b"").await;
    assert!(status.success());
    for needle in [
        "[default: ws://127.0.0.1:8765]",
        "--message",
        "--count",
        "--interval-ms",
        "--binary",
        "--answer-wait-ms",
    ] {
        assert!(out.contains(needle), "client --help lacks {needle}:\n{out}");
    }
}

/// A message over --max-message-bytes: the server closes with 1009, the
/// client prints the code and reason and exits non-zero; the server goes on.
#[tokio::test]
async fn too_big_message_fails_the_client_with_1009() {
    let server = Server::start(SERVER, &["--max-message-bytes", "10"]).await;
    let (status, out, err) = run(
        CLIENT,
        &["--url", &url(&server)],
        b"0123456789\n0123456789A\n",
    )
    .await;
    assert!(!status.success());
    assert_eq!(out, "0123456789\n");
    let expected = format!(
        "error: {} closed the connection: 1009 (message too big) \"message too big: the limit is 10 bytes\"\n",
        url(&server)
    );
    assert!(err.ends_with(&expected), "{err}");
    let (status, out, _) = run(CLIENT, &["--url", &url(&server), "-m", "short"], b"").await;
    assert!(status.success());
    assert_eq!(out, "short\n");
}

/// --ping-interval-secs: a peer that never answers the server's pings (a
/// raw TCP socket that did the upgrade and then went quiet) is dropped after
/// two intervals, and the server logs it.
#[tokio::test]
async fn silent_peer_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(SERVER, &["--ping-interval-secs", "1"]).await;
    let mut tcp = common::within("connect", tokio::net::TcpStream::connect(server.addr))
        .await
        .unwrap();
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // Everything the server sends until it drops us: the 101 answer, then
    // one empty Ping (0x89 0x00) per interval that we leave unanswered.
    let mut received = Vec::new();
    common::within("the drop", tcp.read_to_end(&mut received))
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(received.ends_with(&[0x89, 0x00]), "{received:?}");
    server.process.signal("TERM");
    let (status, _, log) = server.process.finish().await;
    assert!(status.success());
    assert!(
        log.contains("no answer for two ping intervals; dropping the connection"),
        "{log}"
    );
}

/// Ctrl-C on the server: the connected client gets Close 1001, reports it
/// and exits 0; the server logs the close and exits 0.
#[tokio::test]
async fn server_ctrl_c_sends_1001() {
    let server = Server::start(SERVER, &[]).await;
    let mut client = Process::spawn(CLIENT, &["--url", &url(&server)]);
    client.write_stdin(b"ready\n").await;
    assert_eq!(client.line().await.as_deref(), Some("ready"));
    server.process.signal("INT");
    // `finish` waits for the end of the server's stderr, its last log lines included.
    let (status, _, log) = server.process.finish().await;
    assert!(status.success());
    assert!(log.contains("close=1001 (going away)"), "{log}");
    // Waiting for a child closes its stdin; we hold it open ourselves, so the
    // client sees the server's Close and no end of input racing it.
    let _stdin = client.child.stdin.take();
    let status = client.exit().await;
    assert!(status.success());
    let (_, _, err) = client.finish().await;
    assert!(
        err.contains("server closed the connection: 1001 (going away) \"server shutting down\""),
        "{err}"
    );
}

/// Ctrl-C on the client: it sends Close 1001 and exits 0 after the server's answer.
#[tokio::test]
async fn client_ctrl_c_closes_with_1001() {
    let server = Server::start(SERVER, &[]).await;
    let mut client = Process::spawn(CLIENT, &["--url", &url(&server)]);
    client.write_stdin(b"ready\n").await;
    assert_eq!(client.line().await.as_deref(), Some("ready"));
    // Waiting for a child closes its stdin; we hold it open ourselves, so
    // Ctrl-C is the only reason for the client to close.
    let _stdin = client.child.stdin.take();
    client.signal("INT");
    let status = client.exit().await;
    let (_, _, err) = client.finish().await;
    assert!(status.success(), "{err}");
    assert!(
        err.contains("closed: server answered 1001 (going away)"),
        "{err}"
    );
    server.process.signal("TERM");
    let (status, _, log) = server.process.finish().await;
    assert!(status.success());
    assert!(log.contains("close=1001 (going away) by client"), "{log}");
}

/// Errors name the URL, on one `error:` line, with a non-zero exit: nobody
/// listening, a server that does not upgrade (its HTTP status), a bad URL.
#[tokio::test]
async fn client_errors_name_the_url() {
    let server = Server::start(SERVER, &[]).await;
    let missing = format!("{}/missing", url(&server));
    let (status, out, err) = run(CLIENT, &["--url", &missing, "-m", "x"], b"").await;
    assert!(!status.success());
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: {missing} did not upgrade to WebSocket: the server answered HTTP 404 Not Found\n"
        )
    );

    // A port we hold (bound, never listening), so no other test can take it:
    // a connection to it is refused.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let nobody = format!("ws://{}", held.local_addr().unwrap());
    let (status, _, err) = run(CLIENT, &["--url", &nobody, "-m", "x"], b"").await;
    assert!(!status.success());
    assert!(
        err.starts_with(&format!("error: cannot connect to {nobody}: ")),
        "{err}"
    );
    assert!(err.ends_with("is websocket_server running?\n"), "{err}");

    // wss:// is WebSocket over TLS (tests/tls.rs): the same errors apply.
    let wss = format!("wss://{}", held.local_addr().unwrap());
    let (status, _, err) = run(CLIENT, &["--url", &wss, "-m", "x"], b"").await;
    assert!(!status.success());
    assert!(
        err.starts_with(&format!("error: cannot connect to {wss}: ")),
        "{err}"
    );
    assert!(err.ends_with("is websocket_server running?\n"), "{err}");
    let (status, _, err) = run(CLIENT, &["--url", "nonsense", "-m", "x"], b"").await;
    assert!(!status.success());
    assert!(err.starts_with("error: bad URL \"nonsense\": "), "{err}");
    assert!(!err.contains("panicked"));
}

/// Text mode refuses a stdin line that is not UTF-8, closing politely first.
#[tokio::test]
async fn client_refuses_non_utf8_text() {
    let server = Server::start(SERVER, &[]).await;
    let (status, out, err) = run(CLIENT, &["--url", &url(&server)], b"ok\n\xff\n").await;
    assert!(!status.success());
    assert_eq!(out, "ok\n");
    assert!(
        err.ends_with("cannot read input: line 2 is not UTF-8 text; pass --binary to send bytes\n"),
        "{err}"
    );
}

/// A second server on a port in use fails with one error line naming it.
#[tokio::test]
async fn port_in_use_is_explained() {
    let server = Server::start(SERVER, &[]).await;
    let (status, out, err) = run(SERVER, &["--port", &server.port()], b"").await;
    assert!(!status.success());
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "error: cannot listen on {}: Address already in use (os error 98); \
             is another server on that port? pass --port\n",
            server.addr
        )
    );
}

/// The page is served to a plain HTTP client (curl-like request), and other
/// paths get 404, through the real binary.
#[tokio::test]
async fn binary_serves_the_page() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start(SERVER, &[]).await;
    for (path, status) in [("/", "200 OK"), ("/favicon.ico", "404 Not Found")] {
        let mut tcp = common::within("connect", tokio::net::TcpStream::connect(server.addr))
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\n\r\n",
            server.addr
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        common::within("the answer", tcp.read_to_string(&mut answer))
            .await
            .unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{answer}"
        );
    }
}

/// Pointed at a server of another protocol, the client says what answered
/// instead of quoting its HTTP parser: an echo server sends our request
/// back; an MQTT broker closes without a word. One error line, exit 1.
#[tokio::test]
async fn a_server_of_another_protocol_is_named() {
    let tcp = Server::start("tcp_server", &[]).await;
    let broker = Server::start("mqtt_broker", &[]).await;
    for (server, says) in [
        (
            &tcp,
            "is not a WebSocket server: it sent our HTTP request back",
        ),
        (
            &broker,
            "closed the connection without answering our upgrade request",
        ),
    ] {
        let url = format!("ws://127.0.0.1:{}", server.port());
        let (status, out, err) = run("websocket_client", &["--url", &url, "-m", "hi"], b"").await;
        assert_eq!(status.code(), Some(1), "{err}");
        assert_eq!(out, "");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(says), "{err}");
    }
}

/// Past `--max-connections 1`, a client is refused with HTTP 503 and exits
/// 1; the server's log counts in words: `1 connection`, not `1 connections`.
#[tokio::test]
async fn a_busy_server_refuses_and_says_so_in_words() {
    let server = Server::start("websocket_server", &["--max-connections", "1"]).await;
    let url = format!("ws://127.0.0.1:{}", server.port());
    let mut holder = Process::spawn("websocket_client", &["--url", &url]);
    holder.write_stdin(b"hold\n").await;
    assert_eq!(holder.line().await.as_deref(), Some("hold"));
    let (status, _, err) = run("websocket_client", &["--url", &url, "-m", "hi"], b"").await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 503"), "{err}");
    common::wait_stderr(&server.process, "refused: 1 connection already open", 1).await;
    holder.close_stdin();
    assert!(holder.finish().await.0.success());
}

/// `websocket_server --protocol chat.v1` agrees on the first subprotocol a
/// client offers that it speaks; `websocket_client` says which, and when
/// the server speaks none of those offered, fails with one error line.
#[tokio::test]
async fn client_and_server_agree_on_a_subprotocol() {
    let server = Server::start("websocket_server", &["--protocol", "chat.v1"]).await;
    let url = format!("ws://127.0.0.1:{}", server.port());
    let offered = [
        "--url",
        &url,
        "-m",
        "hi",
        "--protocol",
        "mqtt",
        "--protocol",
        "chat.v1",
    ];
    let (status, out, err) = run("websocket_client", &offered, b"").await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "hi\n");
    assert!(
        err.contains("the server chose subprotocol \"chat.v1\""),
        "{err}"
    );
    let (status, out, err) = run(
        "websocket_client",
        &["--url", &url, "--protocol", "mqtt"],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(out, "");
    assert!(
        err.trim_end()
            .ends_with("agreed on none of the subprotocols we offered (--protocol)"),
        "{err}"
    );
}
