//! MQTT over WebSocket, up to CONNACK: the HTTP upgrade, and the client's
//! WebSocket read and written like a socket while its CONNECT is checked.
//!
//! A browser (or MQTT.js, or any MQTT client built for the web) opens
//! `ws://HOST:PORT/mqtt` and offers the subprotocol `mqtt` (MQTT spec §6,
//! [MQTT-6.0.0-4]; `mqttv3.1` is the name older clients offered). We check
//! what `websocket_server` checks, with the same code (`websocket/src/http.rs`
//! reads the request head, `websocket/src/origin.rs` decides whether the
//! page's `Origin` may connect), agree on the subprotocol, and answer `101
//! Switching Protocols`. From then on the client's bytes are MQTT's, inside
//! binary messages, and go through the same front door as a TCP client's:
//! the same CONNECT checks, limits, sessions and log lines.
//!
//! A browser that asks for `/` without upgrading gets a page
//! (`page.html`) whose own MQTT client, a few dozen lines of JavaScript,
//! connects back to `/mqtt`: subscribe, publish, and watch messages arrive.
//!
//! What a refused upgrade gets, in plain HTTP before the connection closes:
//! 404 for another path, 403 for a page from another site (`--allow-origin`
//! lets it in), 400 for a request to `/mqtt` without `Upgrade: websocket`
//! or with subprotocols of which none is MQTT's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{create_response, write_response};
use tracing::{info, warn};
use websocket::http::{self, Head};
use websocket::origin::ForeignOrigin;

use super::Door;
use super::relay::websocket::WsSession;

/// The subprotocols we agree on, in our order of preference: `mqtt` is MQTT
/// 3.1.1's and 5's name [MQTT-6.0.0-4], `mqttv3.1` the one clients of MQTT
/// 3.1 offered (and some still do).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The page served at `GET /`: MQTT in the browser, its client written by
/// hand in a few dozen lines of JavaScript.
pub const PAGE: &str = include_str!("page.html");

/// The paths MQTT is served at: `/mqtt`, where clients look by default, and
/// `/`.
pub const PATHS: [&str; 2] = ["/mqtt", "/"];

