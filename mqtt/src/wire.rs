//! MQTT 3.1.1 on the wire: how packets are framed, and the few packets the
//! broker's front door reads or writes itself.
//!
//! Every MQTT packet starts with a *fixed header*: one byte whose high four
//! bits are the packet type and low four bits its flags, then the *remaining
//! length*, the number of bytes that follow, in 1 to 4 bytes of 7 bits each
//! (spec §2.2). So a reader can always find where one packet ends and the
//! next begins before it understands the packet. What the spec allows inside
//! one (topic names, filters, reserved flags) is in `wire/rules.rs`.
//!
//! Names follow the spec: a *topic name* is what a PUBLISH goes to
//! (`home/kitchen`), a *topic filter* what a SUBSCRIBE asks for
//! (`home/+`, `home/#`).

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub mod properties;
mod rules;
mod violation;
pub use rules::{check_flags, check_topic_filter, check_topic_name};
pub use violation::Violation;
use violation::violation;

/// The packet types of MQTT 3.1.1 (spec §2.2.1), as the fixed header's high
/// four bits carry them.
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// A CONNACK return code (spec §3.2.2.3, Table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support the protocol level asked for.
    UnacceptableProtocolVersion = 1,
    /// 2: the client identifier is correct UTF-8 but not allowed.
    IdentifierRejected = 2,
    /// 3: the connection was made, but the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 4: the data in the user name or password is malformed.
    BadUserNameOrPassword = 4,
    /// 5: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnackCode {
    /// The MQTT 5 reason code for the same refusal (spec §3.2.2.2, Table
    /// 3-1): version 5 has more codes, and other numbers for these.
    pub fn v5(self) -> u8 {
        match self {
            ConnackCode::Accepted => 0x00,
            ConnackCode::UnacceptableProtocolVersion => 0x84,
            ConnackCode::IdentifierRejected => 0x85,
            ConnackCode::ServerUnavailable => 0x88,
            ConnackCode::BadUserNameOrPassword => 0x86,
            ConnackCode::NotAuthorized => 0x87,
        }
    }
}

/// The protocol level of MQTT 5 in CONNECT (spec §3.1.2.2).
pub const V5: u8 = 5;

/// One whole packet, still in its wire form: `bytes` holds the fixed header
/// too, so relaying it is one copy of bytes we already have.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The packet type (see [`kind`]).
    pub kind: u8,
    /// The fixed header's low four bits.
    pub flags: u8,
    /// Where the variable header starts inside `bytes`.
    pub body_start: usize,
    /// The whole packet.
    pub bytes: BytesMut,
}

impl Frame {
    /// The variable header and payload: everything after the fixed header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_start..]
    }

    /// The QoS of a PUBLISH, from the fixed header's flags (bits 1 and 2).
    pub fn qos(&self) -> u8 {
        (self.flags >> 1) & 3
    }
}

/// Takes one whole packet off the front of `buffer`, if it holds one.
///
/// Returns `Ok(None)` while the packet is incomplete, and a [`Violation`] for
/// a remaining length over 4 bytes (spec §2.2.3), in more bytes than it
/// needs, or over `max_bytes`.
pub fn next_frame(buffer: &mut BytesMut, max_bytes: usize) -> Result<Option<Frame>, Violation> {
    let Some(&first) = buffer.first() else {
        return Ok(None);
    };
    let mut length = 0usize;
    let mut at = 1;
    loop {
        let Some(&byte) = buffer.get(at) else {
            return Ok(None);
        };
        length |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            // A last byte of 0 after the first adds nothing: the length
            // took more bytes than it needs [MQTT-1.5.5-1] (3.1.1's
            // §2.2.3 encodes it in the fewest, too).
            if byte == 0 && at > 2 {
                return Err(violation(
                    "a remaining length in more bytes than it needs [MQTT-1.5.5-1]",
                ));
            }
            break;
        }
        if at == 5 {
            return Err(violation(
                "remaining length longer than 4 bytes [MQTT-2.2.3]",
            ));
        }
    }
    if length > max_bytes {
        return Err(Violation::with_code(
            0x95,
            format!("packet of {length} bytes, over the broker's limit of {max_bytes}"),
        ));
    }
    if buffer.len() < at + length {
        // Make room for the rest now, so the next read can take it at once.
        buffer.reserve(at + length - buffer.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        kind: first >> 4,
        flags: first & 0x0f,
        body_start: at,
        bytes: buffer.split_to(at + length),
    }))
}

/// A fixed header for a packet whose body is `length` bytes, as an array
/// and the number of its bytes in use (2 to 5).
pub fn fixed_header(first: u8, length: usize) -> FixedHeader {
    let mut bytes = [first, 0, 0, 0, 0];
    let mut used = 1;
    let mut rest = length;
    loop {
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        bytes[used] = byte;
        used += 1;
        if rest == 0 || used == bytes.len() {
            break;
        }
    }
    FixedHeader { bytes, used }
}

