//! Why a WebSocket client could not connect, in words: a bad URL, nobody
//! listening, an HTTP answer instead of an upgrade, or a server of another
//! protocol altogether, named from the first bytes it sent back.

use std::io;

use anyhow::anyhow;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::error::ProtocolError;

/// Explains a failed connection; `answer` is the start of what the server
/// sent, if anything.
pub(super) fn explain(url: &str, error: WsError, answer: &[u8]) -> anyhow::Error {
    match error {
        WsError::Url(error) => anyhow!("bad URL {url:?}: {error}; expected ws://HOST:PORT/PATH"),
        WsError::Io(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            anyhow!("cannot connect to {url}: {error}; is websocket_server running?")
        }
        // The server answered the upgrade request with a plain HTTP response.
        WsError::Http(response) => {
            let status = response.status();
            let reason = status.canonical_reason().unwrap_or("");
            // A TLS server cannot read our plaintext request; ours answers
            // 400 (and so does nginx).
            let plain = url
                .get(..5)
                .is_some_and(|s| s.eq_ignore_ascii_case("ws://"));
            let why = if status.as_u16() == 400 && plain {
                "; if the server speaks TLS, use a wss:// URL"
            } else {
                ""
            };
            anyhow!(
                "{url} did not upgrade to WebSocket: the server answered HTTP {} {reason}{why}",
                status.as_u16()
            )
        }
        // An HTTP/1.0 answer, which tungstenite refuses before it reads the
        // status: the upgrade needs HTTP/1.1 (RFC 6455 §4.1), so whatever
        // answered is an HTTP server, not a WebSocket one.
        WsError::Protocol(ProtocolError::WrongHttpVersion) => {
            let line = answer.split(|&b| b == b'\r' || b == b'\n').next();
            let line = String::from_utf8_lossy(line.unwrap_or_default());
            anyhow!(
                "{url} did not upgrade to WebSocket: the server answered {line}, \
                 an HTTP server, not a WebSocket server"
            )
        }
        // An answer that is not HTTP at all: whatever listens there speaks
        // another protocol. Our own request coming back is an echo server
        // (`tcp_server`); otherwise its first line says what it is.
        WsError::Protocol(ProtocolError::HttparseError(_)) if !answer.is_empty() => {
            let line = answer.split(|&b| b == b'\r' || b == b'\n').next();
            let line = String::from_utf8_lossy(line.unwrap_or_default());
            if answer.starts_with(b"GET ") {
                anyhow!(
                    "{url} is not a WebSocket server: it sent our HTTP request back, \
                     as an echo server does (tcp_server?)"
                )
            } else {
                anyhow!("{url} is not a WebSocket server: it answered {line:?}, which is not HTTP")
            }
        }
        // We offered subprotocols and the server agreed on none: tungstenite
        // fails the connection (RFC 6455 §4.1 lets a client).
        WsError::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
            anyhow!("{url} agreed on none of the subprotocols we offered (--protocol)")
        }
        // Closed without a word: a server of another protocol that took our
        // request for garbage (`mqtt_broker` does so).
        WsError::Protocol(ProtocolError::HandshakeIncomplete) if answer.is_empty() => anyhow!(
            "{url} closed the connection without answering our upgrade request: \
             not a WebSocket server (an MQTT broker, say)?"
        ),
        error => anyhow!("cannot connect to {url}: {error}"),
    }
}
