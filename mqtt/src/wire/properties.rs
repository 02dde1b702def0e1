//! MQTT 5 properties (spec §2.2.2): the optional fields that version 5 puts
//! after most packets' variable header, where 3.1.1 had nothing.
//!
//! On the wire a property list is its length in bytes, as a *variable byte
//! integer* (the same 1 to 4 bytes of 7 bits as the remaining length), then
//! properties one after another, each an identifier byte and a value whose
//! type the identifier fixes: a byte, a two- or four-byte integer, a
//! variable byte integer, a UTF-8 string, binary data, or a string pair.
//! So a reader that does not care about a property can still step over it,
//! and one that forwards a PUBLISH can pass its properties on as they came.

use bytes::{BufMut, BytesMut};

use super::{Reader, Violation};

/// Property identifiers (spec §2.2.2.2, Table 2-4), as the wire carries them.
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

pub mod allowed;

/// One property's value, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Byte(u8),
    TwoBytes(u16),
    FourBytes(u32),
    Varint(u32),
    String(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

/// One property: its identifier, its value, and its bytes as they came
/// (identifier included), to pass on unchanged.
#[derive(Debug, Clone, Copy)]
pub struct Property<'a> {
    pub id: u8,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

/// A packet's property list, read and checked.
#[derive(Debug, Clone, Default)]
pub struct Properties<'a> {
    pub list: Vec<Property<'a>>,
}

impl<'a> Properties<'a> {
    /// The value of property `id`, if present.
    pub fn get(&self, id: u8) -> Option<Value<'a>> {
        self.list
            .iter()
            .find(|property| property.id == id)
            .map(|property| property.value)
    }

    /// A four-byte integer property, if present.
    pub fn u32(&self, id: u8) -> Option<u32> {
        match self.get(id) {
            Some(Value::FourBytes(n) | Value::Varint(n)) => Some(n),
            _ => None,
        }
    }

    /// A two-byte integer property, if present.
    pub fn u16(&self, id: u8) -> Option<u16> {
        match self.get(id) {
            Some(Value::TwoBytes(n)) => Some(n),
            _ => None,
        }
    }

    /// A byte property, if present.
    pub fn u8(&self, id: u8) -> Option<u8> {
        match self.get(id) {
            Some(Value::Byte(n)) => Some(n),
            _ => None,
        }
    }

    /// The properties' bytes as they came, leaving out those in `except`,
    /// in order (User Properties keep theirs [MQTT-3.3.2-18]).
    pub fn raw_except(&self, except: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for property in &self.list {
            if !except.contains(&property.id) {
                out.extend_from_slice(property.raw);
            }
        }
        out
    }
}

impl<'a> Reader<'a> {
    /// A variable byte integer (spec §1.5.5): 1 to 4 bytes of 7 bits, least
    /// significant first. A fifth byte, or more bytes than the value needs
    /// (a last byte of 0 after the first), is a Malformed Packet
    /// [MQTT-1.5.5-1].
    pub fn varint(&mut self) -> Result<u32, Violation> {
        let mut value = 0u32;
        for shift in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7f) << (7 * shift);
            if byte & 0x80 == 0 {
                if byte == 0 && shift > 0 {
                    return Err(Violation::malformed(
                        "a variable byte integer in more bytes than it needs [MQTT-1.5.5-1]",
                    ));
                }
                return Ok(value);
            }
        }
        Err(Violation::malformed(
            "a variable byte integer longer than 4 bytes [MQTT-1.5.5-1]",
        ))
    }

    /// A property list (spec §2.2.2): its length, then properties, each
    /// checked against `allowed` for this packet. A property the packet may
    /// not carry, a value of the wrong form, or a property twice that may
    /// appear once is a Malformed Packet or Protocol Error, as the spec
    /// names it.
    pub fn properties(&mut self, allowed: &[u8]) -> Result<Properties<'a>, Violation> {
        let length = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        if self.rest.len() < length {
            return Err(Violation::malformed(format!(
                "malformed {}: its properties run past its end",
                self.what
            )));
        }
        let (block, rest) = self.rest.split_at(length);
        self.rest = rest;
        Reader::new(block, self.what).property_list(allowed)
    }

    /// The properties in all that is left to read, without a length in
    /// front: a list [`Reader::properties`] has read before (the broker
    /// keeps a message's properties so), checked the same way.
    pub fn property_list(&mut self, allowed: &[u8]) -> Result<Properties<'a>, Violation> {
        let inner = self;
        let mut list: Vec<Property<'a>> = Vec::new();
        while !inner.is_empty() {
            let before = inner.rest;
            let id = inner.u8()?;
            if !allowed.contains(&id) {
                return Err(Violation::malformed(format!(
                    "{} carries property {id:#04x}, which it may not [MQTT-2.2.2-2]",
                    inner.what
                )));
            }
            let value = inner.value(id)?;
            let repeatable = matches!(id, id::USER_PROPERTY | id::SUBSCRIPTION_IDENTIFIER);
            if !repeatable && list.iter().any(|property| property.id == id) {
                return Err(Violation::protocol(format!(
                    "{} carries property {id:#04x} twice [MQTT-2.2.2-2]",
                    inner.what
                )));
            }
            let used = before.len() - inner.rest.len();
            list.push(Property {
                id,
                value,
                raw: &before[..used],
            });
        }
        Ok(Properties { list })
    }

    /// One property's value, in the form its identifier fixes (Table 2-4).
    fn value(&mut self, id: u8) -> Result<Value<'a>, Violation> {
        use id::*;
        Ok(match id {
            PAYLOAD_FORMAT_INDICATOR
            | REQUEST_PROBLEM_INFORMATION
            | REQUEST_RESPONSE_INFORMATION
            | MAXIMUM_QOS
            | RETAIN_AVAILABLE
            | WILDCARD_SUBSCRIPTION_AVAILABLE
            | SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(self.u8()?),
            SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
                Value::TwoBytes(self.u16()?)
            }
            MESSAGE_EXPIRY_INTERVAL
            | SESSION_EXPIRY_INTERVAL
            | WILL_DELAY_INTERVAL
            | MAXIMUM_PACKET_SIZE => Value::FourBytes(self.u32()?),
            SUBSCRIPTION_IDENTIFIER => Value::Varint(self.varint()?),
            CORRELATION_DATA | AUTHENTICATION_DATA => Value::Binary(self.bytes()?),
            USER_PROPERTY => {
                let key = self.string("a user property's name")?;
                Value::Pair(key, self.string("a user property's value")?)
            }
            _ => Value::String(self.string("a string property")?),
        })
    }

    fn u32(&mut self) -> Result<u32, Violation> {
        let high = self.u16()?;
        let low = self.u16()?;
        Ok(u32::from(high) << 16 | u32::from(low))
    }
}

