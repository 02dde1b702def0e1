//! The front door: what a broker checks before it trusts a client, and the
//! path every message takes through it.
//!
//! `mqtt_broker` has one listening socket, ours. rumqttd's router runs in
//! this process on a thread of its own, and keeps what a broker remembers
//! (subscriptions, retained messages, sessions of clients that are away);
//! clients never reach it directly. For each client the front door:
//!
//! 1. **reads the CONNECT** within [`FrontDoorConfig::connect_timeout`] and
//!    checks it ([`connect`]): a malformed one closes the connection, a
//!    refused one gets the CONNACK return code the spec names (1 protocol
//!    level, 2 client id, 3 server unavailable, 5 not authorized);
//! 2. **takes over** an older connection with the same client id
//!    [MQTT-3.1.4-2]: that one is closed, its will published and its link to
//!    the router ended, before the new one goes further, so sessions never
//!    overlap;
//! 3. **answers CONNACK** and serves the client ([`relay`]), checking every
//!    packet and handing the router what it must know over a link
//!    ([`router`]): at once for a persistent session, whose messages the
//!    router may hold; for a clean session only when it first publishes or
//!    subscribes, so that a client that only connects costs the router
//!    nothing;
//! 4. at the end, **publishes the will** unless the client sent DISCONNECT,
//!    and keeps a persistent session for the client's return ([`session`]).
//!
//! The connection limit is ours too: one client too many gets CONNACK 3.
//! With `--tls`, TLS ends here as well: each connection's TLS handshake
//! comes before step 1, and the relay decrypts and encrypts in place
//! ([`relay::tls`]), so the checks are the same with TLS or without.
//!
//! ## The path of one PUBLISH
//!
//! ```text
//! publisher's socket
//!   -> Connection::read_client         relay.rs     bytes in, cut into packets
//!   -> Connection::publish             publish.rs   checked; PUBACK queued
//!   -> Link::flush                     router.rs    handed to the router
//!      rumqttd's router thread                      appended to each matching
//!                                                   filter's log, forwarded
//!   -> Link::take                      router.rs    the subscriber's batch
//!   -> Connection::deliver             publish.rs   QoS, packet id, encoded once
//!   -> Connection::write_client        relay.rs     out to the subscriber's socket
//! ```
//!
//! SUBSCRIBE and UNSUBSCRIBE are in `subscribe.rs`, the session's state in
//! `session.rs`, and what happens when subscribers read slower than
//! publishers send in `congestion.rs`.

pub mod congestion;
pub mod connect;
mod publish;
pub mod relay;
pub mod router;
pub mod session;
mod subscribe;
pub mod subscriptions;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use networking_protocols::accept::{Acceptor, Incoming, Throttle};
use networking_protocols::tls::server::{self as tls_server, Handshake, TlsStream};
use rumqttd::protocol::{Packet, Publish};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::wire::{self, ConnackCode, kind};
use congestion::Congestion;
use connect::{Connect, Refusal, Will};
use relay::tls::TlsSession;
use relay::{Connection, End, Limits, Parts};
use router::Router;
use session::{Resend, Session, Sessions};

/// Why a new connection brought no CONNECT, for the log.
#[derive(Debug)]
enum NoConnect {
    /// It started a TLS handshake at a plaintext port: a mistake of setup
    /// rather than of one client, so it is logged as a warning (as the TLS
    /// port's refusals are).
    TlsAtPlaintextPort,
    /// Anything else: the first packet is not a CONNECT, is malformed, or
    /// did not come in time.
    Other(String),
}

impl std::fmt::Display for NoConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoConnect::TlsAtPlaintextPort => f.write_str(
                "refused: a TLS handshake, and this port speaks MQTT without TLS: \
                 start the broker with --tls (its default port is then 8883)",
            ),
            NoConnect::Other(why) => f.write_str(why),
        }
    }
}

