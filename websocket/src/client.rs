//! The WebSocket client: connect to a `ws://` URL, then send and receive at
//! the same time.
//!
//! A WebSocket connection is full duplex: either side may send a message at
//! any moment. [`run`] splits the connection into a sending half (a `Sink`)
//! and a receiving half (a `Stream`) and drives both at once, so messages
//! print as they arrive while you type. That is what makes the client work for
//! chat, where messages come at any time, and not only for echo.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, Stream, StreamExt};
use networking_protocols::tls::client::{self as tls, ClientTlsArgs, TlsStream};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::either::Either;
use tracing::info;

use crate::close::CLOSE_TIMEOUT;
use crate::{CloseCode, CloseFrame};

mod explain;
use explain::explain;

/// A client's connection, as [`connect`] returns it.
pub type Socket = WebSocketStream<Connection>;

/// How many of the server's first bytes we keep: enough for a status line.
const KEPT: usize = 256;

/// The connection under a client's WebSocket: TCP (`ws://`), or TLS over
/// TCP (`wss://`). It keeps a copy of the first bytes the server sent: when
/// the server does not upgrade, its status line says what it is.
#[derive(Debug)]
pub struct Connection {
    stream: Either<TcpStream, Box<TlsStream<TcpStream>>>,
    /// A copy of the first [`KEPT`] bytes read, shared with [`connect`].
    first_bytes: Arc<Mutex<Vec<u8>>>,
    /// How many are kept: past [`KEPT`], reads cost no lock.
    kept: usize,
}

impl Connection {
    /// The TCP connection, for its addresses.
    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Either::Left(tcp) => tcp,
            Either::Right(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.kept < KEPT {
            let new = &buf.filled()[before..];
            let new = &new[..new.len().min(KEPT - self.kept)];
            if let Ok(mut first_bytes) = self.first_bytes.lock() {
                first_bytes.extend_from_slice(new);
            }
            self.kept += new.len();
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How a session ended, when it ended with a closing handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// We sent Close (our input ended) and the server answered with this.
    WeClosed(Option<CloseFrame>),
    /// The server sent Close first, with this code and reason (or none).
    ServerClosed(Option<CloseFrame>),
}

/// Connects to a WebSocket server: a TCP connection, then the HTTP upgrade
/// request. Every error names the URL: a bad URL, nobody listening, or a
/// server that answers with plain HTTP instead of `101 Switching Protocols`.
/// A `wss://` URL trusts the system's CAs; see [`connect_with`].
pub async fn connect(url: &str, wait: Duration) -> anyhow::Result<Socket> {
    connect_with(url, wait, &ClientTlsArgs::default(), &Upgrade::default()).await
}

/// What the upgrade request carries beyond what the URL says: headers of
/// the user's own (an `Authorization` token, a cookie: how most real
/// endpoints are reached), and the subprotocols it offers
/// (`Sec-WebSocket-Protocol`, RFC 6455 §1.9), of which the server picks one
/// or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgrade {
    pub headers: Vec<(String, String)>,
    pub protocols: Vec<String>,
}

/// [`connect`], with TLS options for a `wss://` URL: WebSocket over TLS,
/// whose handshake comes between TCP's and the HTTP upgrade. Errors also: the
/// TLS failures that `networking_protocols::tls::client::explain` names, and
/// TLS options given with a `ws://` URL.
pub async fn connect_with(
    url: &str,
    wait: Duration,
    tls: &ClientTlsArgs,
    upgrade: &Upgrade,
) -> anyhow::Result<Socket> {
    let mut request = url
        .into_client_request()
        .map_err(|error| anyhow!("bad URL {url:?}: {error}; expected ws://HOST:PORT/PATH"))?;
    let protocols = upgrade.protocols.join(", ");
    let offered =
        (!protocols.is_empty()).then(|| ("Sec-WebSocket-Protocol".to_string(), protocols));
    for (name, value) in upgrade.headers.iter().chain(&offered) {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| anyhow!("-H {name:?}: not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| anyhow!("-H {name}: {value:?} is not a header value"))?;
        request.headers_mut().append(header, value);
    }
    let tls_config = match (request.uri().scheme_str(), tls.first_given()) {
        (Some("ws"), None) => None,
        (Some("ws"), Some(flag)) => bail!("{flag} is a TLS option: use a wss:// URL"),
        (Some("wss"), _) => Some(tls.config()?),
        _ => bail!("bad URL {url:?}: expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH"),
    };
    // A port that does not fit in 16 bits (`:99999`) reads as no port at all,
    // and tungstenite would quietly connect to port 80 instead.
    let authority = request.uri().authority().map_or("", |a| a.as_str());
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if let Some((_, port)) = host_port.rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        bail!("bad URL {url:?}: the port must be a number from 0 to 65535");
    }
    // `[::1]` in a URL is the address ::1.
    let host = (request.uri().host().unwrap_or_default())
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let default_port = if tls_config.is_some() { 443 } else { 80 };
    let port = request.uri().port_u16().unwrap_or(default_port);
    let first_bytes = Arc::new(Mutex::new(Vec::new()));
    let shared = first_bytes.clone();
    let connecting = async move {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|error| explain(url, WsError::Io(error), &[]))?;
        // Send each message at once rather than merge small writes (Nagle's
        // algorithm): an interactive client wants low latency.
        let _ = tcp.set_nodelay(true);
        // wss://: the TLS handshake, then the same upgrade inside TLS.
        let stream = match tls_config {
            None => Either::Left(tcp),
            Some(config) => {
                let connected = tls::connect(config, &host, tcp).await;
                Either::Right(Box::new(
                    connected.context(format!("cannot connect to {url}"))?,
                ))
            }
        };
        let connection = Connection {
            stream,
            first_bytes: shared,
            kept: 0,
        };
        // tungstenite sends the upgrade request and checks the answer.
        let upgraded = tokio_tungstenite::client_async_with_config(request, connection, None).await;
        upgraded.map_err(|error| {
            let first_bytes = first_bytes.lock().map(|b| b.clone()).unwrap_or_default();
            explain(url, error, &first_bytes)
        })
    };
    match timeout(wait, connecting).await {
        Ok(Ok((socket, response))) => {
            // tungstenite has checked that the server chose one of the
            // subprotocols we offered, if we offered any (RFC 6455 §4.1).
            if let Some(chosen) = response.headers().get("sec-websocket-protocol") {
                info!("the server chose subprotocol {chosen:?}");
            }
            Ok(socket)
        }
        Ok(Err(error)) => Err(error),
        Err(_) => bail!("cannot connect to {url}: no answer within {wait:?}"),
    }
}

