//! The front door: what a broker checks before it trusts a client.
//!
//! `mqtt_broker` listens itself; rumqttd, the router that keeps
//! subscriptions, sessions and retained messages, listens only on an
//! internal loopback port that clients never see. For each client the front
//! door:
//!
//! 1. **reads the CONNECT** within [`FrontDoorConfig::connect_timeout`] and
//!    checks it ([`connect`]): a malformed one closes the connection, a
//!    refused one gets the CONNACK return code the spec names (1 protocol
//!    level, 2 client id, 3 server unavailable, 5 not authorized);
//! 2. **takes over** an older connection with the same client id
//!    [MQTT-3.1.4-2]: that one is closed (and its will published) before the
//!    new one goes further, so sessions never overlap;
//! 3. **connects to rumqttd** with its own CONNECT: the client id written in
//!    characters rumqttd accepts ([`connect::upstream_id`]), no will and no
//!    login. It always finishes this handshake and closes it cleanly, even
//!    if the client has vanished meanwhile: rumqttd 0.20 panics, and then
//!    refuses every later client, when a connection fails half-way through
//!    its handshake twice with the same client id (rumqtt issue 1062). A
//!    clean session has nothing for rumqttd to find, so we answer its
//!    CONNECT ourselves and connect it to rumqttd only when it first sends
//!    something for it: rumqttd spends about 45 KB on each connection, and a
//!    client that only connects (or only pings) then costs it nothing;
//! 4. **relays** packets both ways ([`relay`]), checking the client's;
//! 5. at the end, **publishes the will** unless the client sent DISCONNECT.
//!
//! The connection limit is ours too: one client too many gets CONNACK 3.
//!
//! With `--tls`, TLS ends here too: each connection's TLS handshake comes
//! before step 1, and the relay decrypts and encrypts in place
//! ([`relay::tls`]), so the checks above are the same with TLS or without.

pub mod congestion;
pub mod connect;
pub mod relay;
pub mod subscriptions;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use networking_protocols::tls::server::{self as tls_server, Handshake, TlsStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, timeout};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::wire::{self, ConnackCode, kind};
use congestion::Congestion;
use connect::{Connect, Refusal, Will};
use relay::tls::TlsSession;
use relay::{End, Limits, Relay};

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
    /// rumqttd's internal address.
    pub upstream: SocketAddr,
    /// Most clients connected at once; one more gets CONNACK 3.
    pub max_connections: usize,
    /// If not empty, clients must log in with one of these (name, password).
    pub users: Vec<(String, String)>,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Duration,
    /// The relay's limits: packet size and queued bytes per client.
    pub limits: Limits,
    /// With `Some`, clients speak MQTT over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Serves clients on `listener` until `shutdown` resolves, then closes them
/// all and returns.
pub async fn run(
    listener: TcpListener,
    config: FrontDoorConfig,
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
        rumqttd: Rumqttd::new(config.upstream),
        persistent: Mutex::new(HashSet::new()),
        config,
    });
    let tasks = TaskTracker::new();
    let mut accept_errors = RateLimit::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors (EMFILE, ENFILE) or memory:
                    // the connection waits in the kernel's queue. Pause so
                    // we do not spin, and say so at most once a second.
                    if accept_errors.ready() {
                        warn!(%error, "cannot accept a connection; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
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
                Err(_) => drop(stream),
            },
        }
    }
    door.stop.cancel();
    tasks.close();
    let _ = timeout(Duration::from_secs(2), tasks.wait()).await;
}

/// At most one log line a second for a repeating condition.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    fn ready(&mut self) -> bool {
        let now = Instant::now();
        let ready = self
            .last
            .is_none_or(|at| now >= at + Duration::from_secs(1));
        if ready {
            self.last = Some(now);
        }
        ready
    }
}

/// Who is connected, by client id, so a new connection can take over.
#[derive(Debug)]
struct Occupant {
    /// Cancelled to make the connection close.
    kick: CancellationToken,
    /// Cancelled once the connection has finished with rumqttd.
    done: CancellationToken,
}

#[derive(Debug)]
struct Door {
    config: FrontDoorConfig,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    clients: Mutex<HashMap<String, Arc<Occupant>>>,
    congestion: Congestion,
    rumqttd: Rumqttd,
    /// rumqttd's ids of the clients that ever asked for a persistent session.
    persistent: Mutex<HashSet<String>>,
    /// Cancelled when the broker stops.
    stop: CancellationToken,
}

