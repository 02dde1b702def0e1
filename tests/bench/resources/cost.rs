//! Row 6: what one connection, one subscription, one retained message and
//! one queued message cost a broker: its RSS growth while it takes in
//! thousands of them, divided by their number. Each is measured on a fresh
//! broker, after a warm-up of the same kind, so that what the broker
//! allocates once is not counted against each.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};

use crate::broker::{Broker, Server};
use crate::client::Client;
use crate::{Line, cell, each, limited, settle, thousands};

/// How many of each resource we measure, and warm up with.
const CONNECTIONS: usize = 2000;
const SUBSCRIPTIONS: usize = 10_000;
const RETAINED: usize = 10_000;
const QUEUED: usize = 10_000;
const WARM: usize = 50;
/// Connections opened at once.
const AT_ONCE: usize = 50;

/// Marks the first payload byte of measured messages, apart from warm-ups.
const MEASURED: u8 = b'm';

/// A 100-byte payload starting with `mark`.
fn payload(mark: u8) -> Vec<u8> {
    let mut payload = vec![b'x'; 100];
    payload[0] = mark;
    payload
}

/// What one sub-row measured: memory before and after `count` resources,
/// and (for queued messages) how many the broker kept.
#[derive(Debug)]
struct Cost {
    before: u64,
    after: u64,
    count: u64,
    kept: Option<u64>,
}

impl Cost {
    fn show(&self) -> String {
        let each = each(self.before, self.after, self.count);
        match self.kept {
            Some(kept) => format!("{each}, kept {}", thousands(kept)),
            None => each,
        }
    }
}

/// The four resources of row 6.
#[derive(Debug, Clone, Copy)]
enum Resource {
    Connection,
    Subscription,
    Retained,
    Queued,
}

impl Resource {
    fn label(self) -> String {
        match self {
            Resource::Connection => {
                format!(
                    "6a. RSS per idle connection ({})",
                    thousands(CONNECTIONS as u64)
                )
            }
            Resource::Subscription => format!(
                "6b. RSS per subscription ({} filters, one client)",
                thousands(SUBSCRIPTIONS as u64)
            ),
            Resource::Retained => format!(
                "6c. RSS per retained message ({}, 100 B)",
                thousands(RETAINED as u64)
            ),
            Resource::Queued => format!(
                "6d. RSS per queued message ({} QoS 1, 100 B, session away)",
                thousands(QUEUED as u64)
            ),
        }
    }

    async fn measure(self, server: Server) -> anyhow::Result<Cost> {
        match self {
            Resource::Connection => connections(server).await,
            Resource::Subscription => subscriptions(server).await,
            Resource::Retained => retained(server).await,
            Resource::Queued => queued(server).await,
        }
    }
}

/// Row 6: each resource on each broker, one fresh broker after the other.
pub async fn per_resource(servers: &[Server]) -> Vec<Line> {
    let mut lines = Vec::new();
    for resource in [
        Resource::Connection,
        Resource::Subscription,
        Resource::Retained,
        Resource::Queued,
    ] {
        let mut cells = Vec::new();
        for server in servers {
            let cost = limited(Duration::from_secs(60), resource.measure(*server)).await;
            cells.push(cell(&cost, Cost::show));
        }
        lines.push(Line {
            label: resource.label(),
            cells,
        });
    }
    lines
}

/// 6a: clients that connect and then stay silent.
async fn connections(server: Server) -> anyhow::Result<Cost> {
    let broker = Broker::start(server).await?;
    let mut clients = open(broker.addr, 0..WARM).await?;
    settle().await;
    let before = broker.rss()?;
    clients.extend(open(broker.addr, WARM..WARM + CONNECTIONS).await?);
    settle().await;
    let after = broker.rss()?;
    drop(clients);
    broker.stop().await;
    Ok(Cost {
        before,
        after,
        count: CONNECTIONS as u64,
        kept: None,
    })
}

/// Opens one connection per id, [`AT_ONCE`] at a time.
async fn open(addr: SocketAddr, ids: std::ops::Range<usize>) -> anyhow::Result<Vec<Client>> {
    futures_util::stream::iter(ids)
        .map(|id| async move { Client::connect(addr, &format!("idle-{id}"), true).await })
        .buffer_unordered(AT_ONCE)
        .try_collect()
        .await
}

/// 6b: one client's distinct filters `res/<i>/x`.
async fn subscriptions(server: Server) -> anyhow::Result<Cost> {
    let broker = Broker::start(server).await?;
    let mut client = Client::connect(broker.addr, "subscriptions", true).await?;
    let filters = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}/{i}/x")).collect()
    };
    client.subscribe(&filters("warm", WARM), 0).await?;
    settle().await;
    let before = broker.rss()?;
    client.subscribe(&filters("res", SUBSCRIPTIONS), 0).await?;
    settle().await;
    let after = broker.rss()?;
    broker.stop().await;
    Ok(Cost {
        before,
        after,
        count: SUBSCRIPTIONS as u64,
        kept: None,
    })
}

/// 6c: retained messages on distinct topics, published at QoS 1 so that
/// each PUBACK tells us the broker holds it.
async fn retained(server: Server) -> anyhow::Result<Cost> {
    let broker = Broker::start(server).await?;
    let mut publisher = Client::connect(broker.addr, "retainer", true).await?;
    let messages = |prefix: &'static str, n: usize| {
        (0..n).map(move |i| (format!("{prefix}/{i}"), payload(MEASURED)))
    };
    publisher
        .publish_acked(messages("warm", WARM), true)
        .await?;
    settle().await;
    let before = broker.rss()?;
    publisher
        .publish_acked(messages("retained", RETAINED), true)
        .await?;
    settle().await;
    let after = broker.rss()?;
    broker.stop().await;
    Ok(Cost {
        before,
        after,
        count: RETAINED as u64,
        kept: None,
    })
}

/// 6d: messages for a persistent session (Clean Session 0, subscribed at
/// QoS 1) while its client is away. The broker must keep them until it
/// returns (§3.1.2.4), up to its own limit: Mosquitto's
/// `max_queued_messages` defaults to 1000, so we raise it; mqtt_broker's
/// `--max-queued-bytes` (8 MiB) holds all of them. On its return the
/// session counts what it gets, so a limit we missed shows as "kept".
async fn queued(server: Server) -> anyhow::Result<Cost> {
    let broker = Broker::start_with(server, "max_queued_messages 20000\n").await?;
    let mut away = Client::connect(broker.addr, "away", false).await?;
    away.subscribe(&["queue/#".to_string()], 1).await?;
    away.disconnect().await?;

    let mut publisher = Client::connect(broker.addr, "queuer", true).await?;
    let messages = |mark: u8, n: usize| (0..n).map(move |i| (format!("queue/{i}"), payload(mark)));
    publisher.publish_acked(messages(b'w', WARM), false).await?;
    settle().await;
    let before = broker.rss()?;
    publisher
        .publish_acked(messages(MEASURED, QUEUED), false)
        .await?;
    settle().await;
    let after = broker.rss()?;

    let mut back = Client::connect(broker.addr, "away", false).await?;
    let quiet = Duration::from_secs(1);
    let received = back
        .receive(MEASURED, QUEUED as u64, quiet, Duration::from_secs(30))
        .await?;
    broker.stop().await;
    Ok(Cost {
        before,
        after,
        count: received.count.max(1),
        kept: Some(received.count),
    })
}
