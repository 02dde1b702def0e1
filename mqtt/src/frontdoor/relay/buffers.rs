//! The relay's buffers: bytes queued for a socket, and reading without
//! holding memory while idle.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;

use super::READ_PER_TURN;

/// Bytes waiting to be written to one socket, as a queue of slices.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) chunks: VecDeque<Bytes>,
    pub(crate) bytes: usize,
}

impl Outbox {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty()
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
