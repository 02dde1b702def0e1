//! rumqttd's router, in this process: how the front door hands it packets
//! and takes its notifications back.
//!
//! rumqttd's [`Router`](rumqttd::Router) runs on a thread of its own and
//! talks to *links* ([`Link`]): two in-memory queues each, packets in
//! (`LinkTx`), notifications out (`LinkRx`). No socket, no second parse: the
//! front door checks a client's packet once, and the router gets it as a
//! `rumqttd::protocol::Packet`. There are three links, whatever the number
//! of clients: every client's messages go in by one ([`Router::hand_over`]),
//! the router appends them to one log, which the dispatcher's link reads
//! (`dispatch.rs` says why the router does not route), and the watchdog's
//! link tells when the router's thread has ended.
//!
//! The router is fast and trusting: it `unwrap`s on states it assumes cannot
//! happen, and a panic there ends its thread for every client. So the front
//! door decides everything it sees, and keeps to a narrow path:
//! - every PUBLISH reaches it at QoS 0, on one topic, and the one
//!   subscription asks for QoS 0 (the front door runs QoS 1 and 2 with each
//!   client itself, see `publish.rs`), so the router never waits for an
//!   acknowledgement and never meets one out of order;
//! - a link asks the router to forward again only after the router said it
//!   stopped ([`Link::resume`]; rumqttd asserts that order);
//! - no link disconnects while the broker runs, and none shares an id, so
//!   the states around a client leaving (`Scheduler::reschedule` unwraps a
//!   connection the router has removed) cannot happen.
//!
//! If its thread ends anyway, [`Router::start`]'s watchdog says so at once.

use std::sync::Arc;

use bytes::Bytes;
use rumqttd::RouterConfig;
use rumqttd::local::{LinkBuilder, LinkRx, LinkTx};
use rumqttd::protocol::{Filter, Packet, QoS, RetainForwardRule, Subscribe};
use tokio::sync::{Semaphore, oneshot};

use super::link::{Failed, IsFull, Link};

/// The one topic every message has as the router sees it.
pub const ROUTER_TOPIC: &str = "messages";

/// The router's PUBLISH that carries `packet`, a PUBLISH of a client's.
pub fn for_router(packet: Bytes) -> Packet {
    Packet::Publish(
        rumqttd::protocol::Publish::new(Bytes::from_static(ROUTER_TOPIC.as_bytes()), packet, false),
        None,
    )
}

/// The router's SUBSCRIBE to `filter`, at QoS 0, since the router only
/// ever carries QoS 0 messages.
pub(super) fn router_subscribe(filter: &str) -> Packet {
    let filter = Filter {
        path: filter.to_string(),
        qos: QoS::AtMostOnce,
        nolocal: false,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::Never,
    };
    let subscribe = Subscribe {
        // Nothing answers the router's SUBACK; any id will do.
        pkid: 1,
        filters: vec![filter],
    };
    Packet::Subscribe(subscribe, None)
}

/// The packet type the front door gives an MQTT 5 PUBLISH it hands to the
/// router, in place of PUBLISH's 3: after the fixed header comes the
/// publisher's session key (8 bytes, for No Local), then the packet as MQTT
/// 5 lays a PUBLISH out (properties after the packet id, spec §3.3.2), with
/// any Topic Alias resolved and left out. Type 0 is reserved (spec §2.1.2) and
/// never crosses the wire, so the dispatcher can tell the two layouts
/// apart by the first byte, and a 3.1.1 PUBLISH is handed over as it came.
pub const V5_LAYOUT: u8 = 0;

/// The room between publishers and the dispatcher ([`Router::pipe`]), in
/// bytes as the router counts them: enough to keep both busy, and a small
/// part of what the router's log keeps (see `broker.rs`).
pub const PIPE_BYTES: usize = 64 * 1024;

/// What one message handed to the router takes of [`Router::pipe`]: the
/// size rumqttd counts in its log (4 bytes, the topic, the payload) for a
/// payload of `payload_bytes` on [`ROUTER_TOPIC`], or all of the pipe for
/// a message larger than that.
pub fn pipe_cost(payload_bytes: usize) -> u32 {
    let cost = (4 + ROUTER_TOPIC.len() + payload_bytes).min(PIPE_BYTES);
    u32::try_from(cost).unwrap_or(u32::MAX)
}

/// Opens links to one router thread: a handle to share between clients.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Handle>,
}

/// rumqttd's channel to its router carries a type it does not export, so
/// we keep what we do with it as closures that own it: one asks whether the
/// channel is full; one opens links, on a thread of its own (see
/// [`Router::link`]).
struct Handle {
    links: std::sync::mpsc::Sender<LinkRequest>,
    is_full: Arc<IsFull>,
    /// Room for messages handed to the router and not yet routed (see
    /// [`Router::pipe`]).
    pipe: Arc<Semaphore>,
    /// The one link every client's messages go in by ([`Router::hand_over`]).
    ingest: tokio::sync::Mutex<Link>,
}

