//! One client's connection: framing it into lines, echoing them with
//! batched writes, and closing it without losing answers.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::io::{InspectReader, InspectWriter};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::stream::Split;
use super::{ANSWER_QUEUE_BYTES, Config, LINGER, Mode, READ_BUFFER_BYTES};
use crate::hexdump::{Dump, OnChunk};
use crate::{LineCodec, LineError, SHUTDOWN_NOTICE};

/// The reading half, with a look at each read as it happens (for the debug
/// log, and `-x`).
type Reader<S> = InspectReader<<S as Split>::Read, OnChunk>;
/// The writing half, with a look at each write (for `-x`).
type Writer<S> = InspectWriter<<S as Split>::Write, OnChunk>;

/// One client's connection (plain TCP, or TLS): its two halves, framed into
/// lines.
pub(super) struct Connection<S: Split> {
    pub(super) peer: SocketAddr,
    pub(super) lines: FramedRead<Reader<S>, LineCodec>,
    pub(super) answers: FramedWrite<Writer<S>, LineCodec>,
    pub(super) idle_timeout: Duration,
    pub(super) mode: Mode,
    pub(super) stop: CancellationToken,
    /// Lines received, for the disconnect log.
    pub(super) count: u64,
}

/// Why a connection ended, for the log.
#[derive(Debug)]
pub(super) enum End {
    ClientClosed,
    Shutdown,
    Idle,
    TooLong(usize),
    /// The first bytes were a TLS handshake: a TLS client at a plaintext port.
    TlsClient,
    Failed(io::Error),
}

/// Whether a connection's first line is the start of a TLS handshake: a
/// record of type 22 (handshake), protocol version 3.x. A ClientHello always
/// holds a byte 10 (`\n`), so it reaches us as a "line".
pub(super) fn is_tls_hello(line: &[u8]) -> bool {
    line.starts_with(&[22, 3])
}

impl<S: Split> Connection<S> {
    pub(super) fn new(
        socket: S,
        peer: SocketAddr,
        config: &Config,
        stop: CancellationToken,
    ) -> Self {
        // Nagle's algorithm holds back a small write while an earlier one is
        // unacknowledged, hoping to merge them; we already merge answers into
        // one write per batch, so waiting would only add latency.
        if let Err(error) = socket.tcp().set_nodelay(true) {
            warn!(%peer, %error, "cannot set TCP_NODELAY");
        }
        // Splitting lets one side wait for the client's bytes while the other
        // writes answers (see `stream.rs`).
        let (reader, writer) = socket.split();
        // `RUST_LOG=debug` shows the byte stream at work: what each read
        // returned, and how many line ends it held. Lines typed one by one
        // come one per read; piped lines arrive several to a read, and a
        // long line takes several reads.
        // With `-x`, every read and every write is also shown in hex.
        let mut received = config.hex_dump.then(|| Dump::received(peer));
        let log_read: OnChunk = Box::new(move |bytes: &[u8]| {
            let line_ends = bytes.iter().filter(|&&b| b == b'\n').count();
            debug!(%peer, bytes = bytes.len(), line_ends, "read");
            if let Some(dump) = &mut received {
                dump.chunk(bytes);
            }
        });
        let reader = InspectReader::new(reader, log_read);
        let mut sent = config.hex_dump.then(|| Dump::sent(peer));
        let writer = InspectWriter::new(
            writer,
            Box::new(move |bytes: &[u8]| {
                if let Some(dump) = &mut sent {
                    dump.chunk(bytes);
                }
            }) as OnChunk,
        );
        // The answer buffer starts empty and grows only when there is something
        // to send, so idle connections stay small. Once it holds 8 KiB, `feed`
        // writes it out before queuing more.
        let mut answers = FramedWrite::with_capacity(writer, LineCodec::new(0), 0);
        answers.set_backpressure_boundary(ANSWER_QUEUE_BYTES);
        // The read buffer too: `next_line` takes one when bytes arrive.
        let codec = LineCodec::new(config.max_line_bytes);
        Connection {
            peer,
            lines: FramedRead::with_capacity(reader, codec, 0),
            answers,
            idle_timeout: config.idle_timeout,
            mode: config.mode,
            stop,
            count: 0,
        }
    }

