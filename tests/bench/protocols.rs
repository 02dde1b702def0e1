//! The four protocols behind one interface: start the server, set up a
//! connection, send a message, receive one.
//!
//! The servers are the workspace's own, started in this process through
//! their libraries, exactly as the binaries start them. The clients are kept
//! to the bare protocol (a socket, tokio-tungstenite, rumqttc), so that what
//! we time is the protocol and not a command-line client's printing. Each
//! protocol's client is in a file of its own under `protocols/`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::relay::Transport;

mod mqtt_pubsub;
mod tcp_echo;
mod udp_echo;
mod websocket_echo;

pub use mqtt_pubsub::Mqtt;
pub use tcp_echo::Tcp;
pub use udp_echo::Udp;
pub use websocket_echo::WebSocket;

/// Sends messages. `settle` waits until the protocol is done with every
/// message sent so far (MQTT's acknowledgements); for the others there is
/// nothing to wait for.
///
/// (The methods return `impl Future + Send` rather than being `async fn`s
/// so that a generic measurement can run in a task of its own; each impl
/// still writes them as `async fn`.)
pub trait Tx: Send {
    fn send(&mut self, payload: Bytes) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn settle(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }
}

/// Receives messages: an echo, or what a subscriber is delivered.
pub trait Rx: Send {
    fn recv(&mut self) -> impl Future<Output = anyhow::Result<Bytes>> + Send;
}

/// One protocol as the bench drives it.
pub trait Protocol {
    type Tx: Tx;
    type Rx: Rx;
    /// The name in the table.
    fn name(&self) -> String;
    fn transport(&self) -> Transport;
    /// Sets up one connection to `addr` and returns how long that took, or
    /// `None` for a protocol without connections. The connection is then
    /// dropped without a goodbye.
    fn handshake(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = anyhow::Result<Option<Duration>>> + Send;
    /// A sender and a receiver whose messages make the round trip through
    /// the server at `addr`.
    fn open(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = anyhow::Result<(Self::Tx, Self::Rx)>> + Send;
}

/// Every server, each on its own free port of 127.0.0.1.
#[derive(Debug)]
pub struct Servers {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
    pub websocket: SocketAddr,
    pub mqtt: SocketAddr,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Servers {
    /// Starts the TCP, UDP and WebSocket servers and the MQTT broker's front
    /// door on a thread of their own (with a single-threaded tokio runtime);
    /// rumqttd runs on threads of its own. The clients run on the caller's thread, so on a
    /// 2-core machine each side has a core, as two processes would.
    pub async fn start() -> anyhow::Result<Servers> {
        let stop = CancellationToken::new();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("servers".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.into()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut tasks = JoinSet::new();
                    let started = spawn_servers(&mut tasks, &token).await;
                    let failed = started.is_err();
                    let _ = ready_tx.send(started);
                    if failed {
                        return;
                    }
                    token.cancelled().await;
                    // Each server stops on the token; give them a moment.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while tasks.join_next().await.is_some() {}
                    })
                    .await;
                });
            })?;
        let (tcp, udp, websocket, mqtt) = ready.await.context("the servers' thread ended")??;

        Ok(Servers {
            tcp,
            udp,
            websocket,
            mqtt,
            stop,
            thread,
        })
    }

    /// Stops the TCP, UDP and WebSocket servers and waits for their thread.
    pub async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Binds 127.0.0.1:0 for each server and starts it in `tasks`; returns the
/// TCP, UDP, WebSocket and MQTT addresses.
async fn spawn_servers(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> anyhow::Result<(SocketAddr, SocketAddr, SocketAddr, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let tcp = listener.local_addr()?;
    let config = tcp::server::Config::default();
    let shutdown = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        let _ = tcp::server::run(listener, config, shutdown).await;
    });

    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let udp = socket.local_addr()?;
    let config = udp::receiver::Config {
        echo: true,
        ..Default::default()
    };
    let shutdown = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        // The receiver prints a line per datagram; we do not need them.
        let _ = udp::receiver::run(&socket, &config, std::io::sink(), shutdown).await;
    });

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let websocket = listener.local_addr()?;
    let config = websocket::server::Config::default();
    let shutdown = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        let _ = websocket::server::run(listener, config, shutdown).await;
    });

    // rumqttd runs on threads of its own and has no stop: it ends with this
    // process. The front door stops with the others.
    let config = mqtt::broker::BrokerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let broker = mqtt::broker::start(&config, stop.clone().cancelled_owned()).await?;
    let mqtt = broker.addr;
    tasks.spawn(async move {
        let _ = broker.wait().await;
    });
    Ok((tcp, udp, websocket, mqtt))
}
