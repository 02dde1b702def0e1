//! The TCP server and client, driven in-process through the `tcp` library on
//! loopback: framing, echo, chat, limits, resets and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{InProcess, within};
use tcp::server::{self, Config, Mode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The server, running in this test process on 127.0.0.1:0.
async fn start(config: Config) -> InProcess {
    InProcess::start(|listener, shutdown| server::run(listener, config, shutdown)).await
}

/// The server, on a listener the test bound itself.
fn start_on(listener: TcpListener, config: Config) -> InProcess {
    InProcess::start_on(listener, |listener, shutdown| {
        server::run(listener, config, shutdown)
    })
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

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(
        within("connect", TcpStream::connect(addr))
            .await
            .expect("connect"),
    )
}

/// Reads one line (with its newline) as raw bytes.
async fn line(conn: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut buf = Vec::new();
    within("a line", conn.read_until(b'\n', &mut buf))
        .await
        .expect("read");
    buf
}

/// Reads until the server closes the connection.
async fn rest(conn: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut buf = Vec::new();
    within("the server to close", conn.read_to_end(&mut buf))
        .await
        .expect("read to end");
    buf
}

/// Proves that nothing arrives within a short time.
async fn silent(conn: &mut BufReader<TcpStream>) {
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut byte)).await;
    assert!(waited.is_err(), "expected silence, got {waited:?}");
}

/// Echo answers every line byte for byte: CRLF, bytes that are not UTF-8 and
/// a final unterminated line included.
#[tokio::test]
async fn echo_is_byte_exact() {
    let server = start(echo()).await;
    let mut conn = connect(server.addr).await;
    let sent: &[u8] = b"hello\nwith crlf\r\n\xff\xfe not utf-8\n\nlast, no newline";
    conn.get_mut().write_all(sent).await.expect("write");
    conn.get_mut().shutdown().await.expect("half-close");
    assert_eq!(rest(&mut conn).await, sent);
    server.stop().await;
}

/// TCP is a byte stream: three lines in one write get three answers, and one
/// line split over many writes gets one answer once its newline arrives.
#[tokio::test]
async fn framing_is_by_newline_not_by_write() {
    let server = start(echo()).await;
    let mut conn = connect(server.addr).await;
    conn.get_mut()
        .write_all(b"one\ntwo\nthree\n")
        .await
        .expect("write");
    assert_eq!(line(&mut conn).await, b"one\n");
    assert_eq!(line(&mut conn).await, b"two\n");
    assert_eq!(line(&mut conn).await, b"three\n");

    for piece in [&b"spl"[..], b"it ac", b"ross wri", b"tes"] {
        conn.get_mut().write_all(piece).await.expect("write");
        conn.get_mut().flush().await.expect("flush");
    }
    silent(&mut conn).await; // no newline yet, so no answer yet
    conn.get_mut().write_all(b"\n").await.expect("write");
    assert_eq!(line(&mut conn).await, b"split across writes\n");
    server.stop().await;
}

/// One task per connection: 100 clients talking at once each get exactly
/// their own answers, in order.
#[tokio::test]
async fn hundred_concurrent_clients_get_only_their_own_answers() {
    let server = start(echo()).await;
    let clients = (0..100).map(|id| {
        let addr = server.addr;
        tokio::spawn(async move {
            let mut conn = connect(addr).await;
            let sent: String = (0..20).map(|n| format!("client {id} line {n}\n")).collect();
            conn.get_mut()
                .write_all(sent.as_bytes())
                .await
                .expect("write");
            conn.get_mut().shutdown().await.expect("half-close");
            assert_eq!(
                String::from_utf8(rest(&mut conn).await).expect("utf-8"),
                sent
            );
        })
    });
    for client in clients.collect::<Vec<_>>() {
        within("a client", client).await.expect("client task");
    }
    server.stop().await;
}

/// Chat relays each line to every other client, tagged with the sender's
/// address, and never back to the sender.
#[tokio::test]
async fn chat_relays_to_others_not_the_sender() {
    let server = start(chat()).await;
    let mut alice = connect(server.addr).await;
    let mut bob = connect(server.addr).await;
    let bob_addr = bob.get_ref().local_addr().expect("addr");
    // Alice hears Bob join; that also proves Bob is registered.
    assert_eq!(
        line(&mut alice).await,
        format!("[server] {bob_addr} joined\n").as_bytes()
    );

    bob.get_mut().write_all(b"hi alice\n").await.expect("write");
    assert_eq!(
        line(&mut alice).await,
        format!("[{bob_addr}] hi alice\n").as_bytes()
    );
    silent(&mut bob).await;

    drop(bob);
    assert_eq!(
        line(&mut alice).await,
        format!("[server] {bob_addr} left\n").as_bytes()
    );
    server.stop().await;
}

