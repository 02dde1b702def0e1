//! How far one machine goes: what each server costs as the number of its
//! clients grows, measured on your machine with one command.
//!
//! ```sh
//! cargo bench --bench scale
//! ```
//!
//! In about a minute it starts each server as a process of its own
//! (`tcp_server`, `websocket_server`, `mqtt_broker`, and beside each its
//! anchor: loadgen's bare tokio echo servers and Mosquitto, where they are
//! installed), drives thousands of connections at it from this process, prints
//! two Markdown tables and draws them in `target/scale.svg`. The README's "How
//! far one machine goes" section shows one run and what it teaches.
//!
//! - **Idle connections**, for N = 1000, 5000 and 10,000: each connection
//!   completes its protocol's hello (an echoed line, the WebSocket upgrade,
//!   CONNECT and CONNACK) and then stays silent. We report the server's
//!   resident memory (RSS) growth divided by N, the set-ups per second while
//!   opening them (100 at a time), and how long one more client's set-up
//!   takes with all N open.
//! - **Fan-out**, for N = 1000 receivers (TCP chat, WebSocket chat, MQTT
//!   subscribers) and one sender: the time until the last receiver has one
//!   message, then the messages delivered per second while the sender sends
//!   100 at once (100 x N deliveries).
//!
//! Fan-out stops at 1000: joining a chat announces the newcomer to everyone
//! already there, so connecting N chat clients costs N²/2 announcements
//! (50 million at 10,000), which is a different benchmark.
//!
//! Every phase has a timeout, and every process is killed when its
//! measurement ends. N above what the open-file limit allows (this process
//! holds one end of every connection, the server the other) is skipped with
//! the reason in the table.
//!
//! Read `scale/servers.rs` next (starting the processes and reading their
//! memory), then `scale/clients.rs` (the connections) and `scale/report.rs`.

#[path = "scale/clients.rs"]
mod clients;
#[path = "plot.rs"]
mod plot;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/servers.rs"]
mod servers;
// Cargo without the bench's own variables, for `servers.rs`.
#[path = "../common/cargo.rs"]
mod cargo;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{StreamExt, TryStreamExt};

use clients::{Conn, Kind, Phase, Sender, Tally};
use servers::{Program, Running};

/// The numbers of idle connections measured.
pub const LEVELS: [usize; 3] = [1000, 5000, 10_000];
/// Receivers in the fan-out.
pub const FAN_OUT: usize = 1000;
/// Messages sent at once for the sustained fan-out.
const BURST: usize = 100;
/// Connections opened before the memory baseline is read, so that one-time
/// costs (the first allocations of the runtime and the allocator's arenas)
/// are not counted per connection.
const WARM: usize = 50;
/// Connection set-ups in flight at once.
const IN_FLIGHT: usize = 100;
/// The longest one connection's set-up may take.
const SETUP_WAIT: Duration = Duration::from_secs(10);
/// The longest one fan-out phase may take.
const FAN_WAIT: Duration = Duration::from_secs(20);
/// Descriptors this process keeps for itself beyond its connections.
const RESERVE: u64 = 100;

