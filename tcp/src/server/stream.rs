//! The two kinds of connection the server serves: plain TCP, and TCP with
//! TLS on top. A connection is the same lesson either way (lines in, lines
//! out), so [`Connection`](super::connection::Connection) works on any stream
//! that can be split into a reading and a writing half, and joined again to
//! close it.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use networking_protocols::tls::server::TlsStream;

/// A stream we split into halves (so one can wait for input while the other
/// writes answers) and join again to close it gently.
pub(super) trait Split: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    type Read: AsyncRead + Unpin + Send;
    type Write: AsyncWrite + Unpin + Send;
    /// The TCP connection underneath, for socket options.
    fn tcp(&self) -> &TcpStream;
    fn split(self) -> (Self::Read, Self::Write);
    /// The halves of one stream joined again (`None` if they are not).
    fn join(read: Self::Read, write: Self::Write) -> Option<Self>;
    /// Resolves when the reading half has bytes waiting, so that a silent
    /// connection holds no read buffer (see `next_line`).
    fn readable(read: &Self::Read) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// Plain TCP: `into_split` gives halves that share the socket without a lock.
impl Split for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn join(read: OwnedReadHalf, write: OwnedWriteHalf) -> Option<Self> {
        read.reunite(write).ok()
    }

    fn readable(read: &OwnedReadHalf) -> impl Future<Output = io::Result<()>> + Send + '_ {
        read.readable()
    }
}

/// TLS: both directions share one rustls session (its keys and sequence
/// numbers), so `tokio::io::split` puts a lock around it.
impl Split for TlsStream<TcpStream> {
    type Read = ReadHalf<Self>;
    type Write = WriteHalf<Self>;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }

    fn join(read: Self::Read, write: Self::Write) -> Option<Self> {
        read.is_pair_of(&write).then(|| read.unsplit(write))
    }

    /// TLS decrypts into buffers of its own, which the socket's readiness
    /// does not show, so a TLS connection keeps its read buffer.
    fn readable(_read: &Self::Read) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::ready(Ok(()))
    }
}
