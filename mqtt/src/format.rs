//! `mqtt_subscriber -F FORMAT`: each message printed the way you ask, in
//! `mosquitto_sub -F`'s spelling, so a format you already use works here.
//!
//! A format is text with *fields* in it: `-F '%t: %p'` prints the topic, a
//! colon, and the payload. With MQTT 5 the fields reach a message's
//! properties too, which is what makes a request/response responder
//! possible with shell tools alone: `-F '%R %D'` prints where the requester
//! wants its answer and the correlation data to send back with it.
//!
//! | field | what it prints |
//! | --- | --- |
//! | `%t` | the topic |
//! | `%p` | the payload, as its bytes |
//! | `%x`, `%X` | the payload in hexadecimal, lower or upper case |
//! | `%l` | the payload's length in bytes |
//! | `%q` | the QoS it was delivered at (0, 1, 2) |
//! | `%r` | 1 if it is a retained message sent on subscribing, else 0 |
//! | `%m` | its packet id (0 at QoS 0) |
//! | `%U` | the time it was printed, Unix seconds with nanoseconds |
//! | `%C` | MQTT 5 content type |
//! | `%D` | MQTT 5 correlation data, as its bytes |
//! | `%E` | MQTT 5 message expiry interval: seconds left |
//! | `%F` | MQTT 5 payload format indicator (1: UTF-8 text) |
//! | `%P` | MQTT 5 user properties, `key:value`, separated by spaces |
//! | `%R` | MQTT 5 response topic |
//! | `%S` | MQTT 5 subscription identifiers, separated by spaces |
//! | `%%` | a `%` |
//!
//! A property the message lacks prints nothing. Escapes: `\n` newline, `\t`
//! tab, `\0` a NUL byte (to split fields with `xargs -0`), `\e` escape (for
//! colours), `\\` a backslash. Each message ends with a newline unless `-N`.
//!
//! Not supported, and refused with an error rather than printed as text:
//! mosquitto's field widths and flags (`%10t`), the date fields `%I`, `%j`,
//! `%J` and `@` (strftime), and `%A` (a topic alias is resolved before we
//! see the message).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;

use crate::client::Message;

/// A parsed `-F` format: text to copy and fields to fill in, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    /// A field, by its letter after `%`.
    Field(u8),
}

/// The letters `Format::parse` takes after `%`.
const FIELDS: &[u8] = b"tpxXlqrmUCDEFPRS";

impl Format {
    /// Reads a format string (see the module documentation).
    ///
    /// Errors: a `%` or `\` followed by anything this module does not list,
    /// or at the very end, naming it.
    pub fn parse(text: &str) -> anyhow::Result<Format> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut bytes = text.bytes();
        while let Some(byte) = bytes.next() {
            match byte {
                b'%' => match bytes.next() {
                    Some(b'%') => literal.push(b'%'),
                    Some(letter) if FIELDS.contains(&letter) => {
                        if !literal.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut literal)));
                        }
                        pieces.push(Piece::Field(letter));
                    }
                    Some(other) => bail!(
                        "-F: %{} is not a field we print (see mqtt_subscriber --help)",
                        char::from(other).escape_default()
                    ),
                    None => bail!("-F ends in a lone %: write %% for a percent sign"),
                },
                b'\\' => literal.push(match bytes.next() {
                    Some(b'n') => b'\n',
                    Some(b't') => b'\t',
                    Some(b'0') => 0,
                    Some(b'e') => 0x1b,
                    Some(b'\\') => b'\\',
                    Some(other) => bail!(
                        "-F: \\{} is not an escape we know (\\n \\t \\0 \\e \\\\)",
                        char::from(other).escape_default()
                    ),
                    None => bail!("-F ends in a lone \\: write \\\\ for a backslash"),
                }),
                b'@' => bail!("-F: @ (dates, strftime) is not supported; %U prints the time"),
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Format { pieces })
    }

    /// Appends `message`, formatted, to `out` (without a newline).
    pub fn write(&self, message: &Message, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.extend_from_slice(text),
                Piece::Field(letter) => field(*letter, message, out),
            }
        }
    }
}