impl Door {
    /// The client table; a poisoned lock (a panic elsewhere) still holds a
    /// whole table, so we go on with it rather than refuse everyone.
    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Occupant>>> {
        match self.clients.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The ids with persistent sessions (see [`Door::clients`] on poisoning).
    fn persistent(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.persistent.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

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
        // [MQTT-3.1.3-6]: a client that sent no id gets one from us. Its
        // upstream name starts with a bare `%`, which `upstream_id` never
        // produces, so it cannot meet a client's own id.
        let (name, upstream_id) = if connect.client_id.is_empty() {
            let name = format!("auto-{}", next_auto_id());
            let upstream_id = format!("%{name}");
            (name, upstream_id)
        } else {
            let name = connect.client_id.clone();
            let upstream_id = connect::upstream_id(&name);
            (name, upstream_id)
        };

        let me = Arc::new(Occupant {
            kick: self.stop.child_token(),
            done: CancellationToken::new(),
        });
        if !connect.client_id.is_empty() {
            let previous = self.clients().insert(name.clone(), me.clone());
            if let Some(previous) = previous {
                info!(
                    client = name,
                    "a new connection takes over this client id [MQTT-3.1.4-2]"
                );
                previous.kick.cancel();
                let _ = timeout(Duration::from_secs(5), previous.done.cancelled()).await;
            }
        }

        let outcome = self
            .session(client, &name, &upstream_id, &connect, early, &me)
            .await;
        me.done.cancel();
        let mut clients = self.clients();
        if clients.get(&name).is_some_and(|c| Arc::ptr_eq(c, &me)) {
            clients.remove(&name);
        }
        drop(clients);
        if let Err(error) = outcome {
            warn!(client = name, "rumqttd: {error}");
        }
    }

    /// Relays the client to rumqttd and closes both sides.
    ///
    /// A clean session has no state to find, so we answer its CONNECT
    /// ourselves (session present 0, [MQTT-3.2.2-1]), and rumqttd sees the
    /// client only once it sends something for rumqttd: a client that only
    /// connects costs rumqttd nothing. A persistent session is connected
    /// to rumqttd at once, whose CONNACK says whether it kept the session.
    async fn session(
        &self,
        mut client: ClientStream,
        name: &str,
        upstream_id: &str,
        connect: &Connect,
        early: BytesMut,
        me: &Occupant,
    ) -> io::Result<()> {
        let rumqttd = &self.rumqttd;
        // A clean session must end any session rumqttd kept under this id
        // [MQTT-3.1.2-6], so only an id that never had one can wait.
        let had_session = {
            let mut persistent = self.persistent();
            if connect.clean_session {
                persistent.remove(upstream_id)
            } else {
                persistent.insert(upstream_id.to_string());
                true
            }
        };
        let (upstream, connack) = if connect.clean_session && !had_session {
            (None, wire::connack(false, ConnackCode::Accepted))
        } else {
            match rumqttd.open(upstream_id, connect.clean_session).await {
                Ok((upstream, connack)) => (Some(upstream), connack),
                Err(error) => {
                    // rumqttd did not take the client: we are unavailable.
                    let refusal = wire::connack(false, ConnackCode::ServerUnavailable);
                    let _ = write_flushed(&mut client, &refusal).await;
                    return Err(error);
                }
            }
        };
        if write_flushed(&mut client, &connack).await.is_err() {
            // The client left before its CONNACK. If rumqttd's handshake is
            // complete, we end it the ordinary way.
            if let Some(mut upstream) = upstream {
                finish_upstream(&mut upstream, &[], connect.will.as_ref()).await?;
            }
            return Ok(());
        }
        info!(
            client = name,
            keep_alive = connect.keep_alive,
            clean_session = connect.clean_session,
            "client connected"
        );

        // From here on the relay reads and writes the socket itself, with
        // rustls's state beside it for a TLS client.
        let (client, tls) = match client {
            Either::Left(tcp) => (tcp, None),
            Either::Right(tls) => {
                let (tcp, conn) = tls.into_inner();
                (tcp, Some(TlsSession::new(conn)))
            }
        };
        let relay = Relay {
            client: &client,
            rumqttd,
            upstream_id,
            name,
            limits: &self.config.limits,
            grace: (connect.keep_alive > 0)
                .then(|| Duration::from_secs(u64::from(connect.keep_alive)).mul_f32(1.5)),
            own_acks: connect.clean_session,
            congestion: &self.congestion,
        };
        let (end, unsent, upstream) = relay.run(early, &me.kick, upstream, tls).await;
        match &end {
            End::Disconnect => info!(client = name, "client disconnected"),
            End::ClientGone(None) => info!(client = name, "client closed the connection"),
            End::ClientGone(Some(error)) => {
                info!(client = name, %error, "client connection failed")
            }
            End::Violation(violation) => {
                warn!(client = name, "closing the connection: {violation}")
            }
            End::KeepAliveExpired(grace) => warn!(
                client = name,
                "closing the connection: nothing from the client for {grace:?}, 1.5 x its keep-alive [MQTT-3.1.2-24]"
            ),
            End::Kicked => info!(
                client = name,
                "closing the connection: taken over, or the broker stops"
            ),
            End::UpstreamGone => warn!(client = name, "rumqttd closed the connection"),
        }
        let will = connect.will.as_ref().filter(|_| end.publishes_will());
        if let Some(will) = will {
            info!(
                client = name,
                topic = will.topic,
                "publishing the client's will"
            );
        }
        if matches!(end, End::UpstreamGone) {
            return Ok(());
        }
        let upstream = match upstream {
            Some(upstream) => Some(upstream),
            // The client never reached rumqttd, but its will or its last
            // messages must (a SUBSCRIBE of a client that left need not).
            None if will.is_some() || unsent.iter().any(carries_a_message) => {
                Some(rumqttd.open(upstream_id, connect.clean_session).await?.0)
            }
            None => None,
        };
        match upstream {
            Some(mut upstream) => finish_upstream(&mut upstream, &unsent, will).await,
            None => Ok(()),
        }
    }
}

/// rumqttd's internal listener, as the front door reaches it.
#[derive(Debug)]
pub struct Rumqttd {
    addr: SocketAddr,
    /// rumqttd sets up one connection at a time (its router answers each
    /// in turn), and its listener queues at most 1024 that wait for it; a
    /// thousand clients at once would overflow that queue and wait seconds
    /// for TCP's retries. So at most this many of our handshakes run at once.
    handshakes: Semaphore,
}

impl Rumqttd {
    fn new(addr: SocketAddr) -> Self {
        Rumqttd {
            addr,
            handshakes: Semaphore::new(64),
        }
    }

