//! The TCP server: accept connections, give each one a task, serve lines.
//!
//! [`run`] takes a listener that is already bound and a future that resolves
//! when the server should stop, so the binary decides where to listen and what
//! "stop" means (Ctrl-C), while tests pass `127.0.0.1:0` and a channel.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::time::timeout;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::{LineCodec, LineError};

/// What the server does with each line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer every line to its sender, byte for byte.
    Echo,
    /// Relay every line to every other client, tagged with the sender's address.
    Chat,
}

/// The server's settings; [`Config::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// A longer line gets an error line and the connection closes.
    pub max_line_bytes: usize,
    /// One more connection gets a "server busy" line and is closed.
    pub max_connections: usize,
    /// A client that sends nothing for this long is disconnected, and so is
    /// one that stops reading our answers for this long.
    pub idle_timeout: Duration,
    /// On shutdown, how long open connections get to finish.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Echo,
            max_line_bytes: 64 * 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How many chat lines may wait for a slow reader before it starts missing
/// some. Each connection has its own position in this shared queue.
const CHAT_BACKLOG: usize = 1024;

/// How many bytes of answers we queue before writing them out even though
/// more input is waiting.
const ANSWER_QUEUE_BYTES: usize = 8 * 1024;

/// After we send a refusal or an error, how long we keep reading (and
/// discarding) before we close; see [`close_gently`].
const LINGER: Duration = Duration::from_secs(2);

/// Serves connections from `listener` until `shutdown` resolves, then stops
/// accepting, lets open connections finish their answers (for at most
/// `config.shutdown_grace`) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let config = Arc::new(config);
    // A semaphore counts open connections: each holds a permit until it ends.
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // `TaskTracker` lets us wait for every connection task at shutdown, and
    // `CancellationToken` tells them all that shutdown has begun. Both come from
    // tokio-util: https://docs.rs/tokio-util/latest/tokio_util/task/struct.TaskTracker.html
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    // In chat mode, a broadcast channel carries every line to every connection.
    let (chat, _) = broadcast::channel::<ChatLine>(CHAT_BACKLOG);

    tokio::pin!(shutdown);
    loop {
        // `select!` waits for whichever comes first: a new connection or the
        // shutdown signal. https://docs.rs/tokio/latest/tokio/macro.select.html
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Accept fails when we run out of file descriptors, for
                    // example. It is not fatal; pause so we do not spin.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%peer, "refused: {} connections already open", config.max_connections);
            let notice = format!(
                "error: server busy ({} connections); try again later\n",
                config.max_connections
            );
            tracker.spawn(close_gently(socket, Bytes::from(notice)));
            continue;
        };
        // One task per connection: while one client is slow or silent, the
        // others' tasks keep running. https://tokio.rs/tokio/tutorial/spawning
        let connection = Connection::new(socket, peer, &config, stop.clone());
        let chat = chat.clone();
        tracker.spawn(async move {
            connection.serve(chat).await;
            drop(permit);
        });
    }

    // Dropping the listener closes the port: new clients are refused from now.
    drop(listener);
    info!(
        "stopped accepting; waiting for {} connection(s)",
        tracker.len()
    );
    stop.cancel();
    tracker.close();
    if timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            "connections still open after {:?}; closing them",
            config.shutdown_grace
        );
    }
    Ok(())
}

/// A line on its way through the chat, with who sent it (so the sender's own
/// task can skip it).
#[derive(Debug, Clone)]
struct ChatLine {
    from: SocketAddr,
    text: Bytes,
}

/// One client's connection: its two halves, framed into lines.
struct Connection {
    peer: SocketAddr,
    lines: FramedRead<OwnedReadHalf, LineCodec>,
    answers: FramedWrite<OwnedWriteHalf, LineCodec>,
    idle_timeout: Duration,
    mode: Mode,
    stop: CancellationToken,
    /// Lines received, for the disconnect log.
    count: u64,
}

/// Why a connection ended, for the log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    Idle,
    TooLong(usize),
    Failed(io::Error),
}

