//! MQTT over TLS inside the relay: rustls's state beside the TCP socket.
//!
//! The TLS handshake runs before the CONNECT is read, through tokio-rustls
//! (`Door::handshake`). After CONNACK, `Door::session` takes the TCP socket
//! and rustls's [`ServerConnection`] apart, and the relay keeps working the
//! way it does for a plaintext client: it waits until the socket is readable or
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

use std::io::{self, Read, Write};

use bytes::BytesMut;
use rustls::ServerConnection;
use tokio::net::TcpStream;

use super::READ_PER_TURN;
use super::buffers::{Nonblocking, Outbox};

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
    /// what they carry to `buffer`. Returns the bytes appended, `Ok(0)` at
    /// the end of the stream, and `WouldBlock` if no whole record has come.
    ///
    /// It stops reading the socket once [`READ_PER_TURN`] bytes are in, but
    /// always takes all that rustls has decrypted: rustls then holds no
    /// plaintext between calls, and the socket alone says whether more is
    /// waiting (its readiness stays set until a read finds it empty).
    ///
    /// The end is the client's `close_notify` alert, or a TCP close without
    /// one. TLS calls the second a possible truncation; MQTT has its own
    /// clean end, DISCONNECT, so a close without it publishes the will
    /// either way, and we treat both as the client closing.
    ///
    /// Errors: the socket's, and `InvalidData` for a record that does not
    /// decrypt or breaks TLS; then rustls's alert to the client is sent, as
    /// far as the socket takes it.
    pub(super) fn read(&mut self, tcp: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
        let mut total = 0;
        loop {
            // rustls refuses to read more records while its plaintext buffer
            // is full, so what it holds comes first.
            loop {
                let start = buffer.len();
                buffer.resize(start + 8 * 1024, 0);
                let read = self.conn.reader().read(&mut buffer[start..]);
                buffer.truncate(start + *read.as_ref().unwrap_or(&0));
                match read {
                    Ok(0) => return Ok(total),
                    Ok(n) => total += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                        return Ok(total);
                    }
                    Err(error) => return Err(error),
                }
            }
            if total >= READ_PER_TURN {
                return Ok(total);
            }
            match self.conn.read_tls(&mut Nonblocking(tcp)) {
                // At TCP's end rustls notes it, and the reader says so.
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
    /// tag per record in TLS 1.3). It takes no more plaintext while 64 KiB
    /// of records wait for the socket, so a TLS client's queue can hold
    /// about that much beyond `--max-queued-bytes`. Returns the plaintext
    /// bytes taken from `outbox`.
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

    /// Ends the session the polite way: a `close_notify` alert (RFC 8446
    /// §6.1), so the client can tell our close from a cut connection. Only
    /// if the socket takes it now: we do not wait for a client to read.
    pub(super) fn close(&mut self, tcp: &TcpStream) {
        self.conn.send_close_notify();
        while self.conn.wants_write() {
            if !matches!(self.conn.write_tls(&mut Nonblocking(tcp)), Ok(1..)) {
                break;
            }
        }
    }
}