/// See [`fixed_header`].
#[derive(Debug, Clone, Copy)]
pub struct FixedHeader {
    bytes: [u8; 5],
    used: usize,
}

impl FixedHeader {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.used]
    }
}

/// Appends a two-byte length and the string's bytes (spec §1.5.3).
pub fn put_string(out: &mut BytesMut, text: &[u8]) {
    // Our callers only pass strings that arrived in MQTT strings, so they fit.
    let length = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.put_u16(length);
    out.put_slice(&text[..usize::from(length)]);
}

/// A CONNACK (spec §3.2): session present flag and return code.
pub fn connack(session_present: bool, code: ConnackCode) -> [u8; 4] {
    [kind::CONNACK << 4, 2, u8::from(session_present), code as u8]
}

/// An acknowledgement that is only a packet id: PUBACK, PUBREC, PUBREL
/// (whose flags must be 0b0010, [MQTT-3.6.1-1]), PUBCOMP or UNSUBACK.
pub fn ack(kind: u8, packet_id: u16) -> [u8; 4] {
    let flags = if kind == self::kind::PUBREL {
        0b0010
    } else {
        0
    };
    let [high, low] = packet_id.to_be_bytes();
    [kind << 4 | flags, 2, high, low]
}

/// An MQTT 5 CONNACK (spec §3.2): session present, reason code, and the
/// property list `properties` (with its length, see
/// [`properties::Builder`]).
pub fn connack_v5(session_present: bool, reason_code: u8, properties: &[u8]) -> Bytes {
    let mut body = vec![u8::from(session_present), reason_code];
    body.extend_from_slice(properties);
    packet(kind::CONNACK << 4, &body)
}

/// An MQTT 5 DISCONNECT from the server (spec §3.14) with `reason_code` and
/// no properties.
pub fn disconnect_v5(reason_code: u8) -> [u8; 4] {
    [kind::DISCONNECT << 4, 2, reason_code, 0]
}

/// PINGRESP: a fixed header and nothing else.
pub const PINGRESP: [u8; 2] = [kind::PINGRESP << 4, 0];

/// A reader over a packet body that turns running out of bytes into a
/// [`Violation`] (a malformed packet).
#[derive(Debug)]
pub struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8], what: &'static str) -> Self {
        Reader { rest: body, what }
    }

    fn short(&self) -> Violation {
        violation(format!("malformed {}: it ends too early", self.what))
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// What is left to read: a PUBLISH's payload, once its header is read.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub fn u8(&mut self) -> Result<u8, Violation> {
        if self.rest.is_empty() {
            return Err(self.short());
        }
        Ok(self.rest.get_u8())
    }

    pub fn u16(&mut self) -> Result<u16, Violation> {
        if self.rest.len() < 2 {
            return Err(self.short());
        }
        Ok(self.rest.get_u16())
    }

    /// Two-byte length, then that many bytes (binary data, spec §1.5.3).
    pub fn bytes(&mut self) -> Result<&'a [u8], Violation> {
        let length = usize::from(self.u16()?);
        if self.rest.len() < length {
            return Err(self.short());
        }
        let (field, rest) = self.rest.split_at(length);
        self.rest = rest;
        Ok(field)
    }

    /// An MQTT string: well-formed UTF-8 without U+0000 (spec §1.5.3).
    pub fn string(&mut self, field: &str) -> Result<&'a str, Violation> {
        let bytes = self.bytes()?;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| violation(format!("{field} is not valid UTF-8 [MQTT-1.5.3-1]")))?;
        if text.contains('\0') {
            return Err(violation(format!("{field} contains U+0000 [MQTT-1.5.3-2]")));
        }
        Ok(text)
    }
}

/// The bytes of a packet built from its first byte and body.
pub fn packet(first: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_slice(fixed_header(first, body.len()).as_slice());
    out.put_slice(body);
    out.freeze()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests {
    use super::*;

    /// A packet split over several reads comes out whole, once.
    #[test]
    fn frames_a_packet_across_reads() {
        let mut buffer = BytesMut::from(&[0x30, 0x82][..]);
        assert!(next_frame(&mut buffer, 1000).unwrap().is_none());
        buffer.put_u8(0x01);
        buffer.put_slice(&[7; 130]);
        let frame = next_frame(&mut buffer, 1000).unwrap().unwrap();
        assert_eq!((frame.kind, frame.body().len()), (kind::PUBLISH, 130));
        assert!(buffer.is_empty());
    }

    /// A five-byte remaining length breaks §2.2.3.
    #[test]
    fn refuses_a_five_byte_length() {
        let mut buffer = BytesMut::from(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(next_frame(&mut buffer, usize::MAX).is_err());
    }

    /// Remaining lengths are written in as few bytes as the spec's table says.
    #[test]
    fn writes_remaining_lengths() {
        for (length, bytes) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)] {
            let header = fixed_header(0x30, length);
            assert_eq!(header.as_slice().len(), 1 + bytes, "length {length}");
        }
    }
}
