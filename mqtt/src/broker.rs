//! The embedded broker: rumqttd as the router, behind our front door.
//!
//! [rumqttd](https://docs.rs/rumqttd) is a whole MQTT broker in a library:
//! it keeps subscriptions, sessions, retained messages and the QoS flows.
//! We use it for that, but clients never reach it directly: [`start`] binds
//! the port clients connect to and serves it with [`crate::frontdoor`], which
//! checks each client the way the spec says and connects it to rumqttd on
//! an internal loopback port. (How rumqttd 0.20 behaves with clients in
//! front of it is why: see `frontdoor.rs`.)
//!
//! rumqttd is built to be configured from a TOML file, and its
//! [`RouterConfig::default`] is all zeros, which among other things allows
//! *zero* connections. So we fill in every field ourselves, each with the
//! reason for its value, in [`rumqttd_config`].
//!
//! It runs on its own threads (a router thread, plus one thread with a small
//! tokio runtime per listener), not on our tokio runtime, and it has no stop
//! API: it stops when the process ends.
//!
//! # Where the broker still departs from MQTT 3.1.1
//!
//! The front door answers every CONNECT refusal with the spec's CONNACK
//! code, accepts a keep-alive of 0, closes clients that break the spec's
//! rules, and publishes wills. What rumqttd still does its own way (the
//! tests in `tests/mqtt.rs` pin these down, and `tests/mqtt_conformance.rs`
//! runs the same cases against Mosquitto):
//!
//! - It delivers at the subscription's QoS, not at the minimum of the
//!   publish and subscription QoS (spec 3.8.4): a QoS 0 publish reaches a
//!   QoS 2 subscriber as QoS 2.
//! - For a persistent session, a second SUBSCRIBE to a filter gets the new
//!   QoS in its SUBACK, but rumqttd goes on delivering at the first one
//!   (spec 3.8.4: the new subscription replaces the old). Clean sessions'
//!   QoS is the front door's (`frontdoor/subscriptions.rs`), and follows
//!   the spec.
//! - Any message with an empty payload removes the topic's retained message;
//!   the spec (3.3.1.3) says only a *retained* empty message does.
//! - It has no `$SYS/` topics: a SUBSCRIBE to a `$` filter (other than
//!   `$share/group/...`) gets the failure code 0x80 in its SUBACK, where
//!   Mosquitto grants it and publishes its statistics there.
//! - Retained messages and sessions live in memory: a restart loses them.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::oneshot;

use crate::frontdoor::{self, FrontDoorConfig, relay::Limits};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which log lines a learner sees when `RUST_LOG` is unset: ours at info
/// (the front door logs each client connecting, being refused or closed,
/// and disconnecting), and of rumqttd's only its warnings about a log
/// segment dropped under a subscriber. Its other lines are about the
/// front door's internal connections, not about clients, and include an
/// ERROR for every ordinary disconnect. Of rustls's, only errors: its
/// warnings repeat ours (the alert a failed handshake sends) or are about a
/// client's quirks, in hex (`mosquitto_pub -h 127.0.0.1` sends the address
/// as a server name, which TLS forbids). `RUST_LOG=info` shows everything.
///
/// The choice is made from each call site's metadata alone, so tracing makes
/// it once per call site: rumqttd's per-packet spans then cost nothing.
pub fn log_filter(line: &tracing::Metadata<'_>) -> bool {
    let info_or_worse = *line.level() <= tracing::Level::INFO;
    if line.target().starts_with("rustls") {
        return *line.level() <= tracing::Level::ERROR;
    }
    if !line.target().starts_with("rumqttd") {
        return info_or_worse;
    }
    line.target().starts_with("rumqttd::segments") && *line.level() <= tracing::Level::WARN
}

/// The broker's settings; [`BrokerConfig::default`] gives the binary's defaults.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where to listen. Port 0 means "any free port".
    pub addr: SocketAddr,
    /// The largest packet accepted, in bytes after the fixed header (for a
    /// PUBLISH: topic, packet id and payload); a client that sends a larger
    /// one is disconnected.
    pub max_payload_bytes: usize,
    /// Most clients connected at once; one more gets CONNACK 3.
    pub max_connections: usize,
    /// If not empty, clients must log in with one of these (name, password);
    /// anyone else gets CONNACK 5.
    pub users: Vec<(String, String)>,
    /// Bytes queued for one client that reads slower than messages arrive;
    /// past this, a client that is not reading loses messages (logged). See
    /// `frontdoor/congestion.rs`. A TLS client's encrypted records waiting
    /// for its socket (up to about 64 KiB, rustls's limit) are not counted.
    pub max_queued_bytes: usize,
    /// With `Some`, clients speak MQTT over TLS (see `frontdoor/relay/tls.rs`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The default for `--max-queued-bytes`: 8 MiB per client.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

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
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            tls: None,
        }
    }
}

