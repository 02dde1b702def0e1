//! The embedded broker: rumqttd, configured in code and started on its own
//! threads.
//!
//! [rumqttd](https://docs.rs/rumqttd) is a whole MQTT broker in a library.
//! It is built to be configured from a TOML file, and its
//! [`RouterConfig::default`] is all zeros, which among other things allows
//! *zero* connections. So we fill in every field ourselves, each with the
//! reason for its value, in [`rumqttd_config`].
//!
//! Three things about rumqttd shape this module:
//!
//! - It binds its listening socket itself and never says which port it got,
//!   so `--port 0` cannot be handed to it. [`start`] binds the address first
//!   (for port 0 the kernel picks a free port), notes the port, releases it,
//!   and gives rumqttd that exact address. Another program could grab the port
//!   in the instant between; on a learner's machine that does not happen.
//! - It runs on its own threads (a router thread, plus one thread with a small
//!   tokio runtime per listener), not on our tokio runtime, and it has no stop
//!   API. A broker stops when its process ends: the kernel then closes every
//!   client's connection, which clients see as the broker going away.
//! - It logs an ERROR for every client that simply goes away, and more lines
//!   per connection besides. [`log_filter`] keeps what a learner wants.
//!
//! # Where rumqttd 0.20 departs from MQTT 3.1.1
//!
//! So that its behaviour does not teach you the wrong protocol (the tests in
//! `tests/mqtt.rs` pin down the first four, and `tests/mqtt_interop.rs` shows
//! Mosquitto doing what the spec says):
//!
//! - It delivers at the subscription's QoS, not at the minimum of the
//!   publish and subscription QoS (spec 3.8.4): a QoS 0 publish reaches a
//!   QoS 2 subscriber as QoS 2.
//! - On a bad username or password it closes the connection without the
//!   CONNACK with return code 5 (spec 3.2.2.3), so a client cannot tell why.
//!   Over the connection limit it also just closes (instead of CONNACK 3).
//! - It refuses a CONNECT with a keep-alive of 0, which the spec (3.1.2.10)
//!   accepts as "no keep-alive", again by closing without a CONNACK.
//! - Any message with an empty payload removes the topic's retained message;
//!   the spec (3.3.1.3) says only a *retained* empty message does.
//! - Retained messages and sessions live in memory: a restart loses them.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::oneshot;

/// Which log lines a learner sees when `RUST_LOG` is unset: ours at info, and
/// of rumqttd's only its router's lines for a client connecting, subscribing
/// and disconnecting (`incoming_connect{client_id="..."}: Client connection
/// registered`), inside the three spans that name the client. Its other lines,
/// including an ERROR for every ordinary disconnect, and the spans it opens
/// for every packet, are off. `RUST_LOG=info` shows everything.
///
/// The choice is made from each call site's metadata alone, so tracing makes
/// it once per call site: the per-packet spans then cost nothing. (The same
/// selection as an `EnvFilter` string, `rumqttd[incoming_connect]=info` and
/// so on, is checked as every span and event happens, and cost the broker
/// about 50% more CPU per message under load.)
pub fn log_filter(line: &tracing::Metadata<'_>) -> bool {
    let info_or_worse = *line.level() <= tracing::Level::INFO;
    if !line.target().starts_with("rumqttd") {
        return info_or_worse;
    }
    if line.is_span() {
        return matches!(
            line.name(),
            "incoming_connect" | "incoming_payload" | "incoming_disconnect"
        );
    }
    line.target() == "rumqttd::router::routing" && info_or_worse
}

/// The broker's settings; [`BrokerConfig::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen. Port 0 means "any free port".
    pub addr: SocketAddr,
    /// The largest PUBLISH (topic, packet id and payload) accepted; a client
    /// that sends a larger one is disconnected.
    pub max_payload_bytes: usize,
    /// Most clients connected at once.
    pub max_connections: usize,
    /// If not empty, clients must log in with one of these (name, password).
    pub users: Vec<(String, String)>,
}

/// The default for `--max-payload-bytes`: 1 MiB. MQTT allows 256 MiB, but a
/// learner's broker that buffers messages in memory does better with a
/// limit that a mistake (say, publishing a whole file) cannot blow through.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_connections: 1000,
            users: Vec::new(),
        }
    }
}

