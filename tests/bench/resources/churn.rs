//! Rows 1, 4 and 5: work that should leave nothing behind. Once a broker has
//! forgotten a client's filters, its connection, or the session a newer
//! connection took over, its memory should be back near where it started;
//! what stays is what it keeps (or leaks).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};

use crate::broker::{Broker, Server};
use crate::client::Client;
use crate::{Line, Outcome, cell, each, limited, mb, percent, settle, thousands};

/// Row 1: rounds of filter churn, and the filters of each.
const ROUNDS: usize = 6;
const CHURN_FILTERS: usize = 10_000;

/// Row 4: connect/subscribe/publish/disconnect cycles (`DEVICES=<n>` sets
/// how many), how many at once, and the idle time after them.
const CYCLES: usize = 8000;
const AT_ONCE: usize = 50;
const IDLE_AFTER_CYCLES: Duration = Duration::from_secs(10);

/// Row 5: how long the takeovers go on (the run used 60 s), by how
/// many connectors, with a bound on their count; and the idle time after.
const TAKEOVER_TIME: Duration = Duration::from_secs(20);
const CONNECTORS: usize = 4;
const MOST_TAKEOVERS: u64 = 500_000;
const IDLE_AFTER_TAKEOVERS: Duration = Duration::from_secs(5);
/// How long a connection waits to be taken over before it gives up.
const HOLD: Duration = Duration::from_secs(1);

/// Cycles or takeovers before the first memory reading, so that what the
/// broker allocates once (its first buffers, its allocator's arenas) is not
/// counted against each of them.
const WARM: usize = 100;

/// A 30-byte payload.
const PAYLOAD: [u8; 30] = [b'x'; 30];

/// RSS readings of one broker, first to last.
#[derive(Debug, Default)]
struct Readings(Vec<u64>);

impl Readings {
    /// `6.4 -> 8.1 -> 8.2 MB`
    fn path(&self) -> String {
        let mbs: Vec<String> = self.0.iter().map(|bytes| mb(*bytes)).collect();
        format!("{} MB", mbs.join(" -> "))
    }

    /// The growth from the first reading to the last, per one of `count`
    /// and as a percentage of the first: `52 B each (+6.6 %)`.
    fn per(&self, count: u64) -> String {
        let first = self.0.first().copied().unwrap_or(0);
        let last = self.0.last().copied().unwrap_or(0);
        format!("{} ({})", each(first, last, count), percent(first, last))
    }
}

/// Row 1, both brokers running at once, a round on each in turn.
pub async fn filters(servers: &[Server]) -> Line {
    let mut runs: Vec<Outcome<(Broker, Readings)>> = Vec::new();
    for server in servers {
        let started = limited(Duration::from_secs(30), Broker::start(*server)).await;
        runs.push(started.map(|broker| (broker, Readings::default())));
    }
    settle().await;
    read_all(&mut runs);
    for round in 0..ROUNDS {
        for run in &mut runs {
            if let Ok((broker, _)) = run {
                let churned = limited(Duration::from_secs(30), churn(broker.addr, round)).await;
                if let Err(why) = churned {
                    *run = Err(format!("round {}: {why}", round + 1));
                }
            }
        }
        settle().await;
        read_all(&mut runs);
    }
    let cells = runs
        .iter()
        .map(|run| cell(run, |(_, readings)| readings.path()));
    let line = Line {
        label: format!(
            "1. filter churn: RSS before and after each of {ROUNDS} rounds \
             of {} filters",
            thousands(CHURN_FILTERS as u64)
        ),
        cells: cells.collect(),
    };
    for (broker, _) in runs.into_iter().flatten() {
        broker.stop().await;
    }
    line
}

/// Adds each running broker's RSS to its readings.
fn read_all(runs: &mut [Outcome<(Broker, Readings)>]) {
    for run in runs {
        if let Ok((broker, readings)) = run {
            match broker.rss() {
                Ok(rss) => readings.0.push(rss),
                Err(error) => *run = Err(format!("{error:#}")),
            }
        }
    }
}

/// One round: a fresh client subscribes to 10,000 filters nobody used
/// before, unsubscribes from them all, and disconnects.
async fn churn(addr: SocketAddr, round: usize) -> anyhow::Result<()> {
    let filters: Vec<String> = (0..CHURN_FILTERS)
        .map(|i| format!("churn/{round}/{i}"))
        .collect();
    let mut client = Client::connect(addr, &format!("churn-{round}"), true).await?;
    client.subscribe(&filters, 0).await?;
    client.unsubscribe(&filters).await?;
    client.disconnect().await
}

/// Row 4, one broker after the other.
pub async fn connections(servers: &[Server]) -> Vec<Line> {
    let mut outcomes = Vec::new();
    for server in servers {
        outcomes.push(limited(Duration::from_secs(120), churn_connections(*server)).await);
    }
    vec![
        Line {
            label: format!(
                "4. devices coming and going ({}): RSS before -> after -> after {} s idle",
                thousands(devices() as u64),
                IDLE_AFTER_CYCLES.as_secs()
            ),
            cells: outcomes.iter().map(|o| cell(o, Readings::path)).collect(),
        },
        Line {
            label: "4. growth per connection after idle (of the start)".to_string(),
            cells: outcomes
                .iter()
                .map(|o| cell(o, |readings| readings.per(devices() as u64)))
                .collect(),
        },
    ]
}

