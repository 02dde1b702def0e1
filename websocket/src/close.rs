//! Close codes: how a WebSocket endpoint says why a connection ends.
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

use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};

use crate::{CloseCode, CloseFrame};

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
