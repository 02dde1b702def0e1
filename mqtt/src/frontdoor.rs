//! The front door: what a broker checks before it trusts a client, and the
//! path every message takes through it.
//!
//! `mqtt_broker` listens on our sockets only (MQTT's port, and with
//! `--ws-port` a second one for MQTT over WebSocket). rumqttd's router runs in
//! this process on a thread of its own and carries every message, in the
//! order it takes them, to the front door's dispatcher, which routes each to
//! the sessions that subscribed (`dispatch.rs`); clients never reach the
//! router directly. For each client the front door:
//!
//! 1. **reads the CONNECT** within [`FrontDoorConfig::connect_timeout`] and
//!    checks it ([`connect`]): a malformed one closes the connection, a
//!    refused one gets the CONNACK return code the spec names (1 protocol
//!    level, 2 client id, 3 server unavailable, 5 not authorized);
//! 2. **takes over** an older connection with the same client id
//!    [MQTT-3.1.4-2]: that one is closed and its will published before the
//!    new one goes further, so sessions never overlap;
//! 3. **answers CONNACK** and serves the client ([`relay`]), checking every
//!    packet: subscriptions go into the topic tree ([`topics`]), messages
//!    the client publishes go to the router over the one link all clients
//!    share ([`router`]), so that clients cost the router nothing, and
//!    messages routed to the client come from its mailbox ([`mailbox`]);
//! 4. at the end, **publishes the will** unless the client sent DISCONNECT,
//!    and keeps a persistent session for the client's return ([`session`]).
//!
//! The connection limit is ours too: one client too many gets CONNACK 3.
//! With `--tls`, TLS ends here as well: each connection's TLS handshake
//! comes before step 1, and the relay decrypts and encrypts in place
//! ([`relay::tls`]), so the checks are the same with TLS or without. The
//! same holds for MQTT over WebSocket: the HTTP upgrade comes before step 1
//! ([`websocket`]), and the relay unwraps and wraps binary messages
//! ([`relay::websocket`]).
//!
//! ## The path of one PUBLISH
//!
//! ```text
//! publisher's socket
//!   -> Connection::read_client    relay/socket.rs  bytes in, cut into packets
//!   -> Connection::publish        publish.rs       checked; PUBACK queued
//!   -> Router::hand_over          router.rs        room taken in the pipe,
//!                                                  handed to the router
//!      rumqttd's router thread                     appended to its log
//!   -> dispatch::run              dispatch.rs      looked up in the topic
//!                                                  tree, one delivery per
//!                                                  subscribed session
//!   -> Mailbox::push              mailbox.rs       waits for the subscriber
//!   -> Connection::deliver        deliver.rs       QoS, packet id, encoded once
//!   -> Connection::write_client   relay/socket.rs  out to the subscriber's socket
//! ```
//!
//! `relay.rs` is the loop that waits for all of these, for one client.
//! SUBSCRIBE and UNSUBSCRIBE are in `subscribe.rs`, the session's state in
//! `session.rs`, what MQTT 5 adds to a PUBLISH in `publish5.rs`,
//! `aliases.rs` and `expiry.rs`, how a PUBLISH crosses the router in
//! `carry.rs`, what
//! happens when subscribers read slower than publishers send in
//! `congestion.rs`, and how the router is started and watched in
//! `router.rs`.

pub mod acl;
mod aliases;
mod carry;
mod config;
pub mod congestion;
mod connack;
pub mod connect;
mod deliver;
pub mod dispatch;
mod end;
mod expiry;
mod handshake;
pub mod link;
pub mod logins;
pub mod mailbox;
pub mod persist;
mod publish;
mod publish5;
pub mod relay;
pub mod retained;
pub mod router;
pub mod session;
mod subscribe;
pub mod sys;
pub mod topics;
pub mod websocket;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use networking_protocols::accept::{Acceptor, Incoming, Throttle};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use config::FrontDoorConfig;
use congestion::Congestion;
use connack::Admitted;
use dispatch::Shared;
use handshake::{ClientStream, Transport, accept};
use persist::Persistence;
use router::Router;
use session::Sessions;

