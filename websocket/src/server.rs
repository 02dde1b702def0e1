//! The WebSocket server: accept connections, give each one a task, upgrade
//! it, serve it.
//!
//! [`run`] takes a listener that is already bound and a future that resolves
//! when the server should stop, so the binary decides where to listen and what
//! "stop" means (Ctrl-C), while tests pass `127.0.0.1:0` and a channel.
//!
//! The protocol itself (framing, masking, UTF-8 checks, answering pings) is
//! done by [tungstenite](https://docs.rs/tungstenite), a WebSocket library,
//! through its tokio adapter
//! [tokio-tungstenite](https://docs.rs/tokio-tungstenite); here we choose its
//! read buffer and message limits ([`WebSocketConfig`], in [`run`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use networking_protocols::accept::{Acceptor, Incoming, Throttle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use networking_protocols::tls::{ServerConfig, TlsAcceptor, server::Handshake as TlsHandshake};

use crate::Stream;
use crate::http::{self, Accepted};
use crate::origin::AllowedOrigins;
use crate::session::{self, Shared};

mod handshakes;

use handshakes::{Handshake, Handshakes};

// What each session does with a message, echo or chat, is the session's
// business (`session.rs`); the server's config names it.
pub use crate::session::Mode;

/// The server's settings; [`Config::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// A larger message gets Close 1009.
    pub max_message_bytes: usize,
    /// Most upgraded connections at once; one more gets `503 Service
    /// Unavailable` instead of an upgrade.
    pub max_connections: usize,
    /// Most connections still sending their HTTP request, counted apart from
    /// `max_connections`. One more cuts off the one that has waited longest.
    pub max_handshakes: usize,
    /// How often we ping each client; one silent for two intervals is dropped.
    pub ping_interval: Duration,
    /// On shutdown, how long the closing handshakes may take in all.
    pub shutdown_grace: Duration,
    /// Pages from other sites allowed to connect (RFC 6455 §10.2); others get 403.
    pub allowed_origins: AllowedOrigins,
    /// Subprotocols we speak (`--protocol`): of those a client offers, in
    /// its order, the first we speak is agreed on (RFC 6455 §4.2.2); empty,
    /// and we agree on none.
    pub protocols: Vec<String>,
    /// With a TLS config, every connection starts with a TLS handshake: the
    /// page is served over `https://` and WebSockets are `wss://`.
    pub tls: Option<Arc<ServerConfig>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Echo,
            max_message_bytes: 1024 * 1024,
            max_connections: 1024,
            max_handshakes: 512,
            ping_interval: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(5),
            allowed_origins: AllowedOrigins::own_only(),
            protocols: Vec::new(),
            tls: None,
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

/// How many bytes tungstenite reads from a socket at a time. Its default,
/// 128 KiB, is allocated and zeroed on a connection's first read and kept for
/// the connection's life: 10,000 idle browsers would hold 1.3 GB. A larger
/// message still fits: tungstenite grows the buffer to each frame's length.
const READ_BUFFER_BYTES: usize = 4 * 1024;

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
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes.max(MAX_CONTROL_PAYLOAD)));
    // `TaskTracker` lets us wait for every connection task at shutdown, and
    // `CancellationToken` tells them all that shutdown has begun. Both come from
    // tokio-util: https://docs.rs/tokio-util/latest/tokio_util/task/struct.TaskTracker.html
    let tracker = TaskTracker::new();
    let server = Arc::new(Server {
        session: Shared {
            mode: config.mode,
            ping_interval: config.ping_interval,
            stop: CancellationToken::new(),
            chat: broadcast::channel(CHAT_BACKLOG).0,
        },
        ws_config,
        // A semaphore counts upgraded connections: each holds a permit until
        // it ends. Connections still in their handshake are counted apart.
        slots: Arc::new(Semaphore::new(config.max_connections)),
        max_connections: config.max_connections,
        refusals: Mutex::default(),
        origins: config.allowed_origins,
        protocols: config.protocols,
        tls: config.tls,
    });
    let handshakes = Arc::new(Handshakes::new(config.max_handshakes));
    // The acceptor still answers when the process is out of file
    // descriptors: see networking_protocols::accept.
    let mut acceptor = Acceptor::new(listener);

    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.accept() => match accepted {
                Incoming::Open(socket, peer) => (socket, peer),
                Incoming::OutOfDescriptors(socket, _) => {
                    http::refuse_now(socket);
                    continue;
                }
            },
        };
        // Messages go out as soon as we write them, not held back to be
        // merged with the next write (Nagle's algorithm).
        let _ = socket.set_nodelay(true);
        let handshake = handshakes.begin();
        // One task per connection: while one client is slow or silent, the
        // others' tasks keep running. https://tokio.rs/tokio/tutorial/spawning
        tracker.spawn(serve(socket, peer, handshake, server.clone()));
    }

    // Dropping the listener closes the port: new clients are refused from now.
    drop(acceptor);
    info!("stopped accepting; closing {} connection(s)", tracker.len());
    server.session.stop.cancel();
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

