//! The servers at their limits: the connection limit, the file-descriptor
//! limit, and WebSocket handshakes that never finish. Each refusal is the
//! protocol's own "busy" answer (a TCP `error: server busy` line, an HTTP
//! 503), never a hang, and the server keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{InProcess, Server, within};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use websocket::server::{self, Config};

/// The first line of an upgrade request, without the blank line that ends
/// it: the server waits for the rest of a request that never comes.
const HALF_OPEN: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

async fn start_websocket(config: Config) -> InProcess {
    InProcess::start(|listener, shutdown| server::run(listener, config, shutdown)).await
}

/// Sends a whole upgrade request and returns the status line of the answer.
async fn upgrade(addr: SocketAddr) -> (TcpStream, String) {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        head.push(within("the status line", tcp.read_u8()).await.unwrap());
    }
    (tcp, String::from_utf8(head).unwrap())
}

/// Opens `count` connections that each send half an upgrade request.
async fn half_open(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
        tcp.write_all(HALF_OPEN).await.unwrap();
        held.push(tcp);
    }
    held
}

/// Half-finished upgrade requests do not take `--max-connections` slots: with
/// 3 slots and 50 half-open requests, legitimate clients are upgraded, three
/// of them, and a fourth gets 503.
#[tokio::test]
async fn half_open_upgrades_do_not_take_connection_slots() {
    let server = start_websocket(Config {
        max_connections: 3,
        ..Config::default()
    })
    .await;
    let _held = half_open(server.addr, 50).await;
    let mut upgraded = Vec::new();
    for _ in 0..3 {
        let (tcp, status) = upgrade(server.addr).await;
        assert_eq!(status, "HTTP/1.1 101 Switching Protocols\r\n");
        upgraded.push(tcp);
    }
    let (_, status) = upgrade(server.addr).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable\r\n");
    // Closing ours first spares the server's closing handshakes their wait.
    drop(upgraded);
    server.stop().await;
}

/// Unfinished handshakes have a bound of their own: one more cuts off the
/// oldest (its connection is closed), so however many a client leaves open,
/// a legitimate client is still upgraded.
#[tokio::test]
async fn more_half_open_upgrades_than_the_bound_cut_off_the_oldest() {
    let server = start_websocket(Config {
        max_connections: 3,
        max_handshakes: 10,
        ..Config::default()
    })
    .await;
    let mut held = half_open(server.addr, 50).await;
    let mut rest = Vec::new();
    let read = within("the oldest to be cut off", held[0].read_to_end(&mut rest));
    assert_eq!(read.await.unwrap(), 0, "closed without an answer");
    let (_, status) = upgrade(server.addr).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols\r\n");
    server.stop().await;
}

/// Connects and sends one line; returns the first line that comes back.
async fn tcp_line(addr: SocketAddr) -> (TcpStream, String) {
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let mut tcp = BufReader::new(tcp);
    tcp.get_mut().write_all(b"hello\n").await.unwrap();
    let mut line = String::new();
    within("a line", tcp.read_line(&mut line)).await.unwrap();
    (tcp.into_inner(), line)
}

/// Out of file descriptors, `tcp_server` still answers each new client, with
/// `server busy`, instead of leaving it queued; it logs that at most once a
/// second; and once descriptors are free again, it serves again.
#[cfg(unix)]
#[tokio::test]
async fn tcp_server_out_of_descriptors_answers_busy() {
    // 40 descriptors: a dozen go to the runtime, the standard streams and the
    // listener; the rest to clients, fewer than --max-connections.
    let args = ["--max-connections", "1000"];
    let server = Server::start_with_file_limit("tcp_server", 40, &args).await;
    let started = Instant::now();
    let (mut served, mut busy) = (Vec::new(), 0);
    for _ in 0..60 {
        match tcp_line(server.addr).await {
            (tcp, line) if line == "hello\n" => served.push(tcp),
            (_, line) => {
                assert_eq!(
                    line,
                    "error: server busy (out of file descriptors); try again later\n"
                );
                busy += 1;
            }
        }
    }
    assert!(served.len() >= 10, "served only {}", served.len());
    assert!(busy >= 20, "refused only {busy}");
    let took = started.elapsed().as_secs() + 1;
    drop(served);
    // The closed connections' descriptors come free as their tasks end:
    // retry until a deadline.
    within("a freed descriptor", async {
        while tcp_line(server.addr).await.1 != "hello\n" {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let logged = logged(&server, "out of file descriptors").await;
    assert!(
        (1..=took as usize).contains(&logged),
        "{logged} lines in {took} s"
    );
}

/// Out of file descriptors, `websocket_server` answers an upgrade request with
/// 503 at once.
#[cfg(unix)]
#[tokio::test]
async fn websocket_server_out_of_descriptors_answers_503() {
    let args = ["--max-connections", "1000"];
    let server = Server::start_with_file_limit("websocket_server", 40, &args).await;
    let (mut upgraded, mut busy) = (Vec::new(), 0);
    for _ in 0..60 {
        match upgrade(server.addr).await {
            (tcp, status) if status == "HTTP/1.1 101 Switching Protocols\r\n" => {
                upgraded.push(tcp);
            }
            (_, status) => {
                assert_eq!(status, "HTTP/1.1 503 Service Unavailable\r\n");
                busy += 1;
            }
        }
    }
    assert!(upgraded.len() >= 10, "upgraded only {}", upgraded.len());
    assert!(busy >= 20, "refused only {busy}");
}

/// A flood of clients over `--max-connections` each get `server busy`, and
/// the server logs that at most once a second, not once per client.
#[tokio::test]
async fn tcp_refusals_at_the_limit_log_once_a_second() {
    let server = Server::start("tcp_server", &["--max-connections", "2"]).await;
    let _first = tcp_line(server.addr).await;
    let _second = tcp_line(server.addr).await;
    let started = Instant::now();
    for _ in 0..50 {
        let (_, line) = tcp_line(server.addr).await;
        assert_eq!(
            line,
            "error: server busy (2 connections); try again later\n"
        );
    }
    let took = started.elapsed().as_secs() + 1;
    let logged = logged(&server, "refused").await;
    assert!(
        (1..=took as usize).contains(&logged),
        "{logged} lines in {took} s"
    );
}

/// How many lines of the server's log mention `what`, once there is one.
async fn logged(server: &Server, what: &str) -> usize {
    within("a log line", async {
        while !server.process.stderr().contains(what) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.process.stderr().matches(what).count()
}
