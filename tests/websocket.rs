//! The WebSocket server and client, driven in-process through the `websocket`
//! library on loopback: echo, fragmentation, control frames, close codes,
//! chat, keep-alive, shutdown, the HTTP side, and the client's session.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{InProcess, within};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use websocket::client::{self, Ending};
use websocket::server::{self, Config, Mode};
use websocket::{CloseCode, CloseFrame, Message};

type Ws = WebSocketStream<TcpStream>;

/// The server, running in this test process on 127.0.0.1:0.
async fn start(config: Config) -> InProcess {
    InProcess::start(|listener, shutdown| server::run(listener, config, shutdown)).await
}

/// The `ws://` URL of a server running in this test process.
trait Url {
    fn url(&self) -> String;
}

impl Url for InProcess {
    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

fn echo() -> Config {
    Config::default()
}

fn chat() -> Config {
    Config {
        mode: Mode::Chat,
        ..Config::default()
    }
}

/// Connects a tungstenite client; its address is what the server logs and
/// what chat messages are tagged with.
async fn connect(server: &InProcess) -> (Ws, SocketAddr) {
    let tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let local = tcp.local_addr().expect("local addr");
    let (ws, response) = within(
        "upgrade",
        tokio_tungstenite::client_async(server.url(), tcp),
    )
    .await
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    (ws, local)
}

/// Connects to a chat server and reads its welcome, which tells the client
/// its own address: `[server] you are 127.0.0.1:50312`.
async fn connect_chat(server: &InProcess) -> (Ws, SocketAddr) {
    let (mut ws, local) = connect(server).await;
    assert_eq!(
        next(&mut ws).await,
        Message::text(format!("[server] you are {local}"))
    );
    (ws, local)
}

/// The next message that is not a ping or pong.
async fn next(ws: &mut Ws) -> Message {
    loop {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return message,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Proves that no message arrives for a short while.
async fn nothing(ws: &mut Ws) {
    let quiet = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(quiet.is_err(), "expected silence, got {quiet:?}");
}

/// Reads the server's Close frame and answers it.
async fn closed_with(ws: &mut Ws) -> CloseFrame {
    match next(ws).await {
        Message::Close(Some(frame)) => {
            // Reading on lets tungstenite send our answering Close.
            while let Some(Ok(_)) = within("the end of the stream", ws.next()).await {}
            // The server has closed its side; we close ours.
            let _ = ws.get_mut().shutdown().await;
            frame
        }
        other => panic!("expected Close, got {other:?}"),
    }
}

async fn assert_echo_works(server: &InProcess) {
    let (mut ws, _) = connect(server).await;
    ws.send(Message::text("still serving")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("still serving"));
    ws.close(None).await.unwrap();
}

/// Echo returns every text message exactly, including non-ASCII and empty ones.
#[tokio::test]
async fn text_echo_is_exact() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    for text in ["hello", "", "héllo wörld ✓ 🦀", "line\nbreak"] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(text));
    }
    ws.close(None).await.unwrap();
    server.stop().await;
}

/// Echo returns binary messages byte for byte, as binary (all 256 byte values).
#[tokio::test]
async fn binary_echo_is_exact() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(bytes));
    drop(ws);
    server.stop().await;
}

/// A message sent as three fragments (text, continuation, final continuation)
/// is echoed whole, as one message.
#[tokio::test]
async fn fragmented_message_comes_back_whole() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    let part = |data: &str, opcode, fin| {
        Message::Frame(Frame::message(data.to_string(), OpCode::Data(opcode), fin))
    };
    ws.send(part("frag", Data::Text, false)).await.unwrap();
    ws.send(part("ment", Data::Continue, false)).await.unwrap();
    ws.send(part("ed ✓", Data::Continue, true)).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("fragmented ✓"));
    drop(ws);
    server.stop().await;
}

/// A Ping is answered with a Pong carrying the same payload.
#[tokio::test]
async fn ping_gets_pong() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    match within("the pong", ws.next()).await {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected Pong, got {other:?}"),
    }
    drop(ws);
    server.stop().await;
}