/// Turns our settings into rumqttd's, setting every field we rely on.
pub fn rumqttd_config(config: &BrokerConfig, addr: SocketAddr) -> Config {
    let router = RouterConfig {
        // The default is 0, which refuses every client.
        max_connections: config.max_connections,
        // How many QoS 0 messages the router hands a subscriber per turn
        // (QoS 1 and 2 are limited by rumqttd's fixed window of 100 unacked
        // messages instead). Larger batches mean fewer wake-ups per message.
        max_outgoing_packet_count: 200,
        // rumqttd keeps one in-memory log per subscription filter (`home/#`,
        // `home/+/temp`): a message is appended to the log of every filter it
        // matches (a message no filter matches is not stored), and each
        // subscriber reads from its filters' logs. A log keeps at most
        // `max_segment_count` segments, dropping the oldest to start a new
        // one when the newest is full. A subscriber that falls further
        // behind than that loses messages, and this is also the memory each
        // filter's log may keep: 32 x 1 MiB. (A segment must be at least
        // 1 KiB, or rumqttd panics.)
        max_segment_size: 1024 * 1024,
        max_segment_count: 32,
        // No per-filter overrides, no filters created up front.
        custom_segment: None,
        initialized_filters: None,
        // `$share/group/topic` subscriptions take turns.
        shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
    };
    let users: HashMap<String, String> = config.users.iter().cloned().collect();
    let connections = ConnectionSettings {
        // A client must send CONNECT within 5 s of connecting, so silent
        // connections cannot fill up the connection limit.
        connection_timeout_ms: 5_000,
        // Larger PUBLISH packets get the client disconnected.
        max_payload_size: config.max_payload_bytes,
        // Despite the name, this is how many packets rumqttd reads from one
        // client's socket before passing them to the router as one batch.
        max_inflight_count: 100,
        // `None` lets anybody in; `Some` requires a listed name and password.
        auth: (!users.is_empty()).then_some(users),
        external_auth: None,
        // Meant to create a log for a topic that no subscription matches
        // (without it, rumqttd would disconnect the publisher). In rumqttd
        // 0.20 it changes nothing: its matching never reports "no filter", so
        // such a publish is acknowledged and dropped either way. We set the
        // value rumqttd's own example config uses.
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "mqtt-v4".to_string(),
        listen: addr,
        // No TLS: these lessons are about MQTT itself.
        tls: None,
        // rumqttd pauses this long after each accept: at most 1000 new
        // connections per second, a cheap brake on connection floods.
        next_connection_delay_ms: 1,
        connections,
    };
    Config {
        id: 0,
        router,
        // MQTT 3.1.1 ("v4" on the wire) only: no MQTT 5, no WebSocket, no
        // cluster, console, bridge or metrics endpoints.
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Config::default()
    }
}

/// The broker, running on its own threads.
#[derive(Debug)]
pub struct RunningBroker {
    /// The address it listens on (the real port, also for `--port 0`).
    pub addr: SocketAddr,
    /// Resolves (with an error) if rumqttd's threads end.
    ended: oneshot::Receiver<()>,
}

impl RunningBroker {
    /// Resolves if rumqttd stops, which only happens when it fails: wait for
    /// this next to Ctrl-C, so a broker that dies does not look alive.
    pub async fn failed(&mut self) {
        let _ = (&mut self.ended).await;
    }
}

/// Starts rumqttd on `config.addr` and returns once it accepts connections.
///
/// This blocks the calling thread for at most a few seconds; call it before
/// starting async work, or from `spawn_blocking`.
pub fn start(config: &BrokerConfig) -> anyhow::Result<RunningBroker> {
    // Bind first, ourselves: this turns port 0 into a real free port, and a
    // port in use into a clear error now, rather than a log line from
    // rumqttd's thread later.
    let probe = TcpListener::bind(config.addr)
        .map_err(|error| networking_protocols::bind_error(config.addr, error))?;
    let addr = probe.local_addr()?;
    drop(probe);

    let rumqttd_config = rumqttd_config(config, addr);
    let (end_tx, ended) = oneshot::channel();
    let thread = thread::Builder::new()
        .name("rumqttd".to_string())
        .spawn(move || {
            // `start` spawns the listener threads and then waits for them:
            // it returns only if they all end.
            let mut broker = rumqttd::Broker::new(rumqttd_config);
            if let Err(error) = broker.start() {
                tracing::error!(%error, "rumqttd failed");
            }
            let _ = end_tx.send(());
        })
        .context("cannot start the rumqttd thread")?;

    // rumqttd binds on its own thread and does not tell us when it is ready,
    // so we knock: once a TCP connection succeeds, it is listening. (rumqttd
    // logs an error for our knock, which sends no CONNECT; that log is muted.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(RunningBroker { addr, ended });
        }
        if thread.is_finished() {
            bail!("cannot listen on {addr}: rumqttd stopped (another program took the port?)");
        }
        if Instant::now() > deadline {
            bail!("cannot listen on {addr}: rumqttd did not start listening within 5 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
