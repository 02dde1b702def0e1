//! The first bytes of every connection: an HTTP request, upgraded or answered.
//!
//! A WebSocket connection begins as HTTP/1.1 on a plain TCP connection:
//!
//! ```text
//! GET / HTTP/1.1                          HTTP/1.1 101 Switching Protocols
//! Host: 127.0.0.1:8765                    Connection: Upgrade
//! Connection: Upgrade               -->   Upgrade: websocket
//! Upgrade: websocket                <--   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
//! Sec-WebSocket-Version: 13
//! Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
//! ```
//!
//! The accept value is a hash of the client's random key, which proves the
//! server really speaks WebSocket (a cache or an old server would not know
//! how to compute it). After the blank line that ends the 101 answer, the same
//! TCP connection carries WebSocket frames.
//!
//! A browser asking for the page sends the same `GET /` without the `Upgrade`
//! header, so we read the request head ourselves and decide: upgrade it, serve
//! the page, or answer 404 and close. tungstenite parses the head and writes
//! the 101 answer; the few plain answers are written here by hand, which is
//! all the HTTP this lesson needs (it is not a web server).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, create_response, write_response};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::Stream;
use crate::origin::{AllowedOrigins, ForeignOrigin};

/// The browser page served at `/`: one self-contained HTML file.
pub const PAGE: &str = include_str!("page.html");

/// The content type of the page.
pub const HTML: &str = "text/html; charset=utf-8";
/// The content type of our plain-text answers.
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A request head larger than this is refused (431): without a limit, a
/// client could make us buffer without end.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A client gets this long to send its request head. A browser sends it at
/// once; a longer wait would only let idle connections pile up.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer that refuses a connection when the server is at its limit.
pub const BUSY: &str = "server busy: too many connections; try again later";

/// What became of a new connection.
#[derive(Debug)]
pub enum Accepted {
    /// The client asked for WebSocket and got it, with one of the server's
    /// connection slots, held until the connection ends.
    Upgraded(Box<WebSocketStream<Stream>>, OwnedSemaphorePermit),
    /// We answered `503 Service Unavailable` and closed: every connection
    /// slot is taken.
    Busy,
    /// We answered with plain HTTP (the page, a 404, ...) and closed.
    Answered { status: &'static str, path: String },
    /// A page from another site asked to upgrade; we answered 403 and closed.
    Forbidden { origin: String },
}

/// Reads the request head of a new connection, for at most [`HEAD_TIMEOUT`].
/// Fails if the client sends none in time or closes first.
pub async fn read_request(stream: &mut Stream) -> io::Result<Head> {
    timeout(HEAD_TIMEOUT, read_head(stream))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no request within {HEAD_TIMEOUT:?}"),
            )
        })?
}

/// Answers a request head from [`read_request`]: upgrades it to WebSocket,
/// or answers it with plain HTTP and closes.
///
/// An upgrade takes a slot from `slots`, the server's connection limit; with
/// none free, the client gets `503 Service Unavailable`. Only an upgrade
/// takes a slot, and only once its request is complete: clients that
/// connect and send nothing (or half a request) cannot use up the limit.
/// An upgrade from a page that `origins` does not allow gets `403 Forbidden`.
pub async fn respond(
    mut stream: Stream,
    head: Head,
    config: WebSocketConfig,
    slots: &Arc<Semaphore>,
    origins: &AllowedOrigins,
    protocols: &[String],
) -> io::Result<Accepted> {
    let (request, leftover) = match head {
        Head::Complete(request, leftover) => (request, leftover),
        Head::Invalid(why) => return answer(stream, "400 Bad Request", "", TEXT, &why).await,
        // A plain-HTTP answer would be garbage to a TLS client: we close, and
        // its handshake fails with "the server closed the connection".
        Head::Tls => {
            let why = "a TLS handshake, and this server speaks plain HTTP (start it with --tls)";
            return Err(io::Error::new(io::ErrorKind::InvalidData, why));
        }
        Head::NotGet => {
            let why = "only GET is served here";
            return answer(stream, "405 Method Not Allowed", "", TEXT, why).await;
        }
        Head::TooLarge => {
            return answer(stream, "431 Request Header Fields Too Large", "", TEXT, "").await;
        }
    };
    let path = request.uri().path().to_string();
    if path != "/" {
        return answer(stream, "404 Not Found", &path, TEXT, "not found: try /").await;
    }
    // No `Upgrade` header: a browser (or curl) asking for the page.
    if !request.headers().contains_key("upgrade") {
        return answer(stream, "200 OK", &path, HTML, PAGE).await;
    }
    // RFC 6455 §10.2: a browser names the page that opens a WebSocket in its
    // `Origin` header, and a page from another site must not get in (see
    // `origin.rs`). §4.2.2 says how to refuse: an HTTP error such as 403.
    let tls = matches!(stream, Stream::Right(_));
    if let Err(ForeignOrigin(origin)) = origins.check(&request, tls) {
        let why = "forbidden: WebSocket connections from that page's Origin are not allowed";
        answer(stream, "403 Forbidden", &path, TEXT, why).await?;
        return Ok(Accepted::Forbidden { origin });
    }
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        answer(stream, "503 Service Unavailable", &path, TEXT, BUSY).await?;
        return Ok(Accepted::Busy);
    };
    // tungstenite checks the upgrade headers and computes the accept key.
    let mut response = match create_response(&request) {
        Ok(response) => response,
        Err(error) => {
            return answer(stream, "400 Bad Request", &path, TEXT, &error.to_string()).await;
        }
    };
    // The client offers subprotocols in its order of preference; we agree
    // on the first we speak, or on none, and then say nothing: the client
    // decides whether to go on without one (RFC 6455 §4.2.2).
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim);
    if let Some(agreed) = offered
        .into_iter()
        .find(|name| protocols.iter().any(|ours| ours == name))
        && let Ok(value) = agreed.parse()
    {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", value);
    }
    let mut head = Vec::new();
    write_response(&mut head, &response).map_err(io::Error::other)?;
    stream.write_all(&head).await?;
    // A client may send its first frames right behind the request, in the
    // same read: `leftover` hands those bytes to tungstenite.
    let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config));
    Ok(Accepted::Upgraded(Box::new(ws.await), slot))
}

