//! A new connection, up to a CONNECT we accept: the TLS handshake (with
//! `--tls`) or the WebSocket upgrade (`websocket.rs`), the CONNECT read
//! within the connect timeout and checked (`connect.rs`), and the refusals,
//! each with the CONNACK code the spec names, or a close without a word
//! where the spec says so.

use std::io;
use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use networking_protocols::accept::{Acceptor, Incoming};
use networking_protocols::tls::server::{self as tls_server, Handshake, TlsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::either::Either;
use tracing::{info, warn};

use super::Door;
use super::connect::{self, Connect, Refusal};
use super::websocket::WsStream;
use crate::wire::{self, ConnackCode, kind};

/// MQTT 5's CONNACK 0x89, Server busy (spec §3.2.2.2).
const SERVER_BUSY: u8 = 0x89;

/// Why a new connection brought no CONNECT, for the log.
#[derive(Debug)]
pub(super) enum NoConnect {
    /// It started a TLS handshake at a plaintext port: a mistake of setup
    /// rather than of one client, so it is logged as a warning (as the TLS
    /// port's refusals are).
    TlsAtPlaintextPort,
    /// Anything else: the first packet is not a CONNECT, is malformed, or
    /// did not come in time.
    Other(String),
}

impl std::fmt::Display for NoConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoConnect::TlsAtPlaintextPort => f.write_str(
                "refused: a TLS handshake, and this port speaks MQTT without TLS: \
                 start the broker with --tls (its default port is then 8883)",
            ),
            NoConnect::Other(why) => f.write_str(why),
        }
    }
}

/// A client's connection until its CONNACK: plain TCP, or TLS over TCP
/// (tokio-rustls, which reads and writes like a socket), or a WebSocket
/// (`websocket.rs`, which reads and writes like a socket too).
pub(super) type ClientStream = Either<Either<TcpStream, Box<TlsStream<TcpStream>>>, Box<WsStream>>;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Transport {
    /// MQTT over TCP, or over TLS with `--tls`.
    Mqtt,
    /// MQTT over WebSocket (`websocket.rs`).
    WebSocket,
}

