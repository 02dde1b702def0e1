//! The TCP client: connect, then move bytes both ways at once.
//!
//! A TCP connection is two independent byte streams, one in each direction.
//! [`run`] treats it that way: one half sends our input while the other half
//! prints whatever the server sends, whenever it sends it. That is what makes
//! the client work for chat, where lines arrive while you type, and not only
//! for echo, where every line has exactly one answer.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use networking_protocols::tls::client::TlsStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::{InspectReader, InspectWriter};
use tracing::{debug, info};

use crate::hexdump::{Dump, OnChunk};
use crate::{REFUSALS, SHUTDOWN_NOTICE};

/// Opens a TCP connection: the kernel sends SYN, the server's kernel answers
/// SYN-ACK, we send ACK (the three-way handshake), and only then does
/// `connect` return. A refused connection (nobody listening on that port)
/// fails at once; a host that never answers fails after `wait`.
pub async fn connect(host: &str, port: u16, wait: Duration) -> anyhow::Result<TcpStream> {
    let attempt = tokio::time::timeout(wait, TcpStream::connect((host, port))).await;
    let stream = match attempt {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionRefused => {
            bail!("cannot connect to {host}:{port}: {error}; is tcp_server running on that port?")
        }
        Ok(Err(error)) => bail!("cannot connect to {host}:{port}: {error}"),
        Err(_) => bail!("cannot connect to {host}:{port}: no answer within {wait:?}"),
    };
    // Small writes go out at once instead of waiting to be merged with the
    // next one (Nagle's algorithm): an interactive client wants low latency.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends every chunk of `input` to the server while copying everything the
/// server sends to `output`, until the server closes the connection.
///
/// When `input` ends we close only our sending half (a TCP "half-close": our
/// kernel sends FIN), then keep reading: answers to our last lines may still be
/// on their way, and the server closes its half when it has sent them. So
/// `printf 'a\nb\n' | tcp_client` prints both answers before it exits.
///
/// Errors: the connection was reset, the server closed it before our input
/// ended (everything it sent is printed first), the server refused us (its
/// only line was one of [`REFUSALS`]: that line is the error, and is not
/// printed as output), or `output` failed. A server that closes with
/// [`SHUTDOWN_NOTICE`] as its last line announced an orderly shutdown: that
/// ends the session normally, input or not.
///
/// With `hexdump`, every chunk sent and received is also shown in hex on
/// stderr (`-x`, see [`crate::hexdump`]).
pub async fn run<I, O>(stream: TcpStream, input: I, output: O, hexdump: bool) -> anyhow::Result<()>
where
    I: Stream<Item = io::Result<Bytes>>,
    O: AsyncWrite + Unpin,
{
    let server = stream.peer_addr()?;
    let (from_server, to_server) = stream.into_split();
    let (from_server, to_server) = tap(server, from_server, to_server, hexdump);
    exchange(server, from_server, to_server, input, output).await
}

/// [`run`] over TLS: the same lines, encrypted. Closing our sending half
/// sends TLS's close_notify alert, then TCP's FIN. With `hexdump`, the dump
/// shows the lines before encryption.
pub async fn run_tls<I, O>(
    stream: TlsStream<TcpStream>,
    input: I,
    output: O,
    hexdump: bool,
) -> anyhow::Result<()>
where
    I: Stream<Item = io::Result<Bytes>>,
    O: AsyncWrite + Unpin,
{
    let server = stream.get_ref().0.peer_addr()?;
    // Both directions share one TLS session, so the halves share it through
    // a lock (`tokio::io::split`) rather than each owning the socket.
    let (from_server, to_server) = tokio::io::split(stream);
    let (from_server, to_server) = tap(server, from_server, to_server, hexdump);
    exchange(server, from_server, to_server, input, output).await
}

/// The two halves, each showing what passes through it when `hexdump` is
/// on: tokio-util's `InspectReader` and `InspectWriter` hand every chunk
/// read or written to a callback.
fn tap<R: AsyncRead, W: AsyncWrite>(
    server: SocketAddr,
    from_server: R,
    to_server: W,
    hexdump: bool,
) -> (InspectReader<R, OnChunk>, InspectWriter<W, OnChunk>) {
    let (received, sent): (OnChunk, OnChunk) = if hexdump {
        let received = Dump::received(server).into_callback();
        (received, Dump::sent(server).into_callback())
    } else {
        (Box::new(|_: &[u8]| {}), Box::new(|_: &[u8]| {}))
    };
    (
        InspectReader::new(from_server, received),
        InspectWriter::new(to_server, sent),
    )
}

async fn exchange<R, W, I, O>(
    server: SocketAddr,
    mut from_server: R,
    mut to_server: W,
    input: I,
    mut output: O,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    I: Stream<Item = io::Result<Bytes>>,
    O: AsyncWrite + Unpin,
{
    let send = async move {
        tokio::pin!(input);
        while let Some(chunk) = input.next().await {
            let chunk = chunk.context("cannot read input")?;
            to_server
                .write_all(&chunk)
                .await
                .with_context(|| format!("cannot send to {server}"))?;
        }
        to_server
            .shutdown()
            .await
            .with_context(|| format!("cannot close the connection to {server}"))
    };
    // Each chunk is printed and flushed as it arrives, so lines appear as the
    // server sends them. The error says which side failed: the connection, or
    // our output (`tcp_client | head -1` ends with a broken pipe).
    let receive = async move {
        let mut chunk = vec![0u8; 8 * 1024];
        // The last bytes received, to recognise the shutdown notice.
        let mut tail = Tail::default();
        // The first line, held back while it may be a refusal.
        let mut first = FirstLine::default();
        loop {
            let n = from_server
                .read(&mut chunk)
                .await
                .with_context(|| format!("connection to {server} failed"))?;
            // `RUST_LOG=debug`: one read is whatever had arrived, not one
            // line: answers sent back to back often come in one read.
            debug!(bytes = n, "read");
            if n == 0 {
                // The server's FIN: it has sent everything it will send.
                if let Some(refusal) = first.refusal() {
                    bail!("{server} refused us: {refusal}");
                }
                output
                    .write_all(first.release())
                    .await
                    .context("cannot write output")?;
                output.flush().await.context("cannot write output")?;
                return Ok::<_, anyhow::Error>(tail.is_notice());
            }
            tail.push(&chunk[..n]);
            let ready = first.push(&chunk[..n]);
            output
                .write_all(&ready)
                .await
                .context("cannot write output")?;
            output.flush().await.context("cannot write output")?;
        }
    };
    tokio::pin!(send, receive);

    let mut sending = true;
    let mut send_error = None;
    loop {
        tokio::select! {
            sent = &mut send, if sending => {
                sending = false;
                // A failed send usually means the server went away; let the
                // receiving half finish first so its last words are printed.
                send_error = sent.err();
            }
            received = &mut receive => {
                let announced = received?;
                if announced {
                    info!("{server} shut down");
                    return Ok(());
                }
                if let Some(error) = send_error {
                    return Err(error);
                }
                if sending {
                    bail!("{server} closed the connection before our input ended");
                }
                return Ok(());
            }
        }
    }
}

/// The start of what the server sent, held back until it cannot be a
/// refusal: a first line that is one of [`REFUSALS`] and nothing after it.
#[derive(Debug, Default)]
struct FirstLine {
    held: Vec<u8>,
    /// Whether what is held can no longer be a refusal, and goes out as it
    /// comes.
    passed: bool,
}

impl FirstLine {
    /// The longest refusal line we hold back, in bytes.
    const LONGEST: usize = 256;

    /// Takes `chunk`; returns what may be printed now.
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.passed {
            return chunk.to_vec();
        }
        self.held.extend_from_slice(chunk);
        let could_be = REFUSALS.iter().any(|refusal| {
            let prefix = &refusal.as_bytes()[..refusal.len().min(self.held.len())];
            self.held.starts_with(prefix)
        });
        let more_than_a_line = match self.held.iter().position(|&byte| byte == b'\n') {
            Some(end) => end + 1 < self.held.len(),
            None => self.held.len() > Self::LONGEST,
        };
        if could_be && !more_than_a_line {
            return Vec::new();
        }
        self.passed = true;
        std::mem::take(&mut self.held)
    }

    /// At the end of the stream: the refusal, if all that came was one.
    fn refusal(&self) -> Option<&str> {
        let line = std::str::from_utf8(&self.held).ok()?.trim_end();
        let refused = !self.passed
            && REFUSALS
                .iter()
                .any(|refusal| line.starts_with(refusal.trim_end()));
        refused.then(|| line.trim_start_matches("error: "))
    }

    /// At the end of the stream, when it was no refusal: what is held.
    fn release(&mut self) -> &[u8] {
        &self.held
    }
}

/// The last bytes of a stream, enough to tell whether its last line is
/// [`SHUTDOWN_NOTICE`] (the notice and the newline before it).
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Whether more came before `bytes`.
    cut: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        let keep = SHUTDOWN_NOTICE.len() + 1;
        self.bytes
            .extend_from_slice(&chunk[chunk.len().saturating_sub(keep)..]);
        if self.bytes.len() > keep {
            self.bytes.drain(..self.bytes.len() - keep);
            self.cut = true;
        } else if chunk.len() > keep {
            self.cut = true;
        }
    }

    /// Whether the stream ended with the notice as a whole line.
    fn is_notice(&self) -> bool {
        let notice = SHUTDOWN_NOTICE.as_bytes();
        match self.bytes.strip_suffix(notice) {
            Some([]) => !self.cut,
            Some(before) => before.ends_with(b"\n"),
            None => false,
        }
    }
}

/// The input for `-m`: `message` as one line, `count` times, `interval` apart.
pub fn repeat_line(
    message: &str,
    count: u64,
    interval: Duration,
) -> impl Stream<Item = io::Result<Bytes>> + use<> {
    let line = Bytes::from(format!("{message}\n"));
    futures_util::stream::iter(0..count).then(move |i| {
        let line = line.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok(line)
        }
    })
}
