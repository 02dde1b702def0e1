//! MQTT 5's Message Expiry Interval (spec §3.3.2.3.3): a message may say
//! how many seconds it stays worth delivering. The dispatcher keeps the
//! moment it routed the message; a message whose time has run out is not
//! delivered [MQTT-3.3.2-5], and one that is carries the seconds it has
//! left [MQTT-3.3.2-6].

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::Reader;
use crate::wire::properties::{allowed, id};

/// A message's Message Expiry Interval in seconds, from its properties as
/// the router carried them (without their length), if it has one.
pub fn message_expiry(properties: &[u8]) -> Option<u32> {
    if properties.is_empty() {
        return None;
    }
    let list = Reader::new(properties, "PUBLISH")
        .property_list(allowed::PUBLISH)
        .ok()?;
    list.u32(id::MESSAGE_EXPIRY_INTERVAL)
}

/// What a message whose time runs out at `expires` looks like to a
/// subscriber now: `None` if its time has run out [MQTT-3.3.2-5]; else its
/// properties, with the Message Expiry Interval lowered to the whole
/// seconds it has left, rounded up [MQTT-3.3.2-6].
pub fn remaining(properties: &Bytes, expires: Instant, now: Instant) -> Option<Bytes> {
    let left = expires
        .checked_duration_since(now)
        .filter(|left| !left.is_zero())?;
    let seconds = u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX);
    let list = Reader::new(properties, "PUBLISH")
        .property_list(allowed::PUBLISH)
        .ok()?;
    let mut out = BytesMut::with_capacity(properties.len());
    for property in &list.list {
        if property.id == id::MESSAGE_EXPIRY_INTERVAL {
            out.put_u8(id::MESSAGE_EXPIRY_INTERVAL);
            out.put_u32(seconds);
        } else {
            out.put_slice(property.raw);
        }
    }
    Some(out.freeze())
}

/// When a message routed `now` with `properties` stops being worth
/// delivering, if it says.
pub fn expires_at(properties: &[u8], now: Instant) -> Option<Instant> {
    message_expiry(properties).map(|seconds| now + Duration::from_secs(u64::from(seconds)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In a test, a panic is a failure report.
mod tests {
    use super::*;

    /// The interval left is rounded up to whole seconds, other properties
    /// keep their place, and a message whose time is up is gone.
    #[test]
    fn lowers_the_expiry_interval_to_what_is_left() {
        let properties = Bytes::from_static(&[
            id::PAYLOAD_FORMAT_INDICATOR,
            1,
            id::MESSAGE_EXPIRY_INTERVAL,
            0,
            0,
            0,
            60,
        ]);
        let now = Instant::now();
        let expires = expires_at(&properties, now).unwrap();
        let later = now + Duration::from_millis(20_500);
        let left = remaining(&properties, expires, later).unwrap();
        assert_eq!(&left[..], &[1, 1, 2, 0, 0, 0, 40]);
        assert!(remaining(&properties, expires, now + Duration::from_secs(60)).is_none());
        assert_eq!(message_expiry(&[]), None);
    }
}
