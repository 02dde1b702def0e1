//! Byte-counting relays: how we know what each protocol puts on the wire.
//!
//! A relay sits between a client and a server, copies everything both ways
//! and adds up the bytes. It counts what the protocol hands to TCP or UDP
//! (the payload of each segment or datagram): the IP, TCP and UDP headers
//! and TCP's bare acknowledgements are the kernel's, and not counted.
//!
//! The relays add a hop, so they are only used for counting bytes, never
//! while measuring time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// Which transport a protocol rides on, and so which relay it needs.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Tcp,
    Udp,
}

/// A running relay in front of one server. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    /// Where clients connect (or send) instead of the server.
    pub addr: SocketAddr,
    /// Bytes copied so far, in both directions together.
    bytes: Arc<AtomicU64>,
    /// The relay's tasks: dropping a `JoinSet` aborts them.
    _tasks: JoinSet<()>,
}

impl Relay {
    /// Starts a relay on 127.0.0.1 (a free port) in front of `server`.
    pub async fn start(transport: Transport, server: SocketAddr) -> anyhow::Result<Relay> {
        let bytes = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let addr = match transport {
            Transport::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                tasks.spawn(relay_tcp(listener, server, bytes.clone()));
                addr
            }
            Transport::Udp => {
                // Clients talk to `front`; `back` talks to the server, so the
                // server's answers come back to it and we pass them on.
                let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
                let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
                back.connect(server).await?;
                let addr = front.local_addr()?;
                let (client_tx, client_rx) = tokio::sync::watch::channel(None);
                tasks.spawn(udp_forward(
                    front.clone(),
                    back.clone(),
                    client_tx,
                    bytes.clone(),
                ));
                tasks.spawn(udp_back(back, front, client_rx, bytes.clone()));
                addr
            }
        };
        Ok(Relay {
            addr,
            bytes,
            _tasks: tasks,
        })
    }

    /// Bytes copied so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The byte count once the traffic has stopped: it has not changed for
    /// 100 ms (at most `limit`). Some exchanges go on after the client's
    /// last await returns, such as a QoS 2 subscriber's PUBREC, PUBREL and
    /// PUBCOMP with the broker.
    pub async fn settled_bytes(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = self.bytes();
        let mut quiet = 0;
        while quiet < 5 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.bytes();
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        last
    }
}

/// Accepts clients; for each, opens a connection to `server` and copies
/// both ways, counting.
async fn relay_tcp(listener: TcpListener, server: SocketAddr, bytes: Arc<AtomicU64>) {
    let mut connections = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let bytes = bytes.clone();
        connections.spawn(async move {
            let Ok(upstream) = TcpStream::connect(server).await else {
                return;
            };
            // The relay must not add Nagle delays of its own.
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = upstream.into_split();
            tokio::join!(
                copy(client_read, server_write, &bytes),
                copy(server_read, client_write, &bytes)
            );
        });
    }
}

/// Copies until end of stream or an error, then closes the writing side, so
/// a FIN is passed on as a FIN.
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer).await {
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// Client to server: remembers who the client is, so answers can go back.
async fn udp_forward(
    front: Arc<UdpSocket>,
    back: Arc<UdpSocket>,
    client: tokio::sync::watch::Sender<Option<SocketAddr>>,
    bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 65_536];
    while let Ok((n, from)) = front.recv_from(&mut buffer).await {
        client.send_replace(Some(from));
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        let _ = back.send(&buffer[..n]).await;
    }
}

/// Server to client.
async fn udp_back(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: tokio::sync::watch::Receiver<Option<SocketAddr>>,
    bytes: Arc<AtomicU64>,
) {
    let mut buffer = vec![0u8; 65_536];
    while let Ok(n) = back.recv(&mut buffer).await {
        let to = *client.borrow();
        if let Some(to) = to {
            bytes.fetch_add(n as u64, Ordering::Relaxed);
            let _ = front.send_to(&buffer[..n], to).await;
        }
    }
}
