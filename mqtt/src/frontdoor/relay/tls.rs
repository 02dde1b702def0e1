//! MQTT over TLS inside the relay: rustls's state beside the TCP socket.
//!
//! The TLS handshake runs before the CONNECT is read, through tokio-rustls
//! (`Door::serve`). After CONNACK the relay takes the TCP socket and
//! rustls's [`ServerConnection`] apart, and keeps working the way it does
//! for a plaintext client: it waits until the socket is readable or
//! writable and then does what it can without waiting. In between sits
//! rustls, which turns the TLS records read from the socket into MQTT bytes
//! and MQTT bytes into TLS records for the socket:
//!
//! ```text
//! socket --read_tls--> [records] --process_new_packets--> [plaintext] --reader--> relay
//! relay  --writer--> [records, encrypted] --write_tls--> socket
//! ```
//!
//! So a TLS client costs the broker one socket, as a plaintext one does,
//! and its bytes are encrypted or decrypted once, where they are relayed.

use std::io::{self, IoSlice, Read, Write};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::net::TcpStream;

use super::READ_PER_TURN;
use super::buffers::Outbox;

/// One client's TLS session once the handshake is done.
#[derive(Debug)]
pub struct TlsSession {
    conn: Box<ServerConnection>,
}

impl TlsSession {
    /// Takes over rustls's state for a connection whose handshake is done;
    /// plaintext it has already decrypted stays in it, and is read first.
    pub fn new(conn: ServerConnection) -> Self {
        TlsSession {
            conn: Box::new(conn),
        }
    }

    /// Reads the client's TLS records that the socket has now, and appends
    /// what they carry to `buffer`, up to [`READ_PER_TURN`] bytes. Returns
    /// the bytes appended, `Ok(0)` when the client has closed the session
    /// (its `close_notify` alert), and `WouldBlock` if there is nothing yet.
    ///
    /// Errors: the socket's, `UnexpectedEof` if TCP closed without a
    /// `close_notify` (a truncation rustls cannot rule out), and
    /// `InvalidData` for a record that does not decrypt or breaks TLS; then
    /// rustls's alert to the client is sent, as far as the socket takes it.
    pub(super) fn read(&mut self, tcp: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
        let mut total = 0;
        loop {
            // Plaintext rustls already holds goes first: it refuses to read
            // more records while its plaintext buffer is full.
            while total < READ_PER_TURN {
                let start = buffer.len();
                buffer.resize(start + 8 * 1024, 0);
                let read = self.conn.reader().read(&mut buffer[start..]);
                buffer.truncate(start + *read.as_ref().unwrap_or(&0));
                match read {
                    Ok(0) if total == 0 => return Ok(0),
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) if total > 0 => return Ok(total),
                    Err(error) => return Err(error),
                }
            }
            if total >= READ_PER_TURN {
                // The socket's readiness is still set, so the relay comes
                // back for the rest.
                return Ok(total);
            }
            match self.conn.read_tls(&mut Nonblocking(tcp)) {
                // At TCP's end rustls notes it; the reader then says whether
                // the close was clean.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock && total > 0 => {
                    return Ok(total);
                }
                Err(error) => return Err(error),
            }
            if let Err(error) = self.conn.process_new_packets() {
                // rustls has queued an alert that says why; send it if the
                // socket takes it now, then close.
                let _ = self.conn.write_tls(&mut Nonblocking(tcp));
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts what `outbox` holds and writes it to the socket, as far as
    /// the socket takes it now. rustls packs the slices of a batch into as
    /// few records as fit (16 KiB of plaintext each, 22 bytes of header and
    /// tag per record in TLS 1.3), and holds at most 64 KiB of records that
    /// the socket has not taken. Returns the plaintext bytes taken from
    /// `outbox`.
    pub(super) fn write(&mut self, tcp: &TcpStream, outbox: &mut Outbox) -> io::Result<usize> {
        let mut total = 0;
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut Nonblocking(tcp)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                    Err(error) => return Err(error),
                }
            }
            if outbox.is_empty() {
                return Ok(total);
            }
            // rustls takes no more once 64 KiB of records wait; then the
            // records go to the socket first.
            let taken =
                outbox.write_with(|slices| match self.conn.writer().write_vectored(slices) {
                    Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                    taken => taken,
                })?;
            if taken == 0 && !self.conn.wants_write() {
                return Ok(total);
            }
            total += taken;
        }
    }

    /// Ends the session the polite way: a `close_notify` alert, if the
    /// socket takes it now (RFC 8446 §6.1), so the client can tell our close
    /// from a cut connection.
    pub(super) fn close(&mut self, tcp: &TcpStream) {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            if !matches!(self.conn.write_tls(&mut Nonblocking(tcp)), Ok(1..)) {
                break;
            }
        }
    }
}

/// The socket as rustls sees it: `std::io` reads and writes that never
/// wait, and return `WouldBlock` instead.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