/// An idle timeout too long to add to the clock (`--idle-timeout-secs` at its
/// largest) still lets chat lines through: the timer is never armed past the
/// clock's end, so nothing panics.
#[tokio::test]
async fn chat_with_the_longest_idle_timeout_still_relays() {
    let server = start(Config {
        idle_timeout: Duration::from_secs(u64::MAX),
        ..chat()
    })
    .await;
    let mut alice = connect(server.addr).await;
    let mut bob = connect(server.addr).await;
    let bob_addr = bob.get_ref().local_addr().expect("addr");
    assert_eq!(
        line(&mut alice).await,
        format!("[server] {bob_addr} joined\n").as_bytes()
    );
    for text in ["one", "two"] {
        bob.get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .await
            .expect("write");
        assert_eq!(
            line(&mut alice).await,
            format!("[{bob_addr}] {text}\n").as_bytes()
        );
    }
    drop((alice, bob));
    server.stop().await;
}

/// A line over --max-line-bytes gets an error line and the connection
/// closes; lines before it are still answered, and other clients are not
/// affected.
#[tokio::test]
async fn overlong_line_is_refused_and_others_are_unaffected() {
    let server = start(Config {
        max_line_bytes: 16,
        ..echo()
    })
    .await;
    let mut other = connect(server.addr).await;
    let mut greedy = connect(server.addr).await;
    greedy
        .get_mut()
        .write_all(b"short\n0123456789abcdefXYZ\n")
        .await
        .expect("write");
    assert_eq!(line(&mut greedy).await, b"short\n");
    assert_eq!(
        rest(&mut greedy).await,
        b"error: line longer than 16 bytes; closing connection\n"
    );
    // Exactly 16 bytes is still fine, for a client that behaves.
    other
        .get_mut()
        .write_all(b"0123456789abcdef\n")
        .await
        .expect("write");
    assert_eq!(line(&mut other).await, b"0123456789abcdef\n");
    drop(greedy);
    server.stop().await;
}

/// A line that never ends is refused once it passes the limit, even though
/// no newline ever arrives: the server does not buffer without end.
#[tokio::test]
async fn line_that_never_ends_is_refused() {
    let server = start(Config {
        max_line_bytes: 1024,
        ..echo()
    })
    .await;
    let mut conn = connect(server.addr).await;
    conn.get_mut()
        .write_all(&[b'x'; 4096])
        .await
        .expect("write");
    assert_eq!(
        rest(&mut conn).await,
        b"error: line longer than 1024 bytes; closing connection\n"
    );
    drop(conn);
    server.stop().await;
}

/// A client that resets its connection mid-line (RST, not FIN) does not
/// disturb the server or its other clients.
#[tokio::test]
async fn client_reset_mid_line_does_not_disturb_the_server() {
    let server = start(echo()).await;
    let mut steady = connect(server.addr).await;
    let rude = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let mut rude = rude;
    rude.write_all(b"half a li").await.expect("write");
    // SO_LINGER with a zero timeout turns close into a reset.
    socket2::SockRef::from(&rude)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
    drop(rude);
    steady
        .get_mut()
        .write_all(b"still here\n")
        .await
        .expect("write");
    assert_eq!(line(&mut steady).await, b"still here\n");
    let mut fresh = connect(server.addr).await;
    fresh
        .get_mut()
        .write_all(b"new client\n")
        .await
        .expect("write");
    assert_eq!(line(&mut fresh).await, b"new client\n");
    server.stop().await;
}

/// With a limit of one, the busy line says "1 connection", not "1
/// connections".
#[tokio::test]
async fn busy_line_counts_one_connection_in_the_singular() {
    let server = start(Config {
        max_connections: 1,
        ..echo()
    })
    .await;
    let mut first = connect(server.addr).await;
    first.get_mut().write_all(b"ping\n").await.expect("write");
    assert_eq!(line(&mut first).await, b"ping\n");
    let mut second = connect(server.addr).await;
    assert_eq!(
        rest(&mut second).await,
        b"error: server busy (1 connection); try again later\n"
    );
    drop(first);
    server.stop().await;
}