/// Serves clients on `listener` (MQTT over TCP, or over TLS with
/// `config.tls`) and on `websocket` (MQTT over WebSocket, `websocket.rs`)
/// until `shutdown` resolves, then closes them all and returns.
/// `dispatcher` is the link [`dispatch::subscribe`] made.
pub async fn run(
    listener: TcpListener,
    websocket: Option<TcpListener>,
    mut config: FrontDoorConfig,
    router: Router,
    dispatcher: link::Link,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = Arc::new(Shared::default());
    // Retained messages from the persistence file are back before the
    // first client comes, and saved from then on.
    let mut saver = None;
    let saver_stop = CancellationToken::new();
    if let Some(Persistence { path, restored }) = config.persistence.take() {
        shared.table().restore_retained(restored);
        saver = Some(tokio::spawn(persist::run(
            shared.clone(),
            path,
            saver_stop.clone(),
        )));
    }
    let congestion = Congestion::default();
    let dispatcher = tokio::spawn(dispatch::run(router.clone(), dispatcher, shared.clone()));
    let door = Arc::new(Door {
        slots: Arc::new(Semaphore::new(config.max_connections)),
        // Refusing costs a task that reads the CONNECT, so refusals are
        // bounded too; past this many at once we just close.
        refusals: Arc::new(Semaphore::new(64)),
        clients: Mutex::new(HashMap::new()),
        congestion,
        stop: CancellationToken::new(),
        router,
        shared,
        sessions: Sessions::default(),
        config,
    });
    let tasks = TaskTracker::new();
    let mut acceptor = Acceptor::new(listener);
    let mut websocket = websocket.map(Acceptor::new);
    let mut busy = Throttle::default();
    tokio::pin!(shutdown);
    tokio::pin!(dispatcher);
    // Sessions whose MQTT 5 Session Expiry Interval runs out while their
    // client is away end, and delayed wills go, on a task of their own that
    // sleeps until the next such moment (`session.rs`).
    tokio::spawn(session::sweep(door.clone()));
    if let Some(every) = door.config.sys_interval {
        tokio::spawn(sys::run(door.clone(), every));
    }
    loop {
        let (stream, peer, transport) = tokio::select! {
            () = &mut shutdown => break,

            ended = &mut dispatcher => {
                let why = ended.map_or_else(|error| error.to_string(), |failed| failed.to_string());
                error!("the dispatcher stopped ({why}); no message can be routed");
                break;
            }
            incoming = acceptor.accept() => match incoming {
                Incoming::Open(stream, peer) => (stream, peer, Transport::Mqtt),
                // No descriptor to spare for a CONNECT exchange: close.
                Incoming::OutOfDescriptors(..) => continue,
            },
            incoming = accept(&mut websocket) => match incoming {
                Incoming::Open(stream, peer) => (stream, peer, Transport::WebSocket),
                Incoming::OutOfDescriptors(..) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let door = door.clone();
        match door.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tasks.spawn(async move {
                    if let Some(client) = Box::pin(door.open(stream, peer, transport)).await {
                        door.serve(client, peer, slot).await;
                    }
                });
            }
            Err(_) => match door.refusals.clone().try_acquire_owned() {
                Ok(permit) => {
                    tasks.spawn(async move {
                        if let Some(client) = door.open(stream, peer, transport).await {
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
    // The last save, with what the last clients published.
    saver_stop.cancel();
    if let Some(saver) = saver {
        let _ = saver.await;
    }
}

/// Who is connected, by client id, so a new connection can take over.
#[derive(Debug)]
struct Occupant {
    /// Cancelled to make the connection close.
    kick: CancellationToken,
    /// Cancelled once the connection has finished with the router.
    done: CancellationToken,
}

#[derive(Debug)]
struct Door {
    config: FrontDoorConfig,
    slots: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
    clients: Mutex<HashMap<String, Arc<Occupant>>>,
    congestion: Congestion,
    router: Router,
    /// Subscriptions, mailboxes and retained messages (`dispatch.rs`).
    shared: Arc<Shared>,
    /// Persistent sessions of clients that are away.
    sessions: Sessions,
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
    /// One connection, from its first byte to its end.
    async fn serve(&self, client: ClientStream, peer: SocketAddr, _slot: OwnedSemaphorePermit) {
        // Boxed here and below: what runs once, before or after a client's
        // packets flow, need not make every idle client's task larger.
        let Some((stream, connect, early)) = Box::pin(self.admit(client, peer)).await else {
            return;
        };
        // [MQTT-3.1.3-6]: a client that sent no id gets one from us.
        let name = if connect.client_id.is_empty() {
            format!("auto-{}", next_auto_id())
        } else {
            connect.client_id.clone()
        };
        // A will to a topic the client may not publish to is never
        // published (Mosquitto checks it when it would go, with the same
        // outcome): the same rule as for its PUBLISHes (`acl.rs`).
        let mut connect = connect;
        if let Some(will) = &connect.will {
            let acl = self.config.acl.as_deref();
            let username = connect.username.as_deref();
            if !acl::may_publish(acl, username, &name, &will.topic) {
                info!(
                    client = name,
                    topic = will.topic,
                    "the client may not publish to its will's topic ($SYS/, or the ACL): no will"
                );
                connect.will = None;
            }
        }

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

        let admitted = Admitted {
            stream,
            name: &name,
            connect: &connect,
            early,
            kick: &me.kick,
        };
        let outcome = self.session(admitted).await;
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
}

fn next_auto_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