impl Connection {
    fn new(socket: TcpStream, peer: SocketAddr, config: &Config, stop: CancellationToken) -> Self {
        // Nagle's algorithm holds back a small write while an earlier one is
        // unacknowledged, hoping to merge them; we already merge answers into
        // one write per batch, so waiting would only add latency.
        if let Err(error) = socket.set_nodelay(true) {
            warn!(%peer, %error, "cannot set TCP_NODELAY");
        }
        // Splitting lets one side wait for the client's bytes while the other
        // writes answers. `into_split` halves can move to different tasks.
        let (reader, writer) = socket.into_split();
        // The answer buffer starts empty and grows only when there is something
        // to send, so idle connections stay small. Once it holds 8 KiB, `feed`
        // writes it out before queuing more.
        let mut answers = FramedWrite::with_capacity(writer, LineCodec::new(0), 0);
        answers.set_backpressure_boundary(ANSWER_QUEUE_BYTES);
        Connection {
            peer,
            lines: FramedRead::new(reader, LineCodec::new(config.max_line_bytes)),
            answers,
            idle_timeout: config.idle_timeout,
            mode: config.mode,
            stop,
            count: 0,
        }
    }

    async fn serve(mut self, chat: broadcast::Sender<ChatLine>) {
        let started = Instant::now();
        info!(peer = %self.peer, "connected");
        let end = match self.mode {
            Mode::Echo => self.echo().await,
            Mode::Chat => self.chat(chat).await,
        };
        let (peer, lines, duration) = (self.peer, self.count, started.elapsed());
        if let End::Failed(error) = &end {
            return info!(%peer, lines, ?duration, %error, "connection failed");
        }
        info!(%peer, lines, ?duration, reason = ?end, "disconnected");
        // Answers still queued go out first (for at most LINGER: a client that
        // does not read cannot hold us here).
        let _ = timeout(LINGER, self.answers.flush()).await;
        let notice = match end {
            // The client sent FIN and we have answered everything: dropping
            // the socket sends our FIN.
            End::ClientClosed | End::Failed(_) => return,
            // Echo answers stay byte-exact, so an echo client is not told that
            // the server is leaving (it sees the connection close); a chat
            // client is.
            End::Shutdown if self.mode == Mode::Echo => String::new(),
            End::Shutdown => "[server] shutting down\n".to_string(),
            End::Idle => format!(
                "error: idle for {:?}; closing connection\n",
                self.idle_timeout
            ),
            End::TooLong(max) => {
                format!("error: line longer than {max} bytes; closing connection\n")
            }
        };
        let reader = self.lines.into_inner();
        let writer = self.answers.into_inner();
        if let Ok(socket) = reader.reunite(writer) {
            close_gently(socket, Bytes::from(notice)).await;
        }
    }