/// One connection over --max-connections gets a "server busy" line and is
/// closed; when a slot frees up, new clients are served again.
#[tokio::test]
async fn connection_limit_sends_busy_and_frees_up() {
    let server = start(Config {
        max_connections: 2,
        ..echo()
    })
    .await;
    let mut first = connect(server.addr).await;
    let mut second = connect(server.addr).await;
    // A round trip on each proves both hold a slot.
    for conn in [&mut first, &mut second] {
        conn.get_mut().write_all(b"ping\n").await.expect("write");
        assert_eq!(line(conn).await, b"ping\n");
    }
    let mut third = connect(server.addr).await;
    assert_eq!(
        rest(&mut third).await,
        b"error: server busy (2 connections); try again later\n"
    );
    first.get_mut().shutdown().await.expect("half-close");
    assert_eq!(rest(&mut first).await, b"");
    // The slot is released when the first connection's task ends, which may
    // be a moment after we saw its close: retry until a deadline.
    let served = within("a freed slot", async {
        loop {
            let mut fourth = connect(server.addr).await;
            fourth.get_mut().write_all(b"again\n").await.expect("write");
            if line(&mut fourth).await == b"again\n" {
                break;
            }
            tokio::task::yield_now().await;
        }
    });
    served.await;
    drop((second, third));
    server.stop().await;
}

/// A client that sends nothing for --idle-timeout-secs is told why and
/// disconnected.
#[tokio::test]
async fn idle_client_is_disconnected() {
    let server = start(Config {
        idle_timeout: Duration::from_millis(200),
        ..echo()
    })
    .await;
    let mut conn = connect(server.addr).await;
    assert_eq!(
        rest(&mut conn).await,
        b"error: idle for 200ms; closing connection\n"
    );
    drop(conn);
    server.stop().await;
}

/// A client that sends without ever reading fills its TCP window; the server
/// stops reading from it (no unbounded buffering) while others are served.
#[tokio::test]
async fn client_that_never_reads_does_not_stall_others() {
    // A short grace period: the hog's answers can never be delivered.
    let server = start(Config {
        shutdown_grace: Duration::from_millis(500),
        ..echo()
    })
    .await;
    let hog = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let (_hog_read, mut hog_write) = hog.into_split();
    // Push lines until the kernel buffers on both sides are full and our
    // writes stop being accepted: back-pressure reached all the way to us.
    let line_of = Bytes::from(
        vec![b'z'; 1023]
            .into_iter()
            .chain([b'\n'])
            .collect::<Vec<u8>>(),
    );
    let mut pushed = 0usize;
    loop {
        let wrote = tokio::time::timeout(Duration::from_millis(500), hog_write.write_all(&line_of));
        match wrote.await {
            Ok(result) => result.expect("write"),
            Err(_) => break,
        }
        pushed += 1;
        assert!(pushed < 1_000_000, "the server never pushed back");
    }
    let mut other = connect(server.addr).await;
    other
        .get_mut()
        .write_all(b"are you there?\n")
        .await
        .expect("write");
    assert_eq!(line(&mut other).await, b"are you there?\n");
    server.stop().await;
}

/// A client that sends but never reads our answers is dropped once it has
/// read nothing for the idle timeout, even though it keeps sending.
#[tokio::test]
async fn client_that_never_reads_is_dropped_after_idle_timeout() {
    let server = start(Config {
        idle_timeout: Duration::from_millis(300),
        ..echo()
    })
    .await;
    let hog = within("connect", TcpStream::connect(server.addr))
        .await
        .expect("connect");
    let (_hog_read, mut hog_write) = hog.into_split();
    let line_of = vec![b'z'; 1023]
        .into_iter()
        .chain([b'\n'])
        .collect::<Vec<u8>>();
    // Our writes succeed until every buffer on the way is full; then they
    // wait, and fail once the server gives up on us and resets.
    within("the server to drop the hog", async {
        while hog_write.write_all(&line_of).await.is_ok() {}
    })
    .await;
    server.stop().await;
}