    /// Opens a client's connection to rumqttd under `upstream_id`, and
    /// returns it with the CONNACK rumqttd sent (which carries the session
    /// present flag). Errors if rumqttd refuses, or takes over 5 s once our
    /// turn has come.
    pub async fn open(
        &self,
        upstream_id: &str,
        clean_session: bool,
    ) -> io::Result<(TcpStream, [u8; 4])> {
        let _turn = self.handshakes.acquire().await.map_err(io::Error::other)?;
        let handshake = async {
            let mut upstream = TcpStream::connect(self.addr).await?;
            upstream.set_nodelay(true)?;
            let connect = connect::upstream_connect(upstream_id, clean_session);
            upstream.write_all(&connect).await?;
            let mut connack = [0u8; 4];
            upstream.read_exact(&mut connack).await?;
            if connack[0] != kind::CONNACK << 4 || connack[3] != 0 {
                return Err(io::Error::other(format!("rumqttd answered {connack:02x?}")));
            }
            Ok((upstream, connack))
        };
        timeout(Duration::from_secs(5), handshake)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }
}

/// Ends a connection to rumqttd: what the client sent that is still
/// unsent, the will if there is one, then DISCONNECT; then we wait
/// (briefly) for rumqttd to close, so that it has finished with this client
/// id before anyone else uses it.
async fn finish_upstream(
    upstream: &mut TcpStream,
    unsent: &[Bytes],
    will: Option<&Will>,
) -> io::Result<()> {
    let mut goodbye = BytesMut::new();
    for chunk in unsent {
        goodbye.extend_from_slice(chunk);
    }
    if let Some(will) = will {
        goodbye.extend_from_slice(&will_publish(will));
    }
    goodbye.extend_from_slice(&wire::DISCONNECT);
    upstream.write_all(&goodbye).await?;
    let mut sink = [0u8; 256];
    let drain = async { while matches!(upstream.read(&mut sink).await, Ok(1..)) {} };
    let _ = timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

/// The will as a PUBLISH to rumqttd. rumqttd delivers every message at the
/// subscriber's QoS whatever its own (see `broker.rs`), so a QoS 2 will goes
/// to it as QoS 1: one round trip, no exchange to finish while closing.
fn will_publish(will: &Will) -> Bytes {
    let qos = will.qos.min(1);
    let mut body = BytesMut::with_capacity(will.topic.len() + will.payload.len() + 4);
    wire::put_string(&mut body, will.topic.as_bytes());
    if qos > 0 {
        body.put_u16(1);
    }
    body.extend_from_slice(&will.payload);
    wire::packet(kind::PUBLISH << 4 | qos << 1 | u8::from(will.retain), &body)
}

/// Whether a packet on its way to rumqttd is part of a message: a PUBLISH,
/// or the PUBREL that releases a QoS 2 one.
fn carries_a_message(packet: &Bytes) -> bool {
    matches!(
        packet.first().map(|first| first >> 4),
        Some(kind::PUBLISH | kind::PUBREL)
    )
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