/// A burst of 2000 messages, sent without waiting, comes back complete and in order.
#[tokio::test]
async fn order_is_kept_under_a_burst() {
    let server = start(echo()).await;
    let (ws, _) = connect(&server).await;
    let (mut sink, mut stream) = ws.split();
    let sending = tokio::spawn(async move {
        for i in 0..2000 {
            sink.feed(Message::text(format!("message {i}")))
                .await
                .unwrap();
        }
        sink.flush().await.unwrap();
        sink
    });
    for i in 0..2000 {
        let message = within("an echo", stream.next()).await.unwrap().unwrap();
        assert_eq!(message, Message::text(format!("message {i}")));
    }
    drop(within("the sender", sending).await.unwrap());
    drop(stream);
    server.stop().await;
}

/// A message over --max-message-bytes gets Close 1009; one at the limit is
/// echoed; the server keeps serving others.
#[tokio::test]
async fn too_big_message_gets_1009() {
    let server = start(Config {
        max_message_bytes: 1024,
        ..echo()
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    ws.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![7u8; 1024]));
    ws.send(Message::binary(vec![7u8; 1025])).await.unwrap();
    let frame = closed_with(&mut ws).await;
    assert_eq!(frame.code, CloseCode::Size);
    assert_eq!(
        frame.reason.as_str(),
        "message too big: the limit is 1024 bytes"
    );
    assert_echo_works(&server).await;
    server.stop().await;
}

/// The limit is for messages: under a tiny one, control frames (up to their
/// own 125 bytes) still pass, while a data frame over it gets 1009.
#[tokio::test]
async fn control_frames_pass_a_small_limit() {
    let server = start(Config {
        max_message_bytes: 10,
        ..echo()
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    let payload = vec![b'p'; 125];
    ws.send(Message::Ping(payload.clone().into()))
        .await
        .unwrap();
    match within("the pong", ws.next()).await {
        Some(Ok(Message::Pong(pong))) => assert_eq!(&pong[..], &payload[..]),
        other => panic!("expected Pong, got {other:?}"),
    }
    let reason = "a closing reason longer than the limit";
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: reason.into(),
    }))
    .await
    .unwrap();
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected Close 1000, got {other:?}"),
    }

    let (mut ws, _) = connect(&server).await;
    ws.send(Message::binary(vec![0u8; 11])).await.unwrap();
    assert_eq!(closed_with(&mut ws).await.code, CloseCode::Size);
    server.stop().await;
}

/// Fragments that add up to more than the limit also get 1009.
#[tokio::test]
async fn too_big_fragmented_message_gets_1009() {
    let server = start(Config {
        max_message_bytes: 1024,
        ..echo()
    })
    .await;
    let (mut ws, _) = connect(&server).await;
    let part =
        |opcode, fin| Message::Frame(Frame::message(vec![b'x'; 600], OpCode::Data(opcode), fin));
    ws.send(part(Data::Text, false)).await.unwrap();
    ws.send(part(Data::Continue, true)).await.unwrap();
    assert_eq!(closed_with(&mut ws).await.code, CloseCode::Size);
    assert_echo_works(&server).await;
    server.stop().await;
}

/// A text message that is not valid UTF-8 gets Close 1007; the server keeps serving.
#[tokio::test]
async fn invalid_utf8_gets_1007() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    let bad = Frame::message(vec![b'o', b'k', 0xff, 0xfe], OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    let frame = closed_with(&mut ws).await;
    assert_eq!(frame.code, CloseCode::Invalid);
    assert_eq!(frame.reason.as_str(), "text message is not valid UTF-8");
    assert_echo_works(&server).await;
    server.stop().await;
}

/// A reserved opcode is a protocol violation: Close 1002; the server keeps serving.
#[tokio::test]
async fn reserved_opcode_gets_1002() {
    let server = start(echo()).await;
    let (mut ws, _) = connect(&server).await;
    let bad = Frame::message(b"?".to_vec(), OpCode::Data(Data::Reserved(3)), true);
    ws.send(Message::Frame(bad)).await.unwrap();
    assert_eq!(closed_with(&mut ws).await.code, CloseCode::Protocol);
    assert_echo_works(&server).await;
    server.stop().await;
}

/// Opens a WebSocket by hand over raw TCP, so the test can send frames that a
/// correct client library never would.
async fn raw_upgrade(addr: SocketAddr) -> TcpStream {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    // The accept key for this request key, from RFC 6455 section 1.3.
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    tcp
}

/// Reads an HTTP response head byte by byte, up to its blank line.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(within("the response head", tcp.read_u8()).await.unwrap());
    }
    String::from_utf8(head).unwrap()
}

