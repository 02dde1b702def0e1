//! `$SYS`: the broker's own statistics, published as retained messages
//! under `$SYS/broker/...` every `--sys-interval` seconds.
//!
//! Dashboards and monitoring tools made for Mosquitto subscribe to
//! `$SYS/broker/#` and read the same names here. Topics that start with `$`
//! are the server's own: a filter that starts with a wildcard does not
//! match them [MQTT-4.7.2-1], so a client subscribed to `#` sees none of
//! this; `$SYS/#` (or one of the names) must be asked for.
//!
//! | topic | value |
//! | --- | --- |
//! | `$SYS/broker/version` | `mqtt_broker version 0.1.0` |
//! | `$SYS/broker/uptime` | `42 seconds` |
//! | `$SYS/broker/clients/connected` | connections whose CONNECT was accepted, still open |
//! | `$SYS/broker/subscriptions/count` | subscriptions held, by all sessions |
//! | `$SYS/broker/retained messages/count` | topics with a retained message (but `$SYS`'s own) |
//! | `$SYS/broker/publish/messages/received` | PUBLISH packets from clients |
//! | `$SYS/broker/publish/messages/sent` | PUBLISH packets to clients |
//! | `$SYS/broker/bytes/received` | MQTT bytes read from clients once their CONNECT was accepted, but those read together with the CONNECT (after TLS or WebSocket are undone) |
//! | `$SYS/broker/bytes/sent` | MQTT bytes written to clients after their CONNACK |
//!
//! Mosquitto's `$SYS/broker/messages/received` and `.../sent` (packets of
//! every type) are not published.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Door;
use super::mailbox::Message;

/// The counters behind `$SYS`, updated by every connection as it works.
#[derive(Debug, Default)]
pub struct Stats {
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
}

impl Stats {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The prefix of every topic here.
pub const PREFIX: &str = "$SYS/";

/// Publishes the statistics now and then every `every`, until the broker
/// stops.
pub(super) async fn run(door: Arc<Door>, every: Duration) {
    let started = Instant::now();
    loop {
        publish(&door, started);
        tokio::select! {
            () = door.stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// One round: every statistic, as a retained message.
fn publish(door: &Door, started: Instant) {
    let stats = &door.shared.stats;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed).to_string();
    let connected = super::lock(&door.clients).len();
    let mut table = door.shared.table();
    let (_, subscriptions, _) = table.counts();
    let retained = table.retained_count_without_sys();
    let values = [
        (
            "version",
            format!("mqtt_broker version {}", env!("CARGO_PKG_VERSION")),
        ),
        ("uptime", format!("{} seconds", started.elapsed().as_secs())),
        ("clients/connected", connected.to_string()),
        ("subscriptions/count", subscriptions.to_string()),
        ("retained messages/count", retained.to_string()),
        ("publish/messages/received", load(&stats.publish_received)),
        ("publish/messages/sent", load(&stats.publish_sent)),
        ("bytes/received", load(&stats.bytes_received)),
        ("bytes/sent", load(&stats.bytes_sent)),
    ];
    for (name, value) in values {
        table.dispatch(Message {
            topic: Bytes::from(format!("{PREFIX}broker/{name}")),
            payload: Bytes::from(value),
            qos: 0,
            retain: true,
            properties: Bytes::new(),
            publisher: None,
            expires: None,
        });
    }
}
