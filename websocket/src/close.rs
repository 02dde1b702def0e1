//! How a connection ends: close codes and the closing handshake.
//!
//! A Close frame carries a two-byte code and a short UTF-8 reason (at most
//! 123 bytes, so the frame fits the 125-byte limit of control frames). RFC
//! 6455 section 7.4 defines the codes; the ones this server sends are:
//!
//! | code | name            | when                                             |
//! |------|-----------------|--------------------------------------------------|
//! | 1000 | normal          | the conversation is over                         |
//! | 1001 | going away      | the server shuts down (or a browser leaves)      |
//! | 1002 | protocol error  | the peer broke the framing rules                 |
//! | 1007 | invalid data    | a text message that is not valid UTF-8           |
//! | 1009 | message too big | a message over our size limit                    |
//!
//! A trap: tungstenite *detects* all of these problems but only reports them
//! as an error from the read; it does not send a Close frame for them. If we
//! just dropped the connection, the peer would see an abnormal closure (1006,
//! a code that never travels on the wire) and never learn why. So
//! [`for_error`] turns each error into the Close frame we send.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tracing::warn;

use crate::{CloseCode, CloseFrame, Message, Stream};

/// How long we wait for the peer's answer to our Close frame.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest reason a Close frame can carry: 125 bytes of control-frame
/// payload minus the 2-byte code.
pub const MAX_REASON_BYTES: usize = 123;

/// Builds a Close frame, cutting `reason` to [`MAX_REASON_BYTES`] at a
/// character boundary.
pub fn frame(code: CloseCode, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

/// The Close frame that answers a failed read, or `None` when there is nobody
/// left to tell (the connection itself broke).
pub fn for_error(error: &Error) -> Option<CloseFrame> {
    match error {
        // Larger than `max_message_size` (or one frame larger than
        // `max_frame_size`): tungstenite stops before buffering it all.
        Error::Capacity(CapacityError::MessageTooLong { max_size, .. }) => Some(frame(
            CloseCode::Size,
            &format!("message too big: the limit is {max_size} bytes"),
        )),
        Error::Capacity(other) => Some(frame(CloseCode::Size, &other.to_string())),
        // A text message (or a Close reason) that is not valid UTF-8. For a
        // fragmented message tungstenite checks each fragment as it comes, so
        // we fail fast instead of after the last fragment.
        Error::Utf8(_) => Some(frame(CloseCode::Invalid, "text message is not valid UTF-8")),
        // The TCP connection ended without a Close frame: nobody to tell.
        Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        // Everything else that breaks RFC 6455: an unmasked client frame,
        // reserved bits or opcodes, a fragmented or oversized control frame,
        // a continuation without a start, a bad close code...
        Error::Protocol(violation) => Some(frame(
            CloseCode::Protocol,
            &format!("protocol error: {violation}"),
        )),
        _ => None,
    }
}

/// How a close code reads in a log line or an error: `1001 (going away)`.
pub fn describe(code: CloseCode) -> String {
    let name = match code {
        CloseCode::Normal => "normal",
        CloseCode::Away => "going away",
        CloseCode::Protocol => "protocol error",
        CloseCode::Unsupported => "unsupported data",
        CloseCode::Status => "no code given",
        CloseCode::Abnormal => "abnormal",
        CloseCode::Invalid => "invalid data",
        CloseCode::Policy => "policy violation",
        CloseCode::Size => "message too big",
        CloseCode::Extension => "extension required",
        CloseCode::Error => "server error",
        CloseCode::Restart => "server restarting",
        CloseCode::Again => "try again later",
        _ => "other",
    };
    format!("{} ({name})", u16::from(code))
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The peer sent Close; tungstenite has answered it.
    PeerClosed(Option<CloseFrame>),
    /// The server is shutting down: we send 1001.
    Shutdown,
    /// The peer broke a rule: we send this Close (1002, 1007, 1009).
    Violation(CloseFrame),
    /// The peer answered nothing for two ping intervals.
    Dead,
    /// The peer read nothing for two ping intervals: our writes are stuck.
    Stalled,
    /// The TCP connection broke.
    Failed(Error),
}

impl From<Error> for End {
    /// A read or write error: a violation to report with a Close, or a
    /// broken connection.
    fn from(error: Error) -> End {
        // Sending after the peer's Close happens only in a race (a chat
        // message relayed as the peer leaves): the end, not a violation.
        if matches!(error, Error::Protocol(ProtocolError::SendAfterClosing)) {
            return End::Failed(error);
        }
        match for_error(&error) {
            Some(frame) => End::Violation(frame),
            None => End::Failed(error),
        }
    }
}

/// After a completed closing handshake, closes our side of the connection:
/// over TLS, a close_notify alert first, which tells the client that the end
/// is ours and not a cut by someone on the path; then TCP's FIN.
async fn close_transport(ws: &mut WebSocketStream<Stream>) {
    let _ = timeout(CLOSE_TIMEOUT, ws.get_mut().shutdown()).await;
}

/// Closes the connection the way its end calls for, and returns the close
/// code for the log.
pub async fn finish(mut ws: WebSocketStream<Stream>, peer: SocketAddr, end: End) -> String {
    match end {
        End::PeerClosed(frame) => {
            close_transport(&mut ws).await;
            match frame {
                Some(frame) => format!(
                    "{} by client {:?}",
                    describe(frame.code),
                    frame.reason.as_str()
                ),
                None => "by client, without a code".to_string(),
            }
        }
        // Our Close first, then we wait for the peer's: the closing
        // handshake. When it completes, tungstenite ends the stream and we
        // drop the TCP connection (the server closes TCP first, so the
        // TIME_WAIT state stays on our side, RFC 6455 section 7.1.1).
        End::Shutdown => {
            let frame = frame(CloseCode::Away, "server shutting down");
            let _ = timeout(CLOSE_TIMEOUT, async {
                ws.send(Message::Close(Some(frame))).await?;
                while ws.next().await.transpose()?.is_some() {}
                Ok::<(), Error>(())
            })
            .await;
            close_transport(&mut ws).await;
            describe(CloseCode::Away)
        }
        // After a violation we cannot trust the rest of the stream (we may
        // be in the middle of a huge frame), so we send our Close and then
        // discard the raw bytes until the peer closes TCP.
        End::Violation(frame) => {
            let code = format!("{} {:?}", describe(frame.code), frame.reason.as_str());
            warn!(peer = %peer, "closing: {code}");
            let _ = timeout(CLOSE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
            crate::http::close_gently(ws.into_inner()).await;
            code
        }
        End::Dead => {
            warn!(peer = %peer, "no answer for two ping intervals; dropping the connection");
            "none: peer unresponsive".to_string()
        }
        End::Stalled => {
            warn!(peer = %peer, "not reading for two ping intervals; dropping the connection");
            "none: peer not reading".to_string()
        }
        End::Failed(error) => format!("none: {error}"),
    }
}