/// A client that sends everything, half-closes, and only then reads (slowly)
/// still gets every answer: the server waits for it as for any reader (up to
/// the idle timeout), not just a moment before closing.
#[tokio::test]
async fn slow_reader_after_half_close_gets_every_answer() {
    // Small, fixed kernel buffers, so a few KiB of answers fill the way to
    // the client. Accepted sockets inherit the listener's SO_SNDBUF.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    socket.bind(&any.into()).expect("bind");
    socket.listen(128).expect("listen");
    socket.set_nonblocking(true).expect("non-blocking");
    let server = start_on(
        TcpListener::from_std(socket.into()).expect("listener"),
        echo(),
    );
    // Where the buffers fill up depends on the kernel, so we try every
    // length up to well past it: for some of them, the last answers are the
    // ones that do not fit while the client is not reading.
    let clients = (1..=64usize).map(|lines| {
        let addr = server.addr;
        tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            let mut conn = within("connect", socket.connect(addr))
                .await
                .expect("connect");
            let line: Vec<u8> = vec![b'q'; 1023].into_iter().chain([b'\n']).collect();
            conn.write_all(&line.repeat(lines)).await.expect("write");
            conn.shutdown().await.expect("half-close");
            // The slow reader: nothing for longer than the server's
            // two-second linger, then everything.
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let mut answers = Vec::new();
            within("the answers", conn.read_to_end(&mut answers))
                .await
                .expect("read");
            assert_eq!(answers.len(), lines * 1024, "answers to {lines} lines");
        })
    });
    for client in clients.collect::<Vec<_>>() {
        within("a client", client).await.expect("client task");
    }
    server.stop().await;
}

/// Shutdown stops accepting, answers lines already received, closes every
/// connection, and `run` returns.
#[tokio::test]
async fn graceful_shutdown_answers_then_closes() {
    let server = start(echo()).await;
    let addr = server.addr;
    let mut conn = connect(addr).await;
    conn.get_mut()
        .write_all(b"before shutdown\n")
        .await
        .expect("write");
    assert_eq!(line(&mut conn).await, b"before shutdown\n");
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        rest(&mut conn).await,
        b"",
        "connection closed without extra bytes"
    );
    drop(conn);
    within("shutdown", stopping).await.expect("stop");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed"
    );
}

/// In chat mode, shutdown tells each client before closing.
#[tokio::test]
async fn chat_shutdown_tells_clients() {
    let server = start(chat()).await;
    let mut conn = connect(server.addr).await;
    conn.get_mut().write_all(b"hello\n").await.expect("write");
    // Nobody else is there to hear it; a second client proves the first is in.
    let mut probe = connect(server.addr).await;
    let probe_addr = probe.get_ref().local_addr().expect("addr");
    assert_eq!(
        line(&mut conn).await,
        format!("[server] {probe_addr} joined\n").as_bytes()
    );
    let stopping = tokio::spawn(server.stop());
    assert_eq!(rest(&mut conn).await, b"[server] shutting down\n");
    assert_eq!(rest(&mut probe).await, b"[server] shutting down\n");
    drop((conn, probe));
    within("shutdown", stopping).await.expect("stop");
}

/// In chat mode, a client that never reads fills its TCP window and its
/// relay waits; the others still talk, and shutdown still ends that wait
/// instead of running into the grace period.
#[tokio::test]
async fn chat_client_that_never_reads_stalls_neither_others_nor_shutdown() {
    let server = start(Config {
        // Longer than any wait in this test: only a prompt shutdown passes.
        shutdown_grace: Duration::from_secs(60),
        ..chat()
    })
    .await;
    let hog = connect(server.addr).await;
    let mut talker = connect(server.addr).await;
    // 32 MiB of chat, far more than the kernel buffers between the server
    // and the hog hold: the hog's relay ends up waiting on a full window.
    let flood: Vec<u8> = vec![b'z'; 1023].into_iter().chain([b'\n']).collect();
    within("the flood", async {
        for _ in 0..32 * 1024 {
            talker.get_mut().write_all(&flood).await.expect("write");
        }
    })
    .await;

    let mut listener = connect(server.addr).await;
    let mut speaker = connect(server.addr).await;
    let speaker_addr = speaker.get_ref().local_addr().expect("addr");
    speaker
        .get_mut()
        .write_all(b"still here\n")
        .await
        .expect("write");
    let expected = format!("[{speaker_addr}] still here\n");
    // The listener may first get the tail of the flood and the join notice.
    within("the speaker's line", async {
        loop {
            let heard = line(&mut listener).await;
            assert!(!heard.is_empty(), "the listener was disconnected");
            if heard == expected.as_bytes() {
                break;
            }
        }
    })
    .await;

    server.stop().await;
    drop((hog, talker, listener, speaker));
}