    /// Echo: every line goes back to its sender. Answers are batched: while
    /// more lines are already waiting in our buffer we only queue answers, and
    /// we write (one syscall) when the input runs dry. A client that pipelines
    /// a hundred lines gets them back in a few writes, not a hundred.
    async fn echo(&mut self) -> End {
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
            // waiting. If not, flush what we queued, then wait for more input.
            let next = match self.lines.next().now_or_never() {
                Some(next) => next,
                None => {
                    let answers = &mut self.answers;
                    let lines = &mut self.lines;
                    tokio::select! {
                        () = &mut stop => return End::Shutdown,
                        () = &mut idle => {
                            // The client sent nothing, or read none of our
                            // answers (the flush below never finished).
                            if last_heard.elapsed() >= self.idle_timeout {
                                return End::Idle;
                            }
                            idle.as_mut().reset((last_heard + self.idle_timeout).into());
                            continue;
                        }
                        next = async {
                            answers.flush().await?;
                            Ok::<_, LineError>(lines.next().await)
                        } => match next {
                            Ok(next) => next,
                            Err(error) => return self.fail(error),
                        },
                    }
                }
            };
            let line = match next {
                Some(Ok(line)) => line,
                // The client closed its side (EOF). `serve` sends what is
                // still queued before closing ours: no answer is lost.
                None => return End::ClientClosed,
                Some(Err(error)) => return self.fail(error),
            };
            self.count += 1;
            last_heard = Instant::now();
            // `feed` queues the answer; it writes only if the queue is full,
            // which is also how a client that never reads gets slowed down.
            if let Err(error) = self.answers.feed(line.freeze()).await {
                return self.fail(error);
            }
        }
    }

    /// Chat: lines from this client go to the others; lines from the others
    /// come to this client, as they happen, in any order with its own input.
    async fn chat(&mut self, chat: broadcast::Sender<ChatLine>) -> End {
        let mut others = chat.subscribe();
        let peer = self.peer;
        let say = |text: String| ChatLine {
            from: peer,
            text: Bytes::from(text),
        };
        // `send` fails only when nobody listens, which is fine for a chat.
        let _ = chat.send(say(format!("[server] {peer} joined\n")));
        let idle = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(idle);
        let end = loop {
            tokio::select! {
                () = self.stop.cancelled() => break End::Shutdown,
                () = &mut idle => break End::Idle,
                next = self.lines.next() => match next {
                    Some(Ok(line)) => {
                        self.count += 1;
                        idle.as_mut().reset(tokio::time::Instant::now() + self.idle_timeout);
                        let mut text = format!("[{peer}] ").into_bytes();
                        text.extend_from_slice(&line);
                        if !text.ends_with(b"\n") {
                            text.push(b'\n');
                        }
                        let _ = chat.send(ChatLine { from: peer, text: Bytes::from(text) });
                    }
                    None => break End::ClientClosed,
                    Some(Err(error)) => break self.fail(error),
                },
                heard = others.recv() => {
                    if let Err(end) = self.relay(heard, &mut others).await {
                        break end;
                    }
                }
            }
        };
        // At shutdown everyone leaves at once; announcing each would be noise.
        if !matches!(end, End::Shutdown) {
            let _ = chat.send(say(format!("[server] {peer} left\n")));
        }
        end
    }

    /// Writes one chat line, plus any others already waiting, in one flush.
    async fn relay(
        &mut self,
        mut heard: Result<ChatLine, broadcast::error::RecvError>,
        others: &mut broadcast::Receiver<ChatLine>,
    ) -> Result<(), End> {
        use broadcast::error::{RecvError, TryRecvError};
        loop {
            let text = match heard {
                Ok(line) if line.from == self.peer => None,
                Ok(line) => Some(line.text),
                // This client reads slower than the others talk: the channel
                // dropped the oldest lines for it. Say so instead of hiding it.
                Err(RecvError::Lagged(n)) => Some(Bytes::from(format!(
                    "[server] you are reading too slowly: {n} line(s) skipped\n"
                ))),
                Err(RecvError::Closed) => return Err(End::Shutdown),
            };
            if let Some(text) = text
                && let Err(error) = self.answers.feed(text).await
            {
                return Err(self.fail(error));
            }
            heard = match others.try_recv() {
                Ok(line) => Ok(line),
                Err(TryRecvError::Lagged(n)) => Err(RecvError::Lagged(n)),
                Err(TryRecvError::Empty | TryRecvError::Closed) => return self.flush().await,
            };
        }
    }

    /// Sends every queued answer. A client that stops reading fills its TCP
    /// window, our write waits, and after `idle_timeout` we give up on it.
    async fn flush(&mut self) -> Result<(), End> {
        match timeout(self.idle_timeout, self.answers.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.fail(error)),
            Err(_) => Err(End::Idle),
        }
    }

    /// Turns a codec error into how the connection ends.
    fn fail(&self, error: LineError) -> End {
        match error {
            LineError::TooLong { max_line_bytes } => End::TooLong(max_line_bytes),
            LineError::Io(error) => End::Failed(error),
        }
    }
}

/// Sends a last line, then closes without losing it.
///
/// Closing a socket while the client's bytes still sit unread in our receive
/// buffer makes the kernel answer with a reset (RST) instead of a normal close
/// (FIN), and a reset can destroy our last line before the client reads it. So
/// we send the line, close our sending side, and read and discard whatever the
/// client still sends until it closes too, for at most [`LINGER`].
async fn close_gently(mut socket: TcpStream, last_line: Bytes) {
    let _ = timeout(LINGER, async {
        socket.write_all(&last_line).await?;
        socket.shutdown().await?;
        let mut sink = [0u8; 4096];
        while socket.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    })
    .await;
}