async fn churn_connections(server: Server) -> anyhow::Result<Readings> {
    let broker = Broker::start(server).await?;
    cycles(broker.addr, 0..WARM).await?;
    settle().await;
    let mut readings = Readings(vec![broker.rss()?]);
    cycles(broker.addr, WARM..WARM + devices()).await?;
    settle().await;
    readings.0.push(broker.rss()?);
    tokio::time::sleep(IDLE_AFTER_CYCLES).await;
    readings.0.push(broker.rss()?);
    broker.stop().await;
    Ok(readings)
}

/// How many devices row 4 runs: `DEVICES`, or [`CYCLES`].
fn devices() -> usize {
    std::env::var("DEVICES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CYCLES)
}

/// Runs one cycle per id, [`AT_ONCE`] at a time, each a device that
/// connects, subscribes to its commands, publishes its state and
/// disconnects; the first failure ends them.
async fn cycles(addr: SocketAddr, ids: Range<usize>) -> anyhow::Result<()> {
    futures_util::stream::iter(ids)
        .map(|id| async move {
            // A device: an id and topics of its own.
            let device = format!("device-{id}");
            let mut client = Client::connect(addr, &device, true).await?;
            client
                .subscribe(&[format!("devices/{device}/cmd")], 1)
                .await?;
            client
                .publish(&format!("devices/{device}/state"), &PAYLOAD)
                .await?;
            client.disconnect().await
        })
        .buffer_unordered(AT_ONCE)
        .try_collect()
        .await
}

/// What row 5 counted on one broker.
#[derive(Debug)]
struct Takeovers {
    connacks: u64,
    failures: u64,
    readings: Readings,
}

/// Row 5, one broker after the other.
pub async fn takeovers(servers: &[Server]) -> Vec<Line> {
    let mut outcomes = Vec::new();
    for server in servers {
        let limit = TAKEOVER_TIME + Duration::from_secs(60);
        outcomes.push(limited(limit, take_overs(*server)).await);
    }
    let line = |label: String, show: &dyn Fn(&Takeovers) -> String| Line {
        label,
        cells: outcomes.iter().map(|o| cell(o, show)).collect(),
    };
    vec![
        line(
            format!(
                "5. takeovers in {} s ({CONNECTORS} connectors, one client id)",
                TAKEOVER_TIME.as_secs()
            ),
            &|t| match t.failures {
                0 => thousands(t.connacks),
                failures => format!("{} ({failures} connects failed)", thousands(t.connacks)),
            },
        ),
        line(
            format!(
                "5. RSS before -> after -> after {} s idle",
                IDLE_AFTER_TAKEOVERS.as_secs()
            ),
            &|t| t.readings.path(),
        ),
        line(
            "5. growth per takeover after idle (of the start)".to_string(),
            &|t| t.readings.per(t.connacks),
        ),
    ]
}

async fn take_overs(server: Server) -> anyhow::Result<Takeovers> {
    let broker = Broker::start(server).await?;
    let (warm, _) = connectors(broker.addr, TAKEOVER_TIME, WARM as u64).await;
    // The connectors stop after WARM CONNACKs, give or take the few that
    // were on their way.
    anyhow::ensure!(warm >= WARM as u64, "only {warm} warm-up takeovers");
    settle().await;
    let mut readings = Readings(vec![broker.rss()?]);
    let (connacks, failures) = connectors(broker.addr, TAKEOVER_TIME, MOST_TAKEOVERS).await;
    settle().await;
    readings.0.push(broker.rss()?);
    tokio::time::sleep(IDLE_AFTER_TAKEOVERS).await;
    readings.0.push(broker.rss()?);
    broker.stop().await;
    anyhow::ensure!(
        connacks > 0,
        "no CONNACK at all ({failures} connects failed)"
    );
    Ok(Takeovers {
        connacks,
        failures,
        readings,
    })
}

/// [`CONNECTORS`] connectors, each connecting with the same client id over
/// and over, for `time` or until `most` CONNACKs: (CONNACKs, failures).
async fn connectors(addr: SocketAddr, time: Duration, most: u64) -> (u64, u64) {
    let end = Instant::now() + time;
    let (connacks, failures) = (AtomicU64::new(0), AtomicU64::new(0));
    let connector = || async {
        while Instant::now() < end && connacks.load(Ordering::Relaxed) < most {
            match Client::connect(addr, "takeover", true).await {
                Ok(mut client) => {
                    connacks.fetch_add(1, Ordering::Relaxed);
                    // [MQTT-3.1.4-2] the broker closes this connection when
                    // the next one with our client id arrives. We wait for
                    // that, so that each connection is taken over, not
                    // closed by us.
                    let left = end.saturating_duration_since(Instant::now());
                    client.until_closed(left.min(HOLD)).await;
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    futures_util::future::join_all((0..CONNECTORS).map(|_| connector())).await;
    (connacks.into_inner(), failures.into_inner())
}
