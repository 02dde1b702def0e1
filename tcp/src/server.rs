//! The TCP server: accept connections, give each one a task, serve lines.
//!
//! [`run`] takes a listener that is already bound and a future that resolves
//! when the server should stop, so the binary decides where to listen and what
//! "stop" means (Ctrl-C), while tests pass `127.0.0.1:0` and a channel.
//!
//! This file is the accept loop, the connection limit and shutdown; read
//! `server/connection.rs` next for one connection's life (echo, batching,
//! limits), then `server/chat.rs`.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use networking_protocols::accept::{Acceptor, Incoming, Throttle};
use networking_protocols::tls::{ServerConfig, TlsAcceptor, server::Handshake};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::time::timeout;
use tokio_util::io::InspectWriter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

mod chat;
mod connection;
pub mod stdio;
mod stream;

use crate::hexdump::Dump;
use crate::{BUSY_NOTICE, TLS_ONLY_NOTICE};
use chat::ChatLine;
use connection::Connection;

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
    /// With a TLS config, every client must do a TLS handshake first, and
    /// all its lines travel encrypted (see `networking_protocols::tls`).
    pub tls: Option<Arc<ServerConfig>>,
    /// Show every chunk read and written in hex on stderr (`-x`, see
    /// [`crate::hexdump`]).
    pub hex_dump: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Echo,
            max_line_bytes: 64 * 1024,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            tls: None,
            hex_dump: false,
        }
    }
}

/// How many chat lines may wait for a slow reader before it starts missing
/// some. Each connection has its own position in this shared queue.
const CHAT_BACKLOG: usize = 1024;

/// How many bytes we read from a client at a time. A connection holds no read
/// buffer while it waits for its client (see `connection::next_line`).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How many bytes of answers we queue before writing them out even though
/// more input is waiting.
const ANSWER_QUEUE_BYTES: usize = 8 * 1024;

/// What a client hears when we accepted it with our last file descriptor.
const OUT_OF_DESCRIPTORS: &[u8] =
    b"error: server busy (out of file descriptors); try again later\n";

/// After we send a refusal or an error, how long we keep reading (and
/// discarding) before we close; see [`close_gently`].
use networking_protocols::LINGER;

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
    let tls_acceptor = config.tls.clone().map(TlsAcceptor::from);

    // The acceptor still answers when the process is out of file
    // descriptors: see networking_protocols::accept.
    let mut acceptor = Acceptor::new(listener);
    // A flood of refused clients logs one line a second, not one per client.
    let mut refusals = Throttle::default();

    tokio::pin!(shutdown);
    loop {
        // `select!` waits for whichever comes first: a new connection or the
        // shutdown signal. https://docs.rs/tokio/latest/tokio/macro.select.html
        // `biased` polls the branches in order, shutdown first, so a stop
        // request wins over a waiting client. (The binary's Ctrl-C/SIGTERM
        // handlers are already in place: `shutdown_signal()` installs them
        // when it is called, before `listening on` is printed.)
        let (socket, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = acceptor.accept() => match accepted {
                Incoming::Open(socket, peer) => (socket, peer),
                Incoming::OutOfDescriptors(socket, _) => {
                    refuse_now(socket, OUT_OF_DESCRIPTORS);
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let open = match config.max_connections {
                1 => "1 connection".to_string(),
                n => format!("{n} connections"),
            };
            if let Some(held_back) = refusals.allow() {
                warn!(%peer, held_back, "refused: {open} already open");
            }
            let notice = format!("{BUSY_NOTICE}{open}); try again later\n");
            let dump = config.hex_dump.then(|| Dump::sent(peer));
            tracker.spawn(close_gently(socket, Bytes::from(notice), dump));
            continue;
        };
        // One task per connection: while one client is slow or silent, the
        // others' tasks keep running. https://tokio.rs/tokio/tutorial/spawning
        let chat = chat.clone();
        let Some(tls_acceptor) = tls_acceptor.clone() else {
            let connection = Connection::new(socket, peer, &config, stop.clone());
            tracker.spawn(async move {
                serve(connection, chat).await;
                drop(permit);
            });
            continue;
        };
        // With TLS, the handshake runs in the connection's task too: it takes
        // a round trip or two, and a slow client must not hold up the others.
        let (config, stop) = (config.clone(), stop.clone());
        tracker.spawn(async move {
            let handshake = tokio::select! {
                handshake = networking_protocols::tls::server::accept(&tls_acceptor, socket) => handshake,
                () = stop.cancelled() => return,
            };
            match handshake {
                Handshake::Done(tls) => serve(Connection::new(*tls, peer, &config, stop), chat).await,
                // A plaintext client would read TLS records as garbage; it
                // gets one line it can read instead.
                Handshake::NotTls(socket) => {
                    warn!(%peer, "refused: not TLS, and this server speaks TLS only");
                    let dump = config.hex_dump.then(|| Dump::sent(peer));
                    close_gently(socket, Bytes::from(TLS_ONLY_NOTICE), dump).await;
                }
                Handshake::Failed(why) => warn!(%peer, "TLS handshake failed: {why}"),
            }
            drop(permit);
        });
    }

    // Dropping the listener closes the port: new clients are refused from now.
    drop(acceptor);
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

/// Sends a refusal's one line, then closes without losing it
/// ([`networking_protocols::close_gently`]): at most [`LINGER`] to write it,
/// and as long again for the client to close. With `dump`, `-x` shows the
/// line.
async fn close_gently<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    last_line: Bytes,
    mut dump: Option<Dump>,
) {
    let mut socket = InspectWriter::new(socket, move |bytes: &[u8]| {
        if let Some(dump) = &mut dump {
            dump.chunk(bytes);
        }
    });
    if matches!(
        timeout(LINGER, socket.write_all(&last_line)).await,
        Ok(Ok(()))
    ) {
        networking_protocols::close_gently(socket).await;
    }
}

/// Refuses a connection accepted with our last file descriptor: the notice
/// goes into the socket's empty send buffer at once, and we close without
/// waiting, to free the descriptor for the next one. We first read whatever
/// the client already sent, so that closing sends a normal FIN rather than a
/// reset that could destroy the notice (see [`close_gently`]).
fn refuse_now(socket: TcpStream, notice: &[u8]) {
    let _ = socket.try_write(notice);
    let mut sink = [0u8; 1024];
    while matches!(socket.try_read(&mut sink), Ok(1..)) {}
}

/// Serves one connection in the server's mode: the server picks the
/// conversation, echo or chat (`server/chat.rs`), and `connection.rs` runs
/// either the same way, from the first line to the last.
async fn serve<S: stream::Split>(connection: Connection<S>, chat: broadcast::Sender<ChatLine>) {
    match connection.mode {
        Mode::Echo => {
            connection
                .serve(async |c: &mut Connection<S>| c.echo().await)
                .await
        }
        Mode::Chat => {
            connection
                .serve(async move |c: &mut Connection<S>| c.chat(chat).await)
                .await
        }
    }
}
