//! The measurements, each a phase with its own timeouts: set-up time,
//! bytes through a counting relay, latency with one message in flight, and
//! throughput with many.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;

use crate::Measured;
use crate::protocols::{Protocol, Rx, Tx};
use crate::relay::Relay;

/// How many connection set-ups we time (we report the median).
const SETUP_TRIES: usize = 50;
/// How many messages we send before timing any: the first ones pay for
/// warming caches and growing buffers.
const WARM_UP: u64 = 50;
/// Round trips timed one at a time: at most this many...
const LATENCY_MESSAGES: u64 = 2_000;
/// ...and for at most this long.
const LATENCY_TIME: Duration = Duration::from_millis(1_500);
/// Messages sent back to back for the throughput figure.
const THROUGHPUT_MESSAGES: u64 = 50_000;
/// How many times we measure throughput (we report the median).
const THROUGHPUT_RUNS: usize = 3;
/// Messages sent one at a time through the byte-counting relay.
const COUNTED_MESSAGES: u64 = 20;
/// How long one message may take to come back before it counts as lost.
const REPLY_WAIT: Duration = Duration::from_millis(500);
/// In the throughput run, how long the receiver waits for one more message
/// before it counts the rest as lost.
const SILENCE: Duration = Duration::from_millis(500);

/// Every figure of one row: one protocol at one message size.
pub async fn measure<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<Measured> {
    let setup = setup_time(protocol, server)
        .await
        .context("timing the set-up")?;
    let (setup_bytes, wire_bytes) = count_bytes(protocol, server, size)
        .await
        .context("counting bytes")?;
    let (mut latencies, mut sent, mut lost) = latency(protocol, server, size)
        .await
        .context("timing round trips")?;
    // Throughput varies most from run to run on a busy machine: we take
    // the median of three runs (and count every message of all three).
    let mut rates = Vec::new();
    for _ in 0..THROUGHPUT_RUNS {
        let (rate, more_sent, more_lost) = throughput(protocol, server, size)
            .await
            .context("measuring throughput")?;
        rates.push(rate);
        sent += more_sent;
        lost += more_lost;
    }
    rates.sort_by(f64::total_cmp);
    let throughput = rates[rates.len() / 2];
    latencies.sort_unstable();
    Ok(Measured {
        setup,
        setup_bytes,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        throughput,
        sent,
        lost,
        wire_bytes,
    })
}

/// Awaits `future` for at most `limit`, failing with `what` if it takes longer.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, future)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {limit:?}"))?
}

/// The median of [`SETUP_TRIES`] set-ups, or `None` for a protocol without.
async fn setup_time<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
) -> anyhow::Result<Option<Duration>> {
    let mut times = Vec::new();
    for _ in 0..SETUP_TRIES {
        match within(Duration::from_secs(5), "set-up", protocol.handshake(server)).await? {
            Some(took) => times.push(took),
            None => return Ok(None),
        }
    }
    times.sort_unstable();
    Ok(Some(percentile(&times, 0.50)))
}

/// Through a byte-counting relay: the bytes of one set-up, and the bytes
/// per message of [`COUNTED_MESSAGES`] sent one at a time.
async fn count_bytes<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(u64, f64)> {
    let settle = Duration::from_secs(2);
    let relay = Relay::start(protocol.transport(), server).await?;
    within(
        Duration::from_secs(5),
        "set-up",
        protocol.handshake(relay.addr),
    )
    .await?;
    let setup_bytes = relay.settled_bytes(settle).await;

    let relay = Relay::start(protocol.transport(), server).await?;
    let (mut tx, mut rx) = within(
        Duration::from_secs(5),
        "connecting",
        protocol.open(relay.addr),
    )
    .await?;
    let before = relay.settled_bytes(settle).await;
    for number in 0..COUNTED_MESSAGES {
        tx.send(payload(number, size)).await?;
        within(REPLY_WAIT, "a message", receive(&mut rx, number)).await?;
        within(REPLY_WAIT, "acknowledgements", tx.settle()).await?;
    }
    let after = relay.settled_bytes(settle).await;
    Ok((
        setup_bytes,
        (after - before) as f64 / COUNTED_MESSAGES as f64,
    ))
}

