//! The embedded broker: rumqttd's router, behind our front door.
//!
//! [rumqttd](https://docs.rs/rumqttd) is a whole MQTT broker in a library.
//! We run its router in this process, and clients never reach it directly:
//! [`start`] binds the port clients connect to and serves it with
//! [`crate::frontdoor`], which checks each client the way the spec says,
//! keeps sessions, subscriptions and retained messages, and hands the
//! router every message over in-memory links (`frontdoor/router.rs`). The
//! router carries them, in one order, to the front door's dispatcher, which
//! routes them (`frontdoor/dispatch.rs` says why the router does not).
//!
//! rumqttd is built to be configured from a TOML file, and its
//! [`RouterConfig::default`] is all zeros, which among other things allows
//! *zero* connections. So we fill in every field ourselves, each with the
//! reason for its value, in [`router_config`].
//!
//! The router runs on a thread of its own, not on our tokio runtime, and has
//! no stop API: it stops when the process ends. If it ever ends before
//! (a panic), [`RunningBroker::wait`] returns an error at once.
//!
//! # Where the broker still departs from MQTT 3.1.1
//!
//! The front door answers every CONNECT refusal with the spec's CONNACK
//! code, accepts a keep-alive of 0, closes clients that break the spec's
//! rules, publishes wills, delivers one copy at the highest QoS of a
//! client's matching subscriptions, lets only a retained empty message
//! clear a retained one, and gives a repeated SUBSCRIBE its new QoS and the
//! retained messages again (`tests/mqtt.rs` and `tests/mqtt_conformance.rs`
//! run each against Mosquitto too). What remains, each pinned down by a
//! test:
//!
//! - A SUBSCRIBE to a `$` filter other than `$SYS/...` and
//!   `$share/group/...` gets the failure code 0x80 in its SUBACK: the
//!   broker has no other `$` topics.
//! - Sessions live in memory: a restart loses them. (Retained messages
//!   survive one with `--persistence-file`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rumqttd::RouterConfig;
use tokio_util::sync::CancellationToken;

mod config;

use crate::frontdoor::acl::Acl;
use crate::frontdoor::logins::Logins;
use crate::frontdoor::persist::Persistence;
use crate::frontdoor::{self, FrontDoorConfig, relay::Limits, router::Router};
pub use config::{
    BrokerConfig, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_SUBSCRIPTIONS,
};

/// Which log lines a learner sees when `RUST_LOG` is unset: ours at info
/// (the front door logs each client connecting, being refused or closed,
/// and disconnecting), and of rumqttd's only its warnings about a log
/// segment dropped under a reader (which the dispatcher keeps from
/// happening, and reports too). Its other lines are about its three
/// links, which tell a learner nothing. Of rustls's, only errors: its
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

/// rumqttd's router settings, every field set and explained.
pub fn router_config() -> RouterConfig {
    RouterConfig {
        // The default is 0, which refuses every link. The router has three
        // (see `frontdoor/router.rs`), whatever the number of clients; the
        // front door enforces our limit on those.
        max_connections: 16,
        // How many messages the router hands its one reader, the
        // dispatcher, per turn (see `frontdoor/dispatch.rs`). Larger batches
        // mean fewer wake-ups per message.
        max_outgoing_packet_count: 200,
        // rumqttd keeps one in-memory log per subscription filter; the
        // router here has one filter, the dispatcher's, so one log, which
        // every message passes through. A log keeps at most
        // `max_segment_count` segments, dropping the oldest to start a new
        // one when the newest is full, so it keeps the last 112 to 128 KiB
        // of messages (as rumqttd counts them: 4 bytes, topic and payload
        // each), read or not: a fixed cost, which is why it is small. The
        // dispatcher is never more than `frontdoor::router::PIPE_BYTES`
        // (64 KiB) behind, so no message is dropped before it is read. (A
        // segment must be at least 1 KiB, or rumqttd panics.)
        max_segment_size: 16 * 1024,
        max_segment_count: 8,
        // No per-filter overrides, no filters created up front.
        custom_segment: None,
        initialized_filters: None,
        // `$share/group/topic` subscriptions take turns.
        shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
    }
}

/// The broker: our front door on the caller's tokio runtime, rumqttd's
/// router on a thread of its own.
#[derive(Debug)]
pub struct RunningBroker {
    /// The address clients connect to (the real port, also for `--port 0`).
    pub addr: SocketAddr,
    /// The WebSocket port's address, if there is one.
    pub websocket_addr: Option<SocketAddr>,
    /// Resolves when the router thread has ended.
    router_ended: tokio::task::JoinHandle<()>,
    front_door: tokio::task::JoinHandle<()>,
}