/// A client's connection until its CONNACK: plain TCP, or TLS over TCP
/// (tokio-rustls, which reads and writes like a socket).
type ClientStream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The front door's settings.
#[derive(Debug, Clone)]
pub struct FrontDoorConfig {
    /// Most clients connected at once; one more gets CONNACK 3.
    pub max_connections: usize,
    /// If not empty, clients must log in with one of these (name, password).
    pub users: Vec<(String, String)>,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Duration,
    /// The limits on packet size and queued bytes per client.
    pub limits: Limits,
    /// With `Some`, clients speak MQTT over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves clients on `listener` until `shutdown` resolves, then closes them
/// all and returns. Each client that needs it gets a link to `router`.
pub async fn run(
    listener: TcpListener,
    config: FrontDoorConfig,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let door = Arc::new(Door {
        slots: Arc::new(Semaphore::new(config.max_connections)),
        // Refusing costs a task that reads the CONNECT, so refusals are
        // bounded too; past this many at once we just close.
        refusals: Arc::new(Semaphore::new(64)),
        clients: Mutex::new(HashMap::new()),
        congestion: Congestion::default(),
        stop: CancellationToken::new(),
        router,
        sessions: Sessions::default(),
        link_ids: Mutex::new(LinkIds::default()),
        config,
    });
    let tasks = TaskTracker::new();
    let mut acceptor = Acceptor::new(listener);
    let mut busy = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            incoming = acceptor.accept() => match incoming {
                Incoming::Open(stream, peer) => (stream, peer),
                // No descriptor to spare for a CONNECT exchange: close.
                Incoming::OutOfDescriptors(..) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let door = door.clone();
        match door.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tasks.spawn(async move {
                    if let Some(client) = door.handshake(stream, peer).await {
                        door.serve(client, peer, slot).await;
                    }
                });
            }
            Err(_) => match door.refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tasks.spawn(async move {
                        if let Some(client) = door.handshake(stream, peer).await {
                            door.refuse_busy(client, peer).await;
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    if let Some(held_back) = busy.allow() {
                        warn!(
                            held_back,
                            "closing connections unanswered: too many refusals at once"
                        );
                    }
                    drop(stream);
                }
            },
        }
    }
    door.stop.cancel();
    tasks.close();
    let _ = timeout(Duration::from_secs(2), tasks.wait()).await;
}

/// Who is connected, by client id, so a new connection can take over.
#[derive(Debug)]
struct Occupant {
    /// Cancelled to make the connection close.
    kick: CancellationToken,
    /// Cancelled once the connection has finished with the router.
    done: CancellationToken,
}

/// The ids clean sessions use with the router. A clean session has nothing
/// for the router to find again, so its name there is not the client's:
/// it is `%c` and the smallest number no other connection holds. rumqttd
/// keeps a record of every client id it has seen; with these, it keeps at
/// most as many as were ever connected at once.
#[derive(Debug, Default)]
struct LinkIds {
    free: Vec<u32>,
    next: u32,
}

impl LinkIds {
    fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next
        })
    }
}

#[derive(Debug)]
struct Door {
    config: FrontDoorConfig,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    clients: Mutex<HashMap<String, Arc<Occupant>>>,
    congestion: Congestion,
    router: Router,
    /// Persistent sessions of clients that are away.
    sessions: Sessions,
    link_ids: Mutex<LinkIds>,
    /// Cancelled when the broker stops.
    stop: CancellationToken,
}