    pub(super) async fn serve(mut self, conversation: impl AsyncFnOnce(&mut Self) -> End) {
        let started = Instant::now();
        info!(peer = %self.peer, "connected");
        let end = conversation(&mut self).await;
        let (peer, lines, duration) = (self.peer, self.count, started.elapsed());
        // The last line the client gets, if any, for each way the
        // connection can end.
        let notice = match &end {
            // The connection broke: nothing more can go out, and dropping
            // the socket is all that is left.
            End::Failed(error) => {
                return info!(%peer, lines, ?duration, %error, "connection failed");
            }
            // The client sent FIN and we have answered everything: we close
            // our side too (over TLS, with a close_notify alert first, which
            // tells the client the end is ours and not an attacker's cut).
            End::ClientClosed | End::TlsClient => String::new(),
            // Echo answers stay byte-exact, so an echo client is not told that
            // the server is leaving (it sees the connection close); a chat
            // client is.
            End::Shutdown if self.mode == Mode::Echo => String::new(),
            End::Shutdown => SHUTDOWN_NOTICE.to_string(),
            End::Idle => format!(
                "error: idle for {:?}; closing connection\n",
                self.idle_timeout
            ),
            End::TooLong(max) => {
                format!("error: line longer than {max} bytes; closing connection\n")
            }
        };
        if let End::TlsClient = &end {
            // Our plaintext answer would be garbage to a TLS client: we close,
            // and its handshake fails with "the server closed the connection".
            warn!(%peer, "refused: a TLS handshake, and this server speaks plain TCP (start it with --tls)");
        }
        info!(%peer, lines, ?duration, reason = ?end, "disconnected");
        self.send_queued_answers(&end).await;
        // The last line goes out as every answer did (so `-x` shows it too),
        // and we wait at most LINGER for it.
        let sent = notice.is_empty()
            || matches!(
                timeout(LINGER, self.answers.send(Bytes::from(notice))).await,
                Ok(Ok(()))
            );
        let reader = self.lines.into_inner().into_inner();
        let writer = self.answers.into_inner().into_inner();
        if let Some(socket) = S::join(reader, writer).filter(|_| sent) {
            networking_protocols::close_gently(socket).await;
        }
    }

    /// Sends the answers still queued when the connection ends. A client
    /// that closed its sending side may still be reading, as slowly as any
    /// client: it gets the idle timeout (cut to LINGER if shutdown begins).
    /// After a refusal, or at shutdown, we wait at most LINGER: a client that
    /// does not read cannot hold us here.
    async fn send_queued_answers(&mut self, end: &End) {
        let mut flush = self.answers.flush();
        if !matches!(end, End::ClientClosed) {
            let _ = timeout(LINGER, flush).await;
            return;
        }
        tokio::select! {
            _ = timeout(self.idle_timeout, &mut flush) => {}
            () = self.stop.cancelled() => {
                let _ = timeout(LINGER, flush).await;
            }
        }
    }