impl RunningBroker {
    /// Resolves when the front door has closed every client after the
    /// `shutdown` given to [`start`], or with an error the moment rumqttd's
    /// router thread ends (it only does when it panics; the panic's message
    /// is on stderr), so a broker that can no longer route does not look
    /// alive.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = &mut self.router_ended => {
                tracing::error!("rumqttd's router thread stopped; no client can be served");
                bail!("rumqttd's router thread stopped unexpectedly (its panic message is above)")
            }
            _ = &mut self.front_door => Ok(()),
        }
    }
}

/// Binds `config.addr` (and `config.websocket_addr`), starts rumqttd's
/// router, and serves clients through the front door until `shutdown`
/// resolves.
///
/// Errors: the password file, the ACL file or the persistence file cannot
/// be read (or, for a corrupt persistence file, set aside), an address
/// cannot be bound (in use, not ours), or the router does not start.
pub async fn start(
    config: &BrokerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningBroker> {
    let config = &fit_open_file_limit(config, networking_protocols::raise_open_file_limit())?;
    // The files first: one that cannot be read stops the start before we
    // take a port or start the router.
    let mut logins = Logins::new(config.users.clone());
    if let Some(path) = &config.password_file {
        logins.read_password_file(path)?;
    }
    let acl = match &config.acl_file {
        Some(path) => Some(Arc::new(Acl::read_file(path)?)),
        None => None,
    };
    if acl.is_some() && !logins.required() {
        tracing::warn!(
            "--acl-file without --password-file or --user: user names are not checked, \
             so any client may claim any user's rules"
        );
    }
    let persistence = config
        .persistence_file
        .clone()
        .map(Persistence::open)
        .transpose()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|error| networking_protocols::bind_error(config.addr, error))?;
    let addr = listener.local_addr()?;
    let websocket = match config.websocket_addr {
        Some(ws_addr) => Some(
            tokio::net::TcpListener::bind(ws_addr)
                .await
                .map_err(|error| networking_protocols::bind_error(ws_addr, error))?,
        ),
        None => None,
    };
    let websocket_addr = websocket.as_ref().map(|l| l.local_addr()).transpose()?;
    let settings = router_config();
    let (router, watchdog) = tokio::task::spawn_blocking(move || Router::start(settings))
        .await
        .context("the router start task failed")?
        .map_err(|error| anyhow::anyhow!("rumqttd's router did not start: {error}"))?;
    let router_ended = tokio::spawn(watchdog.ended());
    // Before the first client: the router keeps only what some filter
    // wants, and the dispatcher's filter must be there first.
    let dispatcher = frontdoor::dispatch::subscribe(&router)
        .await
        .map_err(|error| {
            anyhow::anyhow!("rumqttd's router did not take the dispatcher: {error}")
        })?;
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    let mut door_config = front_door_config(config);
    door_config.persistence = persistence;
    door_config.logins = Arc::new(logins);
    door_config.acl = acl;
    let front_door = tokio::spawn(frontdoor::run(
        listener,
        websocket,
        door_config,
        router,
        dispatcher,
        stop.cancelled_owned(),
    ));
    Ok(RunningBroker {
        addr,
        websocket_addr,
        router_ended,
        front_door,
    })
}

/// File descriptors one client costs this process: its connection (the
/// router is reached in memory, and TLS ends in the front door).
pub const FILES_PER_CLIENT: u64 = 1;

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

/// The front door's settings for `config`.
pub fn front_door_config(config: &BrokerConfig) -> FrontDoorConfig {
    FrontDoorConfig {
        max_connections: config.max_connections,
        logins: Arc::new(Logins::new(config.users.clone())),
        connect_timeout: CONNECT_TIMEOUT,
        limits: Limits {
            // A PUBLISH's remaining length: topic, packet id and payload.
            max_packet_bytes: config.max_payload_bytes,
            max_queued_bytes: config.max_queued_bytes,
            max_subscriptions: config.max_subscriptions,
            max_keep_alive: config.max_keep_alive,
        },
        tls: config.tls.clone(),
        websocket_origins: config.allowed_origins.clone(),
        persistence: None,
        sys_interval: config.sys_interval,
        acl: None,
    }
}

/// How long a new connection may take to send its CONNECT, so that silent
/// connections cannot fill up the connection limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
