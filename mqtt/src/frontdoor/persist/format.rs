//! The persistence file's layout: what `persist.rs` writes and reads back.
//!
//! The format, all numbers big-endian, as MQTT's are:
//!
//! ```text
//! "networking-protocols retained messages v1\n"
//! count: u32
//! count times: topic (u16 length, bytes), QoS (u8),
//!              expires (u64 seconds since 1970, 0 for never),
//!              MQTT 5 properties (u32 length, bytes), payload (u32 length, bytes)
//! checksum: u64, FNV-1a over everything before it
//! ```

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::frontdoor::mailbox::Message;

/// The first bytes of every persistence file.
const MAGIC: &[u8] = b"networking-protocols retained messages v1\n";

/// The file's bytes for `messages`.
pub(super) fn encode(messages: &[Message]) -> Vec<u8> {
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(messages.len() as u32).to_be_bytes());
    for message in messages {
        // An Instant means nothing after a restart: the wall clock does.
        let expires = message.expires.map_or(0, |at| {
            let left = at.saturating_duration_since(now);
            (wall + left)
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_secs().max(1))
        });
        out.extend_from_slice(&(message.topic.len() as u16).to_be_bytes());
        out.extend_from_slice(&message.topic);
        out.push(message.qos);
        out.extend_from_slice(&expires.to_be_bytes());
        out.extend_from_slice(&(message.properties.len() as u32).to_be_bytes());
        out.extend_from_slice(&message.properties);
        out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&message.payload);
    }
    let checksum = fnv1a(&out);
    out.extend_from_slice(&checksum.to_be_bytes());
    out
}

/// The messages in a file's bytes, or why they cannot be read.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<Message>, String> {
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or("not a persistence file of this broker")?;
    let (body, checksum) = body
        .split_last_chunk::<8>()
        .ok_or("cut short before its checksum")?;
    if fnv1a(&bytes[..bytes.len() - 8]) != u64::from_be_bytes(*checksum) {
        return Err("its checksum does not match".into());
    }
    let mut reader = Reader(body);
    let count = reader.u32()?;
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let mut messages = Vec::new();
    for _ in 0..count {
        let topic_length = usize::from(reader.u16()?);
        let topic = reader.take(topic_length)?;
        let qos = reader.u8()?;
        let expires = reader.u64()?;
        let properties_length = reader.u32()? as usize;
        let properties = reader.take(properties_length)?;
        let payload_length = reader.u32()? as usize;
        let payload = reader.take(payload_length)?;
        if qos > 2 || std::str::from_utf8(topic).is_err() {
            return Err("a record that is no retained message".into());
        }
        // Expired while the broker was down: gone, as it would have been.
        if expires != 0 && expires <= wall {
            continue;
        }
        messages.push(Message {
            topic: Bytes::copy_from_slice(topic),
            payload: Bytes::copy_from_slice(payload),
            qos,
            retain: true,
            properties: Bytes::copy_from_slice(properties),
            publisher: None,
            expires: match expires {
                0 => None,
                // Further than an Instant reaches: a record we cannot use.
                _ => Some(
                    now.checked_add(Duration::from_secs(expires - wall))
                        .ok_or("an expiry beyond what this system can count")?,
                ),
            },
        });
    }
    if !reader.0.is_empty() {
        return Err("bytes after its last record".into());
    }
    Ok(messages)
}

/// Reads big-endian numbers and byte strings off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("cut short".into());
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self.take(N)?;
        Ok(bytes.try_into().unwrap_or([0; N]))
    }
}

/// FNV-1a, 64 bits: a checksum small enough to write here, which catches a
/// changed or cut file (not a forged one, which is not its job).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: Bytes::copy_from_slice(topic.as_bytes()),
            payload: Bytes::copy_from_slice(payload),
            qos: 1,
            retain: true,
            properties: Bytes::from_static(&[0x03, 0, 1, b'x']),
            publisher: None,
            expires: None,
        }
    }

    #[test]
    fn messages_read_back_as_written() {
        let written = [message("a/b", b"\x00\xffon"), message("c", b"")];
        let read = decode(&encode(&written)).unwrap_or_default();
        assert_eq!(read.len(), 2);
        for (read, written) in read.iter().zip(&written) {
            assert_eq!(read.topic, written.topic);
            assert_eq!(read.payload, written.payload);
            assert_eq!(read.properties, written.properties);
            assert_eq!((read.qos, read.retain), (1, true));
        }
    }

    #[test]
    fn a_changed_or_cut_file_is_refused() {
        let bytes = encode(&[message("a/b", b"on")]);
        let mut changed = bytes.clone();
        let at = MAGIC.len() + 6;
        changed[at] ^= 1;
        assert_eq!(
            decode(&changed).err().as_deref(),
            Some("its checksum does not match")
        );
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert_eq!(
            decode(b"hello").err().as_deref(),
            Some("not a persistence file of this broker")
        );
    }

    #[test]
    fn an_expired_message_is_not_restored() {
        let mut soon = message("a", b"x");
        soon.expires = Some(Instant::now() + Duration::from_secs(3600));
        let mut bytes = encode(&[soon]);
        assert_eq!(decode(&bytes).map(|m| m.len()), Ok(1));
        // Rewrite its expiry to 1970, and the checksum to match.
        let at = MAGIC.len() + 4 + 2 + 1 + 1;
        bytes[at..at + 8].copy_from_slice(&1u64.to_be_bytes());
        let end = bytes.len() - 8;
        let checksum = fnv1a(&bytes[..end]);
        bytes[end..].copy_from_slice(&checksum.to_be_bytes());
        assert_eq!(decode(&bytes).map(|m| m.len()), Ok(0));
    }
}