/// Sends every message of `input` while writing every message from the server
/// to `output`, one per line (text as it is, binary as hex), until the
/// closing handshake is done.
///
/// When `input` ends we wait until each message we sent has had one back (or
/// nothing has arrived for `answer_wait`), then send Close 1000 and wait for
/// the server's Close. When `stop` resolves (Ctrl-C) we send Close 1001 at
/// once. Errors: the connection broke, or ended without a Close frame.
pub async fn run<S, I, O>(
    socket: WebSocketStream<S>,
    input: I,
    mut output: O,
    answer_wait: Duration,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<Ending>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: Stream<Item = io::Result<Message>>,
    O: AsyncWrite + Unpin,
{
    // `split` gives two handles on one connection; each can be used by its
    // own future, so sending never waits for receiving or the other way round.
    let (mut to_server, mut from_server) = socket.split();
    // The receiving half counts what arrived; the sending half watches the
    // count to know when the answers to its messages are in.
    let (count, mut counted) = watch::channel(0u64);

    let send = async move {
        futures_util::pin_mut!(input, stop);
        let mut sent = 0;
        let mut code = CloseCode::Normal;
        let mut input_error = None;
        loop {
            let next = tokio::select! {
                next = input.next() => next,
                () = &mut stop => { code = CloseCode::Away; break; }
            };
            match next {
                Some(Ok(message)) => {
                    to_server.send(message).await.map_err(broken)?;
                    sent += 1;
                }
                Some(Err(error)) => {
                    input_error = Some(error);
                    break;
                }
                None => break,
            }
        }
        if code == CloseCode::Normal {
            tokio::select! {
                () = answers(&mut counted, sent, answer_wait) => {}
                () = &mut stop => code = CloseCode::Away,
            }
        }
        // A WebSocket Close is a message too: it goes through the same sink.
        let close = crate::close::frame(code, "");
        to_server
            .send(Message::Close(Some(close)))
            .await
            .map_err(broken)?;
        // Our Close is out; a failed input is reported once the server answers.
        anyhow::Ok(input_error.map(|error| anyhow::Error::new(error).context("cannot read input")))
    };

    let receive = async move {
        let mut received = 0;
        let mut close = None;
        while let Some(message) = from_server.next().await {
            match message.map_err(broken)? {
                Message::Text(text) => print(&mut output, text.as_bytes()).await?,
                Message::Binary(bytes) => print(&mut output, hex(&bytes).as_bytes()).await?,
                // tungstenite answers pings by itself, while we read.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(frame) => {
                    close = Some(frame);
                    continue;
                }
            }
            received += 1;
            count.send_replace(received);
        }
        // The stream ends after the closing handshake (a dropped TCP
        // connection is an error, above), so a Close frame is expected here.
        close.ok_or_else(|| anyhow!(WITHOUT_CLOSE))
    };

    tokio::pin!(send, receive);
    let mut we_closed = false;
    let mut input_error = None;
    let mut send_error = None;
    loop {
        tokio::select! {
            sent = &mut send, if !we_closed && send_error.is_none() => match sent {
                Ok(error) => (we_closed, input_error) = (true, error),
                // Usually the server went away: let the receiving half finish
                // first, so its last messages and its Close are reported.
                Err(error) => send_error = Some(error),
            },
            received = &mut receive => {
                let frame = received?;
                if let Some(error) = input_error {
                    return Err(error);
                }
                return Ok(if we_closed { Ending::WeClosed(frame) } else { Ending::ServerClosed(frame) });
            }
            () = tokio::time::sleep(CLOSE_TIMEOUT), if we_closed || send_error.is_some() => {
                return Err(send_error.unwrap_or_else(|| {
                    anyhow!("no Close answer from the server within {CLOSE_TIMEOUT:?}")
                }));
            }
        }
    }
}

