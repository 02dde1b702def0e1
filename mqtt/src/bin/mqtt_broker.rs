//! # mqtt_broker: an MQTT broker in one command, nothing else to install
//!
//! MQTT clients never talk to each other: every message goes through a
//! *broker*, which keeps track of who subscribed to which topics and forwards
//! each published message to every matching subscriber. This binary is that
//! broker, speaking MQTT 3.1.1 and MQTT 5 (each client chooses) on
//! 127.0.0.1:1883: our own front door, which checks every client the way the
//! spec says, runs its QoS handshakes, keeps the sessions and subscriptions
//! and routes each message to them, with the router of
//! [rumqttd](https://docs.rs/rumqttd) in the same process, configured in
//! code, carrying every message in one order. Any MQTT client works with it
//! (`mosquitto_pub -V 5`, `mosquitto_sub`, or the two next to this file).
//!
//! ## Try it
//!
//! Terminal 1 starts the broker; it prints `listening on 127.0.0.1:1883`:
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_broker
//! ```
//!
//! Terminal 2 subscribes, terminal 3 publishes:
//!
//! ```text
//! cargo run -p mqtt --bin mqtt_subscriber
//! cargo run -p mqtt --bin mqtt_publisher
//! ```
//!
//! Terminal 2 prints `Hello MQTT!`; terminal 1 logs each client connecting
//! and disconnecting. With flags: `--port 1884 --user alice:secret` requires
//! a login, so only `mqtt_publisher --port 1884 -u alice -P secret` gets in;
//! anyone else is refused with CONNACK code 5, and terminal 1 says why.
//! Ctrl-C stops the broker.
//!
//! Over TLS: `mqtt_broker --tls` listens on 8883 and logs where its local
//! CA is; `mqtt_publisher --tls --cafile <that ca.pem>` connects to it
//! (the front door ends TLS itself: `mqtt/src/frontdoor/relay/tls.rs`).
//!
//! For web pages: `mqtt_broker --ws-port` also serves MQTT over WebSocket
//! on 9001 (`ws://127.0.0.1:9001/mqtt`, subprotocol `mqtt`), as browsers
//! and MQTT.js speak it, through the same front door
//! (`mqtt/src/frontdoor/websocket.rs`), and a page at
//! `http://127.0.0.1:9001/` whose own MQTT client connects back.
//!
//! As people run Mosquitto: `--password-file` (mosquitto_passwd's files),
//! `--acl-file` (who reads and writes which topics), `--persistence-file`
//! (retained messages survive a restart), and statistics under
//! `$SYS/broker/...` every `--sys-interval` seconds. The README's "Running
//! the broker for real" tries each.
//!
//! ## Read next
//!
//! `mqtt/src/frontdoor.rs` (what a broker checks before it trusts a client),
//! `mqtt/src/broker.rs` (rumqttd's settings, each explained, and where the
//! broker still departs from the MQTT spec), then
//! `mqtt/src/bin/mqtt_publisher.rs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::anyhow;
use clap::Parser;
use mqtt::broker::{self, BrokerConfig};
use networking_protocols::tls::server::ServerTlsArgs;
use tracing::info;
use websocket::origin::AllowedOrigins;