/// The client sends all of its input, half-closes, and prints every answer
/// before returning at EOF.
#[tokio::test]
async fn client_prints_every_answer_before_eof() {
    let server = start(echo()).await;
    let stream = tcp::client::connect("127.0.0.1", server.addr.port(), common::WAIT).await;
    let input = futures_util::stream::iter(
        ["a\n", "b\n", "c\n"].map(|s| Ok::<_, io::Error>(Bytes::from_static(s.as_bytes()))),
    );
    let mut output = Vec::new();
    within(
        "the client",
        tcp::client::run(stream.expect("connect"), input, &mut output, false),
    )
    .await
    .expect("client result");
    assert_eq!(output, b"a\nb\nc\n");
    server.stop().await;
}

/// Nobody listening: the client's error names the address and suggests why.
#[tokio::test]
async fn client_reports_connection_refused() {
    // A socket that is bound but not listening holds the port (no other test
    // can take it) and makes our kernel refuse connections to it.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = held.local_addr().expect("addr");
    let error = tcp::client::connect("127.0.0.1", addr.port(), common::WAIT)
        .await
        .expect_err("nobody listens");
    let text = format!("{error:#}");
    assert!(
        text.starts_with(&format!("cannot connect to 127.0.0.1:{}: ", addr.port())),
        "{text}"
    );
    assert!(text.contains("is tcp_server running"), "{text}");
}

/// A server that resets the connection: the client prints what arrived
/// before the reset, then fails with an error naming the server.
#[tokio::test]
async fn client_reports_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        socket.write_all(b"partial answer\n").await.expect("write");
        // Wait for the client's line so we reset with it unread.
        let mut buf = [0u8; 64];
        let _ = socket.read(&mut buf).await;
        socket2::SockRef::from(&socket)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
    });
    let stream = tcp::client::connect("127.0.0.1", addr.port(), common::WAIT).await;
    let (input_tx, input_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    input_tx
        .send(Ok(Bytes::from_static(b"hello\n")))
        .await
        .expect("queue input");
    let input = tokio_stream_from(input_rx);
    let mut output = Vec::new();
    let error = within(
        "the client",
        tcp::client::run(stream.expect("connect"), input, &mut output, false),
    )
    .await
    .expect_err("reset");
    assert_eq!(output, b"partial answer\n");
    assert_eq!(format!("{error}"), format!("connection to {addr} failed"));
    assert!(format!("{error:#}").contains("reset"), "{error:#}");
}

/// A server that closes while the client still has input to send is an
/// error, not a silent success.
#[tokio::test]
async fn client_reports_a_server_that_closes_early() {
    let (addr, output, result) = client_against_a_server_that_says(b"bye\n").await;
    assert_eq!(output, b"bye\n");
    assert_eq!(
        result.expect_err("closed early").to_string(),
        format!("{addr} closed the connection before our input ended")
    );
}

/// Runs `tcp_client`'s loop, with input that never ends (like a terminal
/// nobody types into), against a server that sends `last_words` and closes.
/// Returns the server's address, what the client printed, and how it ended.
async fn client_against_a_server_that_says(
    last_words: &[u8],
) -> (SocketAddr, Vec<u8>, anyhow::Result<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let last_words = last_words.to_vec();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        socket.write_all(&last_words).await.expect("write");
        socket.shutdown().await.expect("close");
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink).await;
    });
    let stream = tcp::client::connect("127.0.0.1", addr.port(), common::WAIT).await;
    let (_keep_open, input_rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    let mut output = Vec::new();
    let result = within(
        "the client",
        tcp::client::run(
            stream.expect("connect"),
            tokio_stream_from(input_rx),
            &mut output,
            false,
        ),
    )
    .await;
    (addr, output, result)
}

/// A server that closes with the shutdown notice as its last line announced
/// an orderly end: the client returns `Ok` although its input goes on. The
/// notice must be a whole line: a line that merely ends with its text does
/// not count.
#[tokio::test]
async fn client_takes_an_announced_shutdown_as_a_normal_end() {
    for (sent, announced) in [
        (b"[server] shutting down\n".to_vec(), true),
        (b"hello\n[server] shutting down\n".to_vec(), true),
        (b"so [server] shutting down\n".to_vec(), false),
        (b"[server] shutting down".to_vec(), false),
    ] {
        let (_, output, result) = client_against_a_server_that_says(&sent).await;
        assert_eq!(output, sent);
        assert_eq!(result.is_ok(), announced, "{sent:?}: {result:?}");
    }
}

/// Turns an mpsc receiver into a stream of input chunks.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