/// One server at one N: its figures, or why there are none.
#[derive(Debug)]
pub struct Idle {
    pub server: &'static str,
    pub n: usize,
    pub outcome: Result<IdleFigures, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct IdleFigures {
    /// RSS growth per connection, in bytes.
    pub rss_per_connection: f64,
    pub setups_per_second: f64,
    /// One more client's set-up, with N open.
    pub new_client: Duration,
}

/// One fan-out: its figures, or why there are none.
#[derive(Debug)]
pub struct FanOut {
    pub server: String,
    pub outcome: Result<FanOutFigures, String>,
}

#[derive(Debug, Clone, Copy)]
pub struct FanOutFigures {
    /// Until the last of the receivers has the one message.
    pub one: Duration,
    /// Delivered per second in the burst of [`BURST`] messages.
    pub delivered_per_second: f64,
    pub delivered: u64,
    pub expected: u64,
}

/// A server in the table: its name, its protocol and how to start it.
#[derive(Debug, Clone)]
struct Subject {
    name: &'static str,
    kind: Kind,
    program: Program,
}

fn subjects() -> Vec<Subject> {
    vec![
        Subject {
            name: "tcp_server",
            kind: Kind::Tcp,
            program: Program::Ours("tcp_server", &[]),
        },
        Subject {
            name: "bare tokio echo (loadgen)",
            kind: Kind::Tcp,
            program: Program::Loadgen("serve-tcp-echo"),
        },
        Subject {
            name: "websocket_server",
            kind: Kind::WebSocket,
            program: Program::Ours("websocket_server", &[]),
        },
        Subject {
            name: "bare tokio-tungstenite echo (loadgen)",
            kind: Kind::WebSocket,
            program: Program::Loadgen("serve-ws-echo"),
        },
        Subject {
            name: "mqtt_broker",
            kind: Kind::Mqtt,
            program: Program::Ours("mqtt_broker", &[]),
        },
        Subject {
            name: "Mosquitto",
            kind: Kind::Mqtt,
            program: Program::Mosquitto(""),
        },
    ]
}

/// The fan-out rows: (name, protocol, program, MQTT QoS).
fn fan_outs() -> Vec<(&'static str, Kind, Program, u8)> {
    vec![
        (
            "tcp_server --chat",
            Kind::Tcp,
            Program::Ours("tcp_server", &["--chat"]),
            0,
        ),
        (
            "websocket_server --chat",
            Kind::WebSocket,
            Program::Ours("websocket_server", &["--chat"]),
            0,
        ),
        (
            "mqtt_broker, QoS 0",
            Kind::Mqtt,
            Program::Ours("mqtt_broker", &[]),
            0,
        ),
        ("Mosquitto, QoS 0", Kind::Mqtt, Program::Mosquitto(""), 0),
        (
            "mqtt_broker, QoS 1",
            Kind::Mqtt,
            Program::Ours("mqtt_broker", &[]),
            1,
        ),
        ("Mosquitto, QoS 1", Kind::Mqtt, Program::Mosquitto(""), 1),
    ]
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    // This process holds one end of every connection: it needs the
    // descriptors as much as the servers do (which inherit the raised limit).
    let limit = networking_protocols::raise_open_file_limit().unwrap_or(u64::MAX);
    let most = LEVELS
        .into_iter()
        .filter(|n| *n as u64 + RESERVE <= limit)
        .max()
        .unwrap_or(0);

    let mut idle = Vec::new();
    for subject in subjects() {
        eprintln!("idle connections: {}", subject.name);
        idle.extend(measure_idle(&subject, limit, most).await);
    }
    let mut fan_out = Vec::new();
    for (name, kind, program, qos) in fan_outs() {
        eprintln!("fan-out: {name}");
        let outcome = tokio::time::timeout(
            Duration::from_secs(60),
            measure_fan_out(kind, &program, qos),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow!("took longer than 60 s")))
        .map_err(|error| format!("{error:#}"));
        if let Err(why) = &outcome {
            eprintln!("  failed: {why}");
        }
        fan_out.push(FanOut {
            server: name.to_string(),
            outcome,
        });
    }

    report::print(&idle, &fan_out);
    println!();
    println!(
        "in {:.0} s on {} CPU(s), open-file limit {limit}",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, usize::from),
    );
    let path = servers::target_dir().join("scale.svg");
    if let Err(error) = report::draw(&idle, &fan_out, &path) {
        eprintln!("error: cannot draw {}: {error:#}", path.display());
        return ExitCode::FAILURE;
    }
    println!("chart: {}", path.display());
    ExitCode::SUCCESS
}

/// Every N for one server: one process, connections added level by level.
async fn measure_idle(subject: &Subject, limit: u64, most: usize) -> Vec<Idle> {
    let row = |n, outcome| Idle {
        server: subject.name,
        n,
        outcome,
    };
    let server = match Running::start(&subject.program, most + WARM + 10).await {
        Ok(server) => server,
        Err(error) => {
            let why = format!("{error:#}");
            eprintln!("  not measured: {why}");
            return LEVELS.iter().map(|n| row(*n, Err(why.clone()))).collect();
        }
    };
    let mut rows = Vec::new();
    let mut conns = Vec::new();
    let mut base = None;
    let mut previous = 0;
    for n in LEVELS {
        if n as u64 + RESERVE > limit {
            rows.push(row(n, Err(format!("open-file limit {limit} too low"))));
            continue;
        }
        let level = async {
            let base = match base {
                Some(base) => base,
                None => {
                    open(subject.kind, server.addr, &mut conns, WARM).await?;
                    settle().await;
                    *base.insert(server.rss()?)
                }
            };
            let opened = Instant::now();
            open(subject.kind, server.addr, &mut conns, WARM + n).await?;
            let took = opened.elapsed();
            settle().await;
            let grown = server.rss()? as f64 - base as f64;
            let one = Instant::now();
            let extra = clients::connect(subject.kind, server.addr, usize::MAX - 1, true);
            let extra = tokio::time::timeout(SETUP_WAIT, extra)
                .await
                .context("one more client: no answer")??;
            let new_client = one.elapsed();
            drop(extra);
            Ok::<_, anyhow::Error>(IdleFigures {
                rss_per_connection: grown / n as f64,
                setups_per_second: (n - previous) as f64 / took.as_secs_f64(),
                new_client,
            })
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), level)
            .await
            .unwrap_or_else(|_| Err(anyhow!("took longer than 60 s")))
            .map_err(|error| format!("{error:#}"));
        match &outcome {
            Ok(_) => previous = n,
            Err(why) => eprintln!("  N={n} failed: {why}"),
        }
        let failed = outcome.is_err();
        rows.push(row(n, outcome));
        if failed {
            break;
        }
    }
    drop(conns);
    server.stop().await;
    rows
}