/// The next connection on `listener`, or never, without one.
pub(super) async fn accept(listener: &mut Option<Acceptor>) -> Incoming {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

impl Door {
    /// What comes before MQTT's first packet on a new connection: the TLS
    /// handshake (`handshake.rs`), or the WebSocket upgrade
    /// (`websocket.rs`). `None`, logged, if it failed.
    pub(super) async fn open(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        transport: Transport,
    ) -> Option<ClientStream> {
        match transport {
            Transport::Mqtt => self.handshake(stream, peer).await,
            Transport::WebSocket => {
                (self.upgrade(stream, peer).await).map(|ws| Either::Right(Box::new(ws)))
            }
        }
    }

    /// Reads and checks the CONNECT. `None` (logged, answered where the spec
    /// says so) if there is none, it is malformed, or it is refused.
    /// Otherwise the connection, the CONNECT, and any bytes the client sent
    /// after it (a client need not wait for CONNACK).
    pub(super) async fn admit(
        &self,
        mut client: ClientStream,
        peer: SocketAddr,
    ) -> Option<(ClientStream, Connect, BytesMut)> {
        let (frame, early) = match self.read_connect(&mut client).await {
            Ok(read) => read,
            Err(why @ NoConnect::TlsAtPlaintextPort) => {
                warn!(%peer, "{why}");
                return None;
            }
            Err(why) => {
                info!(%peer, "closed a connection: {why}");
                return None;
            }
        };
        let checked = match connect::parse(&frame) {
            // A password file's hashes take PBKDF2's rounds to check: on a
            // thread for such work, not on one that serves clients.
            Ok(c) if self.config.logins.required() => {
                let logins = self.config.logins.clone();
                tokio::task::spawn_blocking(move || connect::check_login(&c, &logins).map(|()| c))
                    .await
                    .unwrap_or_else(|error| {
                        Err(Refusal::Connack(
                            ConnackCode::ServerUnavailable,
                            format!("the login check failed: {error}"),
                        ))
                    })
            }
            parsed => parsed,
        };
        let v5 = connect::level(&frame) == Some(wire::V5);
        // The packet's buffer is not needed past here; an idle client should
        // not keep it.
        drop(frame);
        match checked {
            Ok(connect) => Some((client, connect, early)),
            Err(Refusal::Connack(code, why)) => {
                let connack = if v5 {
                    wire::connack_v5(false, code.v5(), &[0])
                } else {
                    Bytes::copy_from_slice(&wire::connack(false, code))
                };
                self.refuse(client, peer, &connack, &why).await;
                None
            }
            Err(Refusal::ConnackV5(code, why)) => {
                self.refuse(client, peer, &wire::connack_v5(false, code, &[0]), &why)
                    .await;
                None
            }
            Err(Refusal::Close(violation)) => {
                warn!(%peer, "closed a connection: {violation}");
                None
            }
        }
    }

    /// Answers a refused CONNECT with `connack`, says why in the log, and
    /// closes.
    async fn refuse(&self, mut client: ClientStream, peer: SocketAddr, connack: &[u8], why: &str) {
        // The code is the fourth byte of either version's CONNACK; 3.1.1's
        // (remaining length 2) are small numbers, MQTT 5's read in hex.
        let code = connack.get(3).copied().unwrap_or(0);
        let code = if connack.get(1) == Some(&2) {
            code.to_string()
        } else {
            format!("{code:#04x}")
        };
        warn!(%peer, "refused a client: {why} (CONNACK {code})");
        let _ = write_flushed(&mut client, connack).await;
        networking_protocols::close_gently(client).await;
    }

    /// With `--tls`, runs the TLS handshake (for at most
    /// [`tls_server::HANDSHAKE_TIMEOUT`]); without, hands the connection
    /// back as it is. `None`, logged, if the handshake failed or the client
    /// speaks plaintext at the TLS port.
    pub(super) async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<ClientStream> {
        let Some(config) = &self.config.tls else {
            return Some(Either::Left(Either::Left(tcp)));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        match tls_server::accept(&acceptor, tcp).await {
            Handshake::Done(tls) => Some(Either::Left(Either::Right(tls))),
            Handshake::NotTls(_) => {
                warn!(
                    %peer,
                    "refused: not TLS, and this port speaks MQTT over TLS only: the client \
                     needs --tls (mosquitto_pub: --cafile), or a broker started without --tls"
                );
                None
            }
            Handshake::Failed(why) => {
                warn!(%peer, "TLS handshake failed: {why}");
                None
            }
        }
    }

    /// One more client than `--max-connections`: read its CONNECT and answer
    /// CONNACK 3, "server unavailable" (spec §3.2.2.3).
    pub(super) async fn refuse_busy(&self, mut stream: ClientStream, peer: SocketAddr) {
        if let Ok((frame, _)) = self.read_connect(&mut stream).await {
            // MQTT 5 names this case: 0x89, Server busy.
            let connack = if connect::level(&frame) == Some(wire::V5) {
                wire::connack_v5(false, SERVER_BUSY, &[0])
            } else {
                Bytes::copy_from_slice(&wire::connack(false, ConnackCode::ServerUnavailable))
            };
            let _ = write_flushed(&mut stream, &connack).await;
            warn!(%peer, limit = self.config.max_connections,
                "refused a client: connection limit reached (CONNACK {})",
                if connack[1] == 2 { "3" } else { "0x89" });
        }
        networking_protocols::close_gently(stream).await;
    }

    /// Reads the first packet, if it is a CONNECT that comes within the
    /// connect timeout, and returns it with any bytes read after it (a client
    /// need not wait for CONNACK before sending its next packets). Otherwise
    /// returns why not, for the log.
    async fn read_connect(
        &self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> Result<(wire::Frame, BytesMut), NoConnect> {
        let mut buffer = BytesMut::new();
        let read = async {
            loop {
                // A TLS record of type 22 (handshake), version 3.x: its first
                // byte would pass for a CONNECT's, so we look at two.
                if self.config.tls.is_none() && buffer.starts_with(&[22, 3]) {
                    return Err(NoConnect::TlsAtPlaintextPort);
                }
                // The first byte is enough to tell a CONNECT [MQTT-3.1.0-1]:
                // anything else (an HTTP request, say) is closed at once.
                if let Some(&first) = buffer.first()
                    && first >> 4 != kind::CONNECT
                {
                    return Err(NoConnect::Other(not_connect(&buffer)));
                }
                match wire::next_frame(&mut buffer, self.config.limits.max_packet_bytes) {
                    Ok(Some(frame)) => return Ok((frame, buffer)),
                    Ok(None) => {}
                    Err(violation) => return Err(NoConnect::Other(violation.to_string())),
                }
                buffer.reserve(256);
                match stream.read_buf(&mut buffer).await {
                    Ok(0) => {
                        return Err(NoConnect::Other(
                            "the client closed before its CONNECT".to_string(),
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return Err(NoConnect::Other(format!(
                            "reading the CONNECT failed: {error}"
                        )));
                    }
                }
            }
        };
        timeout(self.config.connect_timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(NoConnect::Other(format!(
                    "no CONNECT within {:?}",
                    self.config.connect_timeout
                )))
            })
    }
}

/// Writes `bytes` and flushes them: with TLS, that sends the record now.
pub(super) async fn write_flushed(stream: &mut ClientStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Why the first bytes a client sent are not a CONNECT, for the log: what
/// the peer evidently is, where its bytes say (an HTTP request line starts
/// with a method, `GET /path HTTP/1.1`, whose first letter would pass for a
/// packet type), or the packet type [MQTT-3.1.0-1].
fn not_connect(first_bytes: &[u8]) -> String {
    let line = first_bytes
        .split(|&byte| byte == b'\r')
        .next()
        .unwrap_or_default();
    let http = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    let method = line.split(|&byte| byte == b' ').next().unwrap_or_default();
    if http && !method.is_empty() && method.iter().all(u8::is_ascii_uppercase) {
        return format!(
            "an HTTP request ({}), not MQTT: a web browser or a WebSocket client? \
             This port speaks MQTT over TCP",
            String::from_utf8_lossy(line)
        );
    }
    format!(
        "the first packet is type {}, not CONNECT [MQTT-3.1.0-1]",
        first_bytes[0] >> 4
    )
}

#[cfg(test)]
mod tests {
    use super::not_connect;

    #[test]
    fn an_http_request_is_named() {
        let said = not_connect(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            said.starts_with("an HTTP request (GET /mqtt HTTP/1.1), not MQTT"),
            "{said}"
        );
        // Cut short, or not HTTP: the packet type, as before.
        assert_eq!(
            not_connect(b"GET /mq"),
            "the first packet is type 4, not CONNECT [MQTT-3.1.0-1]"
        );
        assert_eq!(
            not_connect(&[0x30, 0]),
            "the first packet is type 3, not CONNECT [MQTT-3.1.0-1]"
        );
    }
}
