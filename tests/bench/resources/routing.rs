//! Rows 2 and 3: how a broker matches a message against its filters. A
//! message that matches many of one client's filters should still reach it
//! once, and filters that match nothing should cost a message little.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::broker::{Broker, Server};
use crate::client::{self, Client, WAIT};
use crate::{Line, Outcome, cell, limited, thousands};

/// Row 2: the topic that all the filters match, and how long we count the
/// copies of its one message.
const TOPIC: &str = "a/b/c/d/e/f/g/h/i/j";
const COPIES_WAIT: Duration = Duration::from_secs(2);

/// Row 3: the messages timed, the non-matching filters the subscriber holds
/// beside `hot/t`, and the measurements of each (we report the median).
const MESSAGES: u64 = 100_000;
const COLD: [usize; 3] = [0, 1000, 10_000];
const REPEATS: usize = 5;
const HOT: &str = "hot/t";

/// The first payload byte tells the bench's messages apart: a message that
/// proves a subscription is in place, and a measured one.
const READY: u8 = b'r';
const MEASURED: u8 = b'm';

/// A 30-byte payload starting with `mark`.
fn payload(mark: u8) -> Vec<u8> {
    let mut payload = vec![b'x'; 30];
    payload[0] = mark;
    payload
}

/// Every filter that matches [`TOPIC`]: each level itself or `+` (2^10 =
/// 1024 filters), and each prefix of 0 to 10 such levels followed by `#`
/// (2^0 + ... + 2^10 = 2047; a prefix of all 10 counts too, because `#`
/// also matches the level above it, [MQTT-4.7.1-2]). 3071 in all.
pub fn overlapping() -> Vec<String> {
    let levels: Vec<&str> = TOPIC.split('/').collect();
    let spelled = |plus: usize, n: usize| -> Vec<&str> {
        (0..n)
            .map(|i| if plus >> i & 1 == 1 { "+" } else { levels[i] })
            .collect()
    };
    let mut filters = Vec::new();
    for plus in 0..1 << levels.len() {
        filters.push(spelled(plus, levels.len()).join("/"));
    }
    for n in 0..=levels.len() {
        for plus in 0..1 << n {
            let mut filter = spelled(plus, n);
            filter.push("#");
            filters.push(filter.join("/"));
        }
    }
    filters
}

/// Row 2, one broker after the other.
pub async fn overlap(servers: &[Server]) -> Line {
    let filters = overlapping();
    let mut cells = Vec::new();
    for server in servers {
        let copies = limited(Duration::from_secs(60), copies(*server, &filters)).await;
        cells.push(cell(&copies, u64::to_string));
    }
    Line {
        label: format!(
            "2. overlap: copies of one message matching {} filters of one client",
            thousands(filters.len() as u64)
        ),
        cells,
    }
}

async fn copies(server: Server, filters: &[String]) -> anyhow::Result<u64> {
    let broker = Broker::start(server).await?;
    let mut subscriber = Client::connect(broker.addr, "overlap-sub", true).await?;
    subscriber.subscribe(filters, 0).await?;
    let mut publisher = Client::connect(broker.addr, "overlap-pub", true).await?;
    // A filter of its own, subscribed last, proves the others are in place.
    subscriber.subscribe(&["ready".to_string()], 0).await?;
    until_delivered(&mut publisher, &mut subscriber, "ready").await?;
    publisher.publish(TOPIC, &payload(MEASURED)).await?;
    let received = subscriber
        .receive(MEASURED, u64::MAX, COPIES_WAIT, COPIES_WAIT)
        .await?;
    broker.stop().await;
    Ok(received.count)
}

/// Publishes a READY message to `topic` every 100 ms until one reaches
/// `subscriber`: a SUBACK says the broker accepted a filter, not that its
/// routing already uses it.
async fn until_delivered(
    publisher: &mut Client,
    subscriber: &mut Client,
    topic: &str,
) -> anyhow::Result<()> {
    let end = Instant::now() + WAIT;
    while Instant::now() < end {
        publisher.publish(topic, &payload(READY)).await?;
        let quiet = Duration::from_millis(100);
        if subscriber.receive(READY, 1, quiet, quiet).await?.count == 1 {
            return Ok(());
        }
    }
    bail!("no message to {topic} arrived within {WAIT:?}")
}

