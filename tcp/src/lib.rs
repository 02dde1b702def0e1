//! TCP, taught by a line server and a full-duplex client.
//!
//! The binaries in `src/bin/` are the story a learner reads first; this
//! library is the machinery they share with the tests:
//!
//! - [`LineCodec`] frames a TCP byte stream into newline-terminated lines;
//! - [`server::run`] serves echo or chat on a listener until told to stop;
//! - [`client::run`] connects standard input and output to a server;
//! - [`hexdump`] shows the bytes that cross a connection (`-x`).

pub mod client;
pub mod hexdump;
pub mod server;

/// The last line a chat server sends each client when it shuts down. An
/// announced, orderly end: [`client::run`] takes a connection that ends with
/// it as finished normally, even while it still had input to send.
pub const SHUTDOWN_NOTICE: &str = "[server] shutting down\n";

/// How `tcp_server` refuses a client: one line that starts with one of
/// these, sent before it reads anything, and then it closes. [`client::run`]
/// takes a connection whose first line is one of them, and that then ends,
/// as refused: an error, not a conversation.
pub const REFUSALS: [&str; 2] = [BUSY_NOTICE, TLS_ONLY_NOTICE];
/// The start of the line for a client past `--max-connections` (or past the
/// descriptors the system gives us).
pub const BUSY_NOTICE: &str = "error: server busy (";
/// The line for a client that does not speak TLS to a `--tls` server.
pub const TLS_ONLY_NOTICE: &str = "error: this server speaks TLS; connect with --tls\n";

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Frames a byte stream into lines, each ending in `\n`.
///
/// TCP delivers a stream of bytes, not messages: one `read` can return half a
/// line, or three lines and the start of a fourth, however the sender wrote
/// them. A protocol on top of TCP must mark where each message ends. Ours uses
/// the oldest convention there is, a newline, and this decoder finds it.
///
/// Each decoded line keeps its `\n`, so an echo server can write it back byte
/// for byte (including a `\r` from a Telnet-style client, and bytes that are not
/// UTF-8). A line longer than `max_line_bytes` (not counting the `\n`) is an
/// error: without a limit, a client that never sends a newline could make us
/// buffer without end.
///
/// The encoder writes [`Bytes`] as they are: the caller decides the framing of
/// what it sends.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line_bytes: usize,
    /// How far into the buffer we already looked for `\n`, so that a long line
    /// arriving in many small reads is scanned once, not once per read.
    searched: usize,
}

/// The line codec's errors: a line over the limit, or the socket's own error.
#[derive(Debug)]
pub enum LineError {
    /// The peer sent more than `max_line_bytes` without a newline.
    TooLong { max_line_bytes: usize },
    /// Reading or writing the socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong { max_line_bytes } => {
                write!(f, "line longer than {max_line_bytes} bytes")
            }
            LineError::Io(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for LineError {}

impl From<std::io::Error> for LineError {
    fn from(error: std::io::Error) -> Self {
        LineError::Io(error)
    }
}

impl LineCodec {
    /// A codec that refuses lines longer than `max_line_bytes`.
    pub fn new(max_line_bytes: usize) -> Self {
        LineCodec {
            max_line_bytes,
            searched: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = BytesMut;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        match buf[self.searched..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let end = self.searched + offset;
                self.searched = 0;
                if end > self.max_line_bytes {
                    return Err(LineError::TooLong {
                        max_line_bytes: self.max_line_bytes,
                    });
                }
                // `split_to` hands out the line without copying it: the
                // returned buffer and `buf` share one allocation.
                Ok(Some(buf.split_to(end + 1)))
            }
            None if buf.len() > self.max_line_bytes => Err(LineError::TooLong {
                max_line_bytes: self.max_line_bytes,
            }),
            None => {
                self.searched = buf.len();
                Ok(None)
            }
        }
    }

    /// At end of stream, bytes after the last `\n` are a final, unterminated
    /// line: we hand them out rather than dropping them silently.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, LineError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.searched = 0;
        if buf.has_remaining() {
            Ok(Some(buf.split()))
        } else {
            Ok(None)
        }
    }
}

impl Encoder<Bytes> for LineCodec {
    type Error = LineError;

    fn encode(&mut self, data: Bytes, buf: &mut BytesMut) -> Result<(), LineError> {
        buf.put(data);
        Ok(())
    }
}
