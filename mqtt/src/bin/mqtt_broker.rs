//! # mqtt_broker: an MQTT broker in one command, nothing else to install
//!
//! MQTT clients never talk to each other: every message goes through a
//! *broker*, which keeps track of who subscribed to which topics and forwards
//! each published message to every matching subscriber. This binary is that
//! broker: [rumqttd](https://docs.rs/rumqttd), embedded and configured in
//! code, speaking MQTT 3.1.1 on 127.0.0.1:1883. Any MQTT client works with it
//! (`mosquitto_pub`, `mosquitto_sub`, or the two next to this file).
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
//! Terminal 2 prints `Hello MQTT!`; terminal 1 logs each client connecting,
//! subscribing and disconnecting. With flags: `--port 1884 --user
//! alice:secret` requires a login, so only `mqtt_publisher --port 1884 -u
//! alice -P secret` gets in. Ctrl-C stops the broker.
//!
//! ## Read next
//!
//! `mqtt/src/broker.rs` (rumqttd's settings, each explained, and where rumqttd
//! departs from the MQTT spec), then `mqtt/src/bin/mqtt_publisher.rs`.

use std::net::{IpAddr, SocketAddr};

use anyhow::anyhow;
use clap::Parser;
use mqtt::broker::{self, BrokerConfig};
use tracing::info;

/// An MQTT 3.1.1 broker (rumqttd, embedded): forwards every published message
/// to the clients subscribed to its topic.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; 0.0.0.0 accepts clients from other machines too
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 picks a free one (printed on the first line)
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Largest PUBLISH accepted (topic plus payload), in bytes; a client sending
    /// a larger one is disconnected
    #[arg(long, default_value_t = broker::DEFAULT_MAX_PAYLOAD_BYTES)]
    max_payload_bytes: usize,
    /// Require clients to log in as NAME with PASSWORD (repeat for more users)
    #[arg(long, value_name = "NAME:PASSWORD", value_parser = user)]
    user: Vec<(String, String)>,
    /// Most clients connected at once; one more is disconnected
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
}

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
    let config = BrokerConfig {
        addr: SocketAddr::new(args.host, args.port),
        max_payload_bytes: args.max_payload_bytes,
        max_connections: args.max_connections,
        users: args.user,
    };
    // `start` waits (briefly, blocking) until rumqttd accepts connections.
    let mut running = tokio::task::spawn_blocking(move || broker::start(&config)).await??;
    // Ctrl-C and SIGTERM are ours before anyone can learn where we listen.
    let shutdown = networking_protocols::shutdown_signal();
    networking_protocols::print_listening(running.addr);

    // rumqttd has no stop method: its threads run until the process ends. So
    // on Ctrl-C or SIGTERM we simply return, `main` exits, and the kernel
    // closes every client connection (clients see the broker go away, as in
    // a crash; a persistent client reconnects when a broker is back).
    tokio::select! {
        () = shutdown => {}
        () = running.failed() => return Err(anyhow!("rumqttd stopped unexpectedly")),
    }
    info!("stopping rumqttd with the process (it has no stop API)");
    Ok(())
}
