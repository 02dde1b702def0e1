//! The four protocols behind one interface: start the server, set up a
//! connection, send a message, receive one.
//!
//! The servers are the workspace's own, started in this process through
//! their libraries, exactly as the binaries start them. The clients are kept
//! to the bare protocol (a socket, tokio-tungstenite, rumqttc), so that what
//! we time is the protocol and not a command-line client's printing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use websocket::Message;

use crate::relay::Transport;

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
    /// Starts the TCP, UDP and WebSocket servers on a thread of their own
    /// (with a single-threaded tokio runtime), and the MQTT broker on
    /// rumqttd's threads. The clients run on the caller's thread, so on a
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
        let (tcp, udp, websocket) = ready.await.context("the servers' thread ended")??;

        // rumqttd runs on threads of its own and has no stop: it ends with
        // this process. `start` blocks until it listens.
        let broker = tokio::task::spawn_blocking(|| {
            mqtt::broker::start(&mqtt::broker::BrokerConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..Default::default()
            })
        })
        .await??;

        Ok(Servers {
            tcp,
            udp,
            websocket,
            mqtt: broker.addr,
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
/// TCP, UDP and WebSocket addresses.
async fn spawn_servers(
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> anyhow::Result<(SocketAddr, SocketAddr, SocketAddr)> {
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
    Ok((tcp, udp, websocket))
}

// ---------------------------------------------------------------- TCP

/// TCP line echo: each message goes out with a `\n`, which is how our TCP
/// server knows where it ends.
#[derive(Debug)]
pub struct Tcp;

#[derive(Debug)]
pub struct TcpTx(OwnedWriteHalf);

#[derive(Debug)]
pub struct TcpRx(BufReader<OwnedReadHalf>);

async fn tcp_connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    // Small messages go out at once, not held back by Nagle's algorithm.
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Protocol for Tcp {
    type Tx = TcpTx;
    type Rx = TcpRx;
    fn name(&self) -> String {
        "TCP".to_string()
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // `connect` returns when SYN, SYN-ACK and ACK are done.
        let start = Instant::now();
        let _stream = tcp_connect(addr).await?;
        Ok(Some(start.elapsed()))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(TcpTx, TcpRx)> {
        let (read, write) = tcp_connect(addr).await?.into_split();
        Ok((TcpTx(write), TcpRx(BufReader::new(read))))
    }
}

impl Tx for TcpTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        // One write per message, newline included: one segment, not two.
        let mut line = BytesMut::with_capacity(payload.len() + 1);
        line.put(payload);
        line.put_u8(b'\n');
        self.0.write_all(&line).await?;
        Ok(())
    }
}

impl Rx for TcpRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line).await? == 0 {
            bail!("the TCP server closed the connection");
        }
        line.pop();
        Ok(line.into())
    }
}

// ---------------------------------------------------------------- UDP

/// UDP echo: each message is one datagram, and so is its echo.
#[derive(Debug)]
pub struct Udp;

#[derive(Debug)]
pub struct UdpTx(Arc<UdpSocket>);

#[derive(Debug)]
pub struct UdpRx(Arc<UdpSocket>, Vec<u8>);

impl Protocol for Udp {
    type Tx = UdpTx;
    type Rx = UdpRx;
    fn name(&self) -> String {
        "UDP".to_string()
    }
    fn transport(&self) -> Transport {
        Transport::Udp
    }
    async fn handshake(&self, _addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // Nothing to set up: the first datagram can carry data.
        Ok(None)
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(UdpTx, UdpRx)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        // A UDP connect sends nothing; it only fixes the destination.
        socket.connect(addr).await?;
        let socket = Arc::new(socket);
        Ok((UdpTx(socket.clone()), UdpRx(socket, vec![0; 65_536])))
    }
}

impl Tx for UdpTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.0.send(&payload).await?;
        Ok(())
    }
}

impl Rx for UdpRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        let n = self.0.recv(&mut self.1).await?;
        Ok(Bytes::copy_from_slice(&self.1[..n]))
    }
}

// ---------------------------------------------------------- WebSocket

/// WebSocket echo: each message is one binary message.
#[derive(Debug)]
pub struct WebSocket;

pub struct WsTx(SplitSink<websocket::client::Socket, Message>);

pub struct WsRx(SplitStream<websocket::client::Socket>);

/// The longest a connection set-up may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

impl Protocol for WebSocket {
    type Tx = WsTx;
    type Rx = WsRx;
    fn name(&self) -> String {
        "WebSocket".to_string()
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // A TCP connect, then GET with `Upgrade: websocket`, then 101.
        let start = Instant::now();
        let _socket = websocket::client::connect(&format!("ws://{addr}/"), CONNECT_WAIT).await?;
        Ok(Some(start.elapsed()))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(WsTx, WsRx)> {
        let socket = websocket::client::connect(&format!("ws://{addr}/"), CONNECT_WAIT).await?;
        let (sink, stream) = socket.split();
        Ok((WsTx(sink), WsRx(stream)))
    }
}

impl Tx for WsTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        self.0.send(Message::Binary(payload)).await?;
        Ok(())
    }
}

impl Rx for WsRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        loop {
            match self.0.next().await {
                Some(Ok(Message::Binary(payload))) => return Ok(payload),
                Some(Ok(Message::Close(frame))) => bail!("the server closed: {frame:?}"),
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => bail!("the WebSocket connection ended"),
            }
        }
    }
}

// --------------------------------------------------------------- MQTT