/// Appends `value` as a variable byte integer (spec §1.5.5).
pub fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// Builds a property list, for the packets the broker writes.
#[derive(Debug, Default)]
pub struct Builder {
    bytes: BytesMut,
}

impl Builder {
    pub fn byte(mut self, id: u8, value: u8) -> Self {
        self.bytes.put_u8(id);
        self.bytes.put_u8(value);
        self
    }

    pub fn two(mut self, id: u8, value: u16) -> Self {
        self.bytes.put_u8(id);
        self.bytes.put_u16(value);
        self
    }

    pub fn four(mut self, id: u8, value: u32) -> Self {
        self.bytes.put_u8(id);
        self.bytes.put_u32(value);
        self
    }

    pub fn string(mut self, id: u8, value: &str) -> Self {
        self.bytes.put_u8(id);
        super::put_string(&mut self.bytes, value.as_bytes());
        self
    }

    /// The list with its length in front, as it goes in a packet.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes.len() + 4);
        put_varint(&mut out, self.bytes.len());
        out.extend_from_slice(&self.bytes);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests {
    use super::*;

    /// Properties read back as written, raw bytes and all.
    #[test]
    fn reads_what_the_builder_writes() {
        let mut block = Builder::default()
            .four(id::MESSAGE_EXPIRY_INTERVAL, 60)
            .string(id::CONTENT_TYPE, "text/plain")
            .finish();
        block.extend_from_slice(&[id::USER_PROPERTY, 0, 1, b'k', 0, 1, b'v']);
        block[0] += 7;
        let mut reader = Reader::new(&block, "PUBLISH");
        let properties = reader.properties(allowed::PUBLISH).unwrap();
        assert!(reader.is_empty());
        assert_eq!(properties.u32(id::MESSAGE_EXPIRY_INTERVAL), Some(60));
        assert_eq!(
            properties.get(id::USER_PROPERTY),
            Some(Value::Pair("k", "v"))
        );
        assert_eq!(properties.raw_except(&[]), block[1..].to_vec());
    }

    /// A property the packet may not carry, and one given twice, are
    /// refused with the reason codes the spec names.
    #[test]
    fn refuses_foreign_and_repeated_properties() {
        let foreign = [2, id::SESSION_EXPIRY_INTERVAL, 0];
        let error = Reader::new(&foreign, "PUBLISH")
            .properties(allowed::PUBLISH)
            .unwrap_err();
        assert_eq!(error.reason_code, 0x81);
        let twice = [
            4,
            id::PAYLOAD_FORMAT_INDICATOR,
            1,
            id::PAYLOAD_FORMAT_INDICATOR,
            1,
        ];
        let error = Reader::new(&twice, "PUBLISH")
            .properties(allowed::PUBLISH)
            .unwrap_err();
        assert_eq!(error.reason_code, 0x82);
    }
}