/// Reads one unmasked server frame: (first byte, payload).
async fn raw_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 2];
    within("a frame", tcp.read_exact(&mut header))
        .await
        .unwrap();
    assert!(header[1] & 0x80 == 0, "server frames are not masked");
    // 0..=125 is the length itself; 126 and 127 say it follows in 2 or 8 bytes.
    let length = match header[1] {
        126 => u64::from(within("a 16-bit length", tcp.read_u16()).await.unwrap()),
        127 => within("a 64-bit length", tcp.read_u64()).await.unwrap(),
        short => u64::from(short),
    };
    let mut payload = vec![0u8; usize::try_from(length).unwrap()];
    within("a frame payload", tcp.read_exact(&mut payload))
        .await
        .unwrap();
    (header[0], payload)
}

/// A client frame without a mask breaks RFC 6455 (section 5.1): Close 1002,
/// then the server closes TCP; it keeps serving others.
#[tokio::test]
async fn unmasked_client_frame_gets_1002() {
    let server = start(echo()).await;
    let mut tcp = raw_upgrade(server.addr).await;
    // FIN + text opcode, no mask bit, 2-byte payload "hi".
    tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    let (first, payload) = raw_frame(&mut tcp).await;
    assert_eq!(first, 0x88, "a final Close frame");
    assert_eq!(&payload[..2], &1002u16.to_be_bytes());
    assert_eq!(
        &payload[2..],
        b"protocol error: Received an unmasked frame from client"
    );
    let mut rest = Vec::new();
    within("the server to close TCP", tcp.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    drop(tcp);
    assert_echo_works(&server).await;
    server.stop().await;
}

/// Frames written right behind the upgrade request, in the same TCP segment,
/// are not lost.
#[tokio::test]
async fn frame_right_behind_the_request_is_read() {
    let server = start(echo()).await;
    let mut tcp = within("connect", TcpStream::connect(server.addr))
        .await
        .unwrap();
    let mut bytes = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    // FIN + text, masked with key 0 (payload unchanged): "hi".
    bytes.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    tcp.write_all(&bytes).await.unwrap();
    read_head(&mut tcp).await;
    assert_eq!(raw_frame(&mut tcp).await, (0x81, b"hi".to_vec()));
    drop(tcp);
    server.stop().await;
}

/// Chat: each client first learns its own address (which tags its
/// messages); a message goes to every other client, tagged with the sender's
/// address, never back to the sender; joins and leaves are announced.
#[tokio::test]
async fn chat_fans_out_and_announces_leaving() {
    let server = start(chat()).await;
    let (mut a, a_addr) = connect_chat(&server).await;
    let (mut b, b_addr) = connect_chat(&server).await;
    assert_eq!(
        next(&mut a).await,
        Message::text(format!("[server] {b_addr} joined"))
    );
    let (mut c, c_addr) = connect_chat(&server).await;
    assert_eq!(
        next(&mut a).await,
        Message::text(format!("[server] {c_addr} joined"))
    );
    assert_eq!(
        next(&mut b).await,
        Message::text(format!("[server] {c_addr} joined"))
    );

    a.send(Message::text("hello all")).await.unwrap();
    let tagged = Message::text(format!("[{a_addr}] hello all"));
    assert_eq!(next(&mut b).await, tagged);
    assert_eq!(next(&mut c).await, tagged);
    b.send(Message::binary(vec![0, 1, 2])).await.unwrap();
    assert_eq!(next(&mut a).await, Message::binary(vec![0, 1, 2]));
    assert_eq!(next(&mut c).await, Message::binary(vec![0, 1, 2]));
    nothing(&mut a).await;
    nothing(&mut b).await;

    c.close(None).await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Message::text(format!("[server] {c_addr} left"))
    );
    assert_eq!(
        next(&mut b).await,
        Message::text(format!("[server] {c_addr} left"))
    );
    a.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        next(&mut b).await,
        Message::text(format!("[{a_addr}] still here"))
    );
    nothing(&mut a).await;
    drop((a, b));
    server.stop().await;
}