/// A link to open, and where to send it.
struct LinkRequest {
    id: String,
    reply: oneshot::Sender<Result<(LinkTx, LinkRx), Failed>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Router {
    /// Room for messages between the publishers and the dispatcher, in
    /// the bytes the router counts them as ([`pipe_cost`]): a connection
    /// takes a message's cost before it hands the message over, and the
    /// dispatcher gives it back once it has routed it (`dispatch.rs`). So
    /// the router's log never holds more than [`PIPE_BYTES`] that the
    /// dispatcher has not read, and never drops one (see `broker.rs`).
    pub fn pipe(&self) -> Arc<Semaphore> {
        self.inner.pipe.clone()
    }

    /// Starts rumqttd's router thread, and returns a handle to it with a
    /// [`Watchdog`] that tells when the thread has ended. Blocks briefly
    /// (the watchdog's link is the router's first connection): call it
    /// outside the async worker threads.
    pub fn start(config: RouterConfig) -> Result<(Router, Watchdog), Failed> {
        let sender = rumqttd::Router::new(0, config).spawn();
        let full = sender.clone();
        let open = move |id: &str| -> Result<(LinkTx, LinkRx), Failed> {
            let (tx, rx, _connack) = LinkBuilder::new(id, sender.clone())
                .clean_session(true)
                .build()?;
            // rumqttd gives each link's inbound queue room for 200 packets
            // (78 KB) up front; ours grows only as far as a client needs.
            tx.buffer().shrink_to_fit();
            Ok((tx, rx))
        };
        let (_, watchdog) = open("%watchdog")?;
        let (tx, rx) = open("%ingest")?;
        let (links, requests) = std::sync::mpsc::channel::<LinkRequest>();
        std::thread::Builder::new()
            .name("router-links".to_string())
            .spawn(move || {
                // Ends when the last `Router` handle is dropped.
                for request in requests {
                    let _ = request.reply.send(open(&request.id));
                }
            })
            .map_err(|error| Failed(format!("cannot start the link thread: {error}")))?;
        // A router that has stopped takes nothing: then sending fails at
        // once rather than waiting for room.
        let is_full: Arc<IsFull> = Arc::new(move || full.is_full() && !full.is_disconnected());
        let ingest = tokio::sync::Mutex::new(Link::new(tx, rx, is_full.clone()));
        let router = Router {
            inner: Arc::new(Handle {
                links,
                is_full,
                pipe: Arc::new(Semaphore::new(PIPE_BYTES)),
                ingest,
            }),
        };
        Ok((router, Watchdog(watchdog)))
    }

    /// Opens a link under `id`, as a clean session. Errors if the router
    /// refuses (its connection limit) or has stopped.
    ///
    /// Opening a link waits for the router's answer on a blocking channel.
    /// One thread of ours does that wait for every link, one at a time (the
    /// router answers one at a time anyway), so that no async worker thread
    /// blocks and no pool of threads grows under a burst of clients.
    pub async fn link(&self, id: &str) -> Result<Link, Failed> {
        let (reply, answer) = oneshot::channel();
        let request = LinkRequest {
            id: id.to_string(),
            reply,
        };
        let stopped = || Failed("the router's link thread has stopped".to_string());
        self.inner.links.send(request).map_err(|_| stopped())?;
        let (tx, rx) = answer.await.map_err(|_| stopped())??;
        Ok(Link::new(tx, rx, self.inner.is_full.clone()))
    }
}

impl Router {
    /// Hands `messages` (PUBLISHes made by [`for_router`]) to the router, in
    /// order, over the one link all clients share: the router keeps nothing
    /// per client, so clients that come and go cost it nothing. Each message
    /// first takes its room in the pipe ([`Router::pipe`]); while there is
    /// none, what has room is handed over and we wait. Errors if the router
    /// has stopped.
    pub async fn hand_over(&self, messages: &mut Vec<Packet>) -> Result<(), Failed> {
        if messages.is_empty() {
            return Ok(());
        }
        let pipe = &self.inner.pipe;
        let mut ingest = self.inner.ingest.lock().await;
        for packet in messages.drain(..) {
            let cost = match &packet {
                Packet::Publish(publish, _) => pipe_cost(publish.payload.len()),
                _ => 0,
            };
            match pipe.try_acquire_many(cost) {
                Ok(room) => room.forget(),
                Err(_) => {
                    // Nothing may wait while holding room: what has room
                    // goes first, so the dispatcher can give room back.
                    ingest.flush().await?;
                    let room = pipe.acquire_many(cost).await;
                    room.map_err(|_| Failed("the pipe is closed".into()))?
                        .forget();
                }
            }
            ingest.push(packet);
        }
        ingest.flush().await
    }
}

/// A link that never subscribes, so nothing comes to it: its channel fails
/// only when the router thread drops every link, that is, when the thread
/// ends (it only does if it panics).
pub struct Watchdog(LinkRx);

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watchdog")
    }
}

impl Watchdog {
    /// Resolves the moment the router thread has ended.
    pub async fn ended(mut self) {
        while self.0.next().await.is_ok() {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // In a test, a panic is a failure report.
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use rumqttd::{RouterConfig, SegmentConfig};

    use super::Router;
    use super::router_subscribe;

    /// If the router thread ends (here: rumqttd panics when a filter's log
    /// is configured below its 1 KiB minimum, which happens on the router
    /// thread at the first SUBSCRIBE to it), the watchdog says so at once.
    #[tokio::test]
    async fn the_watchdog_sees_the_router_thread_end() {
        let config = RouterConfig {
            max_connections: 10,
            max_outgoing_packet_count: 200,
            max_segment_size: 1024 * 1024,
            max_segment_count: 2,
            custom_segment: Some(HashMap::from([(
                "boom".to_string(),
                SegmentConfig {
                    max_segment_size: 10,
                    max_segment_count: 1,
                },
            )])),
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
        };
        let (router, watchdog) = tokio::task::spawn_blocking(move || Router::start(config))
            .await
            .unwrap()
            .unwrap();
        let ended = tokio::spawn(watchdog.ended());
        let mut link = router.link("victim").await.unwrap();
        assert!(!ended.is_finished());
        link.push(router_subscribe("boom"));
        link.flush().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("the watchdog to see the router thread end")
            .unwrap();
        // Links fail from then on, rather than wait.
        let after = tokio::time::timeout(Duration::from_secs(5), router.link("after"))
            .await
            .expect("an answer from a stopped router");
        assert!(after.is_err());
    }
}