/// How we report a TCP connection that ends with no Close frame: code 1006,
/// which never travels on the wire; it only names this case.
const WITHOUT_CLOSE: &str = "the connection closed without a Close frame (1006, abnormal)";

/// Explains a failed read or write. A tungstenite error printed as an anyhow
/// chain shows its cause twice (`IO error: X: X`), so we keep its own text.
fn broken(error: WsError) -> anyhow::Error {
    match error {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => anyhow!(WITHOUT_CLOSE),
        error => anyhow!("connection failed: {error}"),
    }
}

/// Waits until `sent` messages have come back, or nothing has arrived for
/// `quiet` (a chat server answers no one in particular).
async fn answers(received: &mut watch::Receiver<u64>, sent: u64, quiet: Duration) {
    while *received.borrow_and_update() < sent {
        match timeout(quiet, received.changed()).await {
            Ok(Ok(())) => continue,
            _ => return,
        }
    }
}

/// Writes one message as one line and flushes, so it shows at once.
async fn print<O: AsyncWrite + Unpin>(output: &mut O, line: &[u8]) -> anyhow::Result<()> {
    output
        .write_all(line)
        .await
        .context("cannot write output")?;
    output
        .write_all(b"\n")
        .await
        .context("cannot write output")?;
    output.flush().await.context("cannot write output")
}

/// Bytes as lowercase hex, two digits per byte: `[0, 255]` is `00ff`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Each line of `reader` (without its `\n` or `\r\n`) as one message: text,
/// or with `binary` the line's bytes as they are.
pub fn lines<R>(reader: R, binary: bool) -> impl Stream<Item = io::Result<Message>>
where
    R: AsyncRead + Unpin,
{
    let lines = BufReader::new(reader).split(b'\n');
    futures_util::stream::unfold((lines, 1u64), move |(mut lines, number)| async move {
        let mut line = match lines.next_segment().await {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(error) => return Some((Err(error), (lines, number))),
        };
        if line.ends_with(b"\r") {
            line.pop();
        }
        let message = if binary {
            Ok(Message::binary(line))
        } else {
            String::from_utf8(line).map(Message::text).map_err(|_| {
                let why = format!("line {number} is not UTF-8 text; pass --binary to send bytes");
                io::Error::new(io::ErrorKind::InvalidData, why)
            })
        };
        Some((message, (lines, number + 1)))
    })
}

/// The input for `-m`: `text` as one message, `count` times, `interval` apart.
pub fn repeat(
    text: &str,
    binary: bool,
    count: u64,
    interval: Duration,
) -> impl Stream<Item = io::Result<Message>> + use<> {
    let message = if binary {
        Message::binary(text.as_bytes().to_vec())
    } else {
        Message::text(text)
    };
    futures_util::stream::iter(0..count).then(move |i| {
        let message = message.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok(message)
        }
    })
}