/// Appends one field of `message` to `out`.
fn field(letter: u8, message: &Message, out: &mut Vec<u8>) {
    let properties = message.properties.as_ref();
    let text = |out: &mut Vec<u8>, text: Option<&str>| {
        out.extend_from_slice(text.unwrap_or_default().as_bytes());
    };
    match letter {
        b't' => out.extend_from_slice(&message.topic),
        b'p' => out.extend_from_slice(&message.payload),
        b'x' => hex(&message.payload, false, out),
        b'X' => hex(&message.payload, true, out),
        b'l' => out.extend_from_slice(message.payload.len().to_string().as_bytes()),
        b'q' => out.push(b'0' + message.qos as u8),
        b'r' => out.push(if message.retain { b'1' } else { b'0' }),
        b'm' => out.extend_from_slice(message.pkid.to_string().as_bytes()),
        b'U' => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            out.extend_from_slice(
                format!("{}.{:09}", now.as_secs(), now.subsec_nanos()).as_bytes(),
            );
        }
        b'C' => text(out, properties.and_then(|p| p.content_type.as_deref())),
        b'D' => {
            if let Some(data) = properties.and_then(|p| p.correlation_data.as_ref()) {
                out.extend_from_slice(data);
            }
        }
        b'E' => {
            if let Some(seconds) = properties.and_then(|p| p.message_expiry_interval) {
                out.extend_from_slice(seconds.to_string().as_bytes());
            }
        }
        b'F' => {
            if let Some(indicator) = properties.and_then(|p| p.payload_format_indicator) {
                out.extend_from_slice(indicator.to_string().as_bytes());
            }
        }
        b'P' => {
            let pairs: Vec<String> = properties
                .map(|p| &p.user_properties[..])
                .unwrap_or_default()
                .iter()
                .map(|(key, value)| format!("{key}:{value}"))
                .collect();
            out.extend_from_slice(pairs.join(" ").as_bytes());
        }
        b'R' => text(out, properties.and_then(|p| p.response_topic.as_deref())),
        b'S' => {
            let ids: Vec<String> = properties
                .map(|p| &p.subscription_identifiers[..])
                .unwrap_or_default()
                .iter()
                .map(usize::to_string)
                .collect();
            out.extend_from_slice(ids.join(" ").as_bytes());
        }
        // `parse` lets no other letter through.
        _ => {}
    }
}

/// Each byte of `bytes` as two hexadecimal digits, in `upper` case or not.
fn hex(bytes: &[u8], upper: bool, out: &mut Vec<u8>) {
    for byte in bytes {
        let digits = if upper {
            format!("{byte:02X}")
        } else {
            format!("{byte:02x}")
        };
        out.extend_from_slice(digits.as_bytes());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests {
    use super::*;
    use bytes::Bytes;
    use rumqttc::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;

    fn message(properties: Option<PublishProperties>) -> Message {
        Message {
            topic: Bytes::from_static(b"svc/time"),
            payload: Bytes::from_static(b"hi\x01"),
            qos: QoS::AtLeastOnce,
            pkid: 7,
            retain: true,
            properties,
        }
    }

    fn written(format: &str, message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        Format::parse(format).unwrap().write(message, &mut out);
        out
    }

    #[test]
    fn fields_and_escapes() {
        let plain = message(None);
        assert_eq!(
            written("%t|%p|%x|%X|%l|%q|%r|%m|%%|\\t\\0\\\\", &plain),
            b"svc/time|hi\x01|686901|686901|3|1|1|7|%|\t\0\\"
        );
        // A 3.1.1 message has no properties: their fields print nothing.
        assert_eq!(written("[%C%D%E%F%P%R%S]", &plain), b"[]");
        let properties = PublishProperties {
            content_type: Some("text/plain".into()),
            correlation_data: Some(Bytes::from_static(b"42")),
            message_expiry_interval: Some(30),
            payload_format_indicator: Some(1),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            response_topic: Some("replies/me".into()),
            subscription_identifiers: vec![3, 9],
            ..PublishProperties::default()
        };
        assert_eq!(
            written("%C|%D|%E|%F|%P|%R|%S", &message(Some(properties))),
            b"text/plain|42|30|1|k:v k:w|replies/me|3 9"
        );
    }

    #[test]
    fn what_is_not_supported_is_refused() {
        for format in ["%I", "%10t", "%", "\\", "\\q", "@H", "%A"] {
            let error = Format::parse(format).unwrap_err().to_string();
            assert!(error.starts_with("-F"), "{format}: {error}");
        }
    }
}