/// Locks a table; a poisoned lock (a panic elsewhere) still holds a whole
/// table, so we go on with it rather than refuse everyone.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Door {
    /// With `--tls`, runs the TLS handshake (for at most
    /// [`tls_server::HANDSHAKE_TIMEOUT`]); without, hands the connection
    /// back as it is. `None`, logged, if the handshake failed or the client
    /// speaks plaintext at the TLS port.
    async fn handshake(&self, tcp: TcpStream, peer: SocketAddr) -> Option<ClientStream> {
        let Some(config) = &self.config.tls else {
            return Some(Either::Left(tcp));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        match tls_server::accept(&acceptor, tcp).await {
            Handshake::Done(tls) => Some(Either::Right(tls)),
            Handshake::NotTls(_) => {
                warn!(
                    %peer,
                    "refused: not TLS, and this port speaks MQTT over TLS only: the client \
                     needs --tls (mosquitto_pub: --cafile), or a broker started without --tls"
                );
                None
            }
            Handshake::Failed(why) => {
                warn!(%peer, "TLS handshake failed: {why}");
                None
            }
        }
    }

    /// One more client than `--max-connections`: read its CONNECT and answer
    /// CONNACK 3, "server unavailable" (spec §3.2.2.3).
    async fn refuse_busy(&self, mut stream: ClientStream, peer: SocketAddr) {
        if self.read_connect(&mut stream).await.is_ok() {
            let _ = write_flushed(
                &mut stream,
                &wire::connack(false, ConnackCode::ServerUnavailable),
            )
            .await;
            warn!(%peer, limit = self.config.max_connections,
                "refused a client: connection limit reached (CONNACK 3)");
        }
        linger(stream).await;
    }

    /// Reads the first packet, if it is a CONNECT that comes within the
    /// connect timeout, and returns it with any bytes read after it (a client
    /// need not wait for CONNACK before sending its next packets). Otherwise
    /// returns why not, for the log.
    async fn read_connect(
        &self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> Result<(wire::Frame, BytesMut), NoConnect> {
        let mut buffer = BytesMut::new();
        let read = async {
            loop {
                // A TLS record of type 22 (handshake), version 3.x: its first
                // byte would pass for a CONNECT's, so we look at two.
                if self.config.tls.is_none() && buffer.starts_with(&[22, 3]) {
                    return Err(NoConnect::TlsAtPlaintextPort);
                }
                // The first byte is enough to tell a CONNECT [MQTT-3.1.0-1]:
                // anything else (an HTTP request, say) is closed at once.
                if let Some(&first) = buffer.first()
                    && first >> 4 != kind::CONNECT
                {
                    return Err(NoConnect::Other(format!(
                        "the first packet is type {}, not CONNECT [MQTT-3.1.0-1]",
                        first >> 4
                    )));
                }
                match wire::next_frame(&mut buffer, self.config.limits.max_packet_bytes) {
                    Ok(Some(frame)) => return Ok((frame, buffer)),
                    Ok(None) => {}
                    Err(violation) => return Err(NoConnect::Other(violation.to_string())),
                }
                buffer.reserve(256);
                match stream.read_buf(&mut buffer).await {
                    Ok(0) => {
                        return Err(NoConnect::Other(
                            "the client closed before its CONNECT".to_string(),
                        ));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        return Err(NoConnect::Other(format!(
                            "reading the CONNECT failed: {error}"
                        )));
                    }
                }
            }
        };
        timeout(self.config.connect_timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(NoConnect::Other(format!(
                    "no CONNECT within {:?}",
                    self.config.connect_timeout
                )))
            })
    }

    async fn serve(&self, mut client: ClientStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
        let (frame, early) = match self.read_connect(&mut client).await {
            Ok(read) => read,
            Err(why @ NoConnect::TlsAtPlaintextPort) => {
                warn!(%peer, "{why}");
                return;
            }
            Err(why) => {
                info!(%peer, "closed a connection: {why}");
                return;
            }
        };
        let checked = connect::parse(&frame)
            .and_then(|c| connect::check_login(&c, &self.config.users).map(|()| c));
        // The packet's buffer is not needed past here; an idle client should
        // not keep it.
        drop(frame);
        let connect = match checked {
            Ok(connect) => connect,
            Err(Refusal::Connack(code, why)) => {
                warn!(%peer, "refused a client: {why} (CONNACK {})", code as u8);
                let _ = write_flushed(&mut client, &wire::connack(false, code)).await;
                return linger(client).await;
            }
            Err(Refusal::Close(violation)) => {
                warn!(%peer, "closed a connection: {violation}");
                return;
            }
        };
        // [MQTT-3.1.3-6]: a client that sent no id gets one from us.
        let name = if connect.client_id.is_empty() {
            format!("auto-{}", next_auto_id())
        } else {
            connect.client_id.clone()
        };

        let me = Arc::new(Occupant {
            kick: self.stop.child_token(),
            done: CancellationToken::new(),
        });
        let previous = lock(&self.clients).insert(name.clone(), me.clone());
        if let Some(previous) = previous {
            info!(
                client = name,
                "a new connection takes over this client id [MQTT-3.1.4-2]"
            );
            previous.kick.cancel();
            let _ = timeout(Duration::from_secs(5), previous.done.cancelled()).await;
        }

        let outcome = self.session(client, &name, &connect, early, &me).await;
        me.done.cancel();
        let mut clients = lock(&self.clients);
        if clients.get(&name).is_some_and(|c| Arc::ptr_eq(c, &me)) {
            clients.remove(&name);
        }
        drop(clients);
        if let Err(error) = outcome {
            warn!(client = name, "the router: {error}");
        }
    }

    /// Answers CONNACK, serves the client, and ends its session.
    ///
    /// A persistent session is linked to the router at once (it may hold
    /// messages for the client); the session present flag says whether we
    /// kept one [MQTT-3.2.2-2]. A clean session ends any session kept under
    /// its id [MQTT-3.1.2-6] and gets session present 0 [MQTT-3.2.2-1].
    async fn session(
        &self,
        client: ClientStream,
        name: &str,
        connect: &Connect,
        early: BytesMut,
        me: &Occupant,
    ) -> io::Result<()> {
        let kept_id = connect::router_id(name);
        let kept = self.sessions.take(&kept_id);
        let (link_id, pooled) = if connect.clean_session {
            if kept.is_some() {
                // The router's half of the old session ends too.
                let link = self
                    .router
                    .link(&kept_id, true)
                    .await
                    .map_err(io::Error::other)?;
                link.close(|_| {}).await;
            }
            let number = lock(&self.link_ids).take();
            (format!("%c{number}"), Some(number))
        } else {
            (kept_id.clone(), None)
        };
        let outcome = self
            .connected(client, name, connect, early, me, &link_id, kept)
            .await;
        if let Some(number) = pooled {
            lock(&self.link_ids).free.push(number);
        }
        if let Some(session) = outcome? {
            self.sessions.keep(&kept_id, session);
        }
        Ok(())
    }

    /// From CONNACK to the end of the connection, with the router id
    /// `link_id`. Returns the session to keep, for a persistent one.
    #[allow(clippy::too_many_arguments)]
    async fn connected(
        &self,
        mut client: ClientStream,
        name: &str,
        connect: &Connect,
        early: BytesMut,
        me: &Occupant,
        link_id: &str,
        kept: Option<Session>,
    ) -> io::Result<Option<Session>> {
        let session_present = kept.is_some() && !connect.clean_session;
        let link = if connect.clean_session {
            None
        } else {
            match self.router.link(link_id, false).await {
                Ok(link) => Some(link),
                Err(error) => {
                    // The router did not take the client: we are unavailable.
                    let refusal = wire::connack(false, ConnackCode::ServerUnavailable);
                    let _ = write_flushed(&mut client, &refusal).await;
                    return Err(io::Error::other(error));
                }
            }
        };
        let connack = wire::connack(session_present, ConnackCode::Accepted);
        if write_flushed(&mut client, &connack).await.is_err() {
            // The client left before its CONNACK.
            if let Some(link) = link {
                link.close(|_| {}).await;
            }
            return Ok(kept.filter(|_| !connect.clean_session));
        }
        info!(
            client = name,
            keep_alive = connect.keep_alive,
            clean_session = connect.clean_session,
            "client connected"
        );

        // From here on the connection reads and writes the socket itself,
        // with rustls's state beside it for a TLS client.
        let (socket, tls) = match client {
            Either::Left(tcp) => (tcp, None),
            Either::Right(tls) => {
                let (tcp, conn) = tls.into_inner();
                (tcp, Some(TlsSession::new(conn)))
            }
        };
        let session = if connect.clean_session {
            Session::default()
        } else {
            kept.unwrap_or_default()
        };
        let mut connection = Connection::new(Parts {
            socket: &socket,
            tls,
            router: &self.router,
            limits: &self.config.limits,
            name,
            link_id,
            clean_session: connect.clean_session,
            keep_alive: connect.keep_alive,
            link,
            session,
            pressure: self.congestion.pressure(),
        });
        if session_present {
            connection.resubscribe();
        }
        // [MQTT-4.4.0-1]: a kept session's unacknowledged messages go again.
        for resend in connection.session.resend() {
            match resend {
                Resend::Publish(packet) => connection.queue(packet),
                Resend::Pubrel(id) => {
                    connection.queue(Bytes::copy_from_slice(&wire::ack(kind::PUBREL, id)))
                }
            }
        }
        let end = connection.run(early, &me.kick).await;
        log_end(name, &end);
        let will = connect.will.as_ref().filter(|_| end.publishes_will());
        if let Some(will) = will {
            info!(
                client = name,
                topic = will.topic,
                "publishing the client's will"
            );
            connection.for_router.push((will_publish(will), 0));
        }
        // What the client sent before it left (a PUBLISH followed at once by
        // DISCONNECT, say) still goes to the router; a SUBSCRIBE of a client
        // that left need not.
        if connection.link.is_none() {
            connection
                .for_router
                .retain(|(packet, _)| matches!(packet, Packet::Publish(..)));
        }
        if !matches!(end, End::RouterGone) {
            let _ = connection.hand_over().await;
        }
        if let Some(link) = connection.link.take() {
            if connect.clean_session {
                link.close(|_| {}).await;
            } else {
                // Messages still on their way to a persistent session are
                // kept with it, to be sent when the client comes back.
                let mut late = Vec::new();
                link.close(|forward| late.push(forward)).await;
                for forward in late {
                    connection.deliver(forward);
                }
            }
        }
        Ok((!connect.clean_session).then(|| std::mem::take(&mut connection.session)))
    }
}

