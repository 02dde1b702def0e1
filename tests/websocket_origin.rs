//! The WebSocket server's `Origin` check (RFC 6455 §10.2): a page from another
//! site cannot open a WebSocket to the server from a user's browser, while the
//! server's own page and programs that send no `Origin` still can.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::net::SocketAddr;

use common::{InProcess, Server, within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::Request;
use websocket::Message;
use websocket::origin::{self, AllowedOrigins, ForeignOrigin};
use websocket::server::{self, Config, Mode};

/// The exact answer a refused page gets.
const FORBIDDEN: &str = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 72\r\nConnection: close\r\n\r\n\
    forbidden: WebSocket connections from that page's Origin are not allowed";

async fn start(mode: Mode, allowed_origins: AllowedOrigins) -> InProcess {
    let config = Config {
        mode,
        allowed_origins,
        ..Config::default()
    };
    InProcess::start(|listener, shutdown| server::run(listener, config, shutdown)).await
}

/// An upgrade request as a browser sends it: `Host` is where the page points
/// the WebSocket, `Origin` is the page that asks.
fn upgrade(host: &str, origin: Option<&str>) -> String {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

/// Connects with tungstenite, sending `origin` as a browser page would.
async fn connect_from(
    addr: SocketAddr,
    origin: Option<&str>,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}/").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    within("the upgrade", tokio_tungstenite::client_async(request, tcp))
        .await
        .map(|(ws, _)| ws)
}

/// The next text message, skipping pings.
async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> String {
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// `../shared/cases/websocket/origin.py`: in --chat mode, a page from
/// http://evil.example (even one that points its own name at us, so that its
/// `Host` is evil.example) gets 403 and reads nothing of what local users say,
/// while the server's own page and a program without `Origin` chat as before.
#[tokio::test]
async fn foreign_page_gets_403_and_reads_nothing_in_chat() {
    let server = start(Mode::Chat, AllowedOrigins::own_only()).await;
    let port = server.addr.port();
    let mut spy = within("connect", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let evil = upgrade(&format!("evil.example:{port}"), Some("http://evil.example"));
    spy.write_all(evil.as_bytes()).await.unwrap();

    let own_page = format!("http://127.0.0.1:{port}");
    let mut reader = connect_from(server.addr, Some(&own_page)).await.unwrap();
    let reader_addr = reader.get_ref().local_addr().unwrap();
    // A chat client first learns its own address.
    assert_eq!(
        next_text(&mut reader).await,
        format!("[server] you are {reader_addr}")
    );
    let mut victim = connect_from(server.addr, None).await.unwrap();
    let victim_addr = victim.get_ref().local_addr().unwrap();
    assert_eq!(
        next_text(&mut reader).await,
        format!("[server] {victim_addr} joined")
    );
    victim
        .send(Message::text("my password is hunter2"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut reader).await,
        format!("[{victim_addr}] my password is hunter2")
    );

    // Everything the spy ever gets: the refusal, then the server's close.
    let mut answer = Vec::new();
    within(
        "the refusal and a clean close",
        spy.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(answer).unwrap(), FORBIDDEN);
    drop((reader, victim));
    server.stop().await;
}

/// A refused page does not stop the server: the same Origin with the right
/// host, on another port, or with https, is refused too, and a program gets in
/// afterwards.
#[tokio::test]
async fn near_misses_are_refused_and_the_server_keeps_serving() {
    let server = start(Mode::Echo, AllowedOrigins::own_only()).await;
    let port = server.addr.port();
    for origin in [
        format!("http://127.0.0.1:{}", port.wrapping_add(1)),
        format!("https://127.0.0.1:{port}"),
        format!("http://evil.example:{port}"),
        "null".to_string(),
    ] {
        match connect_from(server.addr, Some(&origin)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin}");
            }
            other => panic!("expected 403 for {origin}, got {other:?}"),
        }
    }
    // DNS rebinding: the attacker's name, pointed at us, in Host and Origin.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let rebound = upgrade(
        &format!("evil.example:{port}"),
        Some(&format!("http://evil.example:{port}")),
    );
    tcp.write_all(rebound.as_bytes()).await.unwrap();
    let mut answer = String::new();
    within("the refusal", tcp.read_to_string(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, FORBIDDEN);

    let mut ws = connect_from(server.addr, None).await.unwrap();
    ws.send(Message::text("still serving")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still serving");
    drop(ws);
    server.stop().await;
}

/// The page the server serves connects by every name of this machine that
/// DNS cannot re-point: its IP address, `localhost`, and `[::1]`.
#[tokio::test]
async fn own_page_is_accepted_by_ip_and_localhost() {
    let server = start(Mode::Echo, AllowedOrigins::own_only()).await;
    let port = server.addr.port();
    for (host, origin) in [
        (
            format!("127.0.0.1:{port}"),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            format!("localhost:{port}"),
            format!("http://localhost:{port}"),
        ),
        (format!("[::1]:{port}"), format!("http://[::1]:{port}")),
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(upgrade(&host, Some(&origin)).as_bytes())
            .await
            .unwrap();
        let mut head = [0u8; 34];
        within("the answer", tcp.read_exact(&mut head))
            .await
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 101 Switching Protocols\r\n", "{origin}");
    }
    server.stop().await;
}

/// `--allow-origin` lets the listed pages in and no others; `*` lets every
/// page in.
#[tokio::test]
async fn allow_origin_lets_listed_pages_in() {
    let listed = AllowedOrigins::new(["http://localhost:3000".to_string()]);
    let server = start(Mode::Echo, listed).await;
    assert!(
        connect_from(server.addr, Some("http://localhost:3000"))
            .await
            .is_ok()
    );
    assert!(
        connect_from(server.addr, Some("http://localhost:3001"))
            .await
            .is_err()
    );
    server.stop().await;

    let server = start(Mode::Echo, AllowedOrigins::new(["*".to_string()])).await;
    let mut ws = connect_from(server.addr, Some("http://evil.example"))
        .await
        .unwrap();
    ws.send(Message::text("any page")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "any page");
    drop(ws);
    server.stop().await;
}

fn request(host: &str, origin: Option<&str>) -> Request {
    let mut builder = Request::builder().uri("/").header("host", host);
    if let Some(origin) = origin {
        builder = builder.header("origin", origin);
    }
    builder.body(()).unwrap()
}

fn own(host: &str, origin: &str, tls: bool) -> bool {
    let request = request(host, Some(origin));
    AllowedOrigins::own_only().check(&request, tls).is_ok()
}

/// The check itself: the own page over http or (with TLS) https, by IP
/// address or `localhost` in any case, with or without a port.
#[test]
fn check_accepts_the_own_page() {
    assert!(own("127.0.0.1:8765", "http://127.0.0.1:8765", false));
    assert!(own("[::1]:8765", "http://[::1]:8765", false));
    assert!(own("LocalHost:8765", "http://localhost:8765", false));
    assert!(own("192.0.2.7:9000", "http://192.0.2.7:9000", false));
    assert!(own("localhost", "http://localhost", false));
    assert!(own("localhost:443", "https://localhost", true));
    assert!(own("127.0.0.1:8765", "https://127.0.0.1:8765", true));
    let program = request("evil.example:8765", None);
    assert_eq!(AllowedOrigins::own_only().check(&program, false), Ok(()));
}

/// The check refuses a DNS name even when it matches `Host`, the right host
/// under the wrong scheme or port, and `null` (local files, sandboxed pages),
/// and names the Origin it refused.
#[test]
fn check_refuses_other_pages() {
    assert!(!own("evil.example:8765", "http://evil.example:8765", false));
    assert!(!own("127.0.0.1:8765", "http://127.0.0.1:8766", false));
    assert!(!own("127.0.0.1:8765", "https://127.0.0.1:8765", false));
    assert!(!own("127.0.0.1:8765", "http://127.0.0.1:8765", true));
    assert!(!own("127.0.0.1:8765", "null", false));
    assert!(!own("[::1]:8765", "http://[::2]:8765", false));
    let refused = AllowedOrigins::own_only().check(&request("x", Some("http://a.b")), false);
    assert_eq!(refused, Err(ForeignOrigin("http://a.b".to_string())));
}

/// Listed origins compare as browsers write them: case, a trailing slash and
/// the scheme's default port do not matter.
#[test]
fn listed_origins_compare_as_browsers_write_them() {
    let allowed = AllowedOrigins::new(["HTTP://Example.com:80/".to_string(), "null".into()]);
    let host = "127.0.0.1:8765";
    let check = |origin| allowed.check(&request(host, Some(origin)), false);
    assert!(check("http://example.com").is_ok());
    assert!(check("null").is_ok());
    assert!(check("http://example.org").is_err());
    assert!(check("https://example.com").is_err());
}

/// `--allow-origin` takes origins, not URLs with paths or bare names.
#[test]
fn allow_origin_values_are_checked() {
    for good in ["*", "null", "http://localhost:3000", "https://example.com/"] {
        assert_eq!(origin::parse(good).as_deref(), Ok(good));
    }
    for bad in [
        "example.com",
        "http://",
        "http://a/b",
        "ftp://a",
        "ws://a",
        "",
    ] {
        assert!(origin::parse(bad).is_err(), "{bad}");
    }
}

/// The real binary: a foreign page's refusal is one log line that names the
/// Origin and the flag; `--allow-origin` with a path is refused at start.
#[tokio::test]
async fn binary_logs_the_refusal_and_checks_the_flag() {
    let server = Server::start("websocket_server", &["--chat"]).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let host = server.addr.to_string();
    tcp.write_all(upgrade(&host, Some("http://evil.example")).as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    within("the refusal", tcp.read_to_string(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, FORBIDDEN);
    // The server logs once the connection is over: we close our side.
    drop(tcp);
    let logged = |log: &str| {
        log.contains("refused with HTTP 403")
            && log.contains("origin=http://evil.example")
            && log.contains("--allow-origin http://evil.example")
    };
    within("the refusal's log line", async {
        while !logged(&server.process.stderr()) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    server.process.signal("INT");
    let (status, _, log) = server.process.finish().await;
    assert!(status.success(), "{log}");

    let (status, _, err) = common::run(
        "websocket_server",
        &["--port", "0", "--allow-origin", "http://a.example/page"],
        b"",
    )
    .await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("expected an origin such as"), "{err}");
}
