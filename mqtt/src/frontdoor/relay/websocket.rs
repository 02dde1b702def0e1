//! MQTT over WebSocket inside the relay: tungstenite's framing beside the
//! TCP socket.
//!
//! A browser cannot open a TCP connection, only HTTP requests and
//! WebSockets, so MQTT reaches browsers inside WebSocket messages (MQTT
//! spec §6). The MQTT bytes are the same; each batch of them travels as
//! the payload of a binary message [MQTT-6.0.0-1], and nothing ties
//! packets to messages: a packet may span messages and a message may hold
//! several packets [MQTT-6.0.0-2, MQTT-6.0.0-3]. So this layer only
//! unwraps the payloads into the same byte buffer a TCP client's bytes go
//! into, and wraps what is queued for the client into binary messages; the
//! relay cuts packets out of the bytes as it always does.
//!
//! tungstenite's `WebSocketContext` keeps the protocol's state (a frame
//! half read, the pong owed for a ping) and is handed the socket on each
//! call, as rustls is in `tls.rs`, so the relay waits on the socket the
//! way it does for every client:
//!
//! ```text
//! socket --frames--> WebSocketContext::read --binary payloads--> relay
//! relay  --queued bytes--> one binary message --WebSocketContext::write--> socket
//! ```

use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, WebSocketContext,
};
use tokio_tungstenite::tungstenite::{Error, Message};

use super::READ_PER_TURN;
use super::buffers::{Nonblocking, Outbox};

/// At most this many queued bytes go into one binary message.
const MESSAGE_BYTES: usize = 64 * 1024;

/// One client's WebSocket once the upgrade is done.
pub struct WsSession {
    context: Box<WebSocketContext>,
    /// Whether frames wait in tungstenite's write buffer for the socket.
    pending: bool,
    /// The code our Close frame will carry: 1000, or why we close
    /// (RFC 6455 §7.4.1).
    close_code: CloseCode,
}

