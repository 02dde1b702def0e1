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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use networking_protocols::tls::client::ClientTlsArgs;
use networking_protocols::tls::server::ServerTlsArgs;
use networking_protocols::tls::{self, ServerConfig};
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
    /// The same TCP, WebSocket and MQTT servers with `--tls`.
    pub tcp_tls: SocketAddr,
    pub websocket_tls: SocketAddr,
    pub mqtt_tls: SocketAddr,
    /// What a client needs to trust the TLS servers: the local CA.
    pub tls_client: ClientTlsArgs,
    tls_dir: PathBuf,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

/// The servers' addresses, as the servers' thread reports them.
#[derive(Debug)]
struct Addrs {
    tcp: SocketAddr,
    udp: SocketAddr,
    websocket: SocketAddr,
    mqtt: SocketAddr,
    tcp_tls: SocketAddr,
    websocket_tls: SocketAddr,
    mqtt_tls: SocketAddr,
}

impl Servers {
    /// Starts the TCP, UDP and WebSocket servers and the MQTT broker's front
    /// door on a thread of their own (with a single-threaded tokio runtime);
    /// rumqttd runs on threads of its own. The clients run on the caller's thread, so on a
    /// 2-core machine each side has a core, as two processes would.
    pub async fn start() -> anyhow::Result<Servers> {
        // The TLS servers' certificate: a local CA made for this run, as
        // `--tls` without `--cert` makes one.
        let tls_dir = std::env::temp_dir().join(format!("comparison-tls-{}", std::process::id()));
        let server_tls = ServerTlsArgs {
            tls: true,
            tls_dir: Some(tls_dir.clone()),
            ..ServerTlsArgs::default()
        }
        .config()?
        .context("--tls gives a TLS config")?;
        let tls_client = ClientTlsArgs {
            cafile: Some(tls_dir.join(tls::local::CA_FILE)),
            ..ClientTlsArgs::default()
        };
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
                    let started = spawn_servers(&mut tasks, &token, server_tls).await;
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
        let addrs: Addrs = ready.await.context("the servers' thread ended")??;

        Ok(Servers {
            tcp: addrs.tcp,
            udp: addrs.udp,
            websocket: addrs.websocket,
            mqtt: addrs.mqtt,
            tcp_tls: addrs.tcp_tls,
            websocket_tls: addrs.websocket_tls,
            mqtt_tls: addrs.mqtt_tls,
            tls_client,
            tls_dir,
            stop,
            thread,
        })
    }

    /// Stops the TCP, UDP and WebSocket servers and waits for their thread.
    pub async fn stop(self) {
        self.stop.cancel();
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let _ = std::fs::remove_dir_all(&self.tls_dir);
    }
}

/// Binds 127.0.0.1:0 for each server and starts it in `tasks`, then the
/// TCP, WebSocket and MQTT servers again with `tls`; returns the addresses.
async fn spawn_servers(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    tls: Arc<ServerConfig>,
) -> anyhow::Result<Addrs> {
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
    Ok(Addrs {
        tcp: spawn_tcp(tasks, stop, None).await?,
        udp,
        websocket: spawn_websocket(tasks, stop, None).await?,
        mqtt: spawn_broker(tasks, stop, None).await?,
        tcp_tls: spawn_tcp(tasks, stop, Some(tls.clone())).await?,
        websocket_tls: spawn_websocket(tasks, stop, Some(tls.clone())).await?,
        mqtt_tls: spawn_broker(tasks, stop, Some(tls)).await?,
    })
}

async fn spawn_tcp(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    tls: Option<Arc<ServerConfig>>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = tcp::server::Config {
        tls,
        ..tcp::server::Config::default()
    };
    let shutdown = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        let _ = tcp::server::run(listener, config, shutdown).await;
    });
    Ok(addr)
}

async fn spawn_websocket(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    tls: Option<Arc<ServerConfig>>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = websocket::server::Config {
        tls,
        ..websocket::server::Config::default()
    };
    let shutdown = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        let _ = websocket::server::run(listener, config, shutdown).await;
    });
    Ok(addr)
}

/// rumqttd runs on threads of its own and has no stop: it ends with this
/// process. The front door stops with the others.
async fn spawn_broker(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
    tls: Option<Arc<ServerConfig>>,
) -> anyhow::Result<SocketAddr> {
    let config = mqtt::broker::BrokerConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls,
        ..Default::default()
    };
    let broker = mqtt::broker::start(&config, stop.clone().cancelled_owned()).await?;
    let addr = broker.addr;
    tasks.spawn(async move {
        let _ = broker.wait().await;
    });
    Ok(addr)
}