/// What every connection's task needs from the server.
#[derive(Debug)]
struct Server {
    /// What an upgraded connection's session needs.
    session: Shared,
    ws_config: WebSocketConfig,
    /// One permit per upgraded connection, up to `max_connections`.
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// A flood of refused clients logs one line a second, not one per client.
    refusals: Mutex<Throttle>,
    /// The pages allowed to open a WebSocket here, besides our own.
    origins: AllowedOrigins,
    /// The subprotocols we speak.
    protocols: Vec<String>,
    /// With `--tls`: the TLS side of every connection.
    tls: Option<Arc<ServerConfig>>,
}

/// The TLS handshake, before the HTTP request. A client that speaks plain
/// HTTP to our TLS port gets a plain `400` that says so, as nginx does.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
) -> io::Result<Stream> {
    let why = match networking_protocols::tls::server::accept(acceptor, socket).await {
        TlsHandshake::Done(tls) => return Ok(Stream::Right(tls)),
        TlsHandshake::NotTls(socket) => {
            warn!(%peer, "refused: plain HTTP, and this server speaks TLS only (https://, wss://)");
            http::refuse_plaintext(socket).await;
            "plain HTTP at a TLS port".to_string()
        }
        TlsHandshake::Failed(why) => format!("TLS handshake failed: {why}"),
    };
    Err(io::Error::other(why))
}

/// One connection's life: its request (while it holds a place among the
/// handshakes), then the upgrade and the session, or a plain HTTP answer.
async fn serve(socket: TcpStream, peer: SocketAddr, handshake: Handshake, server: Arc<Server>) {
    let shared = &server.session;
    // A chat client joins the channel before it hears 101: from the moment
    // it is connected, it misses nothing.
    let chat = (shared.mode == Mode::Chat).then(|| shared.chat.subscribe());
    // With TLS, its handshake comes first; it counts as part of the
    // connection's handshake, with the same bound and deadline.
    let request = async {
        let mut stream = match &server.tls {
            None => Stream::Left(socket),
            Some(tls) => tls_handshake(&TlsAcceptor::from(tls.clone()), socket, peer).await?,
        };
        let head = http::read_request(&mut stream).await?;
        Ok::<_, io::Error>((stream, head))
    };
    let request = tokio::select! {
        request = request => request,
        () = handshake.cut_off() => return,
        () = shared.stop.cancelled() => return,
    };
    drop(handshake);
    let (socket, head) = match request {
        Ok(request) => request,
        Err(error) => return info!(%peer, %error, "no request"),
    };
    let accepted = tokio::select! {
        accepted = http::respond(socket, head, server.ws_config, &server.slots, &server.origins, &server.protocols) => accepted,
        () = shared.stop.cancelled() => return,
    };
    match accepted {
        Ok(Accepted::Upgraded(ws, slot)) => {
            session::serve(*ws, peer, shared, chat).await;
            drop(slot);
        }
        Ok(Accepted::Busy) => {
            let held_back = server
                .refusals
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .allow();
            if let Some(held_back) = held_back {
                let open = match server.max_connections {
                    1 => "1 connection".to_string(),
                    n => format!("{n} connections"),
                };
                warn!(%peer, held_back, "refused: {open} already open");
            }
        }
        Ok(Accepted::Answered { status, path }) => {
            info!(%peer, %path, "answered HTTP {status}");
        }
        Ok(Accepted::Forbidden { origin }) => warn!(
            %peer, %origin,
            "refused with HTTP 403: an upgrade from a page of another site \
             (to allow it, pass --allow-origin {origin})"
        ),
        Err(error) => info!(%peer, %error, "no request"),
    }
}