/// An MQTT 3.1.1 and MQTT 5 broker (rumqttd's router, embedded): forwards every
/// published message to the clients subscribed to its topic.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; 0.0.0.0 accepts clients from other machines too
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on the first line)
    /// [default: 1883, or 8883 with --tls]
    #[arg(long)]
    port: Option<u16>,
    /// Largest PUBLISH accepted (topic plus payload), in bytes; a client sending
    /// a larger one is disconnected
    #[arg(long, default_value_t = broker::DEFAULT_MAX_PAYLOAD_BYTES as u32,
          value_parser = clap::value_parser!(u32).range(1..=MAX_PACKET))]
    max_payload_bytes: u32,
    /// Require clients to log in as NAME with PASSWORD (repeat for more users)
    #[arg(long, value_name = "NAME:PASSWORD", value_parser = user)]
    user: Vec<(String, String)>,
    /// Most clients connected at once; one more is refused with CONNACK 3
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS))]
    max_connections: u32,
    /// Bytes queued for one client that reads slower than messages arrive;
    /// past this, a client that has stopped reading loses messages (logged)
    #[arg(long, default_value_t = broker::DEFAULT_MAX_QUEUED_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(64 * 1024..=1 << 40))]
    max_queued_bytes: u64,
    /// Most subscriptions one client may hold; a SUBSCRIBE to a new filter
    /// past it gets the failure code 0x80 (logged)
    #[arg(long, default_value_t = broker::DEFAULT_MAX_SUBSCRIPTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_subscriptions: u32,
    /// Longest keep-alive, in seconds, an MQTT 5 client may use; one that
    /// asks for more, or for none, is told this one in CONNACK (Server Keep
    /// Alive). 3.1.1 clients cannot be told, and keep theirs
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u16).range(1..))]
    max_keep_alive: Option<u16>,
    /// Also serve MQTT over WebSocket (ws://HOST:PORT/mqtt, subprotocol mqtt),
    /// as browsers and MQTT.js speak it, on this port [default: 9001 when given
    /// without a value; 0 picks a free one]
    #[arg(long, value_name = "PORT", num_args = 0..=1, default_missing_value = "9001")]
    ws_port: Option<u16>,
    /// With --ws-port: also let WebSocket connections from this web page's
    /// origin in (repeat for more; '*' for any page)
    #[arg(long = "allow-origin", value_name = "ORIGIN", requires = "ws_port",
          value_parser = websocket::origin::parse)]
    allow_origins: Vec<String>,
    /// Require a login as one of this password file's users (or a --user):
    /// mosquitto_passwd's format, NAME:$7$..., so a file it wrote works as it
    /// is; a file that lists nobody lets nobody in
    #[arg(long, value_name = "PATH")]
    password_file: Option<std::path::PathBuf>,
    /// With --password-file: add this user to the file (or change its
    /// password), as mosquitto_passwd -b does, then start
    #[arg(long, value_name = "NAME:PASSWORD", value_parser = user, requires = "password_file")]
    add_user: Option<(String, String)>,
    /// What each client may read and write, in Mosquitto's acl_file syntax
    /// (user, topic [read|write|readwrite|deny], pattern with %c and %u)
    #[arg(long, value_name = "PATH")]
    acl_file: Option<std::path::PathBuf>,
    /// Keep retained messages in this file: saved within a second of a change
    /// (atomically) and read back at start, so they survive a restart
    #[arg(long, value_name = "PATH")]
    persistence_file: Option<std::path::PathBuf>,
    /// Publish the broker's statistics under $SYS/broker/... (Mosquitto's names)
    /// every this many seconds; 0 for never
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    sys_interval: u64,
    /// MQTT over TLS (clients connect with --tls, mosquitto_pub with --cafile)
    #[command(flatten)]
    tls: ServerTlsArgs,
}

/// MQTT's largest remaining length: 256 MiB - 1 (spec §2.2.3).
const MAX_PACKET: i64 = 268_435_455;
/// rumqttd sizes tables by its connection limit, which is twice ours.
const MAX_CONNECTIONS: i64 = 1_000_000;

/// Parses `NAME:PASSWORD`, splitting at the first colon.
fn user(text: &str) -> anyhow::Result<(String, String)> {
    match text.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.into(), password.into())),
        _ => Err(anyhow!("expected NAME:PASSWORD, like alice:secret")),
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    networking_protocols::init_logging_with(broker::log_filter);
    networking_protocols::exit(serve(args).await)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    if let (Some((name, password)), Some(path)) = (&args.add_user, &args.password_file) {
        mqtt::frontdoor::logins::add_user(path, name, password)?;
        info!("added {name} to {}", path.display());
    }
    // Certificates first: a bad --cert is reported before we take the port.
    let tls = args.tls.config()?;
    let port = args.port.unwrap_or(if tls.is_some() {
        mqtt::DEFAULT_TLS_PORT
    } else {
        mqtt::DEFAULT_PORT
    });
    let config = BrokerConfig {
        addr: SocketAddr::new(args.host, port),
        // Both fit: clap's ranges above keep them far below usize::MAX.
        max_payload_bytes: args.max_payload_bytes as usize,
        max_connections: args.max_connections as usize,
        users: args.user,
        password_file: args.password_file.clone(),
        acl_file: args.acl_file,
        max_queued_bytes: usize::try_from(args.max_queued_bytes).unwrap_or(usize::MAX),
        max_subscriptions: args.max_subscriptions as usize,
        max_keep_alive: args.max_keep_alive,
        tls,
        websocket_addr: args.ws_port.map(|port| SocketAddr::new(args.host, port)),
        allowed_origins: AllowedOrigins::new(args.allow_origins),
        persistence_file: args.persistence_file,
        sys_interval: (args.sys_interval > 0).then(|| Duration::from_secs(args.sys_interval)),
    };
    // Ctrl-C and SIGTERM are ours before anyone can learn where we listen.
    let shutdown = networking_protocols::shutdown_signal();
    // `start` binds the port, starts rumqttd's router and opens the front door.
    let running = broker::start(&config, shutdown).await?;
    networking_protocols::print_listening(running.addr);
    // The WebSocket port's line comes second, in a form of its own that
    // also says where a browser or MQTT.js connects.
    if let Some(addr) = running.websocket_addr {
        println!("listening on {addr} for MQTT over WebSocket: ws://{addr}/mqtt");
    }

    // On Ctrl-C or SIGTERM the front door closes every client's connection
    // and returns. rumqttd's router has no stop method: its thread ends with
    // the process, when `main` returns. If it ends before (it panicked),
    // `wait` returns that error at once, and we exit non-zero.
    running.wait().await?;
    info!("stopped");
    Ok(())
}
