//! Sequence numbers: how a receiver finds out what UDP did to the datagrams.
//!
//! UDP itself numbers nothing. To see loss, duplication and reordering, the
//! sender writes a number into each payload and the receiver compares. The
//! format is plain text, so you can read it in the receiver's output:
//!
//! ```text
//! seq 42 ..........................
//! ```
//!
//! `seq `, the number in decimal, then (if the sender asked for a size) a space
//! and dots up to that size. Any other payload is not sequenced: it is shown
//! and echoed like every datagram, but not counted here, even one that
//! carries a number in a format of its own. `m00000042xxx` is one: an `m`,
//! the number 42 in eight digits, then `x`s up to the payload's size. It is
//! how loadgen, a separate load-testing tool, numbers the datagrams it sends
//! to an echo server (such as `udp_receiver --echo`), to match each answer
//! to its datagram.
//!
//! The numbers come from the network, so any `u64` may arrive, up to
//! 18446744073709551615 from each of many senders. What we count per
//! datagram that arrives stays far below a `u64`'s range; the numbers a
//! sender skipped do not, so `lost` is counted in a `u128`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

const PREFIX: &[u8] = b"seq ";

/// The payload of sequenced datagram `number`, padded with dots to `size`
/// bytes (never shorter than the number itself).
pub fn payload(number: u64, size: usize) -> Vec<u8> {
    let mut payload = format!("seq {number}").into_bytes();
    if payload.len() < size {
        payload.push(b' ');
        payload.resize(size, b'.');
    }
    payload
}

/// The sequence number in `payload`, if it has the form [`payload`] makes:
/// `seq `, decimal digits, and optionally a space and dots.
pub fn parse(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(PREFIX)?;
    let (digits, padding) = match rest.iter().position(|&b| b == b' ') {
        Some(space) => (&rest[..space], &rest[space + 1..]),
        None => (rest, &[][..]),
    };
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || !padding.iter().all(|&b| b == b'.')
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The sequence number at the start of a truncated datagram, if it arrived
/// whole: `seq 1` may be what is left of `seq 10`, but in `seq 1 ...` the
/// space after the digits shows that the number ended there.
fn parse_truncated(payload: &[u8]) -> Option<u64> {
    let number = parse(payload)?;
    payload[PREFIX.len()..].contains(&b' ').then_some(number)
}

/// What one sender's numbered datagrams looked like on arrival.
#[derive(Debug, Default)]
struct Stream {
    seen: HashSet<u64>,
    highest: Option<u64>,
    duplicated: u64,
    reordered: u64,
}

/// Counts every datagram, and checks the numbered ones sender by sender (two
/// senders both counting from 0 are two streams, not a stream of duplicates).
///
/// For the numbered datagrams of each sender:
///
/// - *unique*: the distinct numbers seen;
/// - *lost*: the numbers never seen, from 0 up to the highest seen (a loss
///   after the highest number is invisible to the receiver, which is why the
///   sender's own count, `udp_sender --wait-reply-ms`, matters);
/// - *duplicated*: datagrams whose number was already seen;
/// - *reordered*: datagrams that arrive after one with a higher number.
///
/// So `received = unique + duplicated` for numbered traffic, while a datagram
/// can be both duplicated and reordered: a copy of 4 that arrives after 5.
#[derive(Debug, Default)]
pub struct Tally {
    received: u64,
    streams: HashMap<SocketAddr, Stream>,
}

/// The totals over all senders, printed as the receiver's last line:
/// `received=940 unique=900 lost=100 duplicated=40 reordered=50`, or only
/// `received=N` when no datagram carried a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub received: u64,
    pub sequenced: bool,
    pub unique: u64,
    /// Up to 2^64 numbers per sender can be missing, more than a `u64` holds
    /// once two senders lose that many.
    pub lost: u128,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Tally {
    /// Counts one datagram from `from`; `truncated` says that `payload` is
    /// only the start of it, whose number counts only if it arrived whole.
    ///
    /// Memory grows with the number of distinct numbers seen (a few bytes
    /// each), so it is bounded by the traffic that really arrived, not by how
    /// large a number a sender writes.
    pub fn count(&mut self, from: SocketAddr, payload: &[u8], truncated: bool) {
        self.received += 1;
        let number = if truncated {
            parse_truncated(payload)
        } else {
            parse(payload)
        };
        let Some(number) = number else {
            return;
        };
        let stream = self.streams.entry(from).or_default();
        if !stream.seen.insert(number) {
            stream.duplicated += 1;
        }
        if stream.highest.is_some_and(|highest| number < highest) {
            stream.reordered += 1;
        }
        stream.highest = stream.highest.max(Some(number));
    }

    /// How many datagrams have been counted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The totals over every sender.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary {
            received: self.received,
            sequenced: !self.streams.is_empty(),
            ..Summary::default()
        };
        for stream in self.streams.values() {
            let unique = stream.seen.len() as u64;
            // Numbers 0 to `highest`: one more than `highest`, which for
            // u64::MAX is 2^64, so we count in u128. Every number in `seen` is
            // at most `highest`, so `unique` never exceeds `expected`.
            let expected = stream.highest.map_or(0, |highest| u128::from(highest) + 1);
            summary.unique += unique;
            summary.lost += expected - u128::from(unique);
            summary.duplicated += stream.duplicated;
            summary.reordered += stream.reordered;
        }
        summary
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "received={}", self.received)?;
        if self.sequenced {
            write!(
                f,
                " unique={} lost={} duplicated={} reordered={}",
                self.unique, self.lost, self.duplicated, self.reordered
            )?;
        }
        Ok(())
    }
}