/// Chat: a client that stops reading does not hold up the others; when it
/// reads again, it is told how many messages it missed.
#[tokio::test]
async fn chat_slow_reader_does_not_hold_up_others() {
    let server = start(chat()).await;
    let (mut a, _) = connect_chat(&server).await;
    // `slow` upgrades and then reads nothing until the burst is over.
    let mut slow = raw_upgrade(server.addr).await;
    let (mut b, _) = connect_chat(&server).await;
    // a sees slow's and b's joins.
    next(&mut a).await;
    next(&mut a).await;
    // 16 MiB: more than the socket buffers on the way to `slow` hold (a few
    // MiB on loopback) plus the chat backlog (256 messages), so its session
    // blocks and then falls behind.
    let big = "x".repeat(32 * 1024);
    for i in 0..512 {
        a.send(Message::text(format!("{i} {big}"))).await.unwrap();
        let Message::Text(text) = next(&mut b).await else {
            panic!("text expected")
        };
        assert!(text.as_str().ends_with(&format!("] {i} {big}")));
    }
    let skipped = within("the notice of skipped messages", async {
        loop {
            let (first, payload) = raw_frame(&mut slow).await;
            let text = String::from_utf8_lossy(&payload);
            if first == 0x81 && text.starts_with("[server] you are reading too slowly: ") {
                return text.into_owned();
            }
        }
    })
    .await;
    assert!(skipped.ends_with(" message(s) skipped"), "{skipped}");
    drop(slow);
    a.close(None).await.unwrap();
    b.close(None).await.unwrap();
    server.stop().await;
}

/// Keep-alive: a peer that answers no ping for two intervals is dropped; a
/// client that keeps reading (tungstenite answers pings while it reads) stays.
#[tokio::test]
async fn silent_peer_is_dropped_after_two_ping_intervals() {
    let interval = Duration::from_millis(300);
    let server = start(Config {
        ping_interval: interval,
        ..echo()
    })
    .await;
    let (mut live, _) = connect(&server).await;
    let started = Instant::now();
    let mut silent = raw_upgrade(server.addr).await;
    // We read what the server sends the silent peer (its pings) but never answer.
    let watch_silent = async {
        let mut pings = 0;
        loop {
            let mut header = [0u8; 2];
            match within("a ping or the drop", silent.read_exact(&mut header)).await {
                Ok(_) => {
                    assert_eq!(header, [0x89, 0x00], "an empty Ping");
                    pings += 1;
                }
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return pings,
                Err(error) => panic!("{error}"),
            }
        }
    };
    let keep_reading = async {
        loop {
            match live.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("the live client got {other:?}"),
            }
        }
    };
    let pings = tokio::select! {
        pings = watch_silent => pings,
        () = keep_reading => unreachable!(),
    };
    assert!(pings >= 1, "the server pinged before giving up");
    assert!(
        started.elapsed() >= 2 * interval,
        "dropped after {:?}",
        started.elapsed()
    );
    // The live client reads for three more intervals, then still gets echoes.
    let more = tokio::time::timeout(3 * interval, async {
        loop {
            match live.next().await {
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("the live client got {other:?}"),
            }
        }
    });
    assert!(more.await.is_err());
    live.send(Message::text("alive")).await.unwrap();
    assert_eq!(next(&mut live).await, Message::text("alive"));
    live.close(None).await.unwrap();
    server.stop().await;
}