/// Turns our settings into rumqttd's, setting every field we rely on.
pub fn rumqttd_config(config: &BrokerConfig, addr: SocketAddr) -> Config {
    let router = RouterConfig {
        // The default is 0, which refuses every client. The front door
        // enforces our limit; rumqttd's is higher, so that a connection being
        // taken over and its successor can briefly both be there.
        max_connections: config.max_connections.saturating_mul(2).saturating_add(16),
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
    let connections = ConnectionSettings {
        // Only the front door connects here, and it sends CONNECT at once.
        connection_timeout_ms: 5_000,
        // The front door checks packet sizes; this is the same limit, plus
        // room for a PUBLISH's fixed header.
        max_payload_size: config.max_payload_bytes.saturating_add(5),
        // Despite the name, this is how many packets rumqttd reads from one
        // client's socket before passing them to the router as one batch.
        max_inflight_count: 100,
        // The front door checks logins; rumqttd lets its connections in.
        auth: None,
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
        // Only the front door connects here, over loopback: no TLS.
        tls: None,
        // rumqttd can pause after each accept; the front door's connection
        // limit is our brake, so it does not.
        next_connection_delay_ms: 0,
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

/// The broker: our front door on the caller's tokio runtime, rumqttd on
/// threads of its own.
#[derive(Debug)]
pub struct RunningBroker {
    /// The address clients connect to (the real port, also for `--port 0`).
    pub addr: SocketAddr,
    /// rumqttd's internal address, on loopback.
    pub upstream: SocketAddr,
    /// Resolves (with an error) if rumqttd's threads end.
    ended: oneshot::Receiver<()>,
    front_door: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Resolves when the front door has closed every client after the
    /// `shutdown` given to [`start`], or with an error if rumqttd's threads
    /// end first (they only do when rumqttd fails), so a broker that dies
    /// does not look alive.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = &mut self.ended => bail!("rumqttd stopped unexpectedly"),
            _ = &mut self.front_door => Ok(()),
        }
    }
}

/// Binds `config.addr`, starts rumqttd on an internal loopback port, and
/// serves clients through the front door until `shutdown` resolves.
///
/// Errors: the address cannot be bound (in use, not ours), or rumqttd does
/// not start listening within 5 s.
pub async fn start(
    config: &BrokerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningBroker> {
    let config = &fit_open_file_limit(config, networking_protocols::raise_open_file_limit())?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|error| networking_protocols::bind_error(config.addr, error))?;
    let addr = listener.local_addr()?;
    let router_config = config.clone();
    let (upstream, ended) = tokio::task::spawn_blocking(move || start_rumqttd(&router_config))
        .await
        .context("the rumqttd start task failed")??;
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    let front_door = tokio::spawn(frontdoor::run(
        listener,
        front_door_config(config, upstream),
        stop.cancelled_owned(),
    ));
    Ok(RunningBroker {
        addr,
        upstream,
        ended,
        front_door,
    })
}

/// File descriptors one client costs this process: its connection, the
/// front door's connection to rumqttd, and rumqttd's end of that (TLS ends
/// in the front door, and costs none).
pub const FILES_PER_CLIENT: u64 = 3;

/// File descriptors kept for everything else: the listeners, refusals in
/// progress (at most 64), log files, rumqttd's internals.
pub const FILES_SPARE: u64 = 128;

/// Lowers `max_connections` to what the open-file limit can hold, with a
/// warning, so that the broker never runs out of descriptors (rumqttd's
/// accept loop spins at 100% CPU when it does). `limit` is the soft limit,
/// `None` if unknown. Errors if not even one client fits.
pub fn fit_open_file_limit(
    config: &BrokerConfig,
    limit: Option<u64>,
) -> anyhow::Result<BrokerConfig> {
    let mut config = config.clone();
    let Some(limit) = limit else {
        return Ok(config);
    };
    let per_client = FILES_PER_CLIENT;
    let fits =
        usize::try_from(limit.saturating_sub(FILES_SPARE) / per_client).unwrap_or(usize::MAX);
    if fits == 0 {
        bail!("the open-file limit ({limit}) leaves no room for clients; raise it with ulimit -n");
    }
    if config.max_connections > fits {
        tracing::warn!(
            requested = config.max_connections,
            serving = fits,
            "--max-connections is more than the open-file limit ({limit}) can hold at \
             {per_client} files per client; raise it with ulimit -n"
        );
        config.max_connections = fits;
    }
    Ok(config)
}

/// The front door's settings for `config`, in front of rumqttd at `upstream`.
pub fn front_door_config(config: &BrokerConfig, upstream: SocketAddr) -> FrontDoorConfig {
    FrontDoorConfig {
        upstream,
        max_connections: config.max_connections,
        users: config.users.clone(),
        connect_timeout: CONNECT_TIMEOUT,
        limits: Limits {
            // A PUBLISH's remaining length: topic, packet id and payload.
            max_packet_bytes: config.max_payload_bytes,
            max_queued_bytes: config.max_queued_bytes,
        },
        tls: config.tls.clone(),
    }
}

/// How long a new connection may take to send its CONNECT, so that silent
/// connections cannot fill up the connection limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts rumqttd on a free loopback port and waits until it accepts
/// connections: at most 5 s, blocking the calling thread.
fn start_rumqttd(config: &BrokerConfig) -> anyhow::Result<(SocketAddr, oneshot::Receiver<()>)> {
    // rumqttd binds its listening socket itself and never says which port
    // it got, so we find a free port first (bind port 0, note the port,
    // release it) and give rumqttd that one. Another program could take it
    // in the instant between; then rumqttd fails to start, and we say so.
    let probe = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .context("cannot find a free loopback port for rumqttd")?;
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

    // rumqttd does not tell us when it is ready, so we knock: once a TCP
    // connection succeeds, it is listening. (rumqttd logs an error for our
    // knock, which sends no CONNECT; that log is muted.)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok((addr, ended));
        }
        if thread.is_finished() {
            bail!("rumqttd could not listen on {addr} (another program took the port?)");
        }
        if Instant::now() > deadline {
            bail!("rumqttd did not start listening on {addr} within 5 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}