/// MQTT at one QoS: a publisher and a subscriber on a topic of their own,
/// both connected to the embedded broker, which forwards each message.
#[derive(Debug)]
pub struct Mqtt {
    pub qos: QoS,
    /// Numbers client ids and topics, so that no two sessions share one.
    next: AtomicU64,
}

impl Mqtt {
    pub fn new(qos: QoS) -> Mqtt {
        Mqtt {
            qos,
            next: AtomicU64::new(0),
        }
    }

    /// A client connected to `addr`; its event loop runs in a task that
    /// hands us every event. Returns once CONNACK has arrived.
    async fn client(
        &self,
        addr: SocketAddr,
        role: &str,
    ) -> anyhow::Result<(AsyncClient, mpsc::UnboundedReceiver<Event>, JoinHandle<()>)> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        // Fixed-length ids and topics, so every run counts the same bytes.
        let id = format!("bench-{role}-{number:04}");
        // The same options as our binaries: at most 20 publishes in flight,
        // no Nagle delay.
        let config = mqtt::ClientConfig::new(&addr.ip().to_string(), addr.port(), &id);
        let (client, mut eventloop) = AsyncClient::new(config.mqtt_options(), 100);
        eventloop.set_network_options(config.network_options());
        let (events, mut received) = mpsc::unbounded_channel();
        let (failed_tx, failed) = tokio::sync::oneshot::channel();
        // rumqttc does all network work inside `poll`, so something must
        // poll it for as long as the client lives. Its first error ends the
        // client, explained the way our binaries explain it.
        let task = tokio::spawn(async move {
            let mut connected = false;
            loop {
                match eventloop.poll().await {
                    Ok(event) => {
                        connected |= matches!(event, Event::Incoming(Packet::ConnAck(_)));
                        if events.send(event).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = failed_tx.send(mqtt::explain(&error, &addr.to_string(), connected));
                        return;
                    }
                }
            }
        });
        loop {
            match received.recv().await {
                Some(Event::Incoming(Packet::ConnAck(_))) => break,
                Some(_) => {}
                None => {
                    return Err(failed.await.unwrap_or_else(|_| {
                        anyhow!("the broker at {addr} closed the connection")
                    }));
                }
            }
        }
        Ok((client, received, task))
    }
}

pub struct MqttTx {
    client: AsyncClient,
    topic: String,
    qos: QoS,
    sent: u64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2) so far.
    acked: watch::Receiver<u64>,
    tasks: [JoinHandle<()>; 2],
}

pub struct MqttRx {
    messages: mpsc::UnboundedReceiver<Bytes>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for MqttTx {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Drop for MqttRx {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

impl Protocol for Mqtt {
    type Tx = MqttTx;
    type Rx = MqttRx;
    fn name(&self) -> String {
        format!("MQTT QoS {}", self.qos as u8)
    }
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    async fn handshake(&self, addr: SocketAddr) -> anyhow::Result<Option<Duration>> {
        // A TCP connect, then CONNECT and CONNACK.
        let start = Instant::now();
        let (_client, _events, task) = self.client(addr, "connect").await?;
        let took = start.elapsed();
        task.abort();
        Ok(Some(took))
    }
    async fn open(&self, addr: SocketAddr) -> anyhow::Result<(MqttTx, MqttRx)> {
        let topic = format!("bench/{:04}", self.next.fetch_add(1, Ordering::Relaxed));

        // The subscriber first: the broker forwards only to subscriptions
        // that exist when a message arrives.
        let (subscriber, mut sub_events, sub_task) = self.client(addr, "sub").await?;
        subscriber.subscribe(&topic, self.qos).await?;
        loop {
            match sub_events.recv().await {
                Some(Event::Incoming(Packet::SubAck(_))) => break,
                Some(_) => {}
                None => bail!("the broker at {addr} closed the subscriber's connection"),
            }
        }
        let (messages_tx, messages) = mpsc::unbounded_channel();
        let sub_forward = tokio::spawn(async move {
            while let Some(event) = sub_events.recv().await {
                if let Event::Incoming(Packet::Publish(publish)) = event
                    && messages_tx.send(publish.payload).is_err()
                {
                    return;
                }
            }
        });

        let (publisher, mut pub_events, pub_task) = self.client(addr, "pub").await?;
        let (acked_tx, acked) = watch::channel(0u64);
        let pub_acks = tokio::spawn(async move {
            while let Some(event) = pub_events.recv().await {
                if let Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) = event {
                    acked_tx.send_modify(|acked| *acked += 1);
                }
            }
        });

        let tx = MqttTx {
            client: publisher,
            topic,
            qos: self.qos,
            sent: 0,
            acked,
            tasks: [pub_task, pub_acks],
        };
        let rx = MqttRx {
            messages,
            tasks: [sub_task, sub_forward],
        };
        Ok((tx, rx))
    }
}

impl Tx for MqttTx {
    async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        // `publish` only queues the message; the event loop task sends it.
        self.client
            .publish_bytes(self.topic.as_str(), self.qos, false, payload)
            .await?;
        self.sent += 1;
        Ok(())
    }

    async fn settle(&mut self) -> anyhow::Result<()> {
        if self.qos == QoS::AtMostOnce {
            return Ok(());
        }
        let sent = self.sent;
        self.acked
            .wait_for(|acked| *acked >= sent)
            .await
            .map_err(|_| anyhow!("the publisher's connection ended before its acknowledgements"))?;
        Ok(())
    }
}

impl Rx for MqttRx {
    async fn recv(&mut self) -> anyhow::Result<Bytes> {
        self.messages
            .recv()
            .await
            .context("the subscriber's connection ended")
    }
}