/// A peer that keeps sending but stops reading fills the TCP window, so our
/// echoes stall; after two ping intervals of that, the server drops it, and
/// keeps serving others.
#[tokio::test]
async fn peer_that_stops_reading_is_dropped() {
    let interval = Duration::from_millis(300);
    let server = start(Config {
        ping_interval: interval,
        ..echo()
    })
    .await;
    let tcp = raw_upgrade(server.addr).await;
    let (mut reader, mut writer) = tcp.into_split();
    // 8 MiB of masked binary frames (key 0, so the payload is unchanged): the
    // echoes are more than the socket buffers hold while we do not read.
    let mut frame = vec![0x82, 0xFE, 0xFF, 0xFF, 0, 0, 0, 0];
    frame.resize(8 + 0xFFFF, 7);
    let sending = tokio::spawn(async move {
        for _ in 0..128 {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Then a small frame every third of an interval, so the server always
        // hears from us once it reads again: only the stall can end this.
        loop {
            tokio::time::sleep(interval / 3).await;
            if writer.write_all(&[0x82, 0x80, 0, 0, 0, 0]).await.is_err() {
                return;
            }
        }
    });
    // We read nothing for five intervals; the stalled echo gives up after two
    // (the margin is for a loaded machine, where the stall may begin late).
    tokio::time::sleep(5 * interval).await;
    let mut sink = Vec::new();
    match within("the server to drop us", reader.read_to_end(&mut sink)).await {
        Ok(_) => {}
        // Closing a socket with our bytes unread makes the kernel reset it.
        Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
    }
    sending.abort();
    assert_echo_works(&server).await;
    server.stop().await;
}

/// Shutdown sends every client Close 1001 and waits for its answer; the
/// server returns once the closing handshakes are done.
#[tokio::test]
async fn shutdown_sends_1001() {
    let mut server = start(echo()).await;
    let (mut a, _) = connect(&server).await;
    let (mut b, _) = connect(&server).await;
    server.shutdown();
    for ws in [&mut a, &mut b] {
        let frame = closed_with(ws).await;
        assert_eq!(frame.code, CloseCode::Away);
        assert_eq!(frame.reason.as_str(), "server shutting down");
    }
    let addr = server.addr;
    server.stop().await;
    // The port is closed now.
    assert!(TcpStream::connect(addr).await.is_err());
}

/// Sends one raw HTTP request and reads the whole answer until the server closes.
async fn http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = within("connect", TcpStream::connect(addr)).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within("the answer and a clean close", tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    String::from_utf8(answer).unwrap()
}

/// GET / without an upgrade serves the self-contained page, with a correct
/// Content-Length, and closes cleanly.
#[tokio::test]
async fn page_is_served_at_root() {
    let server = start(echo()).await;
    let answer = http(server.addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert_eq!(body, websocket::http::PAGE);
    assert!(body.contains("new WebSocket("));
    // Self-contained: nothing loaded from elsewhere. Its one link is an
    // empty icon written into the page, so the browser does not ask for
    // /favicon.ico (and get a 404 in the log) on every load.
    assert!(!body.contains("src="));
    assert_eq!(body.matches("href=").count(), 1);
    assert!(body.contains(r#"<link rel="icon" href="data:,">"#));
    server.stop().await;
}

/// Other paths get 404 (an upgrade request too); other methods 405; garbage
/// 400; the server closes each cleanly and keeps serving.
#[tokio::test]
async fn other_requests_get_plain_http_answers() {
    let server = start(echo()).await;
    let answer = http(server.addr, "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        answer,
        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: 16\r\nConnection: close\r\n\r\nnot found: try /"
    );
    let upgrade_elsewhere = "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
        Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert!(
        http(server.addr, upgrade_elsewhere)
            .await
            .starts_with("HTTP/1.1 404 Not Found\r\n")
    );
    let post = http(
        server.addr,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
            && post.contains("\r\nAllow: GET\r\n"),
        "{post}"
    );
    let garbage = http(server.addr, "hello\r\n\r\n").await;
    assert!(
        garbage.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{garbage}"
    );
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert!(http(server.addr, &huge).await.starts_with("HTTP/1.1 431 "));
    assert_echo_works(&server).await;
    server.stop().await;
}

/// One connection over --max-connections gets HTTP 503 instead of an upgrade;
/// when a connection ends, its place is free again.
#[tokio::test]
async fn connection_limit_answers_503() {
    let server = start(Config {
        max_connections: 1,
        ..echo()
    })
    .await;
    let (mut first, _) = connect(&server).await;
    match within(
        "the refusal",
        tokio_tungstenite::connect_async(server.url()),
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    first.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close", first.next()).await {}
    // The permit is released when the server's task ends, just after the close.
    let deadline = Instant::now() + common::WAIT;
    loop {
        match tokio_tungstenite::connect_async(server.url()).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::task::yield_now().await;
            }
            Err(error) => panic!("no place freed: {error}"),
        }
    }
    server.stop().await;
}

/// The client library sends each input message, prints each answer as a line
/// (binary as hex), then closes with 1000 and gets the server's answer.
#[tokio::test]
async fn client_prints_answers_and_closes_with_1000() {
    let server = start(echo()).await;
    let socket = client::connect(&server.url(), common::WAIT).await.unwrap();
    let input = futures_util::stream::iter([
        Ok(Message::text("one")),
        Ok(Message::binary(vec![0xde, 0xad, 0x00])),
        Ok(Message::text("three")),
    ]);
    let mut output = Vec::new();
    let ending = within(
        "the client session",
        client::run(
            socket,
            input,
            &mut output,
            common::WAIT,
            std::future::pending(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(output).unwrap(), "one\ndead00\nthree\n");
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    assert_eq!(ending, Ending::WeClosed(Some(frame)));
    server.stop().await;
}

/// The client reads stdin-style lines (stripping \r\n) and refuses a line that
/// is not UTF-8 unless sending binary.
#[tokio::test]
async fn client_lines_become_messages() {
    let text: Vec<_> = client::lines(&b"a\r\nb\n\nlast"[..], false).collect().await;
    let text: Vec<_> = text.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        text,
        [
            Message::text("a"),
            Message::text("b"),
            Message::text(""),
            Message::text("last")
        ]
    );
    let bad: Vec<_> = client::lines(&b"ok\n\xff\n"[..], false).collect().await;
    assert_eq!(
        bad[1].as_ref().unwrap_err().to_string(),
        "line 2 is not UTF-8 text; pass --binary to send bytes"
    );
    let bytes: Vec<_> = client::lines(&b"\xff\n"[..], true).collect().await;
    assert_eq!(bytes[0].as_ref().unwrap(), &Message::binary(vec![0xff]));
}

/// When the server closes first (shutdown), the client reports the server's
/// code and reason.
#[tokio::test]
async fn client_reports_server_close() {
    let mut server = start(echo()).await;
    let socket = client::connect(&server.url(), common::WAIT).await.unwrap();
    let (input_tx, input_rx) = tokio::sync::mpsc::channel::<io::Result<Message>>(1);
    let input = tokio_stream_from(input_rx);
    let session = tokio::spawn(client::run(
        socket,
        input,
        Vec::new(),
        common::WAIT,
        std::future::pending(),
    ));
    input_tx.send(Ok(Message::text("x"))).await.unwrap();
    server.shutdown();
    let ending = within("the session", session).await.unwrap().unwrap();
    let frame = CloseFrame {
        code: CloseCode::Away,
        reason: "server shutting down".into(),
    };
    assert_eq!(ending, Ending::ServerClosed(Some(frame)));
    drop(input_tx);
}

/// An mpsc receiver as a stream.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The client's connect errors name the URL: nobody listening, no upgrade
/// (with the HTTP status), a bad URL.
#[tokio::test]
async fn client_connect_errors_name_the_url() {
    let server = start(echo()).await;
    // A port we hold (bound, never listening), so no other test can take it:
    // a connection to it is refused.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let nobody = format!("ws://{}", held.local_addr().unwrap());
    let error = client::connect(&nobody, common::WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("cannot connect to {nobody}: ")),
        "{error}"
    );
    assert!(error.ends_with("is websocket_server running?"), "{error}");

    let missing = format!("{}/missing", server.url());
    let error = client::connect(&missing, common::WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!("{missing} did not upgrade to WebSocket: the server answered HTTP 404 Not Found")
    );

    // An HTTP/1.0 server (`python3 -m http.server` is one): tungstenite
    // refuses its answer before reading the status; we show the status line.
    let old_http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_url = format!("ws://{}/", old_http.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut tcp, _) = old_http.accept().await.unwrap();
        let mut request = [0u8; 1024];
        let _ = tcp.read(&mut request).await;
        let answer = "HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html></html>";
        tcp.write_all(answer.as_bytes()).await.unwrap();
    });
    let error = client::connect(&old_url, common::WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        format!(
            "{old_url} did not upgrade to WebSocket: the server answered HTTP/1.0 200 OK, \
             an HTTP server, not a WebSocket server"
        )
    );

    let error = client::connect("nonsense", common::WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("bad URL \"nonsense\": "), "{error}");

    // Out of range: not quietly port 80.
    let error = client::connect("ws://127.0.0.1:99999", common::WAIT)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "bad URL \"ws://127.0.0.1:99999\": the port must be a number from 0 to 65535"
    );
    drop(held);
    server.stop().await;
}

/// A server that drops TCP without a Close frame: the client reports the
/// abnormal closure (1006) once, in one line.
#[tokio::test]
async fn client_reports_a_dropped_connection_as_1006() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let dropper = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // One message in, then the TCP connection ends with no Close frame.
        assert_eq!(next(&mut ws).await, Message::text("x"));
    });
    let socket = client::connect(&url, common::WAIT).await.unwrap();
    let input =
        futures_util::stream::iter([Ok(Message::text("x"))]).chain(futures_util::stream::pending());
    let error = within(
        "the client session",
        client::run(
            socket,
            input,
            Vec::new(),
            common::WAIT,
            std::future::pending(),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(
        format!("{error:#}"),
        "the connection closed without a Close frame (1006, abnormal)"
    );
    within("the dropping server", dropper).await.unwrap();
}