/// Row 3: both brokers running at once; each repeat measures every F on
/// each broker in turn.
pub async fn per_message(servers: &[Server]) -> Vec<Line> {
    let mut brokers = Vec::new();
    for server in servers {
        brokers.push(limited(Duration::from_secs(30), Broker::start(*server)).await);
    }
    // rates[broker][F]: the messages per second of each repeat.
    let mut rates: Vec<Vec<Vec<Outcome<f64>>>> = vec![vec![Vec::new(); COLD.len()]; servers.len()];
    for repeat in 0..REPEATS {
        for (f, cold) in COLD.into_iter().enumerate() {
            for (b, broker) in brokers.iter().enumerate() {
                if let Ok(broker) = broker {
                    let rate = rate(broker.addr, cold, repeat);
                    rates[b][f].push(limited(Duration::from_secs(60), rate).await);
                }
            }
        }
    }
    // medians[broker][F], or why there is none.
    let medians: Vec<Vec<Outcome<f64>>> = brokers
        .iter()
        .zip(&rates)
        .map(|(broker, rates)| match broker {
            Ok(_) => rates.iter().map(|repeats| median(repeats)).collect(),
            Err(why) => vec![Err(why.clone()); COLD.len()],
        })
        .collect();
    let mut lines: Vec<Line> = COLD
        .iter()
        .enumerate()
        .map(|(f, cold)| Line {
            label: format!(
                "3. msg/s to a subscriber with {} other filters (median of {REPEATS})",
                thousands(*cold as u64)
            ),
            cells: medians
                .iter()
                .map(|m| cell(&m[f], |rate| thousands(*rate as u64)))
                .collect(),
        })
        .collect();
    let (first, last) = (0, COLD.len() - 1);
    lines.push(Line {
        label: format!(
            "3. ratio: msg/s with {} other filters / with {}",
            thousands(COLD[last] as u64),
            thousands(COLD[first] as u64)
        ),
        cells: medians
            .iter()
            .map(|m| match (&m[first], &m[last]) {
                (Ok(none), Ok(most)) => format!("{:.2}", most / none),
                (Err(why), _) | (_, Err(why)) => why.clone(),
            })
            .collect(),
    });
    for broker in brokers.into_iter().flatten() {
        broker.stop().await;
    }
    lines
}

/// The median of the repeats, or the first failure among them.
fn median(repeats: &[Outcome<f64>]) -> Outcome<f64> {
    let mut rates = repeats.iter().cloned().collect::<Outcome<Vec<f64>>>()?;
    rates.sort_by(f64::total_cmp);
    rates
        .get(rates.len() / 2)
        .copied()
        .ok_or_else(|| "not measured".to_string())
}

/// One measurement: a subscriber to `hot/t` and `cold` filters that never
/// match; a publisher sends [`MESSAGES`] at once, as fast as TCP takes them.
/// Messages per second, from the first sent to the last received.
async fn rate(addr: SocketAddr, cold: usize, repeat: usize) -> anyhow::Result<f64> {
    let mut filters: Vec<String> = (0..cold).map(|i| format!("cold/{i}")).collect();
    filters.push(HOT.to_string());
    let name = format!("{cold}-{repeat}");
    let mut subscriber = Client::connect(addr, &format!("rate-sub-{name}"), true).await?;
    subscriber.subscribe(&filters, 0).await?;
    let mut publisher = Client::connect(addr, &format!("rate-pub-{name}"), true).await?;
    until_delivered(&mut publisher, &mut subscriber, HOT).await?;

    let one = client::publish_packet(HOT, &payload(MEASURED), None, false);
    let all = one.repeat(MESSAGES as usize);
    let start = Instant::now();
    let quiet = Duration::from_secs(2);
    let (sent, received) = tokio::join!(
        publisher.send(&all),
        subscriber.receive(MEASURED, MESSAGES, quiet, Duration::from_secs(30)),
    );
    sent?;
    let received = received?;
    ensure!(
        received.count == MESSAGES,
        "{} of {MESSAGES} messages arrived",
        received.count
    );
    let elapsed = received.last.unwrap_or(start).duration_since(start);
    publisher.disconnect().await?;
    subscriber.disconnect().await?;
    Ok(MESSAGES as f64 / elapsed.as_secs_f64())
}