impl std::fmt::Debug for WsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsSession")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl WsSession {
    /// The server's side of a WebSocket whose upgrade is done: `leftover`
    /// holds the bytes the client sent right behind its request, and
    /// `max_message_bytes` bounds one incoming message (a larger one is an
    /// error, and our Close says 1009, Message Too Big).
    pub fn new(leftover: Vec<u8>, max_message_bytes: usize) -> Self {
        let config = WebSocketConfig::default()
            // Allocated per connection for its whole life: small, as a
            // TCP client's read buffer is.
            .read_buffer_size(4 * 1024)
            // Every message is written out at once; `pending` says when the
            // socket did not take it all.
            .write_buffer_size(0)
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        let context = WebSocketContext::from_partially_read(leftover, Role::Server, Some(config));
        WsSession {
            context: Box::new(context),
            pending: false,
            close_code: CloseCode::Normal,
        }
    }

    /// Reads the client's frames that the socket has now, and appends the
    /// payloads of its binary messages to `buffer`. Returns the bytes
    /// appended, `Ok(0)` at the end (a Close frame, or TCP's end without
    /// one: MQTT has its own clean end, DISCONNECT, so both are the client
    /// leaving), and `WouldBlock` if no whole message has come. Pings are
    /// answered with pongs, as RFC 6455 §5.5.2 requires.
    ///
    /// It stops once [`READ_PER_TURN`] bytes are in; what tungstenite read
    /// ahead stays in it, and the socket's readiness stays set until a read
    /// finds the socket empty, so the relay comes back for it.
    ///
    /// Errors: the socket's, and `InvalidData` for a text message (MQTT
    /// travels in binary messages only, and the connection must close
    /// [MQTT-6.0.0-1]), a message over the limit, or a frame that breaks
    /// RFC 6455.
    pub(crate) fn read(&mut self, tcp: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
        let mut total = 0;
        let end = loop {
            match self.context.read(&mut Nonblocking(tcp)) {
                Ok(Message::Binary(payload)) => {
                    buffer.extend_from_slice(&payload);
                    total += payload.len();
                    if total >= READ_PER_TURN {
                        break Ok(total);
                    }
                }
                Ok(Message::Text(_)) => {
                    self.close_code = CloseCode::Unsupported;
                    break Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text message: MQTT travels in binary messages only [MQTT-6.0.0-1]",
                    ));
                }
                // The client's Close: tungstenite has queued ours in reply.
                Ok(Message::Close(_)) => break Ok(total),
                // Pings (answered on the flush below), pongs.
                Ok(_) => {}
                Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    break if total > 0 { Ok(total) } else { Err(error) };
                }
                Err(
                    Error::ConnectionClosed
                    | Error::AlreadyClosed
                    | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                ) => break Ok(total),
                Err(Error::Io(error)) => break Err(error),
                Err(error) => {
                    self.close_code = match &error {
                        Error::Capacity(_) => CloseCode::Size,
                        _ => CloseCode::Protocol,
                    };
                    break Err(io::Error::new(io::ErrorKind::InvalidData, error));
                }
            }
        };
        // A pong or a Close owed to the client goes out now, as far as the
        // socket takes it.
        self.flush(tcp)?;
        end
    }

    /// Whether frames wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.pending
    }

    /// Sends what `outbox` holds, in binary messages of up to 64 KiB, as
    /// far as the socket takes it now; a message the socket takes only part
    /// of waits in tungstenite, and no more is taken until it is out.
    /// Returns the MQTT bytes taken from `outbox`.
    pub(crate) fn write(&mut self, tcp: &TcpStream, outbox: &mut Outbox) -> io::Result<usize> {
        let mut total = 0;
        loop {
            self.flush(tcp)?;
            if self.pending || outbox.is_empty() {
                return Ok(total);
            }
            let mut message = Vec::new();
            total += outbox.write_with(|slices| gather(&mut message, slices))?;
            self.send(tcp, message.into())?;
        }
    }

    /// Sends `payload` as one binary message, as far as the socket takes it.
    pub(crate) fn send(&mut self, tcp: &TcpStream, payload: Bytes) -> io::Result<()> {
        match self
            .context
            .write(&mut Nonblocking(tcp), Message::Binary(payload))
        {
            Ok(()) => self.flush(tcp),
            Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                self.pending = true;
                Ok(())
            }
            // The client closed first: the connection is ending anyway.
            Err(
                Error::ConnectionClosed
                | Error::AlreadyClosed
                | Error::Protocol(ProtocolError::SendAfterClosing),
            ) => Ok(()),
            Err(error) => Err(as_io(error)),
        }
    }

    /// Writes what waits in tungstenite, as far as the socket takes it now.
    pub(crate) fn flush(&mut self, tcp: &TcpStream) -> io::Result<()> {
        match self.context.flush(&mut Nonblocking(tcp)) {
            Ok(()) => {
                self.pending = false;
                Ok(())
            }
            Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                self.pending = true;
                Ok(())
            }
            // The client closed first: there is nothing left to send.
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => Ok(()),
            Err(error) => Err(as_io(error)),
        }
    }

    /// Sends our Close frame (RFC 6455 §5.5.1), as far as the socket takes
    /// it now: 1000, or 1003 after a text message, 1009 after one too
    /// large, 1002 after a frame that breaks the protocol.
    pub(crate) fn send_close(&mut self, tcp: &TcpStream) {
        let frame = CloseFrame {
            code: self.close_code,
            reason: "".into(),
        };
        let _ = self.context.close(&mut Nonblocking(tcp), Some(frame));
        let _ = self.flush(tcp);
    }

    /// Ends the WebSocket as RFC 6455 §7.1.1 asks: our Close frame, then up
    /// to `wait` for the client's Close (or its end of the stream), whatever
    /// it sends meanwhile discarded. Closing TCP while the client still
    /// writes (its Close, in answer to ours) would make our kernel reset the
    /// connection, and the client see an error instead of a close.
    pub(crate) async fn close(&mut self, tcp: &TcpStream, wait: Duration) {
        self.send_close(tcp);
        let _ = tokio::time::timeout(wait, async {
            let mut discarded = BytesMut::new();
            loop {
                match self.read(tcp, &mut discarded) {
                    Ok(0) => return,
                    Ok(_) => discarded.clear(),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        let ready = if self.pending {
                            tcp.writable().await
                        } else {
                            tcp.readable().await
                        };
                        if ready.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

/// Copies slices into `message` until it holds [`MESSAGE_BYTES`]; says
/// `WouldBlock` once it is full, so that `Outbox::write_with` stops there.
fn gather(message: &mut Vec<u8>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    if message.len() >= MESSAGE_BYTES {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let start = message.len();
    for slice in slices {
        let take = slice.len().min(MESSAGE_BYTES - message.len());
        message.extend_from_slice(&slice[..take]);
        if message.len() == MESSAGE_BYTES {
            break;
        }
    }
    Ok(message.len() - start)
}

fn as_io(error: Error) -> io::Error {
    match error {
        Error::Io(error) => error,
        error => io::Error::new(io::ErrorKind::InvalidData, error),
    }
}