    /// Echo: every line goes back to its sender. Answers are batched: while
    /// more lines are already waiting in our buffer we only queue answers, and
    /// we write (one syscall) when the input runs dry. A client that pipelines
    /// a hundred lines gets them back in a few writes, not a hundred.
    pub(super) async fn echo(&mut self) -> End {
        // The idle timer is armed once and checked lazily: when it fires we
        // look at when we last heard from the client, and either give up or
        // re-arm it. Re-arming a timer for every batch would cost more than
        // the echo itself.
        let mut last_heard = Instant::now();
        let idle = tokio::time::sleep(self.idle_timeout);
        let stop = self.stop.clone().cancelled_owned();
        tokio::pin!(idle, stop);
        loop {
            // `now_or_never` asks "is another line ready right now?" without
            // waiting. If not (or once 8 KiB of answers are queued), flush what
            // we queued, then wait for more input.
            let queue_full = self.answers.write_buffer().len() >= ANSWER_QUEUE_BYTES;
            let ready = if queue_full {
                None
            } else {
                self.lines.next().now_or_never()
            };
            let next = match ready {
                Some(next) => next,
                None => {
                    let answers = &mut self.answers;
                    let lines = &mut self.lines;
                    tokio::select! {
                        () = &mut stop => return End::Shutdown,
                        () = &mut idle => {
                            // The client sent nothing, or read none of our
                            // answers (the flush below never finished: its
                            // TCP window, and then our send buffer, are full).
                            let quiet = last_heard.elapsed();
                            if quiet >= self.idle_timeout {
                                return End::Idle;
                            }
                            // The rest of the timeout, from now. (Not
                            // `last_heard + idle_timeout`: that panics for a
                            // timeout past the clock's end.)
                            idle.set(tokio::time::sleep(self.idle_timeout - quiet));
                            continue;
                        }
                        next = async {
                            answers.flush().await?;
                            // Everything is sent: give the answer buffer
                            // back, so a connection that falls silent now
                            // holds none. The next answer takes a new one.
                            *answers.write_buffer_mut() = BytesMut::new();
                            Ok::<_, LineError>(next_line::<S>(lines).await)
                        } => match next {
                            Ok(next) => {
                                // One clock read per batch, not per line.
                                last_heard = Instant::now();
                                next
                            }
                            Err(error) => return End::from(error),
                        },
                    }
                }
            };
            let line = match next {
                Some(Ok(line)) => line,
                // The client closed its side (EOF). `serve` sends what is
                // still queued before closing ours: no answer is lost.
                None => return End::ClientClosed,
                Some(Err(error)) => return End::from(error),
            };
            if self.count == 0 && is_tls_hello(&line) {
                return End::TlsClient;
            }
            self.count += 1;
            // `feed` only queues the answer: the queue is below its limit, so
            // it does not write. We stop reading while the queue is full, so a
            // client that sends without reading is slowed down, not buffered.
            if let Err(error) = self.answers.feed(line.freeze()).await {
                return End::from(error);
            }
        }
    }
}

/// Reads the next line, holding no read buffer while there is nothing to
/// read.
///
/// Most connections spend most of their life waiting for their client. While
/// one waits with an empty buffer, we give the buffer back and wait for the
/// socket to become readable (the kernel holds any bytes that arrive), then
/// take a fresh [`READ_BUFFER_BYTES`] buffer for the read. Ten thousand silent
/// clients then cost ten thousand sockets and tasks, not ten thousand buffers.
pub(super) async fn next_line<S: Split>(
    lines: &mut FramedRead<Reader<S>, LineCodec>,
) -> Option<Result<BytesMut, LineError>> {
    if lines.read_buffer().is_empty() {
        // `now_or_never` polls once: readable already (the next bytes are
        // here), or we are about to wait.
        if S::readable(half::<S>(lines)).now_or_never().is_none() {
            *lines.read_buffer_mut() = BytesMut::new();
            if let Err(error) = S::readable(half::<S>(lines)).await {
                return Some(Err(LineError::Io(error)));
            }
        }
        lines.read_buffer_mut().reserve(READ_BUFFER_BYTES);
    }
    lines.next().await
}

/// The socket's reading half, under the framing and the read log.
fn half<S: Split>(lines: &FramedRead<Reader<S>, LineCodec>) -> &S::Read {
    lines.get_ref().get_ref()
}

/// A codec error ends the connection: a line over the limit, or the socket's
/// own error.
impl From<LineError> for End {
    fn from(error: LineError) -> Self {
        match error {
            LineError::TooLong { max_line_bytes } => End::TooLong(max_line_bytes),
            LineError::Io(error) => End::Failed(error),
        }
    }
}
