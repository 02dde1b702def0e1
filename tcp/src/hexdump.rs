//! `-x`: every chunk of bytes that crosses a connection, shown in hex.
//!
//! Seeing the bytes is the lesson: a line typed as `hi` crosses as three
//! bytes, `68 69 0a`, and a `\r` that a terminal hides shows up as `0d`. The
//! layout is socat's `-x` (a header per chunk, then the bytes in hex), with
//! the peer's address in the header, since a server has many, and the bytes
//! also as text on the right, as ncat's `-x` and `xxd` show them:
//!
//! ```text
//! > 127.0.0.1:9999 length=3 from=0 to=2
//!  68 69 0a                                         hi.
//! ```
//!
//! `>` marks bytes we sent, `<` bytes we received. `from` and `to` count the
//! bytes of that direction since the connection opened, first and last byte
//! of this chunk, so a reader can see where a chunk sits in the stream. A
//! chunk is what one read returned or one write took: TCP keeps no message
//! boundaries, so two lines written back to back often arrive as one chunk,
//! and the dump shows it. Over TLS the dump shows the bytes before they are
//! encrypted, as socat's does.
//!
//! The dump goes to stderr, a chunk in one write, so chunks from different
//! connections do not interleave mid-line, and stdout keeps only the data.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;

/// A callback that sees every chunk a reader or writer passes on.
pub type OnChunk = Box<dyn FnMut(&[u8]) + Send>;

/// Bytes per dump line.
const PER_LINE: usize = 16;

/// One direction of one connection: its mark (`>` sent, `<` received), and
/// how many bytes have crossed so far.
#[derive(Debug)]
pub struct Dump {
    mark: char,
    peer: SocketAddr,
    offset: u64,
}

impl Dump {
    /// The bytes we send to `peer`.
    pub fn sent(peer: SocketAddr) -> Self {
        Dump {
            mark: '>',
            peer,
            offset: 0,
        }
    }

    /// The bytes we receive from `peer`.
    pub fn received(peer: SocketAddr) -> Self {
        Dump {
            mark: '<',
            peer,
            offset: 0,
        }
    }

    /// Writes one chunk's dump to stderr. An empty chunk (the end of the
    /// stream) shows nothing; a failed write to stderr is ignored, as a
    /// log line's would be.
    pub fn chunk(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let text = format(self.mark, self.peer, self.offset, bytes);
        self.offset += bytes.len() as u64;
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    /// The dump as a callback for `tokio_util::io::InspectReader` and
    /// `InspectWriter`, which hand it every chunk they pass on.
    pub fn into_callback(mut self) -> OnChunk {
        Box::new(move |bytes: &[u8]| self.chunk(bytes))
    }
}

/// One chunk as `-x` shows it: the header line, then 16 bytes a
/// line, in hex and as text (`.` for a byte that is not printable ASCII).
/// `from` is the offset of the chunk's first byte in its direction.
pub fn format(mark: char, peer: SocketAddr, from: u64, bytes: &[u8]) -> String {
    // An empty chunk has no last byte: `to` is then `from`, and no hex follows.
    let to = (from + bytes.len() as u64).saturating_sub(1).max(from);
    let mut text = format!("{mark} {peer} length={} from={from} to={to}\n", bytes.len());
    for line in bytes.chunks(PER_LINE) {
        let mut hex = String::with_capacity(3 * PER_LINE);
        for byte in line {
            let _ = write!(hex, " {byte:02x}");
        }
        let shown: String = line
            .iter()
            .map(|&byte| match byte {
                b' '..=b'~' => char::from(byte),
                _ => '.',
            })
            .collect();
        let _ = writeln!(text, "{hex:<width$}  {shown}", width = 3 * PER_LINE);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        9999,
    ));

    #[test]
    fn a_short_chunk_is_one_line_of_hex_and_its_text() {
        assert_eq!(
            format('>', PEER, 0, b"hi\n"),
            format!(
                "> 127.0.0.1:9999 length=3 from=0 to=2\n 68 69 0a{}  hi.\n",
                " ".repeat(39)
            )
        );
    }

    #[test]
    fn a_long_chunk_takes_sixteen_bytes_a_line() {
        let bytes: Vec<u8> = (0..20).map(|i| b'a' + i).collect();
        let text = format('<', PEER, 100, &bytes);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "< 127.0.0.1:9999 length=20 from=100 to=119");
        assert!(lines[1].ends_with("  abcdefghijklmnop"), "{}", lines[1]);
        assert!(lines[2].starts_with(" 71 72 73 74 "), "{}", lines[2]);
        assert!(lines[2].ends_with("  qrst"), "{}", lines[2]);
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn an_empty_chunk_is_a_header_alone() {
        assert_eq!(
            format('>', PEER, 0, b""),
            "> 127.0.0.1:9999 length=0 from=0 to=0\n"
        );
    }

    #[test]
    fn bytes_that_are_not_printable_show_as_dots() {
        let text = format('<', PEER, 0, b"\x00\xff\r\n ~");
        let line = text.lines().nth(1).unwrap_or_default();
        assert!(line.starts_with(" 00 ff 0d 0a 20 7e "), "{line}");
        assert!(line.ends_with("  .... ~"), "{line}");
    }
}
