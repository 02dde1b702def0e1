//! The WebSocket server: accept connections, give each one a task, upgrade
//! it, serve it.
//!
//! [`run`] takes a listener that is already bound and a future that resolves
//! when the server should stop, so the binary decides where to listen and what
//! "stop" means (Ctrl-C), while tests pass `127.0.0.1:0` and a channel.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::http::{self, Accepted};
use crate::session::{self, Shared};

/// What the server does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send every message back to its sender, unchanged.
    Echo,
    /// Send every message to every other client.
    Chat,
}

/// The server's settings; [`Config::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// A larger message gets Close 1009.
    pub max_message_bytes: usize,
    /// One more connection gets `503 Service Unavailable` instead of an upgrade.
    pub max_connections: usize,
    /// How often we ping each client; one silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// On shutdown, how long the closing handshakes may take in all.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Echo,
            max_message_bytes: 1024 * 1024,
            max_connections: 1024,
            ping_interval: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How many chat messages may wait for a slow reader before it starts missing
/// some. Each connection has its own position in this shared queue, so a slow
/// reader never holds up the others. Messages can be large, so we keep fewer
/// than the TCP chat does.
const CHAT_BACKLOG: usize = 256;

/// The largest payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Serves connections from `listener` until `shutdown` resolves, then stops
/// accepting, sends every client Close 1001, waits for their answers (for at
/// most `config.shutdown_grace`) and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // tungstenite refuses a message over the limit, and also any single frame
    // over it, as soon as it reads the frame's length: it never buffers more.
    // The frame limit never goes below 125 bytes, the most a control frame
    // (ping, pong, close) may carry: those must pass even under a tiny limit.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes.max(MAX_CONTROL_PAYLOAD)));
    // A semaphore counts open connections: each holds a permit until it ends.
    let permits = Arc::new(Semaphore::new(config.max_connections));
    // `TaskTracker` lets us wait for every connection task at shutdown, and
    // `CancellationToken` tells them all that shutdown has begun. Both come from
    // tokio-util: https://docs.rs/tokio-util/latest/tokio_util/task/struct.TaskTracker.html
    let tracker = TaskTracker::new();
    let shared = Arc::new(Shared {
        mode: config.mode,
        ping_interval: config.ping_interval,
        stop: CancellationToken::new(),
        chat: broadcast::channel(CHAT_BACKLOG).0,
    });

    tokio::pin!(shutdown);
    loop {
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
        // Messages go out as soon as we write them, not held back to be
        // merged with the next write (Nagle's algorithm).
        let _ = socket.set_nodelay(true);
        let permit = permits.clone().try_acquire_owned().ok();
        if permit.is_none() {
            warn!(%peer, "refused: {} connections already open", config.max_connections);
        }
        let shared = shared.clone();
        // One task per connection: while one client is slow or silent, the
        // others' tasks keep running. https://tokio.rs/tokio/tutorial/spawning
        tracker.spawn(async move {
            // A chat client joins the channel before it hears 101: from the
            // moment it is connected, it misses nothing.
            let chat = (shared.mode == Mode::Chat).then(|| shared.chat.subscribe());
            let accepted = tokio::select! {
                accepted = http::accept(socket, ws_config, permit.is_none()) => accepted,
                () = shared.stop.cancelled() => return,
            };
            match accepted {
                Ok(Accepted::Upgraded(ws)) => session::serve(*ws, peer, &shared, chat).await,
                Ok(Accepted::Answered { status, path }) => {
                    info!(%peer, %path, "answered HTTP {status}");
                }
                Err(error) => info!(%peer, %error, "no request"),
            }
            drop(permit);
        });
    }

    // Dropping the listener closes the port: new clients are refused from now.
    drop(listener);
    info!("stopped accepting; closing {} connection(s)", tracker.len());
    shared.stop.cancel();
    tracker.close();
    if timeout(config.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            "connections still open after {:?}; dropping them",
            config.shutdown_grace
        );
    }
    Ok(())
}