/// A request head, or why there is none.
#[derive(Debug)]
pub enum Head {
    /// The parsed request and any bytes that came after its blank line.
    Complete(Box<Request>, Vec<u8>),
    Invalid(String),
    /// A well-formed request with another method than GET (POST, HEAD...).
    NotGet,
    TooLarge,
    /// The bytes of a TLS handshake (a record of type 22, version 3.x): a
    /// `wss://` or `https://` client at our plain port.
    Tls,
}

/// Reads until the blank line that ends the request head. The head arrives
/// as TCP bytes like anything else: it may come in several reads.
async fn read_head(stream: &mut Stream) -> io::Result<Head> {
    let mut head = Vec::new();
    loop {
        // `try_parse` returns `None` until the head is complete. It refuses
        // anything but `GET` over HTTP/1.1 or later, which is all we serve:
        // another method gets 405, anything else it refuses 400.
        if head.starts_with(&[22, 3]) {
            return Ok(Head::Tls);
        }
        match Request::try_parse(&head) {
            Ok(Some((length, request))) => {
                let leftover = head.split_off(length);
                return Ok(Head::Complete(Box::new(request), leftover));
            }
            Ok(None) => {}
            Err(Error::Protocol(ProtocolError::WrongHttpMethod)) => return Ok(Head::NotGet),
            Err(error) => return Ok(Head::Invalid(error.to_string())),
        }
        if head.len() >= MAX_HEAD_BYTES {
            return Ok(Head::TooLarge);
        }
        // We read straight into `head`'s spare room: a buffer on the stack
        // would make every connection's task that much larger, for its whole
        // life. The room is taken only once bytes have arrived, so a client
        // that connects and says nothing costs no buffer.
        // (A TLS stream decrypts into buffers of its own, which the socket's
        // readiness does not show: it takes the room at once.)
        if let Stream::Left(tcp) = stream {
            tcp.readable().await?;
        }
        head.reserve(1024);
        if stream.read_buf(&mut head).await? == 0 {
            let why = "closed before sending a complete request";
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
    }
}

/// Sends a complete HTTP answer (`status`, then `body` of `content_type`)
/// and closes the connection; `path` is the request's, for the result.
/// Errors: the stream's.
pub async fn answer(
    mut stream: Stream,
    status: &'static str,
    path: &str,
    content_type: &str,
    body: &str,
) -> io::Result<Accepted> {
    let head = response_head(status, content_type, body);
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    close_gently(stream).await;
    Ok(Accepted::Answered {
        status,
        path: path.to_string(),
    })
}

/// The status line and headers of a plain answer with `body`.
fn response_head(status: &str, content_type: &str, body: &str) -> String {
    // `Content-Length` tells the client where the body ends, and
    // `Connection: close` that we close after it. A 405 must say which
    // methods are allowed.
    let allow = if status.starts_with("405") {
        "Allow: GET\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         {allow}Connection: close\r\n\r\n",
        body.len()
    )
}

/// Refuses a connection accepted with the process's last file descriptor
/// (see `networking_protocols::accept`): the 503 goes into the socket's empty
/// send buffer at once, and we close without waiting for the request, to
/// free the descriptor for the next client. We first read whatever the client
/// already sent, so that closing sends a normal FIN rather than a reset that
/// could destroy the answer (see [`close_gently`]).
pub fn refuse_now(stream: TcpStream) {
    let status = "503 Service Unavailable";
    let answer = response_head(status, TEXT, BUSY) + BUSY;
    let _ = stream.try_write(answer.as_bytes());
    let mut sink = [0u8; 1024];
    while matches!(stream.try_read(&mut sink), Ok(1..)) {}
}

/// Answers a plaintext request at our TLS port in plain HTTP (the one
/// answer its client can read), then closes.
pub async fn refuse_plaintext(stream: TcpStream) {
    let why = "this server speaks TLS: use https:// or wss://";
    let _ = answer(Stream::Left(stream), "400 Bad Request", "", TEXT, why).await;
}

/// Closes without losing what we sent: see
/// [`networking_protocols::close_gently`].
pub async fn close_gently(stream: Stream) {
    networking_protocols::close_gently(stream).await;
}