/// Round trips with one message in flight: returns the times (after the
/// warm-up), how many were sent and how many never came back.
async fn latency<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(Vec<Duration>, u64, u64)> {
    let (mut tx, mut rx) =
        within(Duration::from_secs(5), "connecting", protocol.open(server)).await?;
    let mut times = Vec::new();
    let mut lost = 0;
    let mut sent = 0;
    let deadline = Instant::now() + LATENCY_TIME;
    for number in 0..WARM_UP + LATENCY_MESSAGES {
        if number >= WARM_UP + 100 && Instant::now() > deadline {
            break;
        }
        let start = Instant::now();
        tx.send(payload(number, size)).await?;
        sent += 1;
        match tokio::time::timeout(REPLY_WAIT, receive(&mut rx, number)).await {
            Ok(received) => {
                received?;
                if number >= WARM_UP {
                    times.push(start.elapsed());
                }
            }
            // Only UDP may lose a message; the others would say why.
            Err(_) => lost += 1,
        }
        within(REPLY_WAIT, "acknowledgements", tx.settle()).await?;
    }
    Ok((times, sent, lost))
}

/// [`THROUGHPUT_MESSAGES`] sent as fast as the sender can while the
/// receiver counts them: returns messages per second, how many were sent
/// and how many never arrived.
async fn throughput<P: Protocol>(
    protocol: &P,
    server: SocketAddr,
    size: usize,
) -> anyhow::Result<(f64, u64, u64)> {
    let (mut tx, mut rx) =
        within(Duration::from_secs(5), "connecting", protocol.open(server)).await?;
    let total = THROUGHPUT_MESSAGES;
    let messages: Vec<Bytes> = (0..total).map(|number| payload(number, size)).collect();
    let start = Instant::now();
    let send = async {
        for message in messages {
            tx.send(message).await?;
        }
        within(Duration::from_secs(10), "acknowledgements", tx.settle()).await
    };
    let count = async {
        let mut seen = vec![false; total as usize];
        let mut received = 0;
        let mut last = start;
        while received < total {
            let Ok(message) = tokio::time::timeout(SILENCE, rx.recv()).await else {
                break; // Nothing more is coming: the rest is lost.
            };
            if let Some(number) = number_of(&message?)
                && let Some(seen) = seen.get_mut(number as usize)
                && !*seen
            {
                *seen = true;
                received += 1;
                last = Instant::now();
            }
        }
        Ok::<_, anyhow::Error>((received, last))
    };
    let ((), (received, last)) = tokio::try_join!(send, count)?;
    let elapsed = last.duration_since(start).as_secs_f64();
    let rate = if elapsed > 0.0 {
        received as f64 / elapsed
    } else {
        0.0
    };
    Ok((rate, total, total - received))
}

/// Waits for message `number`, skipping late copies of earlier ones.
async fn receive(rx: &mut impl Rx, number: u64) -> anyhow::Result<()> {
    loop {
        if number_of(&rx.recv().await?) == Some(number) {
            return Ok(());
        }
    }
}

/// A message of `size` bytes: its number in 16 hexadecimal digits, then
/// `x`s. Plain ASCII and no newline, so every protocol carries it as it is.
fn payload(number: u64, size: usize) -> Bytes {
    let mut message = format!("{number:016x}").into_bytes();
    message.resize(size.max(16), b'x');
    Bytes::from(message)
}

/// The number a message carries, if it is one of ours.
fn number_of(message: &[u8]) -> Option<u64> {
    let digits = std::str::from_utf8(message.get(..16)?).ok()?;
    u64::from_str_radix(digits, 16).ok()
}

/// The value below which `p` (0 to 1) of the sorted `values` lie (nearest
/// rank); zero when there are none.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.max(1) - 1)
        .copied()
        .unwrap_or(Duration::ZERO)
}