/// Lets the server finish what the last connections started before we read
/// its memory.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Opens connections until `conns` holds `total`, [`IN_FLIGHT`] at a time.
async fn open(
    kind: Kind,
    addr: SocketAddr,
    conns: &mut Vec<Conn>,
    total: usize,
) -> anyhow::Result<()> {
    let first = conns.len();
    let opened: Vec<Conn> = futures_util::stream::iter(first..total)
        .map(|id| async move {
            tokio::time::timeout(SETUP_WAIT, clients::connect(kind, addr, id, true))
                .await
                .map_err(|_| anyhow!("connection {id}: no answer within {SETUP_WAIT:?}"))?
                .with_context(|| format!("connection {id}"))
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    conns.extend(opened);
    Ok(())
}

/// One sender, [`FAN_OUT`] receivers: one message, then a burst.
async fn measure_fan_out(kind: Kind, program: &Program, qos: u8) -> anyhow::Result<FanOutFigures> {
    let server = Running::start(program, FAN_OUT + WARM).await?;
    let tally = Arc::new(Tally::default());
    let receivers: Vec<_> = futures_util::stream::iter(0..FAN_OUT)
        .map(|id| {
            let tally = tally.clone();
            let addr = server.addr;
            async move {
                tokio::time::timeout(SETUP_WAIT, clients::receiver(kind, addr, id, tally))
                    .await
                    .map_err(|_| anyhow!("receiver {id}: no answer within {SETUP_WAIT:?}"))?
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await?;
    let mut sender = Sender::connect(kind, server.addr).await?;
    let n = FAN_OUT as u64;

    // Until every receiver has a warm-up message, some may not have joined
    // the chat (or subscribed) yet; we send one every 200 ms.
    tally.expect(Phase::Warm, n);
    let deadline = Instant::now() + FAN_WAIT;
    loop {
        sender.send(Phase::Warm, 1, 0).await?;
        let warmed = tokio::time::timeout(Duration::from_millis(200), tally.reached(Phase::Warm));
        if warmed.await.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} receivers ever got a message",
                tally.count(Phase::Warm)
            );
        }
    }

    tally.expect(Phase::One, n);
    let start = Instant::now();
    sender.send(Phase::One, 1, qos).await?;
    tokio::time::timeout(FAN_WAIT, tally.reached(Phase::One))
        .await
        .map_err(|_| anyhow!("one message reached {} of {n}", tally.count(Phase::One)))?;
    let one = start.elapsed();

    let expected = n * BURST as u64;
    tally.expect(Phase::Many, expected);
    let start = Instant::now();
    sender.send(Phase::Many, BURST, qos).await?;
    // All delivered, or nothing more for a second: the rest is lost.
    let (mut last_count, mut last_change) = (0, start);
    let elapsed = loop {
        match tokio::time::timeout(Duration::from_millis(100), tally.reached(Phase::Many)).await {
            Ok(()) => break start.elapsed(),
            Err(_) => {
                let count = tally.count(Phase::Many);
                if count != last_count {
                    (last_count, last_change) = (count, Instant::now());
                } else if last_change.elapsed() > Duration::from_secs(1) {
                    break last_change.duration_since(start);
                }
            }
        }
    };
    let delivered = tally.count(Phase::Many);
    for receiver in receivers {
        receiver.abort();
    }
    drop(sender);
    server.stop().await;
    Ok(FanOutFigures {
        one,
        delivered_per_second: delivered as f64 / elapsed.as_secs_f64(),
        delivered,
        expected,
    })
}