/// Says in the log how a client's connection ended.
fn log_end(name: &str, end: &End) {
    match end {
        End::Disconnect => info!(client = name, "client disconnected"),
        End::ClientGone(None) => info!(client = name, "client closed the connection"),
        End::ClientGone(Some(error)) => info!(client = name, %error, "client connection failed"),
        End::Violation(violation) => warn!(client = name, "closing the connection: {violation}"),
        End::KeepAliveExpired(grace) => warn!(
            client = name,
            "closing the connection: nothing from the client for {grace:?}, 1.5 x its keep-alive [MQTT-3.1.2-24]"
        ),
        End::Kicked => info!(
            client = name,
            "closing the connection: taken over, or the broker stops"
        ),
        End::RouterGone => warn!(client = name, "the router dropped the client"),
    }
}

/// The will as a PUBLISH for the router, marked with its QoS like any
/// other message (see `publish.rs`).
fn will_publish(will: &Will) -> Packet {
    let empty = will.payload.is_empty() && !will.retain;
    let payload = if empty {
        Bytes::from_static(b"\0")
    } else {
        will.payload.clone()
    };
    let message = Publish::new(
        Bytes::copy_from_slice(will.topic.as_bytes()),
        payload,
        will.retain,
    );
    Packet::Publish(message, publish::marks(will.qos, empty))
}

/// Writes `bytes` and flushes them: with TLS, that sends the record now.
async fn write_flushed(stream: &mut ClientStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// After a refusal, waits (at most a second) for the client to close first,
/// so our answer is read rather than lost to a reset. With TLS, the
/// shutdown sends `close_notify` first.
async fn linger(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 256];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(1..)) {} };
    let _ = timeout(Duration::from_secs(1), drain).await;
}

fn next_auto_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