impl Door {
    /// Runs the HTTP upgrade on a new connection at the WebSocket port (the
    /// request head within `websocket::http::HEAD_TIMEOUT`). `None`, logged
    /// and answered in plain HTTP where the client can read it, if it is
    /// not a WebSocket upgrade we accept.
    pub(super) async fn upgrade(&self, tcp: TcpStream, peer: SocketAddr) -> Option<WsStream> {
        let mut stream = websocket::Stream::Left(tcp);
        let head = match http::read_request(&mut stream).await {
            Ok(head) => head,
            Err(error) => {
                info!(%peer, "closed a WebSocket connection: {error}");
                return None;
            }
        };
        let (request, leftover) = match head {
            Head::Complete(request, leftover) => (request, leftover),
            Head::Invalid(why) => return refuse(stream, peer, "400 Bad Request", why).await,
            Head::NotGet => {
                return refuse(stream, peer, "405 Method Not Allowed", "only GET".into()).await;
            }
            Head::TooLarge => {
                return refuse(
                    stream,
                    peer,
                    "431 Request Header Fields Too Large",
                    "a head over 8 KiB".into(),
                )
                .await;
            }
            Head::Tls => {
                warn!(
                    %peer,
                    "refused: a TLS handshake, and the WebSocket port speaks ws://, not wss://"
                );
                return None;
            }
        };
        let path = request.uri().path();
        if !PATHS.contains(&path) {
            let why = format!("nothing at {path}: MQTT over WebSocket is at /mqtt");
            return refuse(stream, peer, "404 Not Found", why).await;
        }
        if !request.headers().contains_key("upgrade") {
            // A browser asking for the page: it connects back to /mqtt.
            if path == "/" {
                info!(%peer, "served the page (GET /)");
                let _ = http::answer(stream, "200 OK", path, http::HTML, PAGE).await;
                return None;
            }
            let why = "not a WebSocket upgrade: this port speaks MQTT over WebSocket \
                       (ws://HOST:PORT/mqtt, subprotocol mqtt)";
            return refuse(stream, peer, "400 Bad Request", why.into()).await;
        }
        // A page in a browser may only connect from an Origin we allow,
        // exactly as with websocket_server (see websocket/src/origin.rs).
        if let Err(ForeignOrigin(origin)) = self.config.websocket_origins.check(&request, false) {
            warn!(
                %peer, %origin,
                "refused a WebSocket upgrade from another site's page (403) \
                 (to allow it, pass --allow-origin {origin})"
            );
            let why = "forbidden: WebSocket connections from that page's Origin are not allowed";
            let _ = http::answer(stream, "403 Forbidden", "", http::TEXT, why).await;
            return None;
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .collect();
        // A client that names no subprotocol (a WebSocket tool) gets MQTT
        // all the same; one that names others, and not MQTT's, would not
        // understand our packets.
        let agreed = SUBPROTOCOLS.into_iter().find(|ours| offered.contains(ours));
        if agreed.is_none() && !offered.is_empty() {
            let why = format!(
                "the client offered the subprotocols {}, and none is MQTT's (mqtt)",
                offered.join(", ")
            );
            return refuse(stream, peer, "400 Bad Request", why).await;
        }
        let mut response = match create_response(&request) {
            Ok(response) => response,
            Err(error) => return refuse(stream, peer, "400 Bad Request", error.to_string()).await,
        };
        // `agreed` is one of our constants, always a valid header value.
        if let Some(value) = agreed.and_then(|agreed| agreed.parse().ok()) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        let mut head = Vec::new();
        // Writing into a Vec fails only for a malformed response, which
        // create_response does not make; if it ever did, we close.
        if let Err(error) = write_response(&mut head, &response) {
            info!(%peer, "closed a WebSocket connection: {error}");
            return None;
        }
        // This port is plain TCP: the stream is always `Left`.
        let websocket::Stream::Left(mut tcp) = stream else {
            return None;
        };
        if let Err(error) = tcp.write_all(&head).await {
            info!(%peer, "closed a WebSocket connection: {error}");
            return None;
        }
        // A message is at most one whole packet of the largest size we take,
        // and the 5 bytes of its fixed header, or a few small packets.
        let max_message = (self.config.limits.max_packet_bytes.saturating_add(5)).max(64 * 1024);
        let session = WsSession::new(leftover, max_message);
        Some(WsStream::new(tcp, session))
    }
}

/// Answers a refused upgrade in plain HTTP, logs why, and closes.
async fn refuse(
    stream: websocket::Stream,
    peer: SocketAddr,
    status: &'static str,
    why: String,
) -> Option<WsStream> {
    info!(%peer, "refused a WebSocket upgrade: {why} ({status})");
    let _ = http::answer(stream, status, "", http::TEXT, &why).await;
    None
}

/// A client's WebSocket as a byte stream, until CONNACK: reads give the
/// payloads of its binary messages, each write goes out as one binary
/// message. After CONNACK the relay takes it apart (`WsStream::into_parts`)
/// and waits on the socket itself.
#[derive(Debug)]
pub struct WsStream {
    tcp: TcpStream,
    session: WsSession,
    /// Payload bytes unwrapped and not yet read.
    unread: BytesMut,
    /// Whether our Close frame is on its way.
    closing: bool,
}

impl WsStream {
    fn new(tcp: TcpStream, session: WsSession) -> Self {
        WsStream {
            tcp,
            session,
            unread: BytesMut::new(),
            closing: false,
        }
    }

    /// The socket, the WebSocket's state, and the payload bytes unwrapped
    /// and not yet read (they come after everything read so far).
    pub(super) fn into_parts(self) -> (TcpStream, WsSession, BytesMut) {
        (self.tcp, self.session, self.unread)
    }

    /// Writes what waits in tungstenite, waiting for the socket as needed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.session.flush(&self.tcp)?;
            if !self.session.wants_write() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        loop {
            if !me.unread.is_empty() {
                let n = me.unread.len().min(buf.remaining());
                buf.put_slice(&me.unread.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match me.session.read(&me.tcp, &mut me.unread) {
                // The end: a Close frame, or TCP's end.
                Ok(0) => return Poll::Ready(Ok(())),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    ready!(me.tcp.poll_read_ready(cx))?;
                }
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        ready!(me.poll_drain(cx))?;
        me.session.send(&me.tcp, Bytes::copy_from_slice(buf))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx)
    }

    /// A Close frame, then TCP's FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if !me.closing {
            me.closing = true;
            me.session.send_close(&me.tcp);
        }
        ready!(me.poll_drain(cx))?;
        Pin::new(&mut me.tcp).poll_shutdown(cx)
    }
}
