//! The relay's buffers: bytes queued for a socket, and reading without
//! holding memory while idle.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use super::READ_PER_TURN;

/// Bytes waiting to be written to one socket, as a queue of slices.
///
/// Small packets (acknowledgements, short messages) are copied one after
/// another into one chunk, so that a write system call carries many of
/// them; a large payload goes in as a slice of its own, without a copy.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    chunks: VecDeque<Bytes>,
    /// What `copy` gathered since the last chunk.
    tail: BytesMut,
    /// Bytes queued, in `chunks` and `tail`.
    pub(crate) bytes: usize,
}

/// How much room `copy` makes at a time.
const TAIL_BYTES: usize = 16 * 1024;

impl Outbox {
    /// Queues `chunk` as it is.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.seal();
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    /// Queues a copy of `parts`, one after another, after what is already
    /// queued.
    pub(crate) fn copy(&mut self, parts: &[&[u8]]) {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        if self.tail.capacity() - self.tail.len() < length {
            self.seal();
            self.tail.reserve(length.max(TAIL_BYTES));
        }
        for part in parts {
            self.tail.extend_from_slice(part);
        }
        self.bytes += length;
    }

    /// Moves what `copy` gathered into the queue of chunks.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes as much as the socket takes now, in vectored writes of up to
    /// 64 slices. Returns the bytes written; stops at `WouldBlock`.
    pub(super) fn write_to(&mut self, stream: &TcpStream) -> io::Result<usize> {
        self.write_with(|slices| match stream.try_write_vectored(slices) {
            Ok(0) => Err(io::ErrorKind::WriteZero.into()),
            written => written,
        })
    }

    /// Hands the queue to `write`, up to 64 slices at a time, until it is
    /// empty or `write` says `WouldBlock`; `write` returns how many bytes it
    /// took. Returns the bytes taken in all.
    pub(super) fn write_with(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.seal();
        let mut total = 0;
        while !self.chunks.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(64)
                .map(|chunk| IoSlice::new(chunk))
                .collect();
            let written = match write(&slices) {
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            };
            total += written;
            self.bytes -= written;
            let mut left = written;
            while left > 0 {
                let Some(front) = self.chunks.front_mut() else {
                    break;
                };
                if front.len() <= left {
                    left -= front.len();
                    self.chunks.pop_front();
                } else {
                    let _ = front.split_to(left);
                    left = 0;
                }
            }
        }
        if self.chunks.is_empty() {
            // Give the queue's memory back while the connection is idle.
            self.chunks = VecDeque::new();
            self.tail = BytesMut::new();
        }
        Ok(total)
    }
}

/// Reads what the socket has now (up to [`READ_PER_TURN`] bytes) into
/// `buffer`. `Ok(0)` is the end of the stream.
pub(super) fn read_some(stream: &TcpStream, buffer: &mut BytesMut) -> io::Result<usize> {
    let mut total = 0;
    while total < READ_PER_TURN {
        buffer.reserve(8 * 1024);
        match stream.try_read_buf(buffer) {
            Ok(0) if total == 0 => return Ok(0),
            Ok(0) => break,
            Ok(n) => total += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && total > 0 => break,
            Err(error) => return Err(error),
        }
    }
    Ok(total)
}

/// An idle buffer holds no memory.
pub(super) fn release_if_empty(buffer: &mut BytesMut) {
    if buffer.is_empty() && buffer.capacity() > 0 {
        *buffer = BytesMut::new();
    }
}

/// The socket as rustls and tungstenite see it: `std::io` reads and
/// writes that never wait, and return `WouldBlock` instead.
pub(crate) struct Nonblocking<'a>(pub(crate) &'a TcpStream);

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
