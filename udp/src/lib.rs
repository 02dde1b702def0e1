//! UDP, taught by a datagram sender and a receiver.
//!
//! UDP hands the network one datagram at a time: a message with a sender and a
//! destination address, delivered whole or not at all. There is no connection,
//! no ordering, no delivery guarantee and no flow control. The binaries in
//! `src/bin/` let you watch each of those facts; this library is the machinery
//! they share with the tests:
//!
//! - [`sequence`] numbers datagrams and counts what was lost, duplicated and
//!   reordered on the way;
//! - [`receiver::run`] prints (and optionally echoes) every datagram that
//!   arrives on a socket, until told to stop;
//! - [`sender`] sends datagrams and measures the round trip of their echoes.

pub mod receiver;
pub mod sender;
pub mod sequence;

use std::fmt::Write;
use std::net::IpAddr;

/// The largest UDP payload IPv4 can carry, in bytes: an IPv4 packet is at
/// most 65,535 bytes in all, its header included, so 20 bytes of IPv4 header
/// and 8 of UDP header leave 65,507.
pub const MAX_DATAGRAM_V4: usize = 65_507;

/// The largest UDP payload IPv6 can carry, in bytes: IPv6 counts its 65,535
/// bytes after its own 40-byte header, so only the 8 bytes of UDP header come
/// off. (Larger "jumbograms", RFC 2675, need a link that carries them.)
pub const MAX_DATAGRAM_V6: usize = 65_527;

/// The largest UDP payload, in bytes, to or from an address of `ip`'s family.
pub fn max_datagram(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => MAX_DATAGRAM_V4,
        IpAddr::V6(_) => MAX_DATAGRAM_V6,
    }
}

/// "IPv4" or "IPv6", for messages.
pub fn family(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Appends a payload to `shown`, safely on one line: text as text, anything
/// else escaped.
///
/// A datagram can hold any bytes at all, and printing them raw could end our
/// line early (a `\n` inside) or send control codes to your terminal. So valid
/// UTF-8 is shown as text with `\` and control characters escaped (`\\`,
/// `\n`, `\t`, `\r`, and the other ASCII ones as their byte, `\x00`,
/// `\x1b`), and bytes that are not UTF-8 as their byte too, `\xff`: one
/// spelling for a byte, whichever it is.
pub fn show_text(payload: &[u8], shown: &mut String) {
    // The common case, printable ASCII, in one pass over the bytes.
    let plain = |b: &u8| (b' '..=b'~').contains(b) && *b != b'\\';
    if payload.iter().all(plain)
        && let Ok(text) = std::str::from_utf8(payload)
    {
        shown.push_str(text);
        return;
    }
    // `utf8_chunks` splits the bytes into runs of valid UTF-8, each followed
    // by the (possibly empty) run of bytes that are not.
    for chunk in payload.utf8_chunks() {
        let text = chunk.valid();
        let needs_escape = |c: char| c.is_control() || c == '\\';
        for c in text.chars() {
            match c {
                '\n' | '\t' | '\r' | '\\' => shown.extend(c.escape_default()),
                c if c.is_ascii_control() => {
                    let _ = write!(shown, "\\x{:02x}", u32::from(c));
                }
                c if needs_escape(c) => shown.extend(c.escape_default()),
                c => shown.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(shown, "\\x{byte:02x}");
        }
    }
}

/// Appends a payload to `shown` as hexadecimal bytes separated by spaces:
/// `68 69 00 ff`.
pub fn show_hex(payload: &[u8], shown: &mut String) {
    for (i, byte) in payload.iter().enumerate() {
        let separator = if i == 0 { "" } else { " " };
        let _ = write!(shown, "{separator}{byte:02x}");
    }
}
